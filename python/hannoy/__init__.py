"""hannoy: approximate nearest-neighbour search (HNSW) stored on disk in LMDB.

A drop-in for the Python API of the Rust ``hannoy`` package (0.1.3) with a Go engine: the
same classes, arguments, defaults, distances and files, fewer sharp edges, and more features
(deletes, candidate filters, by-item search, batch search on every core, progress and Ctrl-C
for builds, item vectors, ids, stats).

Importing hannoy does not load the engine (``libhannoy.so``): it is loaded on first use, so
importing before ``fork()`` is safe. A process that used hannoy must not ``fork()`` workers
that use it too: use ``multiprocessing`` with the "spawn" or "forkserver" start method.

Examples
--------
>>> import hannoy
>>> from hannoy import Metric
>>> db = hannoy.Database("/tmp/hannoy-example", Metric.COSINE)
>>> with db.writer(3, m=16, ef=96) as writer:
...     writer.add_item(0, [1.0, 0.0, 0.0])
...     writer.add_item(1, [0.0, 1.0, 0.0])
...     writer.add_item(2, [0.0, 0.0, 1.0])
>>> reader = db.reader()
>>> reader.by_vec([0.9, 0.1, 0.0], n=2)      # [(id, distance), ...]
[(0, 0.0030...), (1, 0.4447...)]
"""

import os

from ._database import Database
from ._errors import (  # noqa: F401  (exported, not in __all__)
    ArgumentTypeError,
    BuildCancelledError,
    ClosedError,
    CorruptDatabaseError,
    DimensionError,
    DiskFullError,
    ForkedProcessError,
    HannoyError,
    HannoyIOError,
    InternalError,
    InvalidArgumentError,
    InvalidItemError,
    LibraryNotFoundError,
    MapFullError,
    MetricMismatchError,
    MissingMetadataError,
    NeedBuildError,
    ReadersFullError,
    WriterBusyError,
)
from ._metric import Metric
from ._reader import Reader
from ._writer import Writer

try:
    # written by setup.py from capi/VERSION, the file the library embeds (library_info())
    from ._version import __version__
except ImportError:  # the source tree, never built: no version to tell
    __version__ = "0+unknown"

__all__ = ["Metric", "Database", "Writer", "Reader"]


def library_info() -> dict:
    """The engine's version information (loads the library): ``version``, ``format`` (the
    on-disk format, ``"0.1.3"``) and ``kernels`` (the distance kernels in use).

    Examples
    --------
    >>> hannoy.library_info()["format"]
    '0.1.3'
    """
    from . import _ffi

    return _ffi.version()


def verify(path: "str | bytes | os.PathLike[str]") -> dict:
    """Check the whole LMDB structure of the database in directory ``path`` before trusting it.

    LMDB trusts its own pages: a file damaged inside its B-tree pages (a bad disk, a truncated
    copy, a file from somewhere else) can crash the process that opens it. ``verify`` reads
    every page of ``data.mdb`` with ordinary reads — it neither maps the file nor opens the
    database — and checks that every page reached is inside the file and of the expected kind,
    that every record lies inside its page, that no page is reached twice and that LMDB's free
    list names no page in use. A file it accepts can be opened safely: damage to hannoy's own
    values is caught by hannoy as they are read. It reads LMDB's tree pages and the first bytes
    of each value's overflow pages, not the vectors themselves: less than reading the file. It
    may run while other processes use the database (a commit landing meanwhile makes it walk
    again).

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The database directory (the one given to :class:`Database`).

    Returns
    -------
    dict
        ``page_size``, ``file_pages``, ``last_page``, ``txn_id``, ``branch_pages``,
        ``leaf_pages``, ``overflow_pages``, ``free_pages`` and ``databases`` (a list of
        ``{"name", "entries", "depth"}``, the unnamed database first as ``""``).

    Raises
    ------
    CorruptDatabaseError
        The structure is damaged; the message names the first damage found.
    HannoyIOError
        ``path`` holds no ``data.mdb``, cannot be read, or is not an LMDB file.
    HannoyError
        Commits kept landing while the file was read (it walks again after each, five times):
        try again when the database is not being written.

    Examples
    --------
    >>> report = hannoy.verify("/tmp/hannoy-example")
    >>> report["databases"][0]["name"]
    ''
    """
    from . import _ffi
    from ._convert import as_path

    return _ffi.verify(as_path(path))
