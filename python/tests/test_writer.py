"""Writers: transactions, the with-block, deletes, builds, progress, cancellation, threads."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import List, Tuple

import numpy as np
import pytest

import hannoy
from hannoy import Database, Metric
from helpers import build_index, subprocess_env

EYE = np.eye(3, dtype=np.float32)


def test_with_block_builds_and_commits(make_db) -> None:
    db = make_db()
    with db.writer(3) as w:
        assert isinstance(w, hannoy.Writer)
        w.add_item(0, [1.0, 0.0, 0.0])
        w.add_items([1, 2], EYE[1:])
        assert not w.closed
    assert w.closed
    assert len(db.reader()) == 3


def test_exception_in_with_block_aborts(make_db) -> None:
    db = make_db()
    build_index(db, EYE)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with db.writer(3) as w:
            w.add_item(10, [5.0, 5.0, 5.0])
            w.del_item(0)
            raise Boom()
    assert w.closed
    reader = db.reader()
    assert len(reader) == 3 and 0 in reader and 10 not in reader


def test_exception_in_first_with_block_leaves_no_index(make_db) -> None:
    db = make_db()
    with pytest.raises(KeyError):
        with db.writer(3) as w:
            w.add_item(0, [1.0, 2.0, 3.0])
            raise KeyError("x")
    with pytest.raises(hannoy.MissingMetadataError):
        db.reader()


def test_commit_or_abort_inside_with_block(make_db) -> None:
    db = make_db()
    with db.writer(3) as w:
        w.add_items([0, 1, 2], EYE)
        w.build()
        w.commit()
    assert len(db.reader()) == 3
    with db.writer(3) as w:
        w.clear()
        w.abort()
    assert len(db.reader()) == 3


def test_explicit_build_commit(make_db) -> None:
    db = make_db()
    w = db.writer(3, m=4, ef=10)
    w.add_items(range(3), EYE)
    assert w.need_build()
    w.build()
    assert not w.need_build()
    w.commit()
    assert w.closed
    assert db.reader().by_vec([0.0, 0.0, 1.0], n=1) == [(2, 0.0)]


def test_commit_without_build_needs_build(make_db) -> None:
    db = make_db()
    build_index(db, EYE)
    w = db.writer(3)
    w.add_item(3, [1.0, 1.0, 1.0])
    w.commit()
    with pytest.raises(hannoy.NeedBuildError) as info:
        db.reader()
    assert isinstance(info.value, RuntimeError)
    with db.writer(3) as w:  # builds the pending change
        pass
    assert len(db.reader()) == 4


def test_abort_discards(make_db) -> None:
    db = make_db()
    build_index(db, EYE)
    w = db.writer(3)
    w.clear()
    assert len(w) == 0
    w.abort()
    assert len(db.reader()) == 3


def test_writer_sees_its_own_changes(make_db) -> None:
    db = make_db()
    build_index(db, EYE)
    w = db.writer(3)
    w.add_item(7, [1.0, 2.0, 3.0])
    assert 7 in w and len(w) == 4
    assert w.item_vector(7).tolist() == [1.0, 2.0, 3.0]
    assert w.item_vector(8) is None
    assert w.del_item(0) is True
    assert w.del_item(0) is False
    assert w.del_item(12345) is False
    assert 0 not in w and len(w) == 3
    assert "x" not in w and -1 not in w
    w.abort()


def test_del_item_then_build(make_db) -> None:
    db = make_db()
    x = np.random.default_rng(0).random((200, 8), dtype=np.float32)
    build_index(db, x)
    with db.writer(8) as w:
        for i in range(0, 200, 2):
            assert w.del_item(i) is True
    reader = db.reader()
    assert len(reader) == 100
    assert reader.item_ids().tolist() == list(range(1, 200, 2))
    for q in x[:20]:
        res = reader.by_vec(q, n=100)
        assert len(res) == 100
        assert all(i % 2 == 1 for i, _ in res)


def test_clear(make_db) -> None:
    db = make_db()
    build_index(db, EYE)
    with db.writer(3) as w:
        w.clear()
        assert len(w) == 0
    reader = db.reader()
    assert len(reader) == 0
    assert reader.by_vec([1.0, 0.0, 0.0]) == []


def test_overwrite_item(make_db) -> None:
    db = make_db()
    build_index(db, EYE)
    with db.writer(3) as w:
        w.add_item(0, [9.0, 9.0, 9.0])
    reader = db.reader()
    assert len(reader) == 3
    assert reader.item_vector(0).tolist() == [9.0, 9.0, 9.0]
    assert reader.by_vec([9.0, 9.0, 9.0], n=1) == [(0, 0.0)]


def test_add_items_is_all_or_nothing(make_db) -> None:
    db = make_db()
    w = db.writer(3)
    bad = np.array([[1, 2, 3], [4, np.nan, 6]], dtype=np.float32)
    with pytest.raises(ValueError, match="finite"):
        w.add_items([0, 1], bad)
    assert len(w) == 0
    with pytest.raises(ValueError):
        w.add_items([0, -1], EYE[:2])
    assert len(w) == 0
    w.add_items([], np.zeros((0, 3), np.float32))
    w.add_items([], [])
    assert len(w) == 0
    w.abort()


def test_add_items_accepts_array_likes(make_db) -> None:
    db = make_db()
    with db.writer(3) as w:
        w.add_items(np.array([0, 1], dtype=np.uint64), [[1, 0, 0], [0, 1, 0]])
        w.add_items((2,), np.array([[0, 0, 1]], dtype=np.float64))
        w.add_item(np.int32(3), np.array([1, 1, 1], dtype=np.int8))
        w.add_item(4.0, (1.0, 2.0, 3.0))  # an integral float id is accepted
        w.add_items(np.arange(5, 7), np.asfortranarray(np.ones((2, 3))))
    assert db.reader().item_ids().tolist() == list(range(7))


@pytest.mark.parametrize("m", [2, 3, 5, 7, 33, 100])
def test_any_m(make_db, m: int) -> None:
    db = make_db()
    x = np.random.default_rng(m).random((300, 6), dtype=np.float32)
    build_index(db, x, m=m)
    reader = db.reader()
    for i in (0, 100, 299):
        assert reader.by_vec(x[i], n=1)[0] == (i, 0.0)


def test_m0(make_db) -> None:
    db = make_db()
    w = db.writer(3, m=4, m0=4)
    assert (w.m, w.m0, w.ef) == (4, 4, 96)
    w.abort()
    w = db.writer(3, m=4)
    assert w.m0 == 8
    w.abort()
    with pytest.raises(ValueError, match=r"m0 must be an integer >= m \(4\), got 3"):
        db.writer(3, m=4, m0=3)
    with pytest.raises(ValueError, match="m must be an integer in 2..4294967295, got 1"):
        db.writer(3, m=1)
    with pytest.raises(ValueError, match="ef must be"):
        db.writer(3, ef=0)


def test_seed_makes_builds_reproducible(make_db) -> None:
    x = np.random.default_rng(5).random((500, 16), dtype=np.float32)
    queries = np.random.default_rng(6).random((20, 16), dtype=np.float32)
    results = []
    for _ in range(2):
        db = make_db()
        build_index(db, x, seed=1234, threads=1, m=4, ef=8)
        reader = db.reader()
        stats = reader.stats()
        results.append(
            (
                reader.by_array(queries, n=10, ef_search=10),
                stats.get("entry_points"),
                stats.get("max_level"),
            )
        )
    assert results[0] == results[1]


def test_writer_properties_and_repr(make_db) -> None:
    db = make_db(Metric.COSINE)
    w = db.writer(3, index=2, m=5, ef=20, seed=9, threads=2)
    assert w.database is db
    assert (w.dimensions, w.index, w.m, w.m0, w.ef, w.seed, w.threads) == (3, 2, 5, 10, 20, 9, 2)
    assert w.metric is Metric.COSINE
    r = repr(w)
    assert r.startswith("<hannoy.Writer path=") and "index=2" in r and "metric=cosine" in r
    assert "closed" not in r
    w.abort()
    assert repr(w).endswith("closed (aborted)>")


def test_closed_writer_raises(make_db) -> None:
    db = make_db()
    w = db.writer(3)
    w.add_items([0, 1, 2], EYE)
    w.build()
    w.commit()
    for call in (
        lambda: w.add_item(3, [1.0, 1.0, 1.0]),
        lambda: w.add_items([3], [[1.0, 1.0, 1.0]]),
        lambda: w.del_item(0),
        w.clear,
        w.build,
        w.commit,
        w.abort,
        w.need_build,
        lambda: len(w),
        lambda: w.item_vector(0),
    ):
        with pytest.raises(hannoy.ClosedError, match="committed") as info:
            call()
        assert isinstance(info.value, RuntimeError)
    with pytest.raises(hannoy.ClosedError):
        with w:
            pass


# -- commit_rw_txn / abort_rw_txn -------------------------------------------------------------


def test_commit_rw_txn(make_db) -> None:
    assert Database.commit_rw_txn() is False
    db = make_db()
    w = db.writer(3)
    w.add_items([0, 1, 2], EYE)
    w.build()
    assert Database.commit_rw_txn() is True
    assert w.closed
    assert Database.commit_rw_txn() is False
    assert len(db.reader()) == 3


def test_abort_rw_txn(make_db) -> None:
    assert Database.abort_rw_txn() is False
    db = make_db()
    build_index(db, EYE)
    w = db.writer(3)
    w.clear()
    assert Database.abort_rw_txn() is True
    assert w.closed
    assert Database.abort_rw_txn() is False
    assert len(db.reader()) == 3


def test_rw_txn_is_per_thread(make_db) -> None:
    db1, db2 = make_db(), make_db()
    build_index(db1, EYE)
    holder: List[hannoy.Writer] = []
    t = threading.Thread(target=lambda: holder.append(db1.writer(3)))
    t.start()
    t.join()
    mine = db2.writer(3)
    assert Database.abort_rw_txn() is True  # only mine
    assert mine.closed and not holder[0].closed
    holder[0].abort()


def test_commit_rw_txn_commits_every_writer_of_the_thread(make_db) -> None:
    db1, db2 = make_db(), make_db()
    w1, w2 = db1.writer(3), db2.writer(3)
    w1.add_items([0, 1, 2], EYE)
    w2.add_items([0, 1, 2], EYE)
    w1.build()
    w2.build()
    assert Database.commit_rw_txn() is True
    assert len(db1.reader()) == 3 and len(db2.reader()) == 3


# -- locking -----------------------------------------------------------------------------------


def test_second_writer_in_same_thread_is_busy(make_db) -> None:
    db = make_db()
    w = db.writer(3)
    with pytest.raises(hannoy.WriterBusyError) as info:
        db.writer(3, index=1)
    assert isinstance(info.value, RuntimeError)
    w.abort()
    db.writer(3, index=1).abort()


def test_second_writer_in_another_thread_waits(make_db) -> None:
    db = make_db()
    w = db.writer(3)
    w.add_items([0, 1, 2], EYE)
    got: List[object] = []

    def other() -> None:
        try:
            w2 = db.writer(3)
            got.append(len(w2))
            w2.abort()
        except BaseException as e:  # pragma: no cover
            got.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(0.5)
    assert t.is_alive(), "the second writer must wait for the write lock"
    w.build()
    w.commit()
    t.join(30)
    assert not t.is_alive()
    assert got == [3]


def test_writer_usable_from_another_thread(make_db) -> None:
    db = make_db()
    w = db.writer(3)
    errors: List[BaseException] = []

    def add(i: int) -> None:
        try:
            w.add_item(i, [float(i), 1.0, 2.0])
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    w.build()
    w.commit()
    assert len(db.reader()) == 16


def test_readers_work_while_writer_writes(make_db) -> None:
    db = make_db()
    x = np.random.default_rng(1).random((300, 8), dtype=np.float32)
    build_index(db, x)
    reader = db.reader()
    expected = reader.by_vec(x[0], n=5)
    stop = threading.Event()
    errors: List[BaseException] = []

    def search() -> None:
        try:
            while not stop.is_set():
                assert reader.by_vec(x[0], n=5) == expected
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with db.writer(8) as w:
            w.add_items(
                np.arange(300, 600), np.random.default_rng(2).random((300, 8), dtype=np.float32)
            )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert len(db.reader()) == 600


# -- progress and cancellation ---------------------------------------------------------------


def test_progress_callable(make_db) -> None:
    db = make_db()
    calls: List[Tuple[str, int, int]] = []
    x = np.random.default_rng(3).random((2000, 32), dtype=np.float32)
    with db.writer(32, progress=lambda phase, done, total: calls.append((phase, done, total))) as w:
        w.add_items(range(2000), x)
    assert calls, "the progress callable was never called"
    from hannoy._writer import PHASES

    for phase, done, total in calls:
        assert phase in PHASES
        assert isinstance(done, int) and isinstance(total, int)
        assert done >= 0 and total >= 0
    assert calls[-1] == ("done", 2000, 2000)  # the items the build inserted, all done


def test_progress_bar(make_db, capsys) -> None:
    pytest.importorskip("tqdm")
    db = make_db()
    with db.writer(3, progress=True) as w:
        w.add_items(range(3), EYE)
    assert len(db.reader()) == 3


def test_progress_bar_without_tqdm(make_db, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    db = make_db()
    with db.writer(3, progress=True) as w:
        w.add_items(range(3), EYE)
    assert len(db.reader()) == 3


def test_progress_invalid(make_db) -> None:
    db = make_db()
    with pytest.raises(TypeError, match="progress must be True, False, None or a callable"):
        db.writer(3, progress="yes")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupt_during_build_keeps_last_commit(make_db, exc) -> None:
    db = make_db()
    build_index(db, EYE)

    def progress(phase: str, done: int, total: int) -> None:
        raise exc("stop")

    with pytest.raises(exc):
        with db.writer(3, progress=progress) as w:
            w.add_items([3, 4], [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
            w.del_item(0)
    assert w.closed
    reader = db.reader()
    assert len(reader) == 3 and 0 in reader and 3 not in reader
    # the write lock was released
    db.writer(3).abort()


def test_failed_build_aborts(make_db) -> None:
    db = make_db()
    build_index(db, EYE)
    w = db.writer(3, progress=lambda *a: (_ for _ in ()).throw(ValueError("no")))
    w.add_item(5, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="no"):
        w.build()
    assert w.closed
    assert 5 not in db.reader()


CTRL_C_CHILD = r"""
import sys, numpy as np, hannoy
path, data = sys.argv[1], sys.argv[2]
x = np.load(data)
db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
with db.writer(x.shape[1], m=16, ef=200) as w:
    w.add_items(range(100), x[:100])
print("BASE", flush=True)
started = []
def progress(phase, done, total):
    if not started:
        started.append(1)
        print("BUILDING", flush=True)
try:
    with db.writer(x.shape[1], m=32, ef=400, progress=progress) as w:
        w.add_items(range(100, len(x)), x[100:])
    print("COMPLETED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", w.closed, flush=True)
r = db.reader()
print("LEN", len(r), flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_cancels_build(tmp_path, fashion_train) -> None:
    data = tmp_path / "x.npy"
    np.save(data, fashion_train)
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, str(tmp_path / "db"), str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    lines: List[str] = []
    sent = answered = 0.0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.extend(line.split())
            if line.strip() == "BUILDING":
                time.sleep(0.3)
                proc.send_signal(signal.SIGINT)
                sent = time.monotonic()
            elif line.startswith("INTERRUPTED") or line.startswith("COMPLETED"):
                answered = time.monotonic()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += out.split()
    assert proc.returncode == 0, err
    if "COMPLETED" in lines:
        pytest.skip("the build finished before the signal arrived")
    assert "INTERRUPTED" in lines, (lines, err)
    assert lines[lines.index("INTERRUPTED") + 1] == "True"  # the writer was aborted
    assert answered - sent < 3.0, "Ctrl-C took %.1fs to stop the build" % (answered - sent)
    assert lines[-1] == "100"  # LEN 100: the last commit is intact


def test_database_close_aborts_open_writer(tmp_path) -> None:
    db = hannoy.Database(tmp_path / "db")
    build_index(db, EYE)
    w = db.writer(3)
    w.clear()
    r = db.reader()
    db.close()
    assert w.closed and r.closed and db.closed
    with pytest.raises(hannoy.ClosedError):
        w.add_item(0, [1.0, 2.0, 3.0])
    db2 = hannoy.Database(tmp_path / "db")
    assert len(db2.reader()) == 3
    db2.close()


def test_dropped_writer_is_aborted(make_db) -> None:
    import gc

    db = make_db()
    build_index(db, EYE)
    w = db.writer(3)
    w.clear()
    del w
    gc.collect()
    # the write lock is free again and nothing was committed
    w2 = db.writer(3)
    assert len(w2) == 3
    w2.abort()


def test_env_size_is_a_hard_limit(tmp_path) -> None:
    db = hannoy.Database(tmp_path / "db", env_size=1 << 20)
    build_index(db, EYE)
    x = np.random.default_rng(0).random((2000, 256), dtype=np.float32)  # 2 MB of vectors
    with pytest.raises(hannoy.MapFullError) as info:
        with db.writer(256, index=1) as w:
            w.add_items(range(2000), x)
    assert isinstance(info.value, RuntimeError)
    assert len(db.reader(0)) == 3  # the last commit is intact
    db.close()


def test_writer_threads_and_seed_keywords(make_db) -> None:
    db = make_db()
    with db.writer(3, threads=1, seed=0) as w:
        w.add_items(range(3), EYE)
    with db.writer(3, index=1, threads=0) as w:  # 0 = every core
        w.add_items(range(3), EYE)
    with db.writer(3, index=2, threads=-1) as w:
        w.add_items(range(3), EYE)
    assert sorted(db.stats()["indexes"]) == [0, 1, 2]


@pytest.mark.slow
def test_cancel_is_prompt(make_db, fashion_train) -> None:
    """A cancel (Ctrl-C) stops the build soon, not at the end of the insertion phase."""
    db = make_db()
    build_index(db, fashion_train[:50])
    state = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "inserting items" and total and done >= total // 20 and "t" not in state:
            state["t"] = time.monotonic()
            state["elapsed"] = state["t"] - state["start"]
            state["fraction"] = done / total
            raise KeyboardInterrupt

    w = db.writer(784, m=32, ef=400, progress=progress)
    w.add_items(range(50, len(fashion_train)), fashion_train[50:])
    state["start"] = time.monotonic()
    try:
        w.build()
    except KeyboardInterrupt:
        pass
    else:
        pytest.skip("the build finished before the progress callable could interrupt it")
    latency = time.monotonic() - state["t"]
    # time the rest of the build would have taken, from the progress so far
    remaining = state["elapsed"] * (1 - state["fraction"]) / max(state["fraction"], 1e-9)
    assert w.closed
    assert len(db.reader()) == 50
    assert latency < max(1.0, 0.25 * remaining), (
        "hannoy_writer_build returned %.2fs after hannoy_writer_cancel (the rest of the build "
        "would have taken about %.2fs)" % (latency, remaining)
    )


@pytest.mark.slow
def test_real_ctrl_c_in_process_is_prompt(make_db, fashion_train) -> None:
    """A real KeyboardInterrupt (signal flag, as Ctrl-C sets it) during build(): cancelled within
    a second, writer aborted, last commit intact. (Waiting with Thread.join would miss it on
    CPython 3.11 and abort while the build is still running.)"""
    import _thread

    db = make_db()
    build_index(db, fashion_train[:50])
    state = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "inserting items" and "timer" not in state:
            state["timer"] = threading.Timer(
                0.05, lambda: (state.setdefault("t", time.monotonic()), _thread.interrupt_main())
            )
            state["timer"].start()

    w = db.writer(784, m=32, ef=400, progress=progress)
    w.add_items(range(50, len(fashion_train)), fashion_train[50:])
    interrupted = False
    try:
        try:
            w.build()
        finally:
            time.sleep(0.3)  # a late interrupt lands here, not in pytest
    except KeyboardInterrupt:
        interrupted = True
    latency = time.monotonic() - state["t"] if "t" in state else 0.0
    if not interrupted or not w.closed:
        if not w.closed:
            w.abort()
        pytest.skip("the build finished before the interrupt arrived")
    assert w.closed
    assert latency < 1.0 + 0.3, latency
    assert len(db.reader()) == 50
    db.writer(784).abort()  # the write lock was released
