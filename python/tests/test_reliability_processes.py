"""Many processes on one database: readers in two processes while a third writes, LMDB's reader
table filled (in one process and across processes, and freed when a process dies), fork before
hannoy is used, and a multiprocessing pool with the "spawn" context."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

import hannoy
import pool_workers
from hannoy import Database, Metric
from helpers import build_index, lmdb_used_bytes, subprocess_env

pytestmark = pytest.mark.slow

BATCH = 50
BATCHES = 20
DIMS = 16

# Batch b's vectors: the first value marks the batch, the rest is noise (the same in every
# process).
BATCH_VECTORS = r"""
import numpy as np
def batch_vectors(b):
    v = np.random.default_rng(b).standard_normal((%d, %d)).astype(np.float32)
    v[:, 0] = b
    return v
""" % (BATCH, DIMS)

READER_CHILD = BATCH_VECTORS + r"""
import json, sys, time
import hannoy
path, ready, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
final = %d * %d
db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
first = db.reader()  # held from start to end: must keep seeing the first commit
n0 = len(first)
open(ready, "w").close()
rng = np.random.default_rng(seed)
seen = []
deadline = time.time() + 240
n = 0
while n < final and time.time() < deadline:
    with db.reader() as r:
        n = len(r)
        # a prefix of whole batches, never part of one
        assert n %% %d == 0 and n0 <= n <= final, n
        assert np.array_equal(r.item_ids(), np.arange(n, dtype=np.uint32))
        q = rng.standard_normal(%d).astype(np.float32)
        q[0] = rng.integers(0, n // %d)
        for item, dist in r.by_vec(q, n=10, ef_search=64):
            assert item < n, (item, n)
            v = r.item_vector(item)
            assert np.array_equal(v, batch_vectors(item // %d)[item %% %d]), item
            assert abs(float(((v - q) ** 2).sum()) - dist) <= 1e-3 * max(1.0, dist)
        seen.append(n)
assert len(first) == n0
assert np.array_equal(first.item_ids(), np.arange(n0, dtype=np.uint32))
assert all(item < n0 for item, _ in first.by_vec(batch_vectors(%d)[0], n=10))
print(json.dumps({"n0": n0, "seen": sorted(set(seen))}))
""" % (BATCH, BATCHES, BATCH, DIMS, BATCH, BATCH, BATCH, BATCHES - 1)

WRITER_CHILD = BATCH_VECTORS + r"""
import os, sys, time
import hannoy
path, readies = sys.argv[1], sys.argv[2:]
deadline = time.time() + 120
while not all(os.path.exists(p) for p in readies):
    assert time.time() < deadline, "the readers never started"
    time.sleep(0.01)
db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
for b in range(1, %d):
    with db.writer(%d, m=8, ef=32) as w:
        w.add_items(np.arange(b * %d, (b + 1) * %d), batch_vectors(b))
    time.sleep(0.02)
print("ok")
""" % (BATCHES, DIMS, BATCH, BATCH)


def _run(script: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, what: str) -> str:
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("%s hung" % what)
    assert proc.returncode == 0, "%s failed:\n%s" % (what, err)
    return out


def test_two_reader_processes_see_whole_commits_while_a_third_writes(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database(path, Metric.EUCLIDEAN)
    v0 = np.random.default_rng(0).standard_normal((BATCH, DIMS)).astype(np.float32)
    v0[:, 0] = 0
    with db.writer(DIMS, m=8, ef=32) as w:
        w.add_items(np.arange(BATCH), v0)
    db.close()
    readies = [tmp_path / "ready1", tmp_path / "ready2"]
    readers = [_run(READER_CHILD, path, readies[i], i) for i in range(2)]
    writer = _run(WRITER_CHILD, path, *readies)
    _finish(writer, "the writer process")
    for i, proc in enumerate(readers):
        got = json.loads(_finish(proc, "reader process %d" % i))
        assert got["n0"] == BATCH
        assert got["seen"][-1] == BATCH * BATCHES
        assert len(got["seen"]) > 2, "reader process %d never overlapped the commits" % i
    with Database(path, Metric.EUCLIDEAN) as db:
        assert len(db.reader()) == BATCH * BATCHES


@pytest.fixture
def small_db(make_db) -> Database:
    db = make_db()
    build_index(db, np.random.default_rng(3).standard_normal((200, 8)).astype(np.float32))
    return db


def _fill_reader_table(db: Database, limit: int = 2000) -> List[hannoy.Reader]:
    held: List[hannoy.Reader] = []
    with pytest.raises(hannoy.ReadersFullError) as info:
        for _ in range(limit):
            held.append(db.reader())
    e = info.value
    assert isinstance(e, RuntimeError)
    assert "reader table" in str(e) and "close readers" in str(e), str(e)
    return held


def test_full_reader_table_is_a_clear_error(small_db: Database) -> None:
    held = _fill_reader_table(small_db)
    # a Reader holds one slot of the 1022 until threads search it at once
    assert 1000 <= len(held) <= 1022, len(held)
    queries = np.random.default_rng(4).standard_normal((64, 8)).astype(np.float32)
    expected = held[0].by_array(queries, n=5)
    # readers already open keep working when the table is full, from several threads at once
    # (they share the slots they have instead of failing)
    results: list = []
    errors: list = []

    def search() -> None:
        try:
            results.append(held[0].by_array(queries, n=5))
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a search hung on a full reader table"
    assert not errors and results == [expected] * 4
    with pytest.raises(hannoy.ReadersFullError):
        small_db.reader()
    held.pop().close()
    extra = small_db.reader()
    assert len(extra) == 200
    extra.close()
    for r in held:
        r.close()
    # every slot came back
    again = [small_db.reader() for _ in range(len(held) + 1)]
    for r in again:
        r.close()


HOLD_READERS_CHILD = r"""
import sys, time, hannoy
db = hannoy.Database(sys.argv[1], hannoy.Metric.EUCLIDEAN)
held = []
try:
    while True:
        held.append(db.reader())
except hannoy.ReadersFullError:
    pass
print(len(held), flush=True)
time.sleep(600)
"""


def test_reader_table_is_shared_by_processes_and_freed_when_one_dies(small_db: Database) -> None:
    child = _run(HOLD_READERS_CHILD, small_db.path)
    try:
        line = child.stdout.readline()
        assert line.strip().isdigit(), child.stderr.read() if child.poll() is not None else line
        assert int(line) >= 1000
        start = time.monotonic()
        with pytest.raises(hannoy.ReadersFullError):
            small_db.reader()
        assert time.monotonic() - start < 5, "a full reader table made the open wait"
    finally:
        child.kill()  # SIGKILL: the child's slots are left behind in lock.mdb
        child.communicate()
    # the slots of the dead process are found and freed: the whole table is ours again
    held = [small_db.reader() for _ in range(1000)]
    assert all(len(r) == 200 for r in held)
    for r in held:
        r.close()


IMPORT_THEN_FORK_CHILD = r"""
import json, os, sys
import numpy as np
import hannoy
assert not hannoy._ffi.is_loaded(), "importing hannoy loaded the library"
path = sys.argv[1]
pid = os.fork()
if pid == 0:
    code = 1
    try:
        db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
        with db.writer(4) as w:
            w.add_items(np.arange(10), np.eye(10, 4, dtype=np.float32) + np.arange(10)[:, None])
        with db.reader() as r:
            assert r.by_vec(np.full(4, 3.0, np.float32), n=1)[0][0] == 3
        db.close()
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
# the parent, which never used hannoy before the fork, can use it afterwards
with hannoy.Database(path, hannoy.Metric.EUCLIDEAN) as db:
    r = db.reader()
    print(json.dumps({"len": len(r), "nearest": r.by_vec(np.full(4, 7.0, np.float32), n=1)[0][0]}))
"""


def test_import_then_fork_the_child_can_use_hannoy(tmp_path: Path) -> None:
    proc = _run(IMPORT_THEN_FORK_CHILD, tmp_path / "db")
    got = json.loads(_finish(proc, "the process that forked"))
    assert got == {"len": 10, "nearest": 7}


def test_spawn_pool_searches_in_parallel(make_db, fashion_small) -> None:
    base, queries = fashion_small
    db = make_db(Metric.EUCLIDEAN)
    build_index(db, base, seed=5)
    expected = db.reader().by_array(queries, n=10, ef_search=64)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2, initializer=pool_workers.init, initargs=(db, barrier)) as pool:
            chunks = np.array_split(queries, 10)
            out = pool.map(pool_workers.search, chunks, chunksize=1)
    pids = {pid for pid, _ in out}
    assert len(pids) == 2, "both workers searched (at the same time: they met at a barrier)"
    got = [row for _, rows in out for row in rows]
    assert got == expected


HOLD_ONE_READER_CHILD = r"""
import sys, time, hannoy
db = hannoy.Database(sys.argv[1], hannoy.Metric.EUCLIDEAN)
r = db.reader()
print(len(r), flush=True)
time.sleep(600)
"""


def test_a_killed_reader_process_does_not_pin_old_pages(make_db) -> None:
    # A reader's slot names the commit it reads, and LMDB keeps every page freed after that
    # commit. If the slot of a process killed while reading were kept, every rewrite would
    # take new pages and the file would grow without end.
    db = make_db()
    rng = np.random.default_rng(6)
    build_index(db, rng.standard_normal((2000, 16)).astype(np.float32))
    child = _run(HOLD_ONE_READER_CHILD, db.path)
    try:
        assert child.stdout.readline().strip() == "2000"
    finally:
        child.kill()
        child.communicate()
    sizes = []
    for _ in range(8):
        build_index(db, rng.standard_normal((2000, 16)).astype(np.float32))
        # the pages LMDB uses (the file itself also holds the writer's reserved room)
        sizes.append(lmdb_used_bytes(db.path))
    # the rewrites reuse the pages of the ones before (two generations live at most)
    assert sizes[-1] <= sizes[1] * 1.1, sizes
