"""Reader: searches one built index, on one consistent snapshot."""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _ffi
from ._base import DatabaseLike, Neighbours
from ._convert import (
    LINEAR_BELOW,
    LINEAR_BELOW_RATIO,
    MAX_I64,
    MAX_INDEX,
    BatchCandidates,
    as_batch_candidates,
    as_int,
    as_item,
    as_items,
    as_linear_below,
    as_linear_below_ratio,
    as_positive,
    as_queries,
    as_threads,
    as_vector,
    check_out,
    describe,
    is_item,
    vector_packer,
    vector_searcher,
)
from ._errors import (
    STATUS_INVALID,
    ArgumentTypeError,
    HannoyError,
    InternalError,
    InvalidArgumentError,
    error_for_status,
)
from ._handle import SharedHandle
from ._metric import Metric

__all__ = ["Reader"]

_ONE_U32 = np.zeros(1, dtype=np.uint32)  # a valid pointer for empty candidate lists
_MAX_U32 = 0xFFFFFFFF
_F32 = np.dtype(np.float32)
_local = threading.local()


class _Scratch:
    """Per-thread buffers (and their cffi pointers) for single searches: no allocation per call."""

    __slots__ = (
        "key", "query", "p_query", "item", "p_item", "ids", "p_ids", "dists", "p_dists",
        "counts", "p_counts", "icounts", "p_icounts", "err",
    )  # fmt: skip

    def __init__(self, dims: int, k: int) -> None:
        ffi = _ffi.ffi()
        self.key = (dims, k)
        self.query = np.empty(dims, dtype=np.float32)
        self.item = np.empty(1, dtype=np.uint32)
        self.ids = np.empty(k, dtype=np.uint32)
        self.dists = np.empty(k, dtype=np.float32)
        self.counts = np.zeros(1, dtype=np.uint32)
        self.icounts = np.zeros(1, dtype=np.int32)
        self.p_query = ffi.from_buffer("float[]", self.query)
        self.p_item = ffi.from_buffer("uint32_t[]", self.item)
        self.p_ids = ffi.from_buffer("uint32_t[]", self.ids)
        self.p_dists = ffi.from_buffer("float[]", self.dists)
        self.p_counts = ffi.from_buffer("uint32_t[]", self.counts)
        self.p_icounts = ffi.from_buffer("int32_t[]", self.icounts)
        self.err = ffi.new("char **")


def _scratch(dims: int, k: int) -> _Scratch:
    s = getattr(_local, "scratch", None)
    if s is None or s.key != (dims, k):
        s = _local.scratch = _Scratch(dims, k)
    return s


def _metric_from_info(value: Any, fallback: Metric) -> Metric:
    if isinstance(value, str):
        try:
            return Metric(value)  # type: ignore[arg-type]  # _missing_ accepts names
        except ValueError:
            return fallback
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Metric(value)
        except ValueError:
            return fallback
    return fallback


def _check_buffers(
    shape_ok: bool, rows: int, k: int, ids: np.ndarray, dists: np.ndarray, counts: np.ndarray
) -> None:
    # The library writes rows*k results and rows counts: never hand it smaller buffers.
    if not (
        shape_ok
        and ids.size >= rows * k
        and dists.size >= rows * k
        and counts.size >= rows
        and ids.flags.c_contiguous
        and dists.flags.c_contiguous
        and counts.flags.c_contiguous
    ):  # pragma: no cover - an internal error, never a user error
        raise InternalError(
            "internal error: search buffers do not match %d rows of %d results" % (rows, k)
        )


_READ_MODES = {"auto": 0, "memory": 1, "compressed": 2, "disk": 3}  # hannoy_reader_open's mode

_DEFAULT_LINEAR = (LINEAR_BELOW, LINEAR_BELOW_RATIO)


def _linear(linear_below: Any, linear_below_ratio: Any) -> Tuple[int, float]:
    """The checked (linear_below, linear_below_ratio) of a search call."""
    if linear_below is LINEAR_BELOW and linear_below_ratio is LINEAR_BELOW_RATIO:
        return _DEFAULT_LINEAR
    return as_linear_below(linear_below), as_linear_below_ratio(linear_below_ratio)


class Reader:
    """Searches one built index of a :class:`Database`.

    Obtain one with :meth:`Database.reader`. A reader sees the snapshot of the moment it was
    opened (later commits are invisible to it: open a new reader to see them) and may be used
    by many threads at once; every search releases the GIL. Close it (or use ``with``) to
    release its snapshot.

    A reader holds one slot of LMDB's reader table, and takes one more for each further thread
    searching at the same moment (up to the number of CPUs) — but only while no commit has
    landed since it was opened, as a later slot would see another snapshot. After a commit,
    threads searching it share the slots it already has: open a new reader after commits to
    search from many threads in parallel again (it also sees the new data).

    Distances are those of upstream hannoy: squared L2 for euclidean, ``(1 - cos) / 2`` for
    cosine, L1 for manhattan, see :class:`Metric`. Results are ascending by
    ``(distance, id)``.

    Larger than memory: when it opens, a reader compares the used size of the file with its
    memory budget. A file that fits is read ahead in the background (``read_mode "memory"``),
    so a cold start costs a few large reads. One that does not fit is searched in
    ``"compressed"`` mode (the float metrics): the reader first scans the index's vectors
    once into 8-bit codes held in memory (one byte a dimension), walks the graph with them,
    and reads exact vectors from the file only to re-rank the best candidates, asking the
    kernel for their pages together; results carry exact distances. Codes belong to the
    reader's snapshot, so they are never stale. ``"disk"`` (the binary metrics, or codes that
    would not fit in three quarters of the budget) reads exact vectors a page at a time.
    ``stats()["read_mode"]`` says which was chosen.

    Parameters
    ----------
    database : Database
        The database to read.
    index : int, default 0
        The index in the database (0..65535).
    memory_budget : int, optional
        Bytes the reader may plan to use (default: the database's ``memory_budget``, else
        ``HANNOY_MEMORY_BUDGET``, else 80% of what the process may use).
    read_mode : {"auto", "memory", "compressed", "disk"}, default "auto"
        Force a read mode instead of choosing it from the budget.

    Raises
    ------
    MissingMetadataError
        The index was never built (a :class:`RuntimeError`).
    NeedBuildError
        Changes were committed without a build.
    MetricMismatchError
        The index is stored with another metric than the database was opened with.

    Examples
    --------
    >>> import hannoy
    >>> db = hannoy.Database("/tmp/hannoy-example")
    >>> with db.reader() as r:
    ...     r.by_vec([0.0, 1.0, 0.0], n=2)
    [(1, 0.0), (0, 2.0)]
    """

    def __init__(
        self,
        database: DatabaseLike,
        index: int = 0,
        *,
        memory_budget: Optional[int] = None,
        read_mode: str = "auto",
    ) -> None:
        self._h: Optional[SharedHandle] = None
        dbh = getattr(database, "_h", None)
        if dbh is None:
            raise TypeError("database must be a hannoy.Database, got %s" % describe(database))
        self._db = database
        self._index = as_int(index, "index", 0, MAX_INDEX)
        # 0: the library falls back to the Database's budget (given to hannoy_db_open), then
        # to the automatic one.
        budget = 0 if memory_budget is None else as_int(memory_budget, "memory_budget", 1, MAX_I64)
        if not isinstance(read_mode, str):
            raise ArgumentTypeError("read_mode must be a str, got %s" % describe(read_mode))
        mode = _READ_MODES.get(read_mode)
        if mode is None:
            raise InvalidArgumentError(
                "read_mode must be one of %s, got %r" % (", ".join(map(repr, _READ_MODES)), read_mode)
            )
        ffi = _ffi.ffi()
        lib = _ffi.lib()
        out = ffi.new("uint64_t *")
        err = ffi.new("char **")
        value = dbh.enter()
        try:
            rc = lib.hannoy_reader_open(value, self._index, budget, mode, out, err)
        finally:
            dbh.exit()
        _ffi.check(rc, err)
        self._h = SharedHandle("reader", int(out[0]), "hannoy_reader_close", dbh)
        self._finalizer = weakref.finalize(self, self._h.finalize)
        try:
            info = self._info()
            self._dimensions = int(info["dimensions"])
            self._metric = _metric_from_info(info.get("metric"), database.metric)
            self._n_items = self._len()  # the snapshot's item count never changes
        except BaseException:
            self._h.close()
            raise
        # What by_vec's fast path needs, in one tuple (attribute lookups cost there): a list or
        # tuple of floats becomes float32 bytes in one call (_convert.vector_packer); the C
        # extension, where it can, calls the library itself (_convert.vector_searcher).
        self._fast = (
            self._h,
            vector_searcher(
                int(ffi.cast("uintptr_t", lib.hannoy_reader_search_vec)), self._dimensions
            ),
            lib.hannoy_reader_search_vec,
            vector_packer(self._dimensions),
            ffi.from_buffer,
            (self._dimensions,),
            self._dimensions,
            self._n_items,
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def database(self) -> DatabaseLike:
        """The :class:`Database` this reader reads."""
        return self._db

    @property
    def index(self) -> int:
        """The index (0..65535) this reader searches."""
        return self._index

    @property
    def dimensions(self) -> int:
        """Number of dimensions of the index's vectors.

        Examples
        --------
        >>> db.reader().dimensions
        3
        """
        return self._dimensions

    @property
    def metric(self) -> Metric:
        """The index's :class:`Metric`.

        Examples
        --------
        >>> db.reader().metric
        Metric.EUCLIDEAN
        """
        return self._metric

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._h is None or not self._h.is_open

    # -- searches --------------------------------------------------------------------------

    def _k(self, n: int) -> int:
        # results can never outnumber the items: no need for bigger buffers
        return max(1, min(n, self._n_items))

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int,
        cand: BatchCandidates,
        linear: Tuple[int, float],
        threads: int,
        ids: np.ndarray,
        dists: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        nq = queries.shape[0]
        _check_buffers(
            queries.ndim == 2 and queries.shape[1] == self._dimensions, nq, k, ids, dists, counts
        )
        ffi = _ffi.ffi()
        lib = _ffi.lib()
        cptr, ncand, lens = self._candidates_args(cand, nq)
        err = ffi.new("char **")
        h = self._handle()
        value = h.enter()
        try:
            rc = lib.hannoy_reader_search(
                value,
                ffi.from_buffer("float[]", queries),
                queries.shape[0],
                self._dimensions,
                k,
                ef,
                cptr,
                ncand,
                lens,
                linear[0],
                linear[1],
                threads,
                ffi.from_buffer("uint32_t[]", ids, require_writable=True),
                ffi.from_buffer("float[]", dists, require_writable=True),
                ffi.from_buffer("uint32_t[]", counts, require_writable=True),
                err,
            )
        finally:
            h.exit()
        _ffi.check(rc, err)

    def _search_items(
        self,
        items: np.ndarray,
        k: int,
        ef: int,
        cand: BatchCandidates,
        linear: Tuple[int, float],
        threads: int,
        ids: np.ndarray,
        dists: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        _check_buffers(items.ndim == 1, items.shape[0], k, ids, dists, counts)
        ffi = _ffi.ffi()
        lib = _ffi.lib()
        cptr, ncand, lens = self._candidates_args(cand, items.shape[0])
        err = ffi.new("char **")
        h = self._handle()
        value = h.enter()
        try:
            rc = lib.hannoy_reader_search_items(
                value,
                ffi.from_buffer("uint32_t[]", items),
                items.shape[0],
                k,
                ef,
                cptr,
                ncand,
                lens,
                linear[0],
                linear[1],
                threads,
                ffi.from_buffer("uint32_t[]", ids, require_writable=True),
                ffi.from_buffer("float[]", dists, require_writable=True),
                ffi.from_buffer("int32_t[]", counts, require_writable=True),
                err,
            )
        finally:
            h.exit()
        _ffi.check(rc, err)

    @staticmethod
    def _candidates_ptr(cand: np.ndarray) -> Tuple[Any, int]:
        ffi = _ffi.ffi()
        return ffi.from_buffer("uint32_t[]", cand if cand.size else _ONE_U32), int(cand.size)

    @classmethod
    def _candidates_args(cls, cand: BatchCandidates, rows: int) -> Tuple[Any, int, Any]:
        """(candidates, n_candidates, filter_lens) of hannoy_reader_search(_items)."""
        ffi = _ffi.ffi()
        if cand is None:
            return ffi.NULL, -1, ffi.NULL
        if isinstance(cand, tuple):
            ids, lens = cand
            if not (
                lens.dtype == np.int64 and lens.shape == (rows,) and lens.flags.c_contiguous
            ):  # pragma: no cover - an internal error, never a user error
                raise InternalError("internal error: per-query filters do not match %d rows" % rows)
            cptr, ncand = cls._candidates_ptr(ids)
            return cptr, ncand, ffi.from_buffer("int64_t[]", lens)
        cptr, ncand = cls._candidates_ptr(cand)
        return cptr, ncand, ffi.NULL

    @staticmethod
    def _row(ids: np.ndarray, dists: np.ndarray, count: int) -> Neighbours:
        return list(zip(ids[:count].tolist(), dists[:count].tolist()))

    def by_vec(
        self,
        query: Any,
        n: int = 10,
        ef_search: int = 200,
        *,
        candidates: Any = None,
        linear_below: int = LINEAR_BELOW,
        linear_below_ratio: float = LINEAR_BELOW_RATIO,
    ) -> Neighbours:
        """The ``n`` nearest items to a vector.

        Parameters
        ----------
        query : array-like of float
            ``dimensions`` finite numbers.
        n : int, default 10
            Number of neighbours (>= 1). Fewer come back when the index (or the candidate
            set) holds fewer items.
        ef_search : int, default 200
            Size of the search's candidate list (>= 1): larger is slower and more accurate.
        candidates : iterable or array of int, optional
            Only these item ids may be returned (an empty one matches nothing; ids that are
            not in the index are ignored).
        linear_below : int, default 1000
            With ``candidates``: when fewer than ``linear_below`` of them are items of the
            index (and ``linear_below_ratio`` agrees), the search computes the distance to
            each of them — exact results — instead of walking the graph. 0 never does. The
            rule and the defaults of upstream hannoy's ``linear_below``.
        linear_below_ratio : float, default 1.0
            The scan also needs those candidates to be at most this fraction of the index's
            items (0 to 1; 0 never scans). Upstream's ``linear_below_ratio``.

        Returns
        -------
        list of (int, float)
            ``(item id, distance)`` pairs, ascending by distance (ties by id).

        Examples
        --------
        >>> reader.by_vec([0.0, 1.0, 0.0], n=2)
        [(1, 0.0), (0, 2.0)]
        >>> reader.by_vec([0.0, 1.0, 0.0], n=2, candidates=[0, 2])
        [(0, 2.0), (2, 2.0)]
        """
        # The hot path of single-query loops: a list, a tuple or a float32 row, no candidates,
        # plain int arguments: one conversion call (a row: none), one library call with
        # per-thread out buffers, no numpy conversion. The list conversion refuses NaN and inf,
        # the library does for a row (as_vector then describes them, as always). Anything else
        # takes _by_vec, which checks everything first, in the order it always did.
        # linear_below and linear_below_ratio change nothing without candidates; given at all,
        # they take _by_vec, which checks them.
        if (
            candidates is not None
            or type(n) is not int
            or type(ef_search) is not int
            or not 0 < n <= _MAX_U32
            or not 0 < ef_search <= _MAX_U32
            or linear_below is not LINEAR_BELOW
            or linear_below_ratio is not LINEAR_BELOW_RATIO
        ):
            return self._by_vec(query, n, ef_search, candidates, linear_below, linear_below_ratio)
        h, csearch, search, pack, from_buffer, shape, dims, n_items = self._fast
        cls = type(query)
        if cls is list or cls is tuple:
            data = pack(query)
            if data is None:  # wrong length, not numbers, NaN, inf, beyond float32: as_vector
                return self._by_vec(query, n, ef_search, None)
        elif cls is np.ndarray and query.dtype is _F32 and query.shape == shape:
            data = query  # searched in place; C-contiguous only
        else:
            return self._by_vec(query, n, ef_search, None)
        k = n if n < n_items else (n_items or 1)
        if _ffi._forked:
            raise _ffi.forked_error()
        # No enter/exit bracket: the library takes one of the reader's transactions for the
        # search, and closing a reader waits until they are all given back (a search that comes
        # after finds the handle or the snapshot closed).
        value = h.value
        if not value:
            raise h.closed_error()
        if csearch is not None:  # the C extension calls the library and builds the list
            res = csearch(value, data, k, ef_search)
            if type(res) is list:
                return res
            if res is None:  # a row that is not C-contiguous
                return self._by_vec(query, n, ef_search, None)
            rc, message = res
        else:
            if data is query:
                try:
                    data = from_buffer(query)
                except (TypeError, ValueError, BufferError):
                    return self._by_vec(query, n, ef_search, None)
            s = getattr(_local, "scratch", None)
            if s is None or s.key != (dims, k):
                s = _local.scratch = _Scratch(dims, k)
            rc = search(value, data, dims, k, ef_search, s.p_ids, s.p_dists, s.p_counts, s.err)
            if not rc:
                c = s.p_counts[0]
                if c == k:
                    return list(zip(s.ids.tolist(), s.dists.tolist()))
                return list(zip(s.ids[:c].tolist(), s.dists[:c].tolist()))
            message = _ffi.take_string(s.err[0])
        if rc == STATUS_INVALID:
            as_vector(query, dims, "query")  # NaN or inf: the error and message as ever
        raise error_for_status(rc, message)

    def _by_vec(
        self,
        query: Any,
        n: Any,
        ef_search: Any,
        candidates: Any,
        linear_below: Any = LINEAR_BELOW,
        linear_below_ratio: Any = LINEAR_BELOW_RATIO,
    ) -> Neighbours:
        """by_vec for any arguments: each checked (and converted) in turn."""
        dims = self._dimensions
        n = as_positive(n, "n")
        ef_search = as_positive(ef_search, "ef_search")
        k = n if n < self._n_items else (self._n_items or 1)
        s = _scratch(dims, k)
        np.copyto(s.query, as_vector(query, dims, "query"))
        ffi = _ffi.ffi()
        if candidates is None:
            cptr, ncand = ffi.NULL, -1
        else:
            cptr, ncand = self._candidates_ptr(as_items(candidates, "candidates"))
        lb, ratio = _linear(linear_below, linear_below_ratio)
        lib = _ffi.lib()
        h = self._handle()
        value = h.enter()
        try:
            rc = lib.hannoy_reader_search(
                value, s.p_query, 1, dims, k, ef_search, cptr, ncand, ffi.NULL, lb, ratio, 1,
                s.p_ids, s.p_dists, s.p_counts, s.err,
            )  # fmt: skip
        finally:
            h.exit()
        if rc:
            _ffi.check(rc, s.err)
        c = s.p_counts[0]
        return list(zip(s.ids[:c].tolist(), s.dists[:c].tolist()))

    def by_item(
        self,
        item: int,
        n: int = 10,
        ef_search: int = 200,
        *,
        candidates: Any = None,
        linear_below: int = LINEAR_BELOW,
        linear_below_ratio: float = LINEAR_BELOW_RATIO,
    ) -> Optional[Neighbours]:
        """The ``n`` nearest items to a stored item (never the item itself).

        Parameters
        ----------
        item : int
            The id of a stored item.
        n, ef_search, candidates, linear_below, linear_below_ratio
            As in :meth:`by_vec` (the item counts among the candidates for the
            ``linear_below`` rule, as in upstream hannoy, but is never returned).

        Returns
        -------
        list of (int, float) or None
            None when the item is not in the index.

        Examples
        --------
        >>> reader.by_item(0, n=2)
        [(1, 2.0), (2, 2.0)]
        >>> reader.by_item(12345) is None
        True
        """
        if not (type(item) is int and 0 <= item <= _MAX_U32):
            item = as_item(item)
        if not (type(n) is int and 0 < n <= _MAX_U32):
            n = as_positive(n, "n")
        if not (type(ef_search) is int and 0 < ef_search <= _MAX_U32):
            ef_search = as_positive(ef_search, "ef_search")
        k = n if n < self._n_items else (self._n_items or 1)
        s = _scratch(self._dimensions, k)
        s.item[0] = item
        ffi = _ffi.ffi()
        if candidates is None:
            cptr, ncand = ffi.NULL, -1
        else:
            cptr, ncand = self._candidates_ptr(as_items(candidates, "candidates"))
        lb, ratio = _linear(linear_below, linear_below_ratio)
        lib = _ffi.lib()
        h = self._handle()
        value = h.enter()
        try:
            rc = lib.hannoy_reader_search_items(
                value, s.p_item, 1, k, ef_search, cptr, ncand, ffi.NULL, lb, ratio, 1,
                s.p_ids, s.p_dists, s.p_icounts, s.err,
            )  # fmt: skip
        finally:
            h.exit()
        if rc:
            _ffi.check(rc, s.err)
        c = int(s.icounts[0])
        if c < 0:
            return None
        return list(zip(s.ids[:c].tolist(), s.dists[:c].tolist()))

    def by_items(
        self,
        items: Any,
        n: int = 10,
        ef_search: int = 200,
        *,
        candidates: Any = None,
        threads: Optional[int] = None,
        linear_below: int = LINEAR_BELOW,
        linear_below_ratio: float = LINEAR_BELOW_RATIO,
    ) -> List[Optional[Neighbours]]:
        """:meth:`by_item` for many items at once, searched in parallel.

        Parameters
        ----------
        items : iterable or array of int
            Item ids (absent ones give None in the result).
        n, ef_search, linear_below, linear_below_ratio
            As in :meth:`by_vec`.
        candidates : optional
            One filter for every item, as in :meth:`by_vec`, or one filter per item: see
            :meth:`by_array`.
        threads : int, optional
            Threads used (default: every core).

        Returns
        -------
        list of (list of (int, float) or None)
            One entry per item, in order.

        Examples
        --------
        >>> reader.by_items([0, 999], n=1)
        [[(1, 2.0)], None]
        >>> reader.by_items([0, 1], n=1, candidates=[[2], None])
        [[(2, 2.0)], [(0, 2.0)]]
        """
        ids_in = as_items(items, "items")
        n = as_positive(n, "n")
        ef = as_positive(ef_search, "ef_search")
        m = ids_in.shape[0]
        cand = as_batch_candidates(candidates, m)
        t = as_threads(threads)
        linear = _linear(linear_below, linear_below_ratio)
        if m == 0:
            self._live()
            return []
        k = self._k(n)
        ids = np.empty((m, k), dtype=np.uint32)
        dists = np.empty((m, k), dtype=np.float32)
        counts = np.zeros(m, dtype=np.int32)
        self._search_items(ids_in, k, ef, cand, linear, t, ids, dists, counts)
        out: List[Optional[Neighbours]] = []
        for row in range(m):
            c = int(counts[row])
            out.append(None if c < 0 else self._row(ids[row], dists[row], c))
        return out

    def by_array(
        self,
        array: Any,
        n: int = 10,
        ef_search: int = 200,
        out: Optional[Tuple[np.ndarray, np.ndarray]] = None,
        *,
        candidates: Any = None,
        threads: Optional[int] = None,
        linear_below: int = LINEAR_BELOW,
        linear_below_ratio: float = LINEAR_BELOW_RATIO,
    ) -> Any:
        """Search with one query (1-D) or many queries (2-D, searched on every core).

        Parameters
        ----------
        array : array-like, shape (dimensions,) or (rows, dimensions)
            The queries (converted to float32).
        n, ef_search, linear_below, linear_below_ratio
            As in :meth:`by_vec`. The choice between scanning the candidates and walking the
            graph is made for each query, on its own filter.
        candidates : optional
            One filter for every query, as in :meth:`by_vec` (a flat sequence, set, range or
            1-D array of ids), or one filter per query:

            - a list or tuple (or 1-D object array, or iterator) of one element per query row,
              whose first element is a collection of ids or None: each element is a collection
              of ids (list, tuple, set, range, array...) for that query, or None for no filter;
            - a 2-D array of ids with one row per query.

            Whether it is per-query is read from the first element: a list of ints is always
            one filter, even when it has as many ids as there are queries. An empty collection
            matches nothing; None does not filter.
        out : (numpy.ndarray, numpy.ndarray), optional
            ``(ids, distances)`` buffers, uint32 and float32, C-contiguous and writeable, of
            shape ``(n,)`` for a 1-D query or ``(rows, n)`` for 2-D queries. They are filled in
            place; the slots after the results are padded with 4294967295 and +inf.
        threads : int, optional
            Threads for 2-D queries (default: every core).

        Returns
        -------
        list or None
            1-D: a list of ``(id, distance)``; 2-D: a list of such lists; None with ``out=``.

        Examples
        --------
        >>> import numpy as np
        >>> queries = np.eye(3, dtype=np.float32)
        >>> reader.by_array(queries, n=1)
        [[(0, 0.0)], [(1, 0.0)], [(2, 0.0)]]
        >>> ids = np.empty((3, 5), dtype=np.uint32)
        >>> dists = np.empty((3, 5), dtype=np.float32)
        >>> reader.by_array(queries, n=5, out=(ids, dists))
        >>> ids[0]
        array([         0,          1,          2, 4294967295, 4294967295], dtype=uint32)
        >>> reader.by_array(queries, n=1, candidates=[[1, 2], None, []])  # one filter per query
        [[(1, 2.0)], [(1, 0.0)], []]
        """
        queries, was_1d = as_queries(array, self._dimensions, "array")
        n = as_positive(n, "n")
        ef = as_positive(ef_search, "ef_search")
        rows = queries.shape[0]
        if out is not None:
            shape: Tuple[int, ...] = (n,) if was_1d else (rows, n)
            ids, dists = check_out(out, shape)
        cand = as_batch_candidates(candidates, rows)
        t = 1 if was_1d else as_threads(threads)
        linear = _linear(linear_below, linear_below_ratio)
        if rows == 0:
            self._live()
            return None if out is not None else []
        if out is not None:
            counts = np.zeros(rows, dtype=np.uint32)
            self._search(queries, n, ef, cand, linear, t, ids, dists, counts)
            return None
        k = self._k(n)
        ids = np.empty((rows, k), dtype=np.uint32)
        dists = np.empty((rows, k), dtype=np.float32)
        counts = np.zeros(rows, dtype=np.uint32)
        self._search(queries, k, ef, cand, linear, t, ids, dists, counts)
        if was_1d:
            return self._row(ids[0], dists[0], int(counts[0]))
        return [self._row(ids[r], dists[r], int(counts[r])) for r in range(rows)]

    # -- items -----------------------------------------------------------------------------

    def item_vector(self, item: int) -> Optional[np.ndarray]:
        """The stored vector of an item (float32, shape ``(dimensions,)``), or None.

        Binary metrics store bits: their vectors come back as 1.0 / 0.0 (hamming) or
        +1.0 / -1.0 (binary quantized).

        Examples
        --------
        >>> reader.item_vector(1)
        array([0., 1., 0.], dtype=float32)
        """
        item = as_item(item)
        buf = np.empty(self._dimensions, dtype=np.float32)
        ffi = _ffi.ffi()
        found = ffi.new("int32_t *")
        err = ffi.new("char **")
        h = self._handle()
        value = h.enter()
        try:
            rc = _ffi.lib().hannoy_reader_item_vector(
                value, item, ffi.from_buffer("float[]", buf), self._dimensions, found, err
            )
        finally:
            h.exit()
        _ffi.check(rc, err)
        return buf if found[0] else None

    def __contains__(self, item: object) -> bool:
        """``item in reader``: whether the item is in this index (False for non-ids)."""
        i = is_item(item)
        if i is None:
            return False
        ffi = _ffi.ffi()
        found = ffi.new("int32_t *")
        err = ffi.new("char **")
        h = self._handle()
        value = h.enter()
        try:
            rc = _ffi.lib().hannoy_reader_contains(value, i, found, err)
        finally:
            h.exit()
        _ffi.check(rc, err)
        return bool(found[0])

    def _len(self) -> int:
        ffi = _ffi.ffi()
        n = ffi.new("uint64_t *")
        err = ffi.new("char **")
        h = self._handle()
        value = h.enter()
        try:
            rc = _ffi.lib().hannoy_reader_len(value, n, err)
        finally:
            h.exit()
        _ffi.check(rc, err)
        return int(n[0])

    def __len__(self) -> int:
        """Number of items in the index.

        Examples
        --------
        >>> len(reader)
        3
        """
        return self._len()

    def item_ids(self) -> np.ndarray:
        """Every item id of the index, ascending (uint32 array).

        Examples
        --------
        >>> reader.item_ids()
        array([0, 1, 2], dtype=uint32)
        """
        ffi = _ffi.ffi()
        cap = self._n_items
        while True:
            buf = np.empty(max(cap, 1), dtype=np.uint32)
            n = ffi.new("uint64_t *")
            err = ffi.new("char **")
            h = self._handle()
            value = h.enter()
            try:
                rc = _ffi.lib().hannoy_reader_item_ids(
                    value, ffi.from_buffer("uint32_t[]", buf, require_writable=True), cap, n, err
                )
            finally:
                h.exit()
            _ffi.check(rc, err)
            total = int(n[0])
            if total <= cap:
                return buf[:total].copy() if total < buf.shape[0] else buf
            cap = total

    # -- information -----------------------------------------------------------------------

    def _info(self) -> Dict[str, Any]:
        ffi = _ffi.ffi()
        out = ffi.new("char **")
        err = ffi.new("char **")
        h = self._handle()
        value = h.enter()
        try:
            rc = _ffi.lib().hannoy_reader_info(value, out, err)
        finally:
            h.exit()
        _ffi.check(rc, err)
        text = _ffi.take_string(out[0])
        try:
            info = json.loads(text or "{}")
        except ValueError as e:
            raise HannoyError(
                "expected JSON from hannoy_reader_info, got %r (%s)" % (text, e)
            ) from None
        if not isinstance(info, dict):
            raise HannoyError("expected a JSON object from hannoy_reader_info, got %r" % (text,))
        return info

    def stats(self) -> Dict[str, Any]:
        """Facts about the index, for humans and dashboards.

        Keys include ``index``, ``metric``, ``dimensions``, ``n_items``, ``entry_points``,
        ``max_level``, ``version`` (the format), ``path`` and ``name`` (from the library),
        ``read_mode`` (``"memory"``, ``"compressed"`` or ``"disk"``), ``memory_budget`` and
        ``memory_budget_source`` (``"explicit"``, ``"environment"``, ``"automatic"`` or
        ``"unlimited"``), ``file_bytes`` (the used part of the file) and ``codes_bytes`` (memory
        held by compressed codes), plus ``library`` (the library's version and distance
        kernels).

        Examples
        --------
        >>> reader.stats()["n_items"]
        3
        """
        info = self._info()
        try:
            info.setdefault("library", _ffi.version())
        except HannoyError:  # pragma: no cover
            pass
        return info

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Release the reader's snapshot. Idempotent; searches afterwards raise
        :class:`~hannoy.ClosedError`.

        Examples
        --------
        >>> r = db.reader()
        >>> r.close()
        """
        if self._h is not None:
            self._h.close()

    def __enter__(self) -> "Reader":
        self._live()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.close()

    def _handle(self) -> SharedHandle:
        if self._h is None:  # pragma: no cover
            raise HannoyError("this reader was never opened")
        return self._h

    def _live(self) -> None:
        h = self._handle()
        h.enter()
        h.exit()

    def __reduce__(self) -> Any:
        # Pickling reopens the index by path in the other process (e.g. multiprocessing
        # with "spawn"): that reader sees the latest commit, not this reader's snapshot.
        return (Reader, (self._db, self._index))

    def _repr_html_(self) -> str:
        """HTML for Jupyter: path, index, metric, dimensions, items, entry points, layers,
        format version, read mode and file size. Never raises: a closed reader shows a
        "closed" note.

        Examples
        --------
        >>> reader   # the last expression of a notebook cell
        """
        from ._summary import reader_html, safe_html

        return safe_html(reader_html, self)

    def __repr__(self) -> str:
        if self.closed:
            return "<hannoy.Reader index=%d closed>" % self._index
        return "<hannoy.Reader index=%d metric=%s dimensions=%d items=%d>" % (
            self._index,
            self._metric,
            self._dimensions,
            self._n_items,
        )
