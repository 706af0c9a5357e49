"""Child processes of the reliability suite (``test_reliability_*.py``), and the data both sides
derive from batch numbers and item ids.

Run as ``python reliability_child.py COMMAND ARGS...``. A command prints lines for its parent:
markers ``NAME BATCH MONOTONIC_TIME`` (``time.monotonic`` is one clock for every process on
Linux, so the parent can time what the child did) or one ``JSON ...`` line with its findings, and
exits 0. A Python exception exits 1; a signal (SIGSEGV, SIGABRT...) or a Go fatal error (exit 2)
is what the parent looks for.

The module is also imported by the tests, for :func:`crash_batch`, :func:`crash_state` and
:func:`dump`. Importing it (like importing hannoy) never loads the library.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

if os.environ.get("HANNOY_TEST_INSTALLED") != "1":  # as conftest.py: the source tree first
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hannoy  # noqa: E402
from hannoy import Metric  # noqa: E402
from helpers import lmdb_page_size  # noqa: E402

# -- crash scenario: batches derived from their number ------------------------------------------

CRASH_B = 1000  # items added per batch
CRASH_ADD_PASSES = 20  # times the add_item half of a batch is written (see cmd_crash)
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


# -- database dumps ------------------------------------------------------------------------------


def file_digest(path: str) -> str:
    """sha256 of the two meta pages of the database's data.mdb, which name its last commit: an
    aborted or empty transaction leaves them as they were. (Its other pages are not compared: a
    writable environment writes a transaction's pages in place, MDB_WRITEMAP, so an aborted one
    leaves bytes in free pages, which are not part of the database. What the database holds is
    compared by dump.)"""
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        return hashlib.sha256(f.read(2 * lmdb_page_size(path))).hexdigest()


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
        # add_item runs on this thread and queues to the engine in batches: a few milliseconds
        # for 500 items, too short a phase to aim a kill at. The same items are written again
        # (the state does not change), each pass waited for (len), so the phase lasts long
        # enough and the kill lands inside LMDB's writes as well as in Python.
        for _ in range(CRASH_ADD_PASSES):
            for i, v in zip(ids[half:].tolist(), vecs[half:]):
                w.add_item(i, v)
            len(w)
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
    """For each trial of the JSON spec [{"path", "metric", "dims", "seed", "verify"?}, ...]:
    print TRIAL i, exercise the database (if "verify", only when hannoy.verify accepts it),
    print its JSON result."""
    with open(spec_file) as f:
        trials = json.load(f)
    for i, t in enumerate(trials):
        print("TRIAL %d" % i, flush=True)
        if t.get("verify"):
            # hannoy.verify first, as a user handed an untrusted file would: only a file it
            # accepts is opened.
            try:
                hannoy.verify(t["path"])
            except hannoy.HannoyError as e:
                res = {"ok": 0, "errors": {}, "other": [], "refused": type(e).__name__}
                print("JSON " + json.dumps(res), flush=True)
                continue
        res = exercise(t["path"], t["metric"], t["dims"], t["seed"])
        print("JSON " + json.dumps(res), flush=True)


COMMANDS = {
    "crash": cmd_crash,
    "sigint": cmd_sigint,
    "corrupt": cmd_corrupt,
}


def main(argv: List[str]) -> None:
    COMMANDS[argv[0]](*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
