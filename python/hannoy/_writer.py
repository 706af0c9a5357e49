"""Writer: one write transaction on one index of a database."""

from __future__ import annotations

import array
import sys
import threading
import weakref
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from . import _ffi
from ._base import DatabaseLike, ProgressCallback
from ._convert import (
    MAX_INDEX,
    MAX_U32,
    MAX_U64,
    as_bool_or_callable,
    as_int,
    as_item,
    as_items,
    as_matrix,
    as_threads,
    as_vector,
    describe,
    is_item,
    vector_packer,
)
from ._errors import InvalidArgumentError, error_for_status
from ._handle import WriterHandle
from ._metric import Metric

__all__ = ["Writer", "PHASES"]

#: Names of the build phases reported by ``hannoy_writer_progress`` (index = phase code).
PHASES: Tuple[str, ...] = (
    "idle",
    "retrieving updated items",
    "repairing deleted links",
    "inserting items",
    "writing links",
    "writing metadata",
    "done",
)

_F32 = np.dtype(np.float32)

# add_item hands its vectors to the library in batches of up to this many items and bytes.
_BATCH_ITEMS = 256
_BATCH_BYTES = 1 << 20
# Batches of vectors of at least this many bytes are stored in the background; smaller ones at
# once. LMDB keeps a value this large on a page of its own (an overflow page), which costs
# several times what the conversion does; a small one is cheaper to store than to hand over.
# Measured here (add_item loops, alternated runs of each way): 50-d GloVe, 1.1-1.3 us per call
# stored at once against 1.2-2.0 queued (7 pairs); 784-d Fashion-MNIST, 8.5-9.0 at once against
# 8.1-10.2 queued (3 pairs), and without the C conversion 10.8-17.4 at once against 7.6-8.0
# queued (2 pairs).
_QUEUE_BYTES = 2048

# Writers opened by each thread, for Database.commit_rw_txn() / abort_rw_txn().
_local = threading.local()

_POLL_SECONDS = 0.1


def _thread_writers() -> List["weakref.ref[Writer]"]:
    lst = getattr(_local, "writers", None)
    if lst is None:
        lst = _local.writers = []
    return lst


def end_thread_writers(how: str) -> bool:
    """Commit (how="commit") or abort every open writer created by the calling thread.

    Returns False when there was none. Every writer is ended; the first error is raised after.
    """
    refs = _thread_writers()
    writers = [w for w in (r() for r in refs) if w is not None and not w.closed]
    refs.clear()
    first: Optional[BaseException] = None
    for w in writers:
        try:
            if how == "commit":
                w.commit()
            else:
                w.abort()
        except Exception as e:  # keep ending the others
            if first is None:
                first = e
    if first is not None:
        raise first
    return bool(writers)


class _Progress:
    """Polls hannoy_writer_progress and reports to a callable and/or a tqdm bar."""

    def __init__(self, spec: Union[None, bool, ProgressCallback]) -> None:
        self.callback: Optional[ProgressCallback] = spec if callable(spec) else None
        self.bar_wanted = spec is True
        self.bar: Any = None
        self.tqdm: Any = None
        self.last: Optional[Tuple[str, int, int]] = None
        if self.bar_wanted:
            try:
                from tqdm.auto import tqdm  # optional dependency: pip install hannoy[progress]
            except Exception:  # tqdm missing (or broken): silently no bar
                self.bar_wanted = False
            else:
                self.tqdm = tqdm
        self.active = self.callback is not None or self.bar_wanted
        self._buf: Any = None

    def poll(self, lib: Any, handle: int) -> None:
        if not self.active:
            return
        if self._buf is None:
            ffi = _ffi.ffi()
            self._buf = (ffi.new("int32_t *"), ffi.new("uint64_t *"), ffi.new("uint64_t *"))
        phase, done, total = self._buf
        if lib.hannoy_writer_progress(handle, phase, done, total) != 0:
            return
        p = int(phase[0])
        name = PHASES[p] if 0 <= p < len(PHASES) else "phase %d" % p
        self.report(name, int(done[0]), int(total[0]))

    def report(self, name: str, done: int, total: int) -> None:
        state = (name, done, total)
        if state == self.last:
            return
        previous = self.last
        self.last = state
        if self.bar_wanted and name != "idle":
            self._draw(name, done, total, previous)
        if self.callback is not None:
            self.callback(name, done, total)

    def _draw(
        self, name: str, done: int, total: int, previous: Optional[Tuple[str, int, int]]
    ) -> None:
        """Show a state on the bar: one bar, reset at each phase (tqdm.auto: a widget in
        Jupyter, text on stderr elsewhere)."""
        if name == "done":
            # The library ends with ("done", n, n), n the items inserted or deleted (0 when
            # nothing changed): show the last phase's count as complete then (a notebook bar
            # left short of its total when closed turns red).
            total = total or (self.bar.total if self.bar is not None else 0) or 0
            done = total
        if self.bar is None:
            self.bar = self.tqdm(total=total or None, desc=name, unit="item", leave=True)
        elif previous is not None and previous[0] != name:
            if name != "done":  # "done" keeps the last phase's elapsed time and rate
                self.bar.reset(total=total or None)
            self.bar.set_description(name, refresh=False)
        if total and self.bar.total != total:
            # reset, not an assignment to .total: the notebook widget takes its maximum from
            # reset (an assigned total leaves the widget's bar at the old one)
            self.bar.reset(total=total)
        self.bar.n = done
        self.bar.refresh()

    def finish(self) -> None:
        if not self.active:
            return
        if self.last is None or self.last[0] != "done":
            done, total = (self.last[1], self.last[2]) if self.last else (0, 0)
            if total and done < total:
                done = total
            self.report("done", done, total)

    def close(self) -> None:
        if self.bar is not None:
            try:
                self.bar.close()
            finally:
                self.bar = None


class _Finished:
    """The end of the build thread, waited for with a plain lock.

    The thread holds ``lock`` until it ends; the caller waits with ``lock.acquire(timeout)``.
    Not an Event: Event.wait runs Condition.wait, and a KeyboardInterrupt raised inside it, just
    after the condition's lock was released, makes the ``with`` around it release an unlocked
    lock (CPython 3.11: ``RuntimeError: release unlocked lock`` instead of the
    KeyboardInterrupt); an interrupted ``Lock.acquire`` simply did not acquire. Not
    Thread.join either: a KeyboardInterrupt raised inside Thread.join(timeout) can mark a
    thread that is still running as stopped (bpo-45274's fix), and hannoy must not call the
    writer again while its build is running.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.ended = False  # set by the thread just before it releases the lock

    def end(self) -> None:
        """Called by the thread, last."""
        self.ended = True
        self.lock.release()

    def wait(self, timeout: float) -> bool:
        """True once the thread has ended (or within timeout seconds, False)."""
        return self.ended or self.lock.acquire(timeout=timeout)


def _wait(done: _Finished) -> None:
    """Wait for the build thread, ignoring further KeyboardInterrupts (a cancel is under way)."""
    while True:
        try:
            if done.wait(_POLL_SECONDS):
                return
        except KeyboardInterrupt:
            pass


class _Pending:
    """The items ``add_item`` accepted and has not handed to the library yet.

    One library call per item costs more than the item itself (a cffi call, a crossing into Go,
    two handle look-ups), so ``add_item`` checks each vector completely at its own call (its
    dimensions, numbers only, finite in float32: a bad vector is refused there, with the error
    it always had, and changes nothing) and keeps it as float32 bytes. When ``cap`` items are
    pending they are handed over in one call: vectors of at least ``_QUEUE_BYTES`` are queued
    (``hannoy_writer_queue_items``: the library copies them and stores them in the background
    while the caller goes on, so converting the next items and writing these to LMDB overlap),
    smaller ones stored at once (``hannoy_writer_add_items``). Every other operation of the
    writer first hands over what is pending and waits for the queued batch (``_ready``), so it
    sees every item added before it, in order; a batch that fails (a full map: the transaction
    can only be aborted then) is reported by the call that stored it, or, queued, by the
    writer's next call. ``add_item`` adds pairs without the writer handle's lock; everything
    else runs under it.
    """

    __slots__ = (
        "h", "dims", "shape", "high", "pack", "cap", "queue", "items", "inflight", "add_items",
        "queue_items", "err",
    )  # fmt: skip

    def __init__(self, h: WriterHandle, lib: Any, dims: int, err: Any) -> None:
        self.h = h
        self.dims = dims
        self.shape = (dims,)
        # the byte of each float32 that holds the sign and the 7 high exponent bits
        self.high = slice(3 if sys.byteorder == "little" else 0, None, 4)
        self.pack = vector_packer(dims)  # finite float32 bytes of a list or tuple, or None
        # up to cap items, each as two entries, its id and its float32 bytes (added by one
        # list operation: a KeyboardInterrupt cannot separate them)
        self.cap = 2 * max(1, min(_BATCH_ITEMS, _BATCH_BYTES // (4 * dims)))
        self.queue = 4 * dims >= _QUEUE_BYTES  # full batches stored in the background
        self.items: List[Any] = []
        self.inflight = False  # a queued batch may still be being stored
        self.add_items = lib.hannoy_writer_add_items
        self.queue_items = lib.hannoy_writer_queue_items
        self.err = err

    def flush(self, value: int, queue: bool) -> None:
        """Hand the pending items to the library (handle value ``value``): queued, or stored
        before returning. On failure they are dropped with the error: only a failure of the
        transaction itself (a full map, a disk error) can come here, after which it can only
        be aborted."""
        if _ffi._forked:
            raise _ffi.forked_error()
        ffi = _ffi.ffi()
        items = self.items
        n = len(items)
        ids = array.array(_U32_CODE, items[0:n:2])
        vecs = b"".join(items[1:n:2])
        call = self.queue_items if queue else self.add_items
        rc = call(
            value, ffi.from_buffer("uint32_t[]", ids), ffi.from_buffer("float[]", vecs),
            len(ids), self.dims, self.err,
        )  # fmt: skip
        # Only now: interrupted before the call, nothing accepted is lost (interrupted right
        # after it, the items go again with the next batch, which stores them once more, in
        # the same order).
        del items[:n]
        self.inflight = queue and not rc
        if rc:
            raise error_for_status(rc, _ffi.take_string(self.err[0]))

    def settle(self, value: int) -> None:
        """Wait until the queued batch is stored (raising its error, if it failed)."""
        if _ffi._forked:
            raise _ffi.forked_error()
        self.inflight = False
        ffi = _ffi.ffi()
        rc = self.add_items(value, ffi.NULL, ffi.NULL, 0, self.dims, self.err)
        if rc:
            raise error_for_status(rc, _ffi.take_string(self.err[0]))

    def take_back(self, data: bytes) -> bool:
        """Remove the pending pair whose vector is ``data`` (by identity); False if none is."""
        items = self.items
        for i in range(len(items) - 1, 0, -2):
            if items[i] is data:
                del items[i - 1 : i + 1]
                return True
        return False

    def discard(self) -> None:
        self.items.clear()
        self.inflight = False


# array.array typecode of 4-byte unsigned integers ("I" on every platform hannoy builds on)
_U32_CODE = "I" if array.array("I").itemsize == 4 else "L"


class Writer:
    """A write transaction on one index of a :class:`Database`.

    Obtain one with :meth:`Database.writer`. The write transaction begins when the writer is
    created (this waits while another writer, in any thread or process, holds the database's
    write lock) and ends with :meth:`commit` or :meth:`abort`. Used as a context manager, the
    writer builds (if needed) and commits on a clean exit, and aborts when the block raises:
    nothing written in the block persists and the exception propagates.

    A writer may be used from any thread, one call at a time (calls from several threads are
    serialised). It sees its own uncommitted changes; readers see the last commit.

    Parameters
    ----------
    database : Database
        The database to write to.
    dimensions : int
        Number of dimensions of the vectors (>= 1).
    index : int, default 0
        The index in the database (0..65535); one database holds many independent indexes.
    m : int, default 16
        HNSW links per node on the upper layers (>= 2).
    ef : int, default 96
        ``ef_construction``: the size of the candidate list during the build (>= 1).
    m0 : int, optional
        Links per node on layer 0 (>= m); default ``2 * m``.
    seed : int, optional
        Seed of the level generator: with ``threads=1`` builds are reproducible.
    progress : bool or callable, optional
        ``True`` shows a tqdm progress bar during builds (when tqdm is installed); a callable
        receives ``(phase: str, done: int, total: int)`` while building (raising from it
        cancels the build like Ctrl-C).
    threads : int, optional
        Threads used by the build; default every core.

    Examples
    --------
    >>> import hannoy, numpy as np
    >>> db = hannoy.Database("/tmp/hannoy-example", hannoy.Metric.EUCLIDEAN)
    >>> with db.writer(3, m=4, ef=10) as w:
    ...     w.add_item(0, [1.0, 0.0, 0.0])
    ...     w.add_items([1, 2], np.eye(3, dtype=np.float32)[1:])
    >>> db.reader().by_vec([0.0, 1.0, 0.0], n=1)
    [(1, 0.0)]

    Without ``with``:

    >>> w = db.writer(3, seed=7, threads=1)
    >>> w.del_item(2)
    True
    >>> w.build()
    >>> w.commit()
    """

    def __init__(
        self,
        database: DatabaseLike,
        dimensions: int,
        index: int = 0,
        m: int = 16,
        ef: int = 96,
        *,
        m0: Optional[int] = None,
        seed: Optional[int] = None,
        progress: Union[None, bool, ProgressCallback] = None,
        threads: Optional[int] = None,
    ) -> None:
        self._h: Optional[WriterHandle] = None
        dbh = getattr(database, "_h", None)
        if dbh is None:
            raise TypeError("database must be a hannoy.Database, got %s" % describe(database))
        self._db = database
        self._dimensions = as_int(dimensions, "dimensions", 1, MAX_U32)
        self._index = as_int(index, "index", 0, MAX_INDEX)
        self._m = as_int(m, "m", 2, MAX_U32)
        if m0 is None:
            self._m0 = 2 * self._m
        else:
            self._m0 = as_int(m0, "m0", 0, MAX_U32)
            if self._m0 < self._m:
                raise InvalidArgumentError(
                    "m0 must be an integer >= m (%d), got %d" % (self._m, self._m0)
                )
        self._ef = as_int(ef, "ef", 1, MAX_U32)
        self._seed = None if seed is None else as_int(seed, "seed", 0, MAX_U64)
        self._progress = as_bool_or_callable(progress, "progress")
        self._threads = None if threads is None else as_threads(threads)

        ffi = _ffi.ffi()
        lib = _ffi.lib()
        out = ffi.new("uint64_t *")
        err = ffi.new("char **")
        value = dbh.enter()
        try:
            rc = lib.hannoy_writer_open(
                value,
                self._index,
                self._dimensions,
                self._m,
                self._m0,
                self._ef,
                0 if self._seed is None else 1,
                0 if self._seed is None else self._seed,
                0 if self._threads is None else self._threads,
                out,
                err,
            )
        finally:
            dbh.exit()
        _ffi.check(rc, err)
        self._h = WriterHandle(int(out[0]), dbh)
        self._finalizer = weakref.finalize(self, self._h.finalize)
        _thread_writers().append(weakref.ref(self))
        # The writer's out cells and error cell (used under the handle's lock), and what
        # add_item needs: a list or tuple of floats becomes float32 bytes in one call
        # (_convert.vector_packer).
        self._err = ffi.new("char **")
        self._cell = ffi.new("int32_t *")
        self._pending = _Pending(self._h, lib, self._dimensions, self._err)

    # -- properties ------------------------------------------------------------------------

    @property
    def database(self) -> DatabaseLike:
        """The :class:`Database` this writer writes to."""
        return self._db

    @property
    def dimensions(self) -> int:
        """Number of dimensions of the vectors."""
        return self._dimensions

    @property
    def index(self) -> int:
        """The index (0..65535) this writer writes to."""
        return self._index

    @property
    def metric(self) -> Metric:
        """The database's :class:`Metric`."""
        return self._db.metric

    @property
    def m(self) -> int:
        """Links per node on the upper layers."""
        return self._m

    @property
    def m0(self) -> int:
        """Links per node on layer 0."""
        return self._m0

    @property
    def ef(self) -> int:
        """``ef_construction`` of the build."""
        return self._ef

    @property
    def seed(self) -> Optional[int]:
        """The build seed, or None."""
        return self._seed

    @property
    def threads(self) -> Optional[int]:
        """Build threads (None = every core)."""
        return self._threads

    @property
    def closed(self) -> bool:
        """True after :meth:`commit` or :meth:`abort` (or a failed build)."""
        return self._h is None or not self._h.is_open

    # -- writes ----------------------------------------------------------------------------

    def add_item(self, item: int, vector: Any) -> None:
        """Store (or overwrite) the vector of an item.

        Parameters
        ----------
        item : int
            The item id, 0..2**32-1.
        vector : array-like of float
            ``dimensions`` finite numbers (converted to float32).

        Notes
        -----
        The vector is checked at once (a bad one raises here and changes nothing), then handed
        to the library with the next items in batches: vectors of 512 dimensions or more are
        written in the background while the following ones are converted, smaller ones when
        their batch is full. Every other call of the writer sees the items added before it. A
        failure of the transaction itself while a batch is written (a full map:
        :class:`~hannoy.MapFullError`) is raised by the call that wrote it or, in the
        background, by the writer's next call; the writer can then only be aborted, as after
        any such failure.

        Examples
        --------
        >>> with db.writer(3) as w:
        ...     w.add_item(42, [0.5, -1.0, 2.0])
        """
        # The hot path of upstream-style loops (add_item(i, row.tolist())): no numpy and, for
        # all but one call in _BATCH_ITEMS, no library call for a list, a tuple or a float32
        # row (see _Pending). Anything else goes through as_vector, which raises what it always
        # raised.
        p = self._pending
        if type(item) is not int or item < 0 or item > MAX_U32:
            item = as_item(item)
        cls = type(vector)
        if cls is list or cls is tuple:
            # finite float32 bytes, or None: wrong length, not numbers, NaN, inf, beyond float32
            data = p.pack(vector)
        elif cls is np.ndarray and vector.dtype is _F32 and vector.shape == p.shape:
            data = vector.tobytes()
            # NaN and inf have every exponent bit set, so their high byte is 0x7f or 0xff; the
            # few finite values with exponent 0xfe share it: as_vector decides.
            if 0x7F in (high := data[p.high]) or 0xFF in high:
                data = None
        else:
            data = None
        if data is None:
            data = as_vector(vector, p.dims, "vector").tobytes()  # or raises
        if _ffi._forked:
            raise _ffi.forked_error()
        # No lock (it cost a quarter of the call): one list operation adds the pair, atomic
        # under the GIL; flushes hold the lock and take the pairs from the front, so pairs added
        # meanwhile stay pending.
        items = p.items
        items += (item, data)
        h = p.h
        if h.value and len(items) < p.cap:
            return
        with h.lock:
            if not h.value:
                # Ended, before this call or meanwhile: the pair went with everything pending
                # (committed, or aborted) unless it is still here: then it was never accepted.
                if p.take_back(data):
                    raise h.closed_error()
                return
            if len(items) >= p.cap:
                p.flush(h.value, p.queue)

    def add_items(self, items: Any, vectors: Any) -> None:
        """Store (or overwrite) many items at once, in one call (all or nothing).

        Parameters
        ----------
        items : iterable or array of int
            ``n`` item ids, 0..2**32-1.
        vectors : array-like, shape (n, dimensions)
            One row per item (converted to float32, C order).

        Examples
        --------
        >>> import numpy as np
        >>> vectors = np.random.default_rng(0).random((1000, 3), dtype=np.float32)
        >>> with db.writer(3) as w:
        ...     w.add_items(np.arange(1000), vectors)
        """
        ids = as_items(items, "items")
        if ids.size == 0 and (
            (isinstance(vectors, np.ndarray) and vectors.shape == (0,))
            or (isinstance(vectors, (list, tuple)) and len(vectors) == 0)
        ):  # nothing to add (np.ndim would raise on ragged rows: leave those to as_matrix)
            return
        mat = as_matrix(vectors, self._dimensions, "vectors")
        if mat.shape[0] != ids.shape[0]:
            raise InvalidArgumentError(
                "add_items requires as many items as the array has rows: got %d items for %d rows"
                % (ids.shape[0], mat.shape[0])
            )
        if ids.shape[0] == 0:
            self._live()
            return
        self._add(ids, mat)

    def _add(self, ids: np.ndarray, mat: np.ndarray) -> None:
        ffi = _ffi.ffi()
        lib = _ffi.lib()
        h = self._handle()
        with h.lock:
            value = self._ready(h)
            rc = lib.hannoy_writer_add_items(
                value,
                ffi.from_buffer("uint32_t[]", ids),
                ffi.from_buffer("float[]", mat),
                ids.shape[0],
                self._dimensions,
                self._err,
            )
            _ffi.check(rc, self._err)

    def del_item(self, item: int) -> bool:
        """Delete an item; return True if it existed.

        Examples
        --------
        >>> with db.writer(3) as w:
        ...     w.del_item(42)
        True
        """
        item = as_item(item)
        return self._flag("hannoy_writer_del_item", item)

    def clear(self) -> None:
        """Delete every item of this index (the index is empty after the next build).

        Examples
        --------
        >>> with db.writer(3) as w:
        ...     w.clear()
        """
        h = self._handle()
        with h.lock:
            _ffi.call("hannoy_writer_clear", self._ready(h))

    # -- reads inside the transaction ------------------------------------------------------

    def need_build(self) -> bool:
        """True when the index has changes (or no graph) that a :meth:`build` would link.

        Examples
        --------
        >>> w = db.writer(3)
        >>> w.add_item(0, [1.0, 2.0, 3.0])
        >>> w.need_build()
        True
        """
        lib = _ffi.lib()
        h = self._handle()
        with h.lock:
            value = self._ready(h)
            _ffi.check(lib.hannoy_writer_need_build(value, self._cell, self._err), self._err)
            return bool(self._cell[0])

    def __contains__(self, item: object) -> bool:
        """``item in writer``: whether the item is stored (built or not)."""
        i = is_item(item)
        if i is None:
            return False
        return self._flag("hannoy_writer_contains", i)

    def __len__(self) -> int:
        """Number of items stored in the index (built or not), as seen by this transaction."""
        lib = _ffi.lib()
        n = _ffi.ffi().new("uint64_t *")
        h = self._handle()
        with h.lock:
            value = self._ready(h)
            _ffi.check(lib.hannoy_writer_len(value, n, self._err), self._err)
            return int(n[0])

    def item_vector(self, item: int) -> Optional[np.ndarray]:
        """The stored vector of an item (float32, shape ``(dimensions,)``), or None.

        Examples
        --------
        >>> w.item_vector(0)
        array([1., 2., 3.], dtype=float32)
        """
        item = as_item(item)
        out = np.empty(self._dimensions, dtype=np.float32)
        ffi = _ffi.ffi()
        lib = _ffi.lib()
        h = self._handle()
        with h.lock:
            value = self._ready(h)
            rc = lib.hannoy_writer_item_vector(
                value, item, ffi.from_buffer("float[]", out), self._dimensions, self._cell, self._err
            )
            _ffi.check(rc, self._err)
            found = bool(self._cell[0])
        return out if found else None

    # -- build, commit, abort --------------------------------------------------------------

    def build(self) -> None:
        """Link every change since the last build into the HNSW graph (on every core).

        The build runs in a helper thread while this thread waits, reports progress (see the
        ``progress`` keyword) and stays responsive to Ctrl-C: a ``KeyboardInterrupt`` (or an
        exception raised by the progress callable) cancels the build, aborts this writer
        (the database stays exactly as it was at its last commit) and is re-raised. A build
        that fails also aborts the writer.

        Examples
        --------
        >>> w = db.writer(3, progress=True)
        >>> w.add_items(range(3), np.eye(3))
        >>> w.build()
        >>> w.commit()
        """
        h = self._handle()
        with h.lock:
            value = self._ready(h)
            lib = _ffi.lib()
            ffi = _ffi.ffi()
            result: List[Any] = [3, "the build thread ended without a result"]

            done = _Finished()

            def run() -> None:
                err = ffi.new("char **")
                try:
                    rc = lib.hannoy_writer_build(value, err)
                    result[1] = _ffi.take_string(err[0]) if rc else None
                    result[0] = rc
                except BaseException as e:  # pragma: no cover - cffi does not raise here
                    result[0], result[1] = 3, "hannoy_writer_build failed: %r" % (e,)
                finally:
                    done.end()

            reporter = _Progress(self._progress)
            thread = threading.Thread(target=run, name="hannoy-build", daemon=True)
            h.building = True
            try:
                thread.start()
                try:
                    reporter.poll(lib, value)
                    # a lock, not an Event or Thread.join: see _Finished
                    while not done.wait(_POLL_SECONDS):
                        reporter.poll(lib, value)
                    if result[0] == 0:
                        reporter.poll(lib, value)
                        reporter.finish()
                except BaseException:
                    # Ctrl-C (or the progress callable raised): cancel, wait, abort, re-raise.
                    if thread.ident is not None and not done.ended:
                        lib.hannoy_writer_cancel(value)
                        _wait(done)
                    h.building = False
                    h.end("abort", raise_errors=False)
                    raise
                finally:
                    reporter.close()
            finally:
                h.building = False
            status = result[0]
            if status:
                h.end("abort", raise_errors=False)
                raise error_for_status(status, result[1])

    def commit(self) -> None:
        """Commit the transaction (without building) and close the writer.

        Readers opened afterwards see the changes. Commit changes that were not built and the
        index raises :class:`~hannoy.NeedBuildError` for readers until a later writer builds
        it; ``with db.writer(...)`` builds before committing.

        Examples
        --------
        >>> w = db.writer(3)
        >>> w.add_item(0, [1.0, 2.0, 3.0])
        >>> w.build()
        >>> w.commit()
        """
        h = self._handle()
        if h.building or not _ffi.fork_safe():
            # cancels the build (which took everything pending) and refuses; in a forked
            # child, forgets the writer without calling the library
            h.end("commit")
            return
        with h.lock:  # nothing is added between the hand-over and the commit
            if h.value:
                self._ready(h)
            h.end("commit")

    def abort(self) -> None:
        """Abort the transaction and close the writer: nothing it wrote persists.

        Examples
        --------
        >>> w = db.writer(3)
        >>> w.clear()
        >>> w.abort()          # the index is untouched
        """
        self._pending.discard()
        self._handle().end("abort")

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> "Writer":
        self._live()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        h = self._h
        if h is None or not h.is_open:
            return None  # committed or aborted inside the block
        if exc_type is not None:
            self._pending.discard()
            h.end("abort", raise_errors=False)
            return None  # the exception propagates
        try:
            if self.need_build():
                self.build()
            self.commit()
        except BaseException:
            h.end("abort", raise_errors=False)
            raise
        return None

    # -- helpers ---------------------------------------------------------------------------

    def _handle(self) -> WriterHandle:
        if self._h is None:  # pragma: no cover - only if __init__ failed
            raise InvalidArgumentError("this writer was never opened")
        return self._h

    def _live(self) -> int:
        h = self._handle()
        with h.lock:
            return h.live()

    def _ready(self, h: WriterHandle) -> int:
        """The live handle value, once the items add_item accepted are in the library's
        transaction (the caller holds the lock)."""
        value = h.live()
        p = self._pending
        if p.items:
            p.flush(value, False)  # also waits for the queued batch
        elif p.inflight:
            p.settle(value)
        p.inflight = False
        return value

    def _flag(self, fn: str, item: int) -> bool:
        lib = _ffi.lib()
        h = self._handle()
        with h.lock:
            value = self._ready(h)
            _ffi.check(getattr(lib, fn)(value, item, self._cell, self._err), self._err)
            return bool(self._cell[0])

    def __reduce__(self) -> Any:
        raise TypeError(
            "hannoy.Writer objects cannot be pickled: a write transaction belongs to the "
            "process that opened it"
        )

    def __repr__(self) -> str:
        try:
            path = self._db.path
        except Exception:  # pragma: no cover
            path = "?"
        head = "<hannoy.Writer path=%r index=%d dimensions=%d metric=%s m=%d m0=%d ef=%d" % (
            path,
            self._index,
            self._dimensions,
            self._db.metric,
            self._m,
            self._m0,
            self._ef,
        )
        h = self._h
        if h is None or not h.is_open:
            state = h.state if h is not None else "not opened"
            return head + " closed (%s)>" % state
        return head + ">"
