"""Reliability: nothing is lost. A writer process killed with SIGKILL while adding items,
building or committing leaves the database exactly at its last commit; an exception, abort() or
Ctrl-C during a build leaves it at its last commit; a full map gives a clear error and the last
commit intact.

The crash trials share one database per phase, kept open by this process (with a reader on
an old snapshot) while child processes write to it and get killed: each child continues from
the state the previous one left, so a recovered database must also accept writes (LMDB's
robust write mutex of a dead process is recovered).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

import hannoy
import reliability_child as rc
from hannoy import Metric
from helpers import subprocess_env

CHILD = str(Path(__file__).with_name("reliability_child.py"))
# the issue asks for at least 20 kills in CI: 8 per phase
CRASH_TRIALS = int(os.environ.get("HANNOY_RELIABILITY_CRASH_TRIALS", "8"))


class Child:
    """A child process whose marker lines (NAME BATCH TIME) are read as they come."""

    def __init__(
        self, args: List[str], timeout: float = 120.0, env: Optional[Dict[str, str]] = None
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CHILD] + args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**subprocess_env(), **(env or {})},
            bufsize=1,
        )
        self.lines: List[str] = []
        # a watchdog: a hung child fails the test instead of blocking it
        self.timer = threading.Timer(timeout, self.proc.kill)
        self.timer.daemon = True
        self.timer.start()

    def markers(self):
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            self.lines.append(line)
            parts = line.split()
            if len(parts) == 3:
                try:
                    yield parts[0], int(parts[1]), float(parts[2])
                except ValueError:
                    continue

    def finish(self) -> Tuple[int, str]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        rest = self.proc.stdout.read()
        self.lines += [x.strip() for x in rest.splitlines()]
        err = self.proc.stderr.read()
        code = self.proc.wait(timeout=60)
        self.timer.cancel()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code, err


def parse(lines: List[str]) -> List[Tuple[str, int, float]]:
    out = []
    for line in lines:
        p = line.split()
        if len(p) == 3 and p[0] in ("READY", "ADD", "BUILD", "COMMIT", "DURABLE"):
            out.append((p[0], int(p[1]), float(p[2])))
    return out


def check_state(db: hannoy.Database, k: int, rng: np.random.Generator) -> None:
    """The database is exactly batches 0..k: ids, vectors, searches, len."""
    state = rc.crash_state(k)
    with db.reader() as r:
        assert len(r) == len(state), "len %d, expected %d (batches 0..%d)" % (len(r), len(state), k)
        ids = r.item_ids()
        assert ids.tolist() == sorted(state), "the item ids differ from batches 0..%d" % k
        # vectors: the last two batches, every overwritten item, and a random sample
        last = [i for i in state if i >= (k - 1) * rc.CRASH_B]
        overwritten = [
            (b - 1) * rc.CRASH_B + j for b in range(1, k + 1) for j in range(rc.CRASH_OVERWRITE)
        ]
        sample = rng.choice(ids, size=min(300, len(ids)), replace=False).tolist()
        for i in set(last + overwritten + sample):
            v = r.item_vector(i)
            assert v is not None and np.array_equal(v, state[i]), "vector of item %d" % i
        # searches return committed items at their committed distances (and, HNSW being
        # approximate, usually the item itself for its own vector)
        found = 0
        for i in rng.choice(ids, size=8, replace=False).tolist():
            hit = r.by_vec(state[i], n=10, ef_search=400)
            near = r.by_item(i, n=10)
            for res in (hit, near):
                assert res and all(j in state for j, _ in res), (i, res)
                exact = [float(((state[j] - state[i]) ** 2).sum()) for j, _ in res]
                assert np.allclose([d for _, d in res], exact, rtol=1e-4, atol=1e-4), (i, res)
            assert i not in [j for j, _ in near]
            found += i in [j for j, _ in hit]
        assert found >= 6, "only %d of 8 items found by their own vector" % found
        # the next batch's ids and the deleted ones are absent
        nxt = (k + 1) * rc.CRASH_B
        assert nxt not in r and r.item_vector(nxt) is None
        if k >= 1:
            assert (k - 1) * rc.CRASH_B + rc.CRASH_OVERWRITE not in r


def durable_after_kill(events: List[Tuple[str, int, float]]) -> Tuple[List[int], str]:
    """(acceptable states, phase at the kill) from the child's markers: the last durable batch,
    and the batch being committed if the kill landed inside its commit."""
    durable = max([b for name, b, _ in events if name in ("DURABLE", "READY")])
    last_name, last_b, _ = events[-1]
    accept = [durable]
    if last_name == "COMMIT" and last_b == durable + 1:
        accept.append(durable + 1)  # killed inside commit: either state is a valid outcome
    return accept, last_name


@pytest.mark.slow
@pytest.mark.parametrize("writemap", ["auto", "1"])
@pytest.mark.parametrize("phase", ["ADD", "BUILD", "COMMIT"])
def test_sigkill_during_writes_keeps_last_commit(tmp_path: Path, phase: str, writemap: str) -> None:
    """CRASH_TRIALS children, each killed with SIGKILL at a random moment of the phase aimed at
    (a random delay within that phase's duration in the child's previous batch). This process
    keeps the database open throughout, with a reader on an older snapshot.

    With HANNOY_WRITEMAP=1 the children write through MDB_WRITEMAP (as a file larger than a
    quarter of the memory budget would): the killed transaction's pages are already in the file,
    past or among the free pages, and must still never be seen.

    A commit killed after LMDB wrote its meta page but before it released the write lock is
    seen as durable by the next writer (which recovers the lock); readers of processes that
    kept the environment open see the previous commit until then. Both are valid outcomes: the
    next child reports which one its writer sees, and the state is checked again if it differs.
    """
    path = tmp_path / "db"
    rng = np.random.default_rng({"ADD": 1, "BUILD": 2, "COMMIT": 3}[phase])
    accept = [-1]  # nothing committed yet: the first child commits batch 0 (the base) first
    k = -1
    db: Optional[hannoy.Database] = None
    old: Optional[hannoy.Reader] = None
    old_k = -1
    hits: Dict[str, int] = {}
    outcomes: List[str] = []
    for trial in range(CRASH_TRIALS + 1):
        last = trial == CRASH_TRIALS  # the last child just commits one more batch
        child = Child(["crash", str(path)], env={"HANNOY_WRITEMAP": writemap})
        times: Dict[Tuple[str, int], float] = {}
        killed = False
        for name, b, t in child.markers():
            times[(name, b)] = t
            if name == "READY":
                assert b in accept, "trial %d: the writer sees batches 0..%d, expected %s" % (
                    trial, b, accept)  # fmt: skip
                if b != k:  # the killed commit turned out durable: check that state now
                    outcomes.append("(writer: %d)" % b)
                    k = b
                    assert db is not None
                    check_state(db, k, rng)
                target = k + 3  # batch k+2 completes first and times the phases
            if last and name == "DURABLE":
                child.proc.kill()
                killed = True
                break
            if name == phase and b == target:
                nxt = {"ADD": "BUILD", "BUILD": "COMMIT", "COMMIT": "DURABLE"}[phase]
                duration = times[(nxt, b - 1)] - times[(phase, b - 1)]
                time.sleep(float(rng.uniform(0, duration)))
                child.proc.send_signal(signal.SIGKILL)
                killed = True
                break
        code, err = child.finish()
        assert killed and code == -signal.SIGKILL, (code, err[-2000:], child.lines[-5:], outcomes)
        events = parse(child.lines)
        accept, at = durable_after_kill(events)
        if not last:
            hits[at] = hits.get(at, 0) + 1
        if db is None:
            db = hannoy.Database(path, Metric.EUCLIDEAN)
        if old is not None:  # a snapshot opened before the trial is unchanged by it
            assert len(old) == len(rc.crash_state(old_k))
            assert np.array_equal(old.item_vector(0), rc.crash_state(old_k)[0])
            old.close()
        with db.reader() as r:
            n = len(r)
        got = [a for a in accept if len(rc.crash_state(a)) == n]
        assert got, "trial %d: len %d matches none of the states %s (killed in %s %d)" % (
            trial, n, accept, at, events[-1][1])  # fmt: skip
        k = got[0]
        check_state(db, k, rng)
        outcomes.append("%s%d->%d" % (at, events[-1][1], k))
        old, old_k = db.reader(), k
    assert old is not None and db is not None
    old.close()
    db.close()
    print("SIGKILL in %s: %d trials, killed in %s; outcomes %s" % (phase, CRASH_TRIALS, hits,
          " ".join(outcomes)))  # fmt: skip
    # most kills landed in the phase aimed at (the rest just after it)
    assert hits.get(phase, 0) >= CRASH_TRIALS // 2, hits


# -- abort paths ---------------------------------------------------------------------------------


def base_db(make_db, n: int = 300, dims: int = 8) -> Tuple[hannoy.Database, Dict]:
    db = make_db()
    x = np.random.default_rng(5).standard_normal((n, dims)).astype(np.float32)
    with db.writer(dims, m=8, ef=32) as w:
        w.add_items(range(n), x)
    with db.writer(dims, index=3, m=8, ef=32) as w:
        w.add_items(range(50), x[:50])
    return db, rc.dump(db)


def scribble(w: hannoy.Writer, dims: int) -> None:
    """Every kind of change: adds, overwrites, deletes, a clear of another index, a build."""
    x = np.random.default_rng(6).standard_normal((200, dims)).astype(np.float32)
    w.add_items(range(250, 450), x)
    w.add_item(0, x[0])
    assert w.del_item(1)
    w.build()
    w.add_item(999, x[1])


def test_exception_in_with_block_changes_nothing(make_db) -> None:
    db, before = base_db(make_db)
    digest = rc.file_digest(db.path)
    for where in ("before build", "after build"):
        with pytest.raises(ZeroDivisionError):
            with db.writer(8, m=8, ef=32) as w:
                if where == "after build":
                    scribble(w, 8)
                else:
                    w.add_items(range(1000, 1010), np.ones((10, 8), np.float32))
                    w.del_item(2)
                1 / 0
        assert w.closed
        assert rc.dump(db) == before and rc.file_digest(db.path) == digest
    # one on a second index, one clearing an index
    with pytest.raises(KeyError):
        with db.writer(8, index=3) as w:
            w.clear()
            w.build()
            raise KeyError("x")
    assert rc.dump(db) == before and rc.file_digest(db.path) == digest
    db.writer(8).abort()  # the write lock is free


def test_abort_changes_nothing(make_db) -> None:
    db, before = base_db(make_db)
    digest = rc.file_digest(db.path)
    w = db.writer(8, m=8, ef=32)
    scribble(w, 8)
    assert len(w) != before[0]["len"]
    w.abort()
    assert w.closed
    with pytest.raises(hannoy.ClosedError):
        w.commit()
    assert rc.dump(db) == before and rc.file_digest(db.path) == digest
    # the same through Database.abort_rw_txn() and through closing the database
    w = db.writer(8, index=3)
    w.clear()
    assert hannoy.Database.abort_rw_txn() is True
    assert rc.dump(db) == before
    w = db.writer(8)
    scribble(w, 8)
    path = db.path
    db.close()
    assert w.closed
    db2 = make_db(path=Path(path))
    assert rc.dump(db2) == before and rc.file_digest(path) == digest


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("delay", [0.0, 0.4, 1.5])
def test_sigint_during_long_build(tmp_path: Path, delay: float) -> None:
    """Ctrl-C (a real SIGINT) while a child builds 20,000 random 64-d vectors: the build stops
    within 2 s, KeyboardInterrupt reaches the caller, the writer is aborted, the write lock is
    free and the database is at its last commit (the 100-item base)."""
    path = tmp_path / "db"
    child = Child(["sigint", str(path), "20000", "64"], timeout=120)
    sent: Optional[float] = None
    for name, _, t in child.markers():
        if name == "BUILDING":
            time.sleep(delay)
            sent = time.monotonic()
            child.proc.send_signal(signal.SIGINT)
            break
    code, err = child.finish()
    assert code == 0, err[-3000:]
    assert sent is not None, child.lines
    lines = child.lines
    if any(x.startswith("COMPLETED") for x in lines):
        pytest.fail("the build finished before SIGINT (%.1fs after it started)" % delay)
    inter = [x.split() for x in lines if x.startswith("INTERRUPTED")]
    assert inter, lines
    latency = float(inter[0][1]) - sent
    assert inter[0][2] == "True", "the writer was not aborted"
    assert latency < 2.0, "KeyboardInterrupt reached the caller %.2fs after SIGINT" % latency
    assert "LATE-INTERRUPT" not in lines
    assert "LEN 100" in lines, lines
    relock = [float(x.split()[1]) for x in lines if x.startswith("RELOCK")]
    assert relock and relock[0] < 1.0
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    with db.reader() as r:
        assert len(r) == 100 and r.item_ids().tolist() == list(range(100))
        x = np.random.default_rng(7).standard_normal((20000, 64)).astype(np.float32)
        for i in (0, 50, 99):
            assert np.array_equal(r.item_vector(i), x[i])
            assert r.by_vec(x[i], n=1)[0][0] == i
    db.close()
    print("SIGINT %.1fs into the insertion phase: KeyboardInterrupt after %.3fs" % (delay, latency))


# -- full map ------------------------------------------------------------------------------------


def test_full_map_is_a_clear_error_and_keeps_the_last_commit(tmp_path: Path) -> None:
    path = tmp_path / "db"
    size = 2 << 20
    db = hannoy.Database(path, Metric.EUCLIDEAN, env_size=size)
    rng = np.random.default_rng(3)
    base = rng.standard_normal((500, 32)).astype(np.float32)
    with db.writer(32, m=8, ef=32) as w:
        w.add_items(range(500), base)
    before = rc.dump(db)
    digest = rc.file_digest(str(path))
    failures = []
    # fill it past its limit in every way: one big batch, many small commits, a second index
    big = rng.standard_normal((20000, 32)).astype(np.float32)  # 2.6 MB of vectors alone
    for attempt in range(3):
        try:
            if attempt == 0:
                with db.writer(32, m=8, ef=32) as w:
                    w.add_items(range(500, 20500), big)
            elif attempt == 1:
                with db.writer(32, index=2, m=8, ef=32) as w:
                    for c in range(0, 20000, 1000):
                        w.add_items(range(c, c + 1000), big[c : c + 1000])
            else:
                with db.writer(32, m=8, ef=32) as w:
                    w.add_items(range(500, 20500), big)
                    w.build()
                    w.add_items(range(30000, 40000), big[:10000])
        except hannoy.MapFullError as e:
            failures.append(e)
        else:
            pytest.fail("%d MB of vectors fit in a map of %d MB" % (big.nbytes >> 20, size >> 20))
        assert w.closed
        assert rc.dump(db) == before and rc.file_digest(str(path)) == digest
    for e in failures:
        assert isinstance(e, RuntimeError)
        msg = str(e)
        assert "full" in msg and "env_size" in msg and "last commit is intact" in msg, msg
    # without a with-block: the writer cannot commit after the error, and aborting it is clean
    w = db.writer(32, m=8, ef=32)
    with pytest.raises(hannoy.MapFullError):
        w.add_items(range(500, 20500), big)
    with pytest.raises(RuntimeError, match="abort"):
        w.commit()
    w.abort()
    assert rc.dump(db) == before and rc.file_digest(str(path)) == digest
    # still usable at this size for small writes
    with db.writer(32, m=8, ef=32) as w:
        w.add_item(600, big[0])
    assert 600 in db.reader()
    db.close()
    # a larger env_size continues from the last commit
    db = hannoy.Database(path, Metric.EUCLIDEAN, env_size=64 << 20)
    with db.reader() as r:
        assert len(r) == 501 and np.array_equal(r.item_vector(7), base[7])
    with db.writer(32, m=8, ef=32) as w:
        w.add_items(range(500, 20500), big)
    with db.reader() as r:
        assert len(r) == 20500  # 600 is one of them
        assert np.array_equal(r.item_vector(20499), big[-1])
        res = r.by_vec(big[123], n=10, ef_search=400)
        exact = [float(((r.item_vector(i) - big[123]) ** 2).sum()) for i, _ in res]
        assert np.allclose([d for _, d in res], exact, rtol=1e-4, atol=1e-4)
    db.close()
    print("full map: %d MapFullError, e.g. %s" % (len(failures), failures[0]))


def test_larger_env_size_while_open(tmp_path: Path) -> None:
    """A second Database on an open path asking for a larger env_size: LMDB can only remap
    while this process holds no transaction on the environment. With readers or a writer open
    it is a clear error (never a remap under a reader: that crashed the interpreter); with
    none, the map grows."""
    path = tmp_path / "db"
    db = hannoy.Database(path, Metric.EUCLIDEAN, env_size=4 << 20)
    x = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
    with db.writer(16) as w:
        w.add_items(range(2000), x)
    r = db.reader()
    with pytest.raises(RuntimeError, match="env_size"):
        hannoy.Database(path, Metric.EUCLIDEAN, env_size=1 << 30)
    assert r.by_vec(x[5], n=1)[0][0] == 5  # the reader is unharmed
    w = db.writer(16, index=1)
    r.close()
    with pytest.raises(RuntimeError, match="env_size"):
        hannoy.Database(path, Metric.EUCLIDEAN, env_size=1 << 30)
    w.abort()
    same = hannoy.Database(path, Metric.EUCLIDEAN, env_size=4 << 20)  # not larger: shared
    same.close()
    bigger = hannoy.Database(path, Metric.EUCLIDEAN, env_size=64 << 20)  # nothing open: grows
    assert bigger.stats()["env_size"] == 64 << 20
    y = np.random.default_rng(1).standard_normal((20000, 16)).astype(np.float32)
    with bigger.writer(16, index=1) as w:  # more than 4 MB: needs the larger map
        w.add_items(range(20000), y)
    assert len(db.reader(1)) == 20000 and db.reader().by_vec(x[5], n=1)[0][0] == 5
    bigger.close()
    db.close()
