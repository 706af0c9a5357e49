"""Child processes of the reliability suite (``test_reliability_*.py``), and the data both sides
derive from batch numbers and item ids.

Run as ``python reliability_child.py COMMAND ARGS...``. A command prints lines for its parent:
markers ``NAME BATCH MONOTONIC_TIME`` (``time.monotonic`` is one clock for every process on
Linux, so the parent can time what the child did) or one ``JSON ...`` line with its findings, and
exits 0. A Python exception exits 1; a signal (SIGSEGV, SIGABRT...) or a Go fatal error (exit 2)
is what the parent looks for.

The module is also imported by the tests, for :func:`crash_batch`, :func:`crash_state`,
:func:`conc_vectors` and :func:`dump`. Importing it (like importing hannoy) never loads the
library.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

if os.environ.get("HANNOY_TEST_INSTALLED") != "1":  # as conftest.py: the source tree first
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hannoy  # noqa: E402
from hannoy import Metric  # noqa: E402

# -- crash scenario: batches derived from their number ------------------------------------------

CRASH_B = 1000  # items added per batch
CRASH_DIMS = 32
CRASH_OVERWRITE = 10  # items of the previous batch overwritten by each batch
CRASH_DELETE = 5  # items of the previous batch deleted by each batch
CRASH_WRITER = dict(m=8, ef=32)


def _batch_rng(tag: int, b: int) -> np.random.Generator:
    return np.random.default_rng([20240611, tag, b])


def crash_batch(b: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch ``b`` of the crash scenario: (new ids, their vectors, overwritten ids, their new
    vectors, deleted ids). Batch 0 is the base state: ids 0..CRASH_B-1 only. Batch b >= 1 adds
    ids b*B..(b+1)*B-1, overwrites the first CRASH_OVERWRITE ids of batch b-1 and deletes the
    next CRASH_DELETE."""
    ids = np.arange(b * CRASH_B, (b + 1) * CRASH_B, dtype=np.uint32)
    vecs = _batch_rng(1, b).standard_normal((CRASH_B, CRASH_DIMS)).astype(np.float32)
    if b == 0:
        empty = np.zeros(0, dtype=np.uint32)
        return ids, vecs, empty, np.zeros((0, CRASH_DIMS), np.float32), empty
    prev = (b - 1) * CRASH_B
    ow = np.arange(prev, prev + CRASH_OVERWRITE, dtype=np.uint32)
    owv = _batch_rng(2, b).standard_normal((CRASH_OVERWRITE, CRASH_DIMS)).astype(np.float32)
    dels = np.arange(
        prev + CRASH_OVERWRITE, prev + CRASH_OVERWRITE + CRASH_DELETE, dtype=np.uint32
    )
    return ids, vecs, ow, owv, dels


def crash_state(k: int) -> Dict[int, np.ndarray]:
    """The content of the database once batches 0..k are committed: item id -> vector."""
    state: Dict[int, np.ndarray] = {}
    for b in range(k + 1):
        ids, vecs, ow, owv, dels = crash_batch(b)
        for i, v in zip(ids.tolist(), vecs):
            state[i] = v
        for i, v in zip(ow.tolist(), owv):
            state[i] = v
        for i in dels.tolist():
            del state[i]
    return state


# -- concurrency scenario: vectors derived from the item id ------------------------------------

CONC_B = 200  # items per batch
CONC_DIMS = 16
_MULT = np.sqrt(np.array([2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53], float))


def conc_vectors(ids: Any) -> np.ndarray:
    """The vector of each item id of the concurrency scenario (a deterministic function of the
    id: fractional parts of id * sqrt(prime), float32)."""
    a = (np.asarray(ids, dtype=np.float64).reshape(-1, 1) + 1.0) * _MULT[None, :CONC_DIMS]
    return (a % 1.0).astype(np.float32)


def conc_write(path: str, batches: int, first: int = 0, pause: float = 0.0) -> None:
    """Commit batches first..first+batches-1: batch b adds ids b*B..(b+1)*B-1."""
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    try:
        for b in range(first, first + batches):
            ids = np.arange(b * CONC_B, (b + 1) * CONC_B)
            with db.writer(CONC_DIMS, m=8, ef=32) as w:
                w.add_items(ids, conc_vectors(ids))
            if pause:
                time.sleep(pause)
    finally:
        db.close()


def conc_check_reader(r: "hannoy.Reader", rng: np.random.Generator) -> int:
    """Check that a reader sees exactly a prefix of committed batches; return its len.

    Raises AssertionError with a description otherwise."""
    n = len(r)
    assert n >= CONC_B and n % CONC_B == 0, "len %d is not a whole number of batches" % n
    ids = r.item_ids()
    assert ids.shape == (n,) and ids[0] == 0 and ids[-1] == n - 1, "ids are not 0..%d" % (n - 1)
    assert (n in r) is False, "id %d (next batch) visible in a snapshot of len %d" % (n, n)
    sample = rng.integers(0, n, 4)
    for i in sample.tolist():
        v = r.item_vector(i)
        assert v is not None and np.array_equal(v, conc_vectors([i])[0]), "vector of %d" % i
    q = rng.random(CONC_DIMS, dtype=np.float32)
    for res in (r.by_vec(q, n=10, ef_search=64), r.by_array(q[None, :], n=10, ef_search=64)[0]):
        got = np.array([i for i, _ in res])
        assert got.size and got.max() < n, "result id >= len %d: %s" % (n, got)
        exact = ((conc_vectors(got) - q) ** 2).sum(axis=1)
        dist = np.array([d for _, d in res])
        assert np.allclose(dist, exact, rtol=1e-4, atol=1e-5), "distances %s vs %s" % (dist, exact)
    i = int(sample[0])
    res = r.by_item(i, n=5, ef_search=64)
    assert res is not None and all(j < n and j != i for j, _ in res), "by_item(%d): %s" % (i, res)
    assert len(r) == n, "len changed in one snapshot"
    return n


# -- database dumps ------------------------------------------------------------------------------


def file_digest(path: str) -> str:
    """sha256 of the database's data.mdb (an aborted or empty transaction writes nothing)."""
    h = hashlib.sha256()
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dump(db: "hannoy.Database", queries: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Everything a user can see of a database: per built index, the ids, every vector, and the
    results of by_vec/by_item for fixed queries (searches are deterministic on one snapshot)."""
    out: Dict[str, Any] = {"indexes": sorted(db.stats()["indexes"])}
    for index in out["indexes"]:
        try:
            r = db.reader(index)
        except hannoy.HannoyError as e:  # e.g. a pending build: part of the state
            out[index] = type(e).__name__
            continue
        with r:
            ids = r.item_ids()
            vecs = [r.item_vector(int(i)) for i in ids]
            entry: Dict[str, Any] = {
                "len": len(r),
                "ids": ids.tolist(),
                "vectors": np.array(vecs).tobytes() if vecs else b"",
                "dimensions": r.dimensions,
            }
            qs = queries
            if qs is None:
                qs = np.random.default_rng(index).standard_normal((5, r.dimensions))
            qs = np.asarray(qs, dtype=np.float32)
            if qs.shape[1] == r.dimensions:
                entry["by_vec"] = [r.by_vec(q, n=10) for q in qs]
            entry["by_item"] = [r.by_item(int(i), n=5) for i in ids[:5]]
            out[index] = entry
    return out


def mark(name: str, b: int) -> None:
    print("%s %d %.6f" % (name, b, time.monotonic()), flush=True)


# -- commands ------------------------------------------------------------------------------------


def crash_batches_in(n: int) -> int:
    """The last batch k such that batches 0..k hold n items (-1 for an empty database)."""
    if n == 0:
        return -1
    k, rem = divmod(n - CRASH_B, CRASH_B - CRASH_DELETE)
    if n < CRASH_B or rem:
        raise AssertionError("%d items is no whole number of batches" % n)
    return k


def cmd_crash(path: str) -> None:
    """Writes batches k+1, k+2, ... until killed, where k is the last batch committed (found
    through a first writer, whose view is the newest commit: batch 0 first in an empty
    database). Prints READY k, then ADD/BUILD/COMMIT b before each phase and DURABLE b after
    each commit."""
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    w = db.writer(CRASH_DIMS)
    b = crash_batches_in(len(w))
    w.abort()
    mark("READY", b)
    start = b
    while b < start + 100:  # the parent kills it long before
        b += 1
        ids, vecs, ow, owv, dels = crash_batch(b)
        mark("ADD", b)
        w = db.writer(CRASH_DIMS, **CRASH_WRITER)
        half = CRASH_B // 2
        for c in range(0, half, 50):
            w.add_items(ids[c : c + 50], vecs[c : c + 50])
        for i, v in zip(ids[half:].tolist(), vecs[half:]):
            w.add_item(i, v)
        for i, v in zip(ow.tolist(), owv):
            w.add_item(i, v)
        for i in dels.tolist():
            if not w.del_item(i):
                raise AssertionError("batch %d: item %d of batch %d is missing" % (b, i, b - 1))
        mark("BUILD", b)
        w.build()
        mark("COMMIT", b)
        w.commit()
        mark("DURABLE", b)
    db.close()


def cmd_sigint(path: str, n: str, dims: str) -> None:
    """Commit a base of 100 items, then add n-100 more and build them, printing BUILDING when
    the insertion phase is running; on KeyboardInterrupt print INTERRUPTED <time> <closed>, then
    check that the write lock was released and print LEN of the last commit."""
    n_, d_ = int(n), int(dims)
    x = np.random.default_rng(7).standard_normal((n_, d_)).astype(np.float32)
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    with db.writer(d_) as w:
        w.add_items(range(100), x[:100])
    mark("BASE", 0)
    started: List[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "inserting items" and not started:
            started.append(1)
            mark("BUILDING", done)

    w = db.writer(d_, progress=progress)
    try:
        try:
            with w:
                w.add_items(range(100, n_), x[100:])
            mark("COMPLETED", 0)
        except KeyboardInterrupt:
            t = time.monotonic()
            print("INTERRUPTED %.6f %s" % (t, w.closed), flush=True)
        time.sleep(0.2)  # a second interrupt would land here, not in the checks
    except KeyboardInterrupt:
        print("LATE-INTERRUPT", flush=True)
    t0 = time.monotonic()
    w2 = db.writer(d_)  # the write lock is free
    w2.abort()
    print("RELOCK %.3f" % (time.monotonic() - t0), flush=True)
    print("LEN %d" % len(db.reader()), flush=True)
    db.close()


def cmd_conc_writer(path: str, batches: str, first: str, pause: str) -> None:
    """Commit CONC batches first..first+batches-1, printing DURABLE b after each."""
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    for b in range(int(first), int(first) + int(batches)):
        ids = np.arange(b * CONC_B, (b + 1) * CONC_B)
        with db.writer(CONC_DIMS, m=8, ef=32) as w:
            w.add_items(ids, conc_vectors(ids))
        mark("DURABLE", b)
        time.sleep(float(pause))
    db.close()


def cmd_conc_reader(path: str, stop_len: str, timeout: str) -> None:
    """Open readers in a loop and check each one's snapshot (conc_check_reader) until a reader
    sees stop_len items; keep one long-lived reader and check it never changes. Prints JSON
    {"checks", "lens", "errors"}."""
    rng = np.random.default_rng(os.getpid())
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    first = db.reader()
    n0 = conc_check_reader(first, rng)
    lens = set()
    errors: List[str] = []
    checks = 0
    deadline = time.monotonic() + float(timeout)
    while time.monotonic() < deadline:
        try:
            with db.reader() as r:
                n = conc_check_reader(r, rng)
            lens.add(n)
            checks += 1
            if checks % 10 == 0:
                assert conc_check_reader(first, rng) == n0, "the long-lived reader changed"
            if n >= int(stop_len):
                break
        except Exception as e:  # collected, reported, and failed by the parent
            errors.append("%s: %s" % (type(e).__name__, e))
            if len(errors) > 20:
                break
    first.close()
    db.close()
    print("JSON " + json.dumps({"checks": checks, "lens": sorted(lens), "errors": errors}))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def cmd_leak(path: str, cycles: str) -> None:
    """Reader open/search/close cycles (and Database open/close cycles): print JSON with RSS,
    fd and mapping counts before and after; then follow the parent's commands on stdin
    ("open N": open N more readers and keep them; "close": close them; "quit")."""
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    r = db.reader()
    q = np.random.default_rng(0).random((64, r.dimensions), dtype=np.float32)
    r.close()

    def cycle(i: int) -> None:
        r = db.reader()
        r.by_vec(q[i % 64], n=5, ef_search=32)
        r.close()

    for i in range(500):  # warm-up: caches, scratch buffers, the allocator
        cycle(i)
    before = {"rss": _rss(), "fds": _fds(), "maps": _maps()}
    t = time.monotonic()
    for i in range(int(cycles)):
        cycle(i)
    middle = {"rss": _rss(), "fds": _fds(), "maps": _maps(), "seconds": time.monotonic() - t}
    for i in range(200):  # the environment itself: opened and closed with the last Database
        other = hannoy.Database(path + "-other-%d" % (i % 4), Metric.EUCLIDEAN)
        other.close()
    after = {"rss": _rss(), "fds": _fds(), "maps": _maps()}
    print("JSON " + json.dumps({"before": before, "middle": middle, "after": after}), flush=True)
    kept: List[Any] = []
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "open":
            for _ in range(int(cmd[1])):
                kept.append(db.reader())
            kept[-1].by_vec(q[0], n=5)
            print("OPENED %d" % len(kept), flush=True)
        elif cmd[0] == "close":
            for x in kept:
                x.close()
            kept.clear()
            print("CLOSED", flush=True)
    db.close()


def cmd_readers_full(path: str) -> None:
    """Open readers (kept alive) until the reader table is full; print JSON with how many, the
    error, what a writer's build and a Database open do then, and that closing readers frees
    slots again."""
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    readers: List[Any] = []
    out: Dict[str, Any] = {}
    t = time.monotonic()
    try:
        while len(readers) < 5000:
            readers.append(db.reader())
        out["error"] = None
    except Exception as e:
        out["error"] = type(e).__name__
        out["message"] = str(e)
        out["is_runtime_error"] = isinstance(e, RuntimeError)
    out["seconds"] = time.monotonic() - t
    out["readers"] = len(readers)
    out["snapshot_txns"] = readers[0].stats().get("threads") if readers else None
    dims = readers[0].dimensions
    x = np.ones((3, dims), np.float32)
    try:  # a build reads the last commit through its own read transactions
        with db.writer(dims) as w:
            w.add_items([10_000, 10_001, 10_002], x)
        out["writer"] = "ok"
    except Exception as e:
        out["writer"] = type(e).__name__
    try:
        other = hannoy.Database(path, Metric.EUCLIDEAN)  # shares the open environment
        other.close()
        out["database"] = "ok"
    except Exception as e:
        out["database"] = type(e).__name__
    # the old readers still work, and closing some frees their slots
    out["old_reader_len"] = len(readers[0])
    out["old_reader_search"] = len(readers[-1].by_vec(x[0], n=3))
    for r in readers[:10]:
        r.close()
    again = db.reader()
    out["reopened_len"] = len(again)
    again.close()
    for r in readers[10:]:
        r.close()
    more = [db.reader() for _ in range(100)]
    out["hundred_more"] = len(more)
    for r in more:
        r.close()
    db.close()
    print("JSON " + json.dumps(out), flush=True)


def cmd_same_thread_writers(path: str, other_path: str) -> None:
    """A second writer from the thread that holds one: a clear error (no deadlock), on the same
    Database, another Database object on the same path, a symlink to it, and a named database
    of the same environment; a writer on another path is fine."""
    out: Dict[str, Any] = {}
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    same = hannoy.Database(path, Metric.EUCLIDEAN)
    link = path + "-link"
    os.symlink(path, link)
    via_link = hannoy.Database(link, Metric.EUCLIDEAN)
    named = hannoy.Database(path, Metric.EUCLIDEAN, name="other")
    elsewhere = hannoy.Database(other_path, Metric.EUCLIDEAN)
    w = db.writer(3)
    w.add_item(1, [1.0, 2.0, 3.0])
    for key, d in (("same_db", db), ("same_path", same), ("symlink", via_link), ("named", named)):
        t = time.monotonic()
        try:
            d.writer(3, index=1).abort()
            out[key] = "no error"
        except Exception as e:
            out[key] = {
                "type": type(e).__name__,
                "runtime": isinstance(e, RuntimeError),
                "message": str(e),
                "seconds": time.monotonic() - t,
            }
    w2 = elsewhere.writer(3)  # another environment: no conflict
    w2.add_item(1, [1.0, 1.0, 1.0])
    w2.build()
    w2.commit()
    out["elsewhere"] = len(elsewhere.reader())
    out["first_still_usable"] = 1 in w
    w.build()
    w.commit()
    w3 = same.writer(3)  # free again once the first one ended
    w3.abort()
    out["after_commit"] = len(db.reader())
    for d in (db, same, via_link, named, elsewhere):
        d.close()
    print("JSON " + json.dumps(out), flush=True)


def cmd_wait_writer(path: str) -> None:
    """Open a writer (waiting for the write lock) and print when it got it, add an item, commit."""
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    mark("WAITING", 0)
    w = db.writer(3)
    mark("GOT", len(w))
    w.add_item(77, [7.0, 7.0, 7.0])
    w.build()
    w.commit()
    mark("DONE", 0)
    db.close()


def cmd_fork(path: str, use_before: str) -> None:
    """fork() in a process that only imported hannoy (use_before=0: the child must work) or
    that already used it (use_before=1: the child must get ForkedProcessError naming the remedy
    within a second). Both the child's explicit calls and its interpreter exit (finalizers of
    inherited objects) must not hang. Prints JSON from the parent side."""
    out: Dict[str, Any] = {"loaded_before_fork": hannoy._ffi.is_loaded()}
    inherited = None
    if use_before == "1":
        db = hannoy.Database(path, Metric.EUCLIDEAN)
        with db.writer(3) as w:
            w.add_items([0, 1, 2], np.eye(3, dtype=np.float32))
        inherited = (db, db.reader(), db.writer(3, index=9))
        out["loaded_before_fork"] = hannoy._ffi.is_loaded()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, then exit through the interpreter
        os.close(rfd)
        res: Dict[str, Any] = {}
        try:
            t = time.monotonic()
            try:
                d2 = hannoy.Database(path + "-child", Metric.EUCLIDEAN)
                with d2.writer(3) as w:
                    w.add_items([5, 6], np.eye(3, dtype=np.float32)[:2])
                res["child_result"] = d2.reader().by_vec([1.0, 0.0, 0.0], n=1)
                d2.close()
            except hannoy.ForkedProcessError as e:
                res["child_error"] = str(e)
            except Exception as e:  # reported, judged by the parent test
                res["child_other_error"] = "%s: %s" % (type(e).__name__, e)
            res["seconds"] = time.monotonic() - t
            if inherited is not None:
                try:
                    inherited[1].by_vec([1.0, 0.0, 0.0], n=1)
                    res["inherited_reader"] = "no error"
                except hannoy.ForkedProcessError:
                    res["inherited_reader"] = "ForkedProcessError"
        except BaseException as e:  # pragma: no cover - reported
            res["crash"] = repr(e)
        os.write(wfd, json.dumps(res).encode())
        os.close(wfd)
        sys.exit(0)  # a normal exit: atexit hooks and finalizers of the inherited handles run
    os.close(wfd)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        time.sleep(0.01)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        out["child_hung"] = True
    else:
        out["child_exit"] = os.waitstatus_to_exitcode(status)
    data = b""
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        data += chunk
    out["child"] = json.loads(data) if data else None
    # the parent still works
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    with db.writer(3, index=1) as w:
        w.add_items([0, 1, 2], np.eye(3, dtype=np.float32))
    out["parent_after"] = db.reader(1).by_vec([0.0, 1.0, 0.0], n=1)
    if inherited is not None:
        inherited[2].abort()
    print("JSON " + json.dumps(out), flush=True)


def _mp_search(args: Tuple[Any, np.ndarray]) -> List[Any]:
    db, q = args
    with db.reader() as r:
        return [os.getpid(), r.by_vec(q, n=5)]


def _mp_use(path: str) -> Any:
    try:
        db = hannoy.Database(path, Metric.EUCLIDEAN)
        return db.reader().by_vec([1.0, 0.0, 0.0], n=1)
    except hannoy.ForkedProcessError as e:
        return "ForkedProcessError: " + str(e)


def cmd_mp_fork_after_import(path: str) -> None:
    """multiprocessing with "fork" after a bare import: the workers use hannoy."""
    import multiprocessing as mp

    db_path = path
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.map(_mp_use_build, [db_path + "-%d" % i for i in range(2)])
    print("JSON " + json.dumps({"loaded": hannoy._ffi.is_loaded(), "results": got}), flush=True)


def _mp_use_build(path: str) -> Any:
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    with db.writer(3) as w:
        w.add_items([0, 1, 2], np.eye(3, dtype=np.float32))
    res = db.reader().by_vec([0.0, 0.0, 1.0], n=1)
    db.close()
    return res


def cmd_mp_fork_after_use(path: str) -> None:
    """multiprocessing with "fork" after using hannoy: each worker call gets a clear error."""
    import multiprocessing as mp

    db = hannoy.Database(path, Metric.EUCLIDEAN)
    with db.writer(3) as w:
        w.add_items([0, 1, 2], np.eye(3, dtype=np.float32))
    ctx = mp.get_context("fork")
    t = time.monotonic()
    with ctx.Pool(2) as pool:
        res = pool.map_async(_mp_use, [path, path])
        got = res.get(timeout=20)
    print("JSON " + json.dumps({"results": got, "seconds": time.monotonic() - t}), flush=True)


# -- corrupt databases ---------------------------------------------------------------------------


def exercise(path: str, metric: str, dims: int, seed: int) -> Dict[str, Any]:
    """Open, read, search and write a (possibly corrupt) database; every hannoy error is caught
    and counted. Returns {"ok": n, "errors": {...}, "other": [...]} (other: exceptions that are
    not hannoy errors, still Python exceptions)."""
    rng = np.random.default_rng(seed)
    res: Dict[str, Any] = {"ok": 0, "errors": {}, "other": []}

    def attempt(fn: Any) -> Any:
        try:
            v = fn()
            res["ok"] += 1
            return v
        except hannoy.HannoyError as e:
            name = type(e).__name__
            res["errors"][name] = res["errors"].get(name, 0) + 1
            if name in ("InternalError", "HannoyError"):
                res.setdefault("messages", []).append("%s: %s" % (name, str(e)[:300]))
        except Exception as e:  # a Python exception, not a crash: reported
            res["other"].append("%s: %s" % (type(e).__name__, str(e)[:200]))
        return None

    db = attempt(lambda: hannoy.Database(path, metric))
    if db is None:
        return res
    indexes = attempt(lambda: db.stats()["indexes"]) or []
    for index in sorted(set(list(indexes) + [0, 1])):
        r = attempt(lambda: db.reader(index))
        if r is None:
            continue
        n = attempt(lambda: len(r)) or 0
        ids = attempt(r.item_ids)
        d = r.dimensions
        q = rng.standard_normal((4, dims)).astype(np.float32)
        if ids is not None and len(ids):
            some = rng.choice(ids, size=min(5, len(ids)), replace=False).tolist()
        else:
            some = [0, 1, 2]
        for i in some + [int(rng.integers(0, 2**32 - 1))]:
            attempt(lambda: r.item_vector(i))
            attempt(lambda: i in r)
            attempt(lambda: r.by_item(i, n=5, ef_search=32))
        if d == dims:
            attempt(lambda: r.by_vec(q[0], n=10))
            attempt(lambda: r.by_vec(q[1], n=max(1, n + 5), ef_search=8))
            attempt(lambda: r.by_array(q, n=5, threads=2))
            attempt(lambda: r.by_vec(q[2], n=3, candidates=some))
        attempt(lambda: r.by_items(some, n=3, threads=2))
        attempt(r.stats)
        r.close()
    # write on top of it: an incremental build reads the corrupt graph
    for index in (0, 1):
        w = attempt(lambda: db.writer(dims, index=index, m=4, ef=16))
        if w is None:
            continue
        x = rng.standard_normal((5, dims)).astype(np.float32)
        ok = attempt(lambda: w.add_items(range(5000, 5005), x))
        attempt(lambda: w.del_item(3))
        attempt(lambda: w.del_item(5001))
        attempt(lambda: len(w))
        attempt(lambda: w.item_vector(4))
        if ok is not None or True:
            attempt(w.build)
        if not w.closed:
            attempt(w.commit)
        r = attempt(lambda: db.reader(index))
        if r is not None:
            attempt(lambda: r.by_vec(x[0], n=5))
            attempt(lambda: r.by_item(5000, n=5))
            r.close()
    attempt(db.close)
    return res


def cmd_corrupt(spec_file: str) -> None:
    """For each trial of the JSON spec [{"path", "metric", "dims", "seed"}, ...]: print
    TRIAL i, exercise the database, print its JSON result."""
    with open(spec_file) as f:
        trials = json.load(f)
    for i, t in enumerate(trials):
        print("TRIAL %d" % i, flush=True)
        res = exercise(t["path"], t["metric"], t["dims"], t["seed"])
        print("JSON " + json.dumps(res), flush=True)


COMMANDS = {
    "crash": cmd_crash,
    "sigint": cmd_sigint,
    "conc-writer": cmd_conc_writer,
    "conc-reader": cmd_conc_reader,
    "leak": cmd_leak,
    "readers-full": cmd_readers_full,
    "same-thread-writers": cmd_same_thread_writers,
    "wait-writer": cmd_wait_writer,
    "fork": cmd_fork,
    "mp-fork-after-import": cmd_mp_fork_after_import,
    "mp-fork-after-use": cmd_mp_fork_after_use,
    "corrupt": cmd_corrupt,
}


def main(argv: List[str]) -> None:
    COMMANDS[argv[0]](*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
