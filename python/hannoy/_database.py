"""Database: one LMDB database (a path and an optional name) holding many indexes."""

from __future__ import annotations

import os
import weakref
from typing import Any, Dict, Optional, Union

from . import _ffi
from ._base import ProgressCallback
from ._convert import MAX_I64, MAX_U64, as_int, as_path, describe
from ._errors import ArgumentTypeError, HannoyError, InvalidArgumentError
from ._handle import SharedHandle
from ._metric import Metric, as_metric
from ._reader import Reader
from ._writer import Writer, end_thread_writers

__all__ = ["Database"]

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_READ_ONLY = 1  # hannoy_db_open flag


def _reopen(
    path: str,
    metric: Metric,
    name: Optional[str],
    env_size: Optional[int],
    read_only: bool,
    memory_budget: Optional[int] = None,
) -> "Database":
    """Unpickling: open the same database again (see Database.__reduce__)."""
    return Database(path, metric, name, env_size, read_only=read_only, memory_budget=memory_budget)


class Database:
    """An on-disk database of HNSW indexes (LMDB), in the format of hannoy 0.1.3.

    The directory ``path`` is created if needed. Every ``Database`` on the same path in a
    process shares one LMDB environment, which is closed when the last of them is closed;
    different paths are different databases. One database holds many independent indexes
    (``index=0..65535``), all with the same metric.

    Parameters
    ----------
    path : str or os.PathLike
        The database directory.
    distance : Metric, default Metric.EUCLIDEAN
        The metric of the indexes (also accepted: its name, e.g. ``"cosine"``).
    name : str, optional
        A named LMDB database inside the environment (default: the unnamed main database).
    env_size : int, optional
        Hard limit of the map size in bytes (a full map raises :class:`~hannoy.MapFullError`
        and leaves the last commit intact). The default is large (1 TiB of address space);
        the file only grows with use.
    read_only : bool, default False
        Open an existing database for reading only: nothing is created and nothing written
        (LMDB's ``lock.mdb`` excepted, unless the file system itself is read-only), so a
        database on a read-only mount or in files the user may not write (with a writable
        ``lock.mdb``) can be searched. :meth:`writer` then raises. A path open read-only in
        this process cannot also be opened for writing until every ``Database`` on it is closed.
    memory_budget : int, optional
        The memory in bytes that readers and builds of this database plan to use (the default
        for :meth:`reader`). ``None``: the environment variable ``HANNOY_MEMORY_BUDGET`` (bytes,
        or with a K/M/G/T suffix) if set, else 80% of what the process may use when a reader
        opens or a build starts (``MemAvailable``, and the limits of its memory cgroups, v1 or
        v2). A file that fits is read ahead; one that does not is searched with compressed
        codes held in memory (see :class:`Reader`), and a build then reads the items already in
        the index through such codes too, so that inserting does not read vectors at random.

    Raises
    ------
    OSError
        The path is a file, is not writable, or is not an LMDB database
        (:class:`~hannoy.HannoyIOError`); read-only, also when it does not exist.

    Examples
    --------
    >>> import hannoy, numpy as np
    >>> from hannoy import Metric
    >>> db = hannoy.Database("/tmp/hannoy-example", Metric.EUCLIDEAN)
    >>> with db.writer(3, m=4, ef=10) as writer:
    ...     writer.add_item(0, [1.0, 0.0, 0.0])
    ...     writer.add_item(1, [0.0, 1.0, 0.0])
    ...     writer.add_item(2, [0.0, 0.0, 1.0])
    >>> db.reader().by_vec([0.0, 1.0, 0.0], n=2)
    [(1, 0.0), (0, 2.0)]
    >>> db.close()

    Or, closing every reader and aborting every open writer at the end:

    >>> with hannoy.Database("/tmp/hannoy-example") as db:
    ...     len(db.reader())
    3
    """

    def __init__(
        self,
        path: PathLike,
        distance: Union[Metric, str, int] = Metric.EUCLIDEAN,
        name: Optional[str] = None,
        env_size: Optional[int] = None,
        *,
        read_only: bool = False,
        memory_budget: Optional[int] = None,
    ) -> None:
        self._h: Optional[SharedHandle] = None
        if not isinstance(read_only, bool):
            raise ArgumentTypeError("read_only must be a bool, got %s" % describe(read_only))
        self._memory_budget = (
            None if memory_budget is None else as_int(memory_budget, "memory_budget", 1, MAX_I64)
        )
        self._read_only = read_only
        self._path: str = as_path(path)
        self._metric = as_metric(distance, "distance")
        if name is not None and not isinstance(name, str):
            raise ArgumentTypeError("name must be a str or None, got %s" % describe(name))
        if name is not None and "\x00" in name:
            raise InvalidArgumentError("name must not contain NUL characters, got %r" % name)
        self._name = name
        if env_size is None:
            self._env_size: Optional[int] = None
        else:
            self._env_size = as_int(env_size, "env_size", 1, MAX_U64)

        ffi = _ffi.ffi()
        lib = _ffi.lib()
        out = ffi.new("uint64_t *")
        err = ffi.new("char **")
        c_name = ffi.NULL if name is None else name.encode("utf-8")
        rc = lib.hannoy_db_open(
            os.fsencode(self._path), int(self._metric), c_name, self._env_size or 0,
            _READ_ONLY if read_only else 0, self._memory_budget or 0, out, err,
        )  # fmt: skip
        _ffi.check(rc, err)
        self._h = SharedHandle("database", int(out[0]), "hannoy_db_close")
        self._finalizer = weakref.finalize(self, self._h.finalize)

    # -- properties ------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The path the database was opened with."""
        return self._path

    @property
    def metric(self) -> Metric:
        """The :class:`Metric` of the database's indexes."""
        return self._metric

    @property
    def memory_budget(self) -> Optional[int]:
        """The memory budget readers plan with, in bytes (``None``: automatic)."""
        return self._memory_budget

    @property
    def name(self) -> Optional[str]:
        """The named LMDB database, or None for the main one."""
        return self._name

    @property
    def read_only(self) -> bool:
        """Whether the database was opened read-only."""
        return self._read_only

    @property
    def env_size(self) -> Optional[int]:
        """The map size limit given at opening (None = the default)."""
        return self._env_size

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._h is None or not self._h.is_open

    # -- writers and readers ---------------------------------------------------------------

    def writer(
        self,
        dimensions: int,
        index: int = 0,
        m: int = 16,
        ef: int = 96,
        *,
        m0: Optional[int] = None,
        seed: Optional[int] = None,
        progress: Union[None, bool, ProgressCallback] = None,
        threads: Optional[int] = None,
    ) -> Writer:
        """Open a write transaction on an index.

        It begins at once, waiting while another writer (thread or process) holds the write
        lock. A thread can hold one open writer per database file at a time
        (:class:`~hannoy.WriterBusyError` otherwise). See :class:`Writer` for the parameters.

        Examples
        --------
        >>> with db.writer(3, m=16, ef=96) as w:       # builds and commits on exit
        ...     w.add_item(0, [1.0, 0.0, 0.0])
        >>> with db.writer(128, index=1, seed=42, threads=1, progress=True) as w:
        ...     w.add_items(ids, vectors)
        """
        return Writer(
            self,
            dimensions,
            index,
            m,
            ef,
            m0=m0,
            seed=seed,
            progress=progress,
            threads=threads,
        )

    def reader(
        self, index: int = 0, *, memory_budget: Optional[int] = None, read_mode: str = "auto"
    ) -> Reader:
        """Open a reader on a built index (see :class:`Reader`).

        ``memory_budget`` (bytes; default: the database's) and ``read_mode`` (``"auto"``,
        ``"memory"``, ``"compressed"`` or ``"disk"``) say how it reads the file: see
        :class:`Reader`.

        Raises :class:`~hannoy.MissingMetadataError` (a RuntimeError) when the index was
        never built.

        Examples
        --------
        >>> reader = db.reader(0)
        >>> reader.by_vec([0.0, 1.0, 0.0], n=1)
        [(1, 0.0)]
        """
        return Reader(self, index, memory_budget=memory_budget, read_mode=read_mode)

    @staticmethod
    def commit_rw_txn() -> bool:
        """Commit (without building) every open writer created by the calling thread.

        Returns False when the thread had none. Upstream hannoy has one global write
        transaction; here each writer has its own, and this commits those of this thread.

        Examples
        --------
        >>> w = db.writer(3)
        >>> w.add_item(0, [1.0, 0.0, 0.0])
        >>> hannoy.Database.commit_rw_txn()
        True
        """
        return end_thread_writers("commit")

    @staticmethod
    def abort_rw_txn() -> bool:
        """Abort every open writer created by the calling thread; False when there was none.

        Examples
        --------
        >>> w = db.writer(3)
        >>> hannoy.Database.abort_rw_txn()
        True
        """
        return end_thread_writers("abort")

    # -- information -----------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Facts about the database: ``path``, ``name``, ``metric``, ``env_size``,
        ``indexes`` (the ids of the built indexes) and ``write_map`` (whether write
        transactions change the file's pages in place, which LMDB calls MDB_WRITEMAP: switched on
        when a writer begins once the file is more than a quarter of the memory budget and no
        reader of this process is open; ``HANNOY_WRITEMAP=1`` or ``0`` forces it), from the library.

        Examples
        --------
        >>> db.stats()["indexes"]
        [0]
        """
        import json

        h = self._handle()
        ffi = _ffi.ffi()
        out = ffi.new("char **")
        err = ffi.new("char **")
        value = h.enter()
        try:
            rc = _ffi.lib().hannoy_db_info(value, out, err)
        finally:
            h.exit()
        _ffi.check(rc, err)
        text = _ffi.take_string(out[0])
        try:
            info = json.loads(text or "{}")
        except ValueError as e:
            raise HannoyError(
                "expected JSON from hannoy_db_info, got %r (%s)" % (text, e)
            ) from None
        return info if isinstance(info, dict) else {"info": info}

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database: abort its open writers, close its readers, then close it.

        Idempotent. The LMDB environment is closed with the last ``Database`` on its path.

        Examples
        --------
        >>> db = hannoy.Database("/tmp/hannoy-example")
        >>> db.close()
        >>> db.closed
        True
        """
        if self._h is not None:
            self._h.close(raise_errors=True)

    def __enter__(self) -> "Database":
        h = self._handle()
        h.enter()
        h.exit()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.close()

    def _handle(self) -> SharedHandle:
        if self._h is None:  # pragma: no cover
            raise HannoyError("this database was never opened")
        return self._h

    def __reduce__(self) -> Any:
        # Pickling reopens the same path in the other process (multiprocessing "spawn").
        return (
            _reopen,
            (
                self._path,
                self._metric,
                self._name,
                self._env_size,
                self._read_only,
                self._memory_budget,
            ),
        )

    def _repr_html_(self) -> str:
        """HTML for Jupyter: the path, metric, file size, format version and, for each built
        index, its dimensions, items, entry points and layers (at most 16 indexes in detail,
        each read by a reader opened in ``"disk"`` mode and closed at once). Never raises: a
        closed database shows a "closed" note, an index that cannot be opened its error.

        Examples
        --------
        >>> db   # the last expression of a notebook cell
        """
        from ._summary import database_html, safe_html

        return safe_html(database_html, self)

    def __repr__(self) -> str:
        closed = " closed" if self.closed else ""
        ro = " read-only" if self._read_only else ""
        return "<hannoy.Database path=%r metric=%s name=%r%s%s>" % (
            self._path,
            self._metric,
            self._name,
            ro,
            closed,
        )
