"""Threads, processes, fork, and the lifetime of handles."""

from __future__ import annotations

import gc
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from typing import List

import numpy as np
import pytest

import hannoy
from hannoy import Database, Metric
from helpers import build_index, subprocess_env, in_forked_child

EYE = np.eye(3, dtype=np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory, fashion_small):
    base, queries = fashion_small
    path = tmp_path_factory.mktemp("conc") / "db"
    db = Database(path, Metric.EUCLIDEAN)
    build_index(db, base, seed=2)
    yield db, path, base, queries
    db.close()


# -- threads -----------------------------------------------------------------------------------


def test_eight_threads_search_one_reader(built) -> None:
    db, _, _, queries = built
    reader = db.reader()
    expected = [reader.by_vec(q, n=10) for q in queries]
    errors: List[BaseException] = []
    barrier = threading.Barrier(8)

    def work(seed: int) -> None:
        try:
            barrier.wait()
            order = np.random.default_rng(seed).permutation(len(queries))
            for _ in range(3):
                for i in order:
                    assert reader.by_vec(queries[i], n=10) == expected[i]
                assert reader.by_array(queries, n=10, threads=2) == expected
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_searches_release_the_gil(built) -> None:
    db, _, _, queries = built
    reader = db.reader()
    big = np.repeat(queries, 20, axis=0)  # 1000 queries
    ticks = [0]
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0)

    t = threading.Thread(target=tick)
    t.start()
    try:
        start = ticks[0]
        reader.by_array(big, n=10, ef_search=400, threads=1)
        progressed = ticks[0] - start
    finally:
        stop.set()
        t.join()
    assert progressed > 0


def test_close_reader_while_other_threads_search(built) -> None:
    db, _, _, queries = built
    reader = db.reader()
    errors: List[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                reader.by_vec(queries[0], n=10)
        except hannoy.ClosedError:
            pass
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.01)
    reader.close()
    for t in threads:
        t.join()
    assert errors == []
    assert reader.closed


# -- lifetime ----------------------------------------------------------------------------------


def test_reprs(tmp_path) -> None:
    db = Database(tmp_path / "x", Metric.EUCLIDEAN)
    assert repr(db) == "<hannoy.Database path=%r metric=euclidean name=None>" % str(tmp_path / "x")
    build_index(db, np.ones((10, 784), dtype=np.float32) * np.arange(10)[:, None])
    r = db.reader()
    assert repr(r) == "<hannoy.Reader index=0 metric=euclidean dimensions=784 items=10>"
    w = db.writer(784)
    assert repr(w).startswith("<hannoy.Writer path=")
    w.abort()
    db.close()
    named = Database(tmp_path / "y", Metric.BQ_COSINE, name="vectors")
    assert repr(named) == "<hannoy.Database path=%r metric=bq_cosine name='vectors'>" % str(
        tmp_path / "y"
    )
    named.close()


def test_database_context_manager(tmp_path) -> None:
    with Database(tmp_path / "db") as db:
        build_index(db, EYE)
        r = db.reader()
        with r as r2:
            assert r2 is r
            assert len(r) == 3
        assert r.closed
        r3 = db.reader()
    assert db.closed and r3.closed


def test_finalizers_close_handles(tmp_path) -> None:
    import weakref

    db = Database(tmp_path / "db")
    build_index(db, EYE)
    r = db.reader()
    handle = r._h
    ref = weakref.ref(r)
    del r
    gc.collect()
    assert ref() is None
    assert not handle.is_open
    dbh = db._h
    del db
    gc.collect()
    assert not dbh.is_open
    # the environment was closed with its last handle: reopening works
    db = Database(tmp_path / "db")
    assert len(db.reader()) == 3
    db.close()


def test_same_path_shares_one_environment(tmp_path) -> None:
    a = Database(tmp_path / "db")
    b = Database(str(tmp_path / "db") + "/")  # same canonical path
    build_index(a, EYE)
    assert len(b.reader()) == 3
    a.close()
    assert len(b.reader()) == 3  # still open through b
    b.close()


def test_two_paths_are_two_databases(tmp_path) -> None:
    a = Database(tmp_path / "a", Metric.EUCLIDEAN)
    b = Database(tmp_path / "b", Metric.COSINE)
    build_index(a, EYE)
    build_index(b, np.ones((5, 2), dtype=np.float32))
    assert a.reader().dimensions == 3 and len(a.reader()) == 3
    assert b.reader().dimensions == 2 and len(b.reader()) == 5
    a.close()
    b.close()


def test_named_databases(tmp_path) -> None:
    a = Database(tmp_path / "db", Metric.EUCLIDEAN, name="first")
    b = Database(tmp_path / "db", Metric.COSINE, name="second")
    main = Database(tmp_path / "db", Metric.MANHATTAN)
    build_index(a, EYE)
    build_index(b, np.ones((5, 2), dtype=np.float32))
    build_index(main, np.ones((1, 4), dtype=np.float32))
    assert len(a.reader()) == 3 and a.reader().metric is Metric.EUCLIDEAN
    assert len(b.reader()) == 5 and b.reader().metric is Metric.COSINE
    assert len(main.reader()) == 1 and main.reader().dimensions == 4
    for db in (a, b, main):
        db.close()
    again = Database(tmp_path / "db", Metric.COSINE, name="second")
    assert len(again.reader()) == 5
    again.close()


def test_pickle_reopens_by_path(tmp_path) -> None:
    db = Database(tmp_path / "db", Metric.COSINE, name="n")
    build_index(db, EYE)
    db2 = pickle.loads(pickle.dumps(db))
    assert (db2.path, db2.metric, db2.name) == (db.path, db.metric, db.name)
    r = pickle.loads(pickle.dumps(db.reader()))
    assert len(r) == 3
    w = db.writer(3)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(w)
    w.abort()
    db2.close()
    db.close()


# -- processes -------------------------------------------------------------------------------


REOPEN_CHILD = r"""
import json, sys, numpy as np, hannoy
path, qpath = sys.argv[1], sys.argv[2]
queries = np.load(qpath)
db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
r = db.reader()
print(json.dumps({"len": len(r), "results": r.by_array(queries, n=10),
                  "by_item": r.by_item(3, n=5)}))
"""


@pytest.mark.slow
def test_reopen_in_new_process(built, tmp_path) -> None:
    db, path, _, queries = built
    reader = db.reader()
    qpath = tmp_path / "q.npy"
    np.save(qpath, queries)
    res = subprocess.run(
        [sys.executable, "-c", REOPEN_CHILD, str(path), str(qpath)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["len"] == len(reader)
    expected = reader.by_array(queries, n=10)
    assert [[tuple(p) for p in row] for row in got["results"]] == expected
    assert [tuple(p) for p in got["by_item"]] == reader.by_item(3, n=5)


WRITER_CHILD = r"""
import sys, numpy as np, hannoy
db = hannoy.Database(sys.argv[1], hannoy.Metric.EUCLIDEAN)
with db.writer(3, index=5) as w:
    w.add_items([0, 1], np.eye(3, dtype=np.float32)[:2])
print("ok")
"""


@pytest.mark.slow
def test_other_process_writes_while_we_read(tmp_path) -> None:
    db = Database(tmp_path / "db")
    build_index(db, EYE)
    r = db.reader()
    res = subprocess.run(
        [sys.executable, "-c", WRITER_CHILD, str(tmp_path / "db")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert len(r) == 3
    assert len(db.reader(5)) == 2
    db.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_forked_child_gets_a_clear_error(array_db: Database) -> None:
    reader = array_db.reader()
    assert reader.by_vec([1.0, 0.0, 0.0], n=1) == [(0, 0.0)]  # the library is loaded
    def child() -> list:  # never calls into Go
        msgs = []
        for call in (
            lambda: reader.by_vec([1.0, 0.0, 0.0], n=1),
            lambda: Database(array_db.path),
            lambda: array_db.reader(),
        ):
            start = time.monotonic()
            try:
                call()
                msgs.append("no error")
            except hannoy.ForkedProcessError as e:
                msgs.append(
                    "spawn" in str(e)
                    and "forkserver" in str(e)
                    and isinstance(e, RuntimeError)
                    and time.monotonic() - start < 1.0  # the error comes at once
                )
            except BaseException as e:
                msgs.append(repr(e))
        # closing is allowed and neither calls into Go nor waits for the parent's threads
        reader._h._busy = 1  # as if a parent thread was searching at fork time
        reader.close()
        array_db.close()
        msgs.append(reader.closed and array_db.closed)
        return msgs

    result = in_forked_child(child)
    assert result == [True, True, True, True]
    # the parent is unaffected
    assert reader.by_vec([1.0, 0.0, 0.0], n=1) == [(0, 0.0)]


def test_library_loaded_on_first_use(array_db: Database) -> None:
    assert hannoy._ffi.is_loaded()
    info = hannoy.library_info()
    assert info.get("format") == "0.1.3"
    assert "version" in info
