"""Exceptions raised by hannoy.

Every exception is a subclass of the built-in type the upstream (Rust) ``hannoy`` package
raises in the same situation, so existing ``except`` clauses keep working:

* :class:`HannoyError` is a :class:`RuntimeError` (upstream raises ``RuntimeError`` for every
  failure that is not an I/O error).
* :class:`HannoyIOError` is an :class:`OSError` (upstream: ``IOError``) *and* a
  :class:`HannoyError`.
* Bad arguments are also :class:`ValueError` or :class:`TypeError`; an item id outside
  ``0..2**32-1`` is also an :class:`OverflowError` (upstream converts ids to ``u32``).

The classes are exported from the package (``hannoy.HannoyError`` ...) but are not part of
``hannoy.__all__``.

Example
-------
>>> import hannoy
>>> try:
...     hannoy.Database("/tmp/db").reader(7)
... except hannoy.MissingMetadataError as e:   # also a RuntimeError
...     print("build index 7 first:", e)
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "HannoyError",
    "InvalidArgumentError",
    "ArgumentTypeError",
    "InvalidItemError",
    "HannoyIOError",
    "LibraryNotFoundError",
    "MapFullError",
    "DiskFullError",
    "MissingMetadataError",
    "NeedBuildError",
    "MetricMismatchError",
    "DimensionError",
    "BuildCancelledError",
    "CorruptDatabaseError",
    "WriterBusyError",
    "ClosedError",
    "ReadersFullError",
    "InternalError",
    "ForkedProcessError",
    "STATUS",
]


class HannoyError(RuntimeError):
    """Base class of every error raised by hannoy (a :class:`RuntimeError`).

    Attributes
    ----------
    status : int or None
        The C status code (see ``capi/ABI.md``) when the error came from the library,
        ``None`` when it was detected in Python.
    """

    #: the C status code of this kind of error (None: detected in Python only)
    status: Optional[int] = None

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.status = type(self).status

    def __reduce__(self) -> Any:
        # Rebuilt by calling the class with its arguments, then its attributes (status): what
        # pickle does by default, stated so that tblib (which dask.distributed uses to send a
        # worker's exceptions) does not rebuild it through RuntimeError.__new__, which cannot
        # make the OSError subclasses (HannoyIOError, DiskFullError).
        return (type(self), self.args, self.__dict__)


class InvalidArgumentError(HannoyError, ValueError):
    """A bad argument value (status 1, ``HANNOY_E_INVALID``). Also a :class:`ValueError`.

    Example
    -------
    >>> reader.by_vec(query, n=0)
    Traceback (most recent call last):
    hannoy.InvalidArgumentError: n must be a positive integer, got 0
    """

    status = 1


class ArgumentTypeError(HannoyError, TypeError):
    """An argument of the wrong type (detected in Python). Also a :class:`TypeError`.

    Example
    -------
    >>> writer.add_item("seven", [0.0, 1.0])
    Traceback (most recent call last):
    hannoy.ArgumentTypeError: item must be an integer in 0..4294967295, got str 'seven'
    """


class InvalidItemError(InvalidArgumentError, OverflowError):
    """An item id outside ``0..2**32-1``. Also a :class:`ValueError` and an
    :class:`OverflowError` (what upstream raises when an id does not fit in ``u32``)."""


class HannoyIOError(HannoyError, OSError):
    """An I/O error (status 2, ``HANNOY_E_IO``): the path is a file, is not writable, or is not
    an LMDB database. An :class:`OSError` (upstream: ``IOError``) and a :class:`HannoyError`."""

    status: Optional[int] = 2


class DiskFullError(HannoyIOError):
    """A commit found the file system full (status 15, ``HANNOY_E_DISK_FULL``): the write
    transaction was aborted and the last commit is intact; free space and write again. An
    :class:`OSError` like every :class:`HannoyIOError`."""

    status = 15


class LibraryNotFoundError(HannoyIOError):
    """``libhannoy.so`` could not be found or loaded (see ``HANNOY_LIBRARY``)."""

    status = None


class MapFullError(HannoyError):
    """The LMDB map is full (status 4, ``HANNOY_E_MAP_FULL``). Raise ``env_size``; the last
    commit is intact."""

    status = 4


class MissingMetadataError(HannoyError):
    """The index was never built (status 5, ``HANNOY_E_MISSING_METADATA``).

    Example
    -------
    >>> db.reader(3)          # nothing was ever built in index 3
    Traceback (most recent call last):
    hannoy.MissingMetadataError: ...
    """

    status = 5


class NeedBuildError(HannoyError):
    """Changes were committed without a build (status 6, ``HANNOY_E_NEED_BUILD``): open a
    writer on the index and build it."""

    status = 6


class MetricMismatchError(HannoyError, ValueError):
    """The index is stored with another metric than the database was opened with (status 7,
    ``HANNOY_E_METRIC``). Also a :class:`ValueError`."""

    status = 7


class DimensionError(HannoyError, ValueError):
    """A vector whose length is not the index's dimensions (status 8,
    ``HANNOY_E_DIMENSIONS``). Also a :class:`ValueError`."""

    status = 8


class BuildCancelledError(HannoyError):
    """The build was cancelled (status 9, ``HANNOY_E_CANCELLED``); the writer was aborted and
    the database is as it was at the last commit."""

    status = 9


class CorruptDatabaseError(HannoyError):
    """Bytes on disk do not decode (status 10, ``HANNOY_E_CORRUPT``)."""

    status = 10


class WriterBusyError(HannoyError):
    """Something is busy (status 11, ``HANNOY_E_BUSY``), e.g. a second writer opened by the
    thread that already holds one on the same database file."""

    status = 11


class ClosedError(HannoyError, ValueError):
    """A closed (or unknown) Database, Writer or Reader was used (status 12,
    ``HANNOY_E_CLOSED``). Also a :class:`ValueError`, like I/O on a closed file."""

    status = 12


class ReadersFullError(HannoyError):
    """LMDB's reader table is full (status 13, ``HANNOY_E_READERS_FULL``): close readers."""

    status = 13


class InternalError(HannoyError):
    """An internal error of the library was recovered (status 14, ``HANNOY_E_PANIC``).
    Please report it."""

    status = 14


class ForkedProcessError(HannoyError):
    """hannoy was used in a process created by ``fork()`` after the parent had loaded the
    library. The Go runtime does not survive ``fork()``: use ``multiprocessing`` with the
    "spawn" or "forkserver" start method."""


#: HANNOY_E_INVALID, the status of a refused argument (capi/ABI.md).
STATUS_INVALID = 1

#: C status code -> exception class.
STATUS: Dict[int, Type[HannoyError]] = {
    1: InvalidArgumentError,
    2: HannoyIOError,
    3: HannoyError,
    4: MapFullError,
    5: MissingMetadataError,
    6: NeedBuildError,
    7: MetricMismatchError,
    8: DimensionError,
    9: BuildCancelledError,
    10: CorruptDatabaseError,
    11: WriterBusyError,
    12: ClosedError,
    13: ReadersFullError,
    14: InternalError,
    15: DiskFullError,
}

STATUS_NAMES: Dict[int, str] = {
    0: "HANNOY_OK",
    1: "HANNOY_E_INVALID",
    2: "HANNOY_E_IO",
    3: "HANNOY_E_RUNTIME",
    4: "HANNOY_E_MAP_FULL",
    5: "HANNOY_E_MISSING_METADATA",
    6: "HANNOY_E_NEED_BUILD",
    7: "HANNOY_E_METRIC",
    8: "HANNOY_E_DIMENSIONS",
    9: "HANNOY_E_CANCELLED",
    10: "HANNOY_E_CORRUPT",
    11: "HANNOY_E_BUSY",
    12: "HANNOY_E_CLOSED",
    13: "HANNOY_E_READERS_FULL",
    14: "HANNOY_E_PANIC",
    15: "HANNOY_E_DISK_FULL",
}


def error_for_status(status: int, message: Optional[str]) -> HannoyError:
    """Build the exception for a non-zero C status and its message (used as it comes)."""
    cls = STATUS.get(status, HannoyError)
    if not message:
        message = "%s (status %d)" % (STATUS_NAMES.get(status, "unknown error"), status)
    if cls is MapFullError:
        message += (
            "; the database's map is full (env_size is a hard limit): nothing of this write "
            "transaction persists (abort the writer if it is still open) and the last commit is "
            "intact; to write more, close every Database on this path and reopen it with a "
            "larger env_size"
        )
    elif cls is ReadersFullError:
        message += (
            "; every slot of LMDB's reader table for this database is taken (1022 slots unless "
            "another program created it smaller, shared by all processes that have the database "
            "open; an open Reader holds one, and one more per thread searching it at the same "
            "moment, up to the number of CPUs): close readers you no longer use (or use "
            "them as context managers) and try again; nothing was changed"
        )
    exc = cls(message)
    exc.status = status
    return exc
