"""Sharded indexes on a Dask cluster: build on the workers, search on every shard at once.

``hannoy.dask`` spreads one index over ``shards`` plain hannoy databases in one directory and
runs their builds and searches as Dask tasks (``dask.distributed``), one per shard. It needs
Dask: ``pip install hannoy[dask]``. ``import hannoy`` never imports it.

The directory holds ``shard-0000/``, ``shard-0001/`` ... (each a hannoy database directory that
opens with :class:`hannoy.Database`) and ``hannoy-shards.json``, a small manifest: the metric,
the dimensions, the number of shards, the build parameters, the shard function and a format
number. The shard of an item is a fixed function of its id (:func:`shard_of`), so adds and
deletes go to their shard without a lookup. The directory must be reachable, at the same path,
from every worker (a shared file system, or the machine of a local cluster); the client process
itself never reads or writes it.

Searches fan out to the workers: shard ``s`` goes to the ``s % workers``-th worker (by address)
when it is up, and each worker keeps the readers of the shards it searched open between calls,
reopening one when its shard has changed. The client merges the ``n`` best results of every
shard by ``(distance, id)``, as one index orders them: a sharded search returns exactly what
searching each shard database and merging would.

``client=None`` uses the current Dask client (``distributed.default_client()``), or, when there
is none, plain threads in this process.

Examples
--------
>>> import numpy as np, hannoy.dask as hd
>>> from hannoy import Metric
>>> from dask.distributed import Client, LocalCluster
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
>>> vectors = np.random.default_rng(0).random((10_000, 32), dtype=np.float32)
>>> idx = hd.build(vectors, "/tmp/hannoy-sharded", metric=Metric.EUCLIDEAN, shards=4)
>>> ids, dists = idx.by_array(vectors[:5], n=3)
>>> ids[:, 0]
array([0, 1, 2, 3, 4], dtype=uint32)
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import operator
import os
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as _wait_all
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

try:
    import dask  # noqa: F401  (the extra this module belongs to; distributed is imported lazily)
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "hannoy.dask needs Dask: pip install 'hannoy[dask]' (installs dask[distributed])"
    ) from _e

from . import __version__
from ._convert import (
    MAX_ITEM,
    MAX_U32,
    MAX_U64,
    as_int,
    as_items,
    as_matrix,
    as_path,
    as_positive,
    as_queries,
    describe,
)
from ._database import Database
from ._errors import (
    ArgumentTypeError,
    ClosedError,
    CorruptDatabaseError,
    DiskFullError,
    HannoyError,
    HannoyIOError,
    InvalidArgumentError,
)
from ._metric import Metric, as_metric
from ._reader import Reader

__all__ = [
    "build", "ShardedIndex", "shard_of", "WorkerLostError", "MANIFEST", "FORMAT", "MAX_SHARDS",
]  # fmt: skip

#: File name of the manifest inside a sharded index's directory.
MANIFEST = "hannoy-shards.json"
#: Format number of the manifest (and of the layout it describes) written by this version.
FORMAT = 1
#: Largest number of shards.
MAX_SHARDS = 4096

_LOCK_FILE = "hannoy-shards.lock"
_TMP_PREFIX = "." + MANIFEST + ".tmp-"
_SHARD_DIR = "shard-%04d"
_MULTIPLIER = 2654435761  # 0x9E3779B1, Knuth's multiplicative hash (a prime near 2**32 / phi)
_SHARD_FUNCTION = {
    "name": "multiplicative-hash-32",
    "multiplier": _MULTIPLIER,
    "expression": "shard = (((id * 2654435761) mod 2**32) * shards) div 2**32",
}
_SCATTER_BYTES = 1 << 20  # larger arguments are scattered to the workers once, not sent per task
_WORKERS_TTL = 5.0  # seconds a client's list of workers is reused


class WorkerLostError(HannoyError):
    """A Dask worker died while it ran a shard's task (Dask's ``KilledWorker``).

    Nothing is damaged: a shard whose write was under way is at its last commit (which may or
    may not include the call's changes, if the worker died just after committing). Repeat the
    call: builds, adds and deletes can all be repeated. The worker's log says why it died.
    """


# -- the shard function -----------------------------------------------------------------------


def shard_of(ids: Any, shards: int) -> np.ndarray:
    """The shard of each item id: ``(((id * 2654435761) mod 2**32) * shards) div 2**32``.

    A fixed function of the id and the number of shards (recorded in the manifest), so adds and
    deletes need no lookup. The multiplicative hash spreads consecutive ids (and ids with a
    common stride) evenly over the shards.

    Parameters
    ----------
    ids : iterable or array of int
        Item ids, 0..2**32-1.
    shards : int
        The number of shards (1..4096).

    Returns
    -------
    numpy.ndarray
        The shard (0..shards-1) of each id, dtype intp.

    Examples
    --------
    >>> hd.shard_of([0, 1, 2, 3, 4, 5], 4)
    array([0, 2, 0, 3, 1, 0])
    """
    a = as_items(ids, "ids")
    s = as_int(shards, "shards", 1, MAX_SHARDS)
    return _shard_of(a, s)


def _shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    h = (ids.astype(np.uint64) * np.uint64(_MULTIPLIER)) & np.uint64(0xFFFFFFFF)
    return ((h * np.uint64(shards)) >> np.uint64(32)).astype(np.intp)


def _split(ids: np.ndarray, mat: Optional[np.ndarray], shards: int) -> List[Tuple[Any, Any]]:
    """(ids, rows) of each shard, in their order of arrival (a later id overwrites an earlier)."""
    if shards == 1:
        return [(ids, mat)]
    s = _shard_of(ids, shards)
    order = np.argsort(s, kind="stable")
    ends = np.cumsum(np.bincount(s, minlength=shards))
    out = []
    start = 0
    for end in ends.tolist():
        o = order[start:end]
        out.append((ids[o], None if mat is None else mat[o]))
        start = end
    return out


def _shard_path(directory: str, shard: int) -> str:
    return os.path.join(directory, _SHARD_DIR % shard)


# -- the manifest ------------------------------------------------------------------------------


def _manifest_path(directory: str) -> str:
    return os.path.join(directory, MANIFEST)


def _check_manifest(m: Any, where: str) -> Dict[str, Any]:
    """Validate a parsed manifest; raise a clear error for anything this version cannot use."""
    if not isinstance(m, dict):
        raise CorruptDatabaseError("%s is not a JSON object" % where)
    fmt = m.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise CorruptDatabaseError("%s has no valid 'format' number (got %r)" % (where, fmt))
    if fmt > FORMAT:
        raise HannoyError(
            "%s has format %d, written by a newer hannoy; this version reads format %d: "
            "upgrade hannoy" % (where, fmt, FORMAT)
        )

    def field(name: str, lo: int, hi: int) -> int:
        v = m.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise CorruptDatabaseError(
                "%s: field %r must be an integer in %d..%d, got %r" % (where, name, lo, hi, v)
            )
        return v

    shards = field("shards", 1, MAX_SHARDS)
    field("dimensions", 1, MAX_U32)
    try:
        Metric(m.get("metric"))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise CorruptDatabaseError("%s: unknown metric %r" % (where, m.get("metric"))) from None
    if m.get("shard_function") != _SHARD_FUNCTION:
        raise HannoyError(
            "%s uses the shard function %r, which this version of hannoy does not know"
            % (where, m.get("shard_function"))
        )
    gens = m.get("generations")
    if (
        not isinstance(gens, list)
        or len(gens) != shards
        or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gens)
    ):
        raise CorruptDatabaseError(
            "%s: 'generations' must be a list of %d counters, got %r" % (where, shards, gens)
        )
    b = m.get("build")
    if not isinstance(b, dict):
        raise CorruptDatabaseError("%s: 'build' must be an object, got %r" % (where, b))
    for k, lo, hi in (("m", 2, MAX_U32), ("ef", 1, MAX_U32), ("m0", 2, MAX_U32)):
        v = b.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise CorruptDatabaseError("%s: build parameter %r is %r" % (where, k, v))
    seed = b.get("seed")
    if seed is not None and (not isinstance(seed, int) or not 0 <= seed <= MAX_U64):
        raise CorruptDatabaseError("%s: build parameter 'seed' is %r" % (where, seed))
    return m


def _parse_manifest(data: bytes, where: str) -> Dict[str, Any]:
    try:
        m = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptDatabaseError("%s is not valid JSON: %s" % (where, e)) from None
    return _check_manifest(m, where)


def _read_manifest_bytes(directory: str) -> bytes:
    path = _manifest_path(directory)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        if os.path.isdir(directory):
            raise HannoyIOError(
                "%s holds no sharded index: %s is missing (build one with hannoy.dask.build)"
                % (directory, MANIFEST)
            ) from None
        raise HannoyIOError("no sharded index at %s: the directory does not exist" % directory)
    except OSError as e:
        raise HannoyIOError("cannot read %s: %s" % (path, e)) from None


def _read_manifest(directory: str) -> Dict[str, Any]:
    """Task: the manifest of a sharded index, validated."""
    return _parse_manifest(_read_manifest_bytes(directory), _manifest_path(directory))


def _write_manifest_file(directory: str, manifest: Dict[str, Any]) -> None:
    """Replace the manifest atomically: a temporary file, fsync, rename, fsync the directory."""
    final = _manifest_path(directory)
    tmp = os.path.join(directory, "%s%d-%s" % (_TMP_PREFIX, os.getpid(), uuid.uuid4().hex[:8]))
    data = (json.dumps(manifest, indent=1) + "\n").encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cls = DiskFullError if e.errno in (errno.ENOSPC, errno.EDQUOT) else HannoyIOError
        raise cls("cannot write %s: %s" % (final, e)) from None


_manifest_thread_lock = threading.Lock()


@contextlib.contextmanager
def _manifest_lock(directory: str) -> Iterator[None]:
    """Exclusive right to rewrite the manifest: a thread lock (fcntl locks belong to the
    process) and an fcntl lock on hannoy-shards.lock (other processes and machines)."""
    import fcntl

    with _manifest_thread_lock:
        path = os.path.join(directory, _LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise HannoyIOError("cannot open %s: %s" % (path, e)) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _create_manifest(directory: str, manifest: Dict[str, Any]) -> None:
    """Task: write the manifest of a new index (after every shard committed)."""
    with _manifest_lock(directory):
        if os.path.exists(_manifest_path(directory)):
            raise InvalidArgumentError(
                "%s already holds a sharded index (another build finished first)" % directory
            )
        _write_manifest_file(directory, manifest)


def _bump_generation(directory: str, shard: int) -> None:
    """After a shard's commit: count it in the manifest, so that workers reopen its readers."""
    with _manifest_lock(directory):
        m = _read_manifest(directory)
        m["generations"][shard] += 1
        _write_manifest_file(directory, m)


def _prepare_directory(directory: str, shards: int) -> None:
    """Task: check that build() may write into directory (new, empty or a failed build's)."""
    if os.path.exists(_manifest_path(directory)):
        raise InvalidArgumentError(
            "%s already holds a sharded index (%s): open it with ShardedIndex.open(...) and "
            "add to it, or remove the directory first" % (directory, MANIFEST)
        )
    try:
        os.makedirs(directory, exist_ok=True)
        entries = os.listdir(directory)
    except FileExistsError:
        raise HannoyIOError("%s exists and is not a directory" % directory) from None
    except OSError as e:
        raise HannoyIOError("cannot create %s: %s" % (directory, e)) from None
    for name in entries:
        ours = (
            name == _LOCK_FILE
            or name.startswith(_TMP_PREFIX)
            or (name.startswith("shard-") and name[6:].isdigit() and len(name) == 10)
        )
        if not ours:
            raise InvalidArgumentError(
                "%s is not empty (it holds %r): build() writes into a new or empty directory, "
                "or into the shards of a build that failed" % (directory, name)
            )


# -- on the workers: writes --------------------------------------------------------------------

# Test hook: {"write" or "search": shard or None (every shard)}. A task that reaches a set
# failpoint ends its process at once (os._exit), as a crash or an out-of-memory kill would. Set on
# workers with client.run(hannoy.dask._set_failpoint, ...); empty in normal use.
_FAILPOINTS: Dict[str, Optional[int]] = {}


def _set_failpoint(where: str, shard: Optional[int] = None) -> None:
    _FAILPOINTS[where] = shard


def _clear_failpoints() -> None:
    _FAILPOINTS.clear()


def _failpoint(where: str, shard: int) -> None:
    if where in _FAILPOINTS and _FAILPOINTS[where] in (None, shard):
        os._exit(70)


def _worker_threads() -> int:
    """The thread count of the Dask worker running this task (0: every core)."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except Exception:
        return 0


def _split_block(block: Any, id_spec: Any, dims: int, shards: int) -> List[Tuple[Any, Any]]:
    """Task: check one block of rows and its ids, and split them by shard."""
    mat = as_matrix(block, dims, "vectors")
    if isinstance(id_spec, tuple):  # ("range", first id): the default ids 0..n-1
        ids = np.arange(id_spec[1], id_spec[1] + mat.shape[0], dtype=np.uint32)
    else:
        ids = as_items(id_spec, "ids")
        if ids.shape[0] != mat.shape[0]:
            raise InvalidArgumentError(
                "ids and vectors must have as many rows: got %d ids for %d vectors"
                % (ids.shape[0], mat.shape[0])
            )
    return _split(ids, mat, shards)


def _write_shard(
    directory: str, shard: int, spec: Dict[str, Any], mode: str, parts: Sequence[Any]
) -> Dict[str, int]:
    """Task: one write transaction on one shard (build: replace its items; add; delete).

    The shard commits all of it or nothing. After a commit of an existing index (add, delete)
    the shard's generation is counted in the manifest. Returns ``{"items", "deleted"}``.
    """
    if mode != "build" and not any(len(p[0] if mode != "delete" else p) for p in parts):
        return {"items": -1, "deleted": 0}  # nothing for this shard
    threads = spec["threads"] if spec["threads"] is not None else _worker_threads()
    seed = spec["seed"]
    if seed is not None:
        seed = (seed + shard) % (MAX_U64 + 1)
    deleted = 0
    db = Database(_shard_path(directory, shard), spec["metric"])
    try:
        with db.writer(
            spec["dimensions"],
            0,
            spec["m"],
            spec["ef"],
            m0=spec["m0"],
            seed=seed,
            threads=threads or None,
        ) as w:
            if mode == "build":
                w.clear()  # a failed build's leftovers, if any
            for p in parts:
                if mode == "delete":
                    for i in p.tolist():
                        deleted += w.del_item(i)
                else:
                    ids, mat = p
                    if len(ids):
                        w.add_items(ids, mat)
            _failpoint("write", shard)
            items = len(w)
        # built and committed
    finally:
        db.close()
    if mode != "build":
        _bump_generation(directory, shard)
    return {"items": items, "deleted": deleted}


# -- on the workers: readers kept open between calls -------------------------------------------


class _Entry:
    __slots__ = ("generation", "db", "reader")

    def __init__(self, generation: int, db: Database, reader: Reader) -> None:
        self.generation = generation
        self.db = db
        self.reader = reader


_cache_lock = threading.Lock()
# (directory, shard) -> the open reader of that shard and the manifest generation it saw
_CACHE: Dict[Tuple[str, int], _Entry] = {}
# directory -> (the manifest's bytes, parsed)
_MANIFESTS: Dict[str, Tuple[bytes, Dict[str, Any]]] = {}


def _current_manifest(directory: str) -> Dict[str, Any]:
    """The manifest as it is now (read each call: a few microseconds; parsed when it changed)."""
    data = _read_manifest_bytes(directory)
    seen = _MANIFESTS.get(directory)
    if seen is not None and seen[0] == data:
        return seen[1]
    m = _parse_manifest(data, _manifest_path(directory))
    _MANIFESTS[directory] = (data, m)
    return m


def _reader(directory: str, shard: int) -> Reader:
    """This process's open reader of a shard, reopened when the shard's generation changed."""
    m = _current_manifest(directory)
    if not 0 <= shard < m["shards"]:
        raise InvalidArgumentError("%s has %d shards, not %d" % (directory, m["shards"], shard + 1))
    gen = m["generations"][shard]
    key = (directory, shard)
    old: Optional[Reader] = None
    with _cache_lock:
        e = _CACHE.get(key)
        if e is not None and e.generation == gen and not e.reader.closed:
            return e.reader
        db = e.db if e is not None and not e.db.closed else None
        if db is None:
            db = Database(_shard_path(directory, shard), m["metric"])
        try:
            reader = db.reader(0)
        except BaseException:
            if e is None or db is not e.db:
                db.close()
            raise
        if e is not None:
            old = e.reader
        _CACHE[key] = _Entry(gen, db, reader)
    if old is not None:
        old.close()  # waits for searches still running on it
    return reader


def _evict(directory: str) -> int:
    """Close this process's readers of a directory's shards; returns how many."""
    with _cache_lock:
        keys = [k for k in _CACHE if k[0] == directory]
        entries = [_CACHE.pop(k) for k in keys]
        _MANIFESTS.pop(directory, None)
    for e in entries:
        with contextlib.suppress(HannoyError):
            e.reader.close()
        with contextlib.suppress(HannoyError):
            e.db.close()
    return len(entries)


def _search_shard(
    directory: str, shard: int, queries: np.ndarray, n: int, ef: int, threads: Optional[int]
) -> Tuple[np.ndarray, np.ndarray]:
    """Task: the n best (ids, distances) of one shard per query, padded like Reader.by_array."""
    t = threads if threads is not None else _worker_threads()
    ids = np.empty((queries.shape[0], n), dtype=np.uint32)
    dists = np.empty((queries.shape[0], n), dtype=np.float32)
    for attempt in range(3):
        reader = _reader(directory, shard)
        _failpoint("search", shard)
        try:
            reader.by_array(queries, n, ef, out=(ids, dists), threads=t or None)
            return ids, dists
        except ClosedError:  # another thread reopened it just now: take the new one
            if not reader.closed or attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _shard_len(directory: str, shard: int) -> int:
    """Task: the number of items of one shard."""
    return len(_reader(directory, shard))


# -- running tasks: on a Dask cluster or in threads --------------------------------------------


_pool_lock = threading.Lock()
_pool: Optional[ThreadPoolExecutor] = None


def _thread_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(4, os.cpu_count() or 1), thread_name_prefix="hannoy-dask"
            )
        return _pool


Outcome = Tuple[bool, Any]  # (True, result) or (False, exception)


class _Threads:
    """No Dask client: every task is a call in a thread of this process."""

    kind = "threads"

    def task_threads(self, shards: int) -> Optional[int]:
        cores = os.cpu_count() or 1
        return max(1, cores // max(1, min(shards, cores)))

    def put(self, data: Any, shard: int) -> Any:
        return data

    def put_all(self, data: Any) -> Any:
        return data

    def submit(self, fn: Any, *args: Any, shard: int, name: str) -> Any:
        return _thread_pool().submit(fn, *args)

    def outcomes(self, futures: List[Future]) -> List[Outcome]:
        _wait_all(futures)
        out: List[Outcome] = []
        for f in futures:
            e = f.exception()
            out.append((True, f.result()) if e is None else (False, e))
        return out

    def run_one(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    def everywhere(self, fn: Any, *args: Any) -> None:
        fn(*args)

    def forget_workers(self) -> None:
        pass


class _Dask:
    """A dask.distributed client: every task is a Dask task, a shard's on its worker."""

    kind = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client
        self._workers: Optional[List[str]] = None
        self._stamp = 0.0

    def workers(self) -> List[str]:
        now = time.monotonic()
        if self._workers is None or now - self._stamp > _WORKERS_TTL:
            nthreads = self.client.nthreads()
            if not nthreads:
                raise HannoyError(
                    "the Dask cluster of %r has no workers: start some (or wait for them with "
                    "client.wait_for_workers(n))" % (self.client,)
                )
            self._workers = sorted(nthreads)
            self._stamp = now
        return self._workers

    def forget_workers(self) -> None:
        self._workers = None

    def pin(self, shard: int) -> str:
        w = self.workers()
        return w[shard % len(w)]

    def task_threads(self, shards: int) -> Optional[int]:
        return None  # each worker's own thread count

    def _scatter(self, data: Any, shard: Optional[int]) -> Any:
        for attempt in (0, 1):
            workers = self.workers() if shard is None else [self.pin(shard)]
            try:
                return self.client.scatter(
                    [data], workers=workers, broadcast=shard is None, hash=False
                )[0]
            except KeyError:  # a worker of the list has left: ask again
                if attempt:
                    raise
                self.forget_workers()
        raise AssertionError("unreachable")  # pragma: no cover

    def put(self, data: Any, shard: int) -> Any:
        return self._scatter(data, shard)

    def put_all(self, data: np.ndarray) -> Any:
        return data if data.nbytes < _SCATTER_BYTES else self._scatter(data, None)

    def submit(self, fn: Any, *args: Any, shard: int, name: str) -> Any:
        return self.client.submit(
            fn,
            *args,
            key="hannoy-%s-shard%d-%s" % (name, shard, uuid.uuid4().hex),
            workers=[self.pin(shard)],
            allow_other_workers=True,
            pure=False,
        )

    def outcomes(self, futures: List[Any]) -> List[Outcome]:
        try:
            return [(True, r) for r in self.client.gather(futures)]
        except Exception:
            pass
        self._wait(futures)  # every task has ended (a write that failed may have company)
        self.forget_workers()
        out: List[Outcome] = []
        for f in futures:
            if f.status == "finished":
                try:
                    out.append((True, f.result()))
                    continue
                except Exception as e:  # its result is lost (a worker died meanwhile)
                    out.append((False, e))
                    continue
            out.append((False, _failure(f)))
        return out

    def _wait(self, futures: List[Any]) -> None:
        from distributed import wait

        try:
            with self.client.as_current():  # wait() looks for the current client
                wait(futures)
        except Exception as e:  # some were cancelled: they have ended too
            if not _is_cancelled(e):
                raise

    def settle(self, futures: List[Any], what: str, after: str) -> None:
        """Wait for futures without fetching their results; raise the first one's error."""
        self._wait(futures)
        for f in futures:
            if f.status != "finished":
                raise _shard_error([(-1, _failure(f))], what, "", after)

    def run_one(self, fn: Any, *args: Any) -> Any:
        f = self.client.submit(
            fn, *args, key="hannoy-%s-%s" % (fn.__name__.strip("_"), uuid.uuid4().hex), pure=False
        )
        ok, value = self.outcomes([f])[0]
        if ok:
            return value
        if _is_killed_worker(value) or _is_cancelled(value):
            raise _shard_error([(-1, value)], "the task %s" % fn.__name__)
        raise value

    def everywhere(self, fn: Any, *args: Any) -> None:
        self.client.run(fn, *args, on_error="ignore")


def _failure(f: Any) -> BaseException:
    """The exception of a Dask future that ended without a result."""
    if f.status == "cancelled":
        from concurrent.futures import CancelledError

        return CancelledError("task %s was cancelled" % (f.key,))
    try:
        e = f.exception()
    except Exception as raised:
        e = raised
    if isinstance(e, BaseException):
        return e
    return HannoyError("task %s ended with status %r and no exception" % (f.key, f.status))


def _current_client() -> Any:
    """The current dask.distributed client, or None (without importing distributed)."""
    if "distributed" not in sys.modules:
        return None  # no client can exist
    from distributed import default_client

    try:
        c = default_client()
    except ValueError:
        return None
    return c if getattr(c, "status", "running") == "running" else None


def _check_client(client: Any) -> Any:
    if client is None:
        return None
    from distributed import Client

    if not isinstance(client, Client):
        raise ArgumentTypeError(
            "client must be a dask.distributed.Client or None, got %s" % describe(client)
        )
    if getattr(client, "asynchronous", False):
        raise ArgumentTypeError("client must be a synchronous Client (asynchronous=False)")
    return client


def _runner_for(client: Any, cached: Optional[_Dask] = None) -> Union[_Threads, _Dask]:
    c = client if client is not None else _current_client()
    if c is None:
        return _THREADS
    if cached is not None and cached.client is c:
        return cached
    return _Dask(c)


_THREADS = _Threads()


def _is_killed_worker(e: BaseException) -> bool:
    return any(t.__name__ == "KilledWorker" for t in type(e).__mro__)


def _is_cancelled(e: BaseException) -> bool:
    # a task whose input was lost with a worker that died (data scattered to it), or whose
    # client closed; concurrent.futures' and asyncio's CancelledError, and distributed's
    return any(t.__name__ in ("CancelledError", "FuturesCancelledError") for t in type(e).__mro__)


def _shard_error(
    errors: List[Tuple[int, BaseException]], what: str, directory: str = "", after: str = "",
) -> BaseException:  # fmt: skip
    """One exception for the failures of a call's shard tasks, of hannoy's types."""
    # the cause first: a cancelled task is most often the victim of a worker that died
    errors = sorted(errors, key=lambda se: _is_cancelled(se[1]))
    shard, e = errors[0]
    # Every shard whose worker died is named first: a worker may run several shards' tasks, and
    # which of them Dask reports first is a matter of timing.
    lead = [se for se in errors if _is_killed_worker(se[1])] if _is_killed_worker(e) else errors[:1]
    rest = [se for se in errors if se not in lead]
    if shard < 0:
        where = what
    elif len(lead) == 1:
        where = "the %s of shard %d of %s" % (what, shard, directory)
    else:
        where = "the %s of shards %s of %s" % (what, ", ".join(str(s) for s, _ in lead), directory)
    more = ""
    if rest:
        more = " (shards %s failed too)" % ", ".join(str(s) for s, _ in rest)
    if _is_killed_worker(e):
        err: BaseException = WorkerLostError(
            "the Dask worker%s running %s died (%s: %s; the worker's log says why)%s%s"
            % ("s" if len(lead) > 1 else "", where, type(e).__name__, e, more, after)
        )
    elif _is_cancelled(e):
        err = WorkerLostError(
            "Dask cancelled %s (%s: %s): its input was lost with a worker that died, or the "
            "client closed%s%s" % (where, type(e).__name__, e, more, after)
        )
    elif isinstance(e, HannoyError):
        err = type(e)("%s: %s%s%s" % (where, e, more, after))
        err.status = e.status  # type: ignore[attr-defined]
    else:
        return e
    err.__cause__ = e
    return err


def _results(
    runner: Union[_Threads, _Dask], futures: List[Any], shards: Sequence[int], what: str,
    directory: str, write: str = "",
) -> List[Any]:  # fmt: skip
    """The results of a call's shard tasks, once every one has ended; or its error.

    ``write``: "" (a search), "build" or "update" (adds and deletes), for the error message.
    """
    outcomes = runner.outcomes(futures)
    errors = [(s, v) for s, (ok, v) in zip(shards, outcomes) if not ok]
    if not errors:
        return [v for _, v in outcomes]
    done = [s for s, (ok, _) in zip(shards, outcomes) if ok]
    after = ""
    if write == "build":
        after = (
            "; no manifest was written, so there is no index yet: repeat build() (it replaces "
            "what the shards hold)"
        )
    elif write:
        after = (
            "; the failed shards are at their last commit"
            if len(errors) > 1
            else "; the failed shard is at its last commit"
        )
        if done:
            after += ", shard%s %s committed %s part" % (
                "s" if len(done) > 1 else "", ", ".join(map(str, done)),
                "their" if len(done) > 1 else "its",
            )  # fmt: skip
        after += ": repeat the call to complete it (adds and deletes can be repeated)"
    raise _shard_error(errors, what, directory, after)


# -- the client side ---------------------------------------------------------------------------


def _is_dask_array(x: Any) -> bool:
    return type(x).__module__.startswith("dask.array") and hasattr(x, "chunks")


def _parts(
    runner: Union[_Threads, _Dask], vectors: Any, ids: Any, dims: Optional[int], shards: int,
) -> Tuple[int, Dict[int, List[Any]]]:  # fmt: skip
    """Split (ids, vectors) by shard: (dims, {shard: [handle of (ids, rows)]})."""
    if _is_dask_array(vectors):
        return _dask_parts(runner, vectors, ids, dims, shards)
    if dims is None:
        try:
            shape = np.shape(vectors)
        except Exception:
            shape = ()
        if len(shape) != 2:
            raise InvalidArgumentError(
                "vectors must be a 2-D array (n, dimensions), got %s" % describe(vectors)
            )
        dims = int(shape[1])
        if dims < 1:
            raise InvalidArgumentError("vectors must have at least one column, got shape %s"
                                       % (shape,))  # fmt: skip
    mat = as_matrix(vectors, dims, "vectors")
    if ids is None:
        if mat.shape[0] > MAX_ITEM + 1:
            raise InvalidArgumentError("more than 2**32 vectors: pass ids")
        id_arr = np.arange(mat.shape[0], dtype=np.uint32)
    else:
        id_arr = as_items(ids, "ids")
        if id_arr.shape[0] != mat.shape[0]:
            raise InvalidArgumentError(
                "ids and vectors must have as many rows: got %d ids for %d vectors"
                % (id_arr.shape[0], mat.shape[0])
            )
    out: Dict[int, List[Any]] = {}
    for s, (i, v) in enumerate(_split(id_arr, mat, shards)):
        if len(i):
            out[s] = [runner.put((i, v), s)]
    return dims, out


def _dask_parts(
    runner: Union[_Threads, _Dask], vectors: Any, ids: Any, dims: Optional[int], shards: int,
) -> Tuple[int, Dict[int, List[Any]]]:  # fmt: skip
    if vectors.ndim != 2:
        raise InvalidArgumentError(
            "vectors must be a 2-D array (n, dimensions), got a dask array of shape %s"
            % (vectors.shape,)
        )
    cols = vectors.shape[1]
    if dims is None:
        if not isinstance(cols, int) or cols < 1:
            raise InvalidArgumentError("vectors has %r columns" % (cols,))
        dims = cols
    elif cols != dims:
        from ._errors import DimensionError

        raise DimensionError(
            "Invalid vector dimensions. Got %s but expected %d (vectors has shape %s)"
            % (cols, dims, vectors.shape)
        )
    rows = vectors.chunks[0]
    if any(isinstance(r, float) and math.isnan(r) for r in rows):
        raise InvalidArgumentError(
            "vectors has chunks of unknown sizes: call vectors.compute_chunk_sizes() first"
        )
    if vectors.numblocks[1] != 1:
        vectors = vectors.rechunk({1: -1})
    starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    n = int(starts[-1])
    if ids is None:
        if n > MAX_ITEM + 1:
            raise InvalidArgumentError("more than 2**32 vectors: pass ids")
        id_specs: List[Any] = [("range", int(a)) for a in starts[:-1]]
    elif _is_dask_array(ids):
        if ids.ndim != 1 or ids.shape[0] != n:
            raise InvalidArgumentError(
                "ids must be a 1-D array of %d ids (one per vector), got shape %s" % (n, ids.shape)
            )
        id_specs = list(ids.rechunk((rows,)).to_delayed().ravel())
    else:
        arr = as_items(ids, "ids")
        if arr.shape[0] != n:
            raise InvalidArgumentError(
                "ids and vectors must have as many rows: got %d ids for %d vectors"
                % (arr.shape[0], n)
            )
        id_specs = [arr[a:b] for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]
    blocks = list(vectors.to_delayed().ravel())
    out: Dict[int, List[Any]] = {}
    if isinstance(runner, _Dask):
        client = runner.client
        block_futures = client.compute(blocks)
        id_args = [client.compute(s) if hasattr(s, "dask") else s for s in id_specs]
        splits = [
            client.submit(_split_block, b, i, dims, shards, pure=False,
                          key="hannoy-split-%d-%s" % (k, uuid.uuid4().hex))
            for k, (b, i) in enumerate(zip(block_futures, id_args))
        ]  # fmt: skip
        runner.settle(splits, "reading and checking the vectors", "; nothing was written")
        for s in range(shards):
            out[s] = [
                client.submit(operator.getitem, sp, s, pure=False,
                              key="hannoy-part-%d-shard%d-%s" % (k, s, uuid.uuid4().hex))
                for k, sp in enumerate(splits)
            ]  # fmt: skip
        return dims, out
    for b, i in zip(blocks, id_specs):  # no cluster: one block at a time, here
        block = np.asarray(b.compute())
        idv = i.compute() if hasattr(i, "dask") else i
        for s, (pi, pv) in enumerate(_split_block(block, idv, dims, shards)):
            if len(pi):
                out.setdefault(s, []).append((pi, pv))
    return dims, out


def _spec(manifest: Dict[str, Any], threads: Optional[int]) -> Dict[str, Any]:
    b = manifest["build"]
    return {
        "metric": str(manifest["metric"]),
        "dimensions": manifest["dimensions"],
        "m": b["m"],
        "ef": b["ef"],
        "m0": b["m0"],
        "seed": b["seed"],
        "threads": threads,
    }


def build(
    vectors: Any,
    directory: Any,
    metric: Union[Metric, str, int] = Metric.EUCLIDEAN,
    shards: int = 4,
    m: int = 16,
    ef: int = 96,
    ids: Any = None,
    client: Any = None,
    seed: Optional[int] = None,
    *,
    m0: Optional[int] = None,
) -> "ShardedIndex":
    """Build a sharded index: one task per shard, in parallel on the workers.

    Parameters
    ----------
    vectors : numpy.ndarray or dask.array.Array, shape (n, dimensions)
        The vectors (converted to float32; finite). A dask array is read block by block on the
        workers (its row chunks must have known sizes); a numpy array is split here and each
        shard's rows are sent to its worker.
    directory : str or os.PathLike
        A new or empty directory (or one holding only the shards of a build that failed),
        reachable at this path from every worker.
    metric : Metric, default Metric.EUCLIDEAN
        The metric (also its name, e.g. ``"cosine"``).
    shards : int, default 4
        Number of shards (1..4096).
    m, ef : int
        HNSW parameters of every shard, as in :meth:`hannoy.Database.writer`.
    ids : array-like or dask array of int, optional
        The item id of each row (0..2**32-1); default ``0..n-1``.
    client : dask.distributed.Client, optional
        The cluster to build on; default the current client, or threads in this process.
    seed : int, optional
        Seed of the level generators (shard ``s`` uses ``seed + s``).
    m0 : int, optional
        Links per node on layer 0 (default ``2 * m``).

    Returns
    -------
    ShardedIndex

    Raises
    ------
    InvalidArgumentError, DimensionError, ArgumentTypeError
        Bad arguments (nothing is written), or the directory already holds an index.
    WorkerLostError
        A worker died during its shard's build. No manifest was written: repeat the call (it
        replaces the contents of the shards already built).
    HannoyError
        A shard's build failed (the error is of hannoy's type, e.g. ``MapFullError``); as
        above, no manifest was written.

    Examples
    --------
    >>> idx = hd.build(vectors, "/tmp/hannoy-sharded", metric="cosine", shards=4, seed=1)
    >>> len(idx) == len(vectors)
    True
    """
    met = as_metric(metric, "metric")
    s = as_int(shards, "shards", 1, MAX_SHARDS)
    m_ = as_int(m, "m", 2, MAX_U32)
    ef_ = as_int(ef, "ef", 1, MAX_U32)
    m0_ = 2 * m_ if m0 is None else as_int(m0, "m0", m_, MAX_U32)
    seed_ = None if seed is None else as_int(seed, "seed", 0, MAX_U64)
    path = os.path.abspath(as_path(directory))
    client = _check_client(client)
    runner = _runner_for(client)

    dims, parts = _parts(runner, vectors, ids, None, s)
    runner.run_one(_prepare_directory, path, s)
    runner.everywhere(_evict, path)
    _evict(path)
    manifest: Dict[str, Any] = {
        "format": FORMAT,
        "kind": "hannoy.dask sharded index",
        "metric": str(met),
        "dimensions": dims,
        "shards": s,
        "index": 0,
        "shard_directories": [_SHARD_DIR % i for i in range(s)],
        "shard_function": dict(_SHARD_FUNCTION),
        "build": {"m": m_, "ef": ef_, "m0": m0_, "seed": seed_},
        "generations": [1] * s,
        "written_by": "hannoy %s" % __version__,
    }
    spec = _spec(manifest, runner.task_threads(s))
    futures = [
        runner.submit(_write_shard, path, i, spec, "build", parts.get(i, []), shard=i, name="build")
        for i in range(s)
    ]
    del parts
    _results(runner, futures, range(s), "build", path, write="build")
    runner.run_one(_create_manifest, path, manifest)
    return ShardedIndex(path, client)


class ShardedIndex:
    """A sharded index: one hannoy database per shard in one directory, searched on Dask.

    Open one with :meth:`open` (or get it from :func:`build`). Searches, adds and deletes run as
    one task per shard, on the client's cluster (``client=None``: the current client at each
    call, or threads in this process when there is none).

    Parameters
    ----------
    directory : str or os.PathLike
        The index's directory (reachable at this path from every worker).
    client : dask.distributed.Client, optional
        The cluster; default the current client at each call, or threads in this process.

    Raises
    ------
    HannoyIOError
        The directory or its manifest is missing.
    CorruptDatabaseError
        The manifest does not parse.

    Examples
    --------
    >>> idx = hd.ShardedIndex.open("/tmp/hannoy-sharded")
    >>> idx.shards, idx.metric, idx.dimensions
    (4, Metric.EUCLIDEAN, 32)
    >>> ids, dists = idx.by_array(queries, n=10, ef_search=200)
    """

    def __init__(self, directory: Any, client: Any = None) -> None:
        self._closed = True
        self._directory = os.path.abspath(as_path(directory))
        self._client = _check_client(client)
        self._dask: Optional[_Dask] = None
        manifest = self._runner().run_one(_read_manifest, self._directory)
        manifest = _check_manifest(manifest, _manifest_path(self._directory))
        self._shards: int = manifest["shards"]
        self._metric = Metric(manifest["metric"])
        self._dimensions: int = manifest["dimensions"]
        self._manifest = manifest
        self._closed = False

    @classmethod
    def open(cls, directory: Any, client: Any = None) -> "ShardedIndex":
        """Open the sharded index in ``directory`` (see :class:`ShardedIndex`).

        Examples
        --------
        >>> idx = hd.ShardedIndex.open("/tmp/hannoy-sharded", client=client)
        """
        return cls(directory, client)

    # -- properties ----------------------------------------------------------------------------

    @property
    def directory(self) -> str:
        """The index's directory (absolute)."""
        return self._directory

    @property
    def shards(self) -> int:
        """The number of shards."""
        return self._shards

    @property
    def metric(self) -> Metric:
        """The :class:`~hannoy.Metric` of every shard."""
        return self._metric

    @property
    def dimensions(self) -> int:
        """The number of dimensions of the vectors."""
        return self._dimensions

    @property
    def shard_paths(self) -> List[str]:
        """The database directory of each shard (each opens with :class:`hannoy.Database`)."""
        return [_shard_path(self._directory, s) for s in range(self._shards)]

    @property
    def client(self) -> Any:
        """The client given when opening (None: the current one at each call)."""
        return self._client

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    # -- searches ------------------------------------------------------------------------------

    def by_array(
        self, queries: Any, n: int = 10, ef_search: int = 200
    ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` nearest items to each query, over every shard.

        Each shard is searched with ``n`` and ``ef_search`` by a task on its worker, and the
        results are merged here by ``(distance, id)``: exactly the merge of searching every
        shard database on its own.

        Parameters
        ----------
        queries : array-like, shape (dimensions,) or (rows, dimensions)
            The query vectors (float32, finite).
        n : int, default 10
            Neighbours per query (>= 1).
        ef_search : int, default 200
            Candidate list size of each shard's search (>= 1).

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            ``ids`` (uint32) and ``distances`` (float32), shape ``(rows, n)`` (``(n,)`` for a
            1-D query), ascending; when fewer than ``n`` items exist the slots after the
            results hold 4294967295 and +inf, as :meth:`hannoy.Reader.by_array` pads them.

        Examples
        --------
        >>> ids, dists = idx.by_array(vectors[:2], n=3)
        >>> ids.shape, dists.dtype
        ((2, 3), dtype('float32'))
        """
        self._live()
        q, was_1d = as_queries(queries, self._dimensions, "queries")
        k = as_positive(n, "n")
        ef = as_positive(ef_search, "ef_search")
        rows = q.shape[0]
        if rows == 0:
            return np.empty((0, k), dtype=np.uint32), np.empty((0, k), dtype=np.float32)
        runner = self._runner()
        handle = runner.put_all(q)
        threads = runner.task_threads(self._shards)
        futures = [
            runner.submit(_search_shard, self._directory, s, handle, k, ef, threads,
                          shard=s, name="search")
            for s in range(self._shards)
        ]  # fmt: skip
        res = _results(runner, futures, range(self._shards), "search", self._directory)
        ids, dists = _merge(res, k)
        if was_1d:
            return ids[0], dists[0]
        return ids, dists

    # -- writes --------------------------------------------------------------------------------

    def add(self, ids: Any, vectors: Any) -> None:
        """Store (or overwrite) items; each shard adds its own and builds, in one transaction.

        Parameters
        ----------
        ids : array-like or dask array of int
            Item ids, 0..2**32-1.
        vectors : numpy.ndarray or dask.array.Array, shape (len(ids), dimensions)
            One row per id.

        Raises
        ------
        HannoyError
            Of hannoy's type (e.g. :class:`~hannoy.DimensionError`). Bad arguments are found
            before anything is written. A shard whose write fails is at its last commit, the
            others have committed their part: repeat the call (adds can be repeated).

        Examples
        --------
        >>> idx.add([10_000, 10_001], new_vectors)
        """
        self._live()
        runner = self._runner()
        _, parts = _parts(runner, vectors, ids, self._dimensions, self._shards)
        self._write(runner, "add", parts)

    def delete(self, ids: Any) -> int:
        """Delete items (absent ids are ignored); each shard rebuilds its links and commits.

        Returns
        -------
        int
            How many of the ids existed.

        Examples
        --------
        >>> idx.delete([3, 4, 123456789])
        2
        """
        self._live()
        arr = as_items(ids, "ids")
        runner = self._runner()
        parts: Dict[int, List[Any]] = {}
        for s, (i, _) in enumerate(_split(arr, None, self._shards)):
            if len(i):
                parts[s] = [i]
        return sum(r["deleted"] for r in self._write(runner, "delete", parts))

    def _write(
        self, runner: Union[_Threads, _Dask], mode: str, parts: Dict[int, List[Any]]
    ) -> List[Dict[str, int]]:
        shards = sorted(parts)
        if not shards:
            return []
        spec = _spec(self._manifest, runner.task_threads(len(shards)))
        futures = [
            runner.submit(_write_shard, self._directory, s, spec, mode, parts[s], shard=s, name=mode)
            for s in shards
        ]
        parts.clear()
        return _results(runner, futures, shards, mode, self._directory, write="update")

    # -- information ---------------------------------------------------------------------------

    def shard_lengths(self) -> List[int]:
        """The number of items of each shard.

        Examples
        --------
        >>> idx.shard_lengths()
        [2497, 2516, 2489, 2498]
        """
        self._live()
        runner = self._runner()
        futures = [
            runner.submit(_shard_len, self._directory, s, shard=s, name="len")
            for s in range(self._shards)
        ]
        return _results(runner, futures, range(self._shards), "count", self._directory)

    def __len__(self) -> int:
        """The number of items over every shard."""
        return sum(self.shard_lengths())

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the readers the workers (and this process) keep open for this index.

        Idempotent; searches and writes afterwards raise :class:`~hannoy.ClosedError`.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._runner().everywhere(_evict, self._directory)
        finally:
            _evict(self._directory)

    def __enter__(self) -> "ShardedIndex":
        self._live()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.close()

    def _live(self) -> None:
        if self._closed:
            raise ClosedError("expected an open ShardedIndex, but this one is closed")

    def _runner(self) -> Union[_Threads, _Dask]:
        r = _runner_for(self._client, self._dask)
        if isinstance(r, _Dask):
            self._dask = r
        return r

    def __repr__(self) -> str:
        return "<hannoy.dask.ShardedIndex directory=%r shards=%d metric=%s dimensions=%d%s>" % (
            self._directory,
            getattr(self, "_shards", 0),
            getattr(self, "_metric", "?"),
            getattr(self, "_dimensions", 0),
            " closed" if self._closed else "",
        )


def _merge(results: List[Tuple[np.ndarray, np.ndarray]], n: int) -> Tuple[np.ndarray, np.ndarray]:
    """The n best of every shard's n best, by (distance, id); padding (+inf, 4294967295) last."""
    if len(results) == 1:
        return results[0]
    ids = np.concatenate([r[0] for r in results], axis=1)
    dists = np.concatenate([r[1] for r in results], axis=1)
    order = np.lexsort((ids, dists), axis=1)[:, :n]
    return (
        np.ascontiguousarray(np.take_along_axis(ids, order, 1)),
        np.ascontiguousarray(np.take_along_axis(dists, order, 1)),
    )
