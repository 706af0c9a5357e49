"""Upstream's Python tests (hannoy 0.1.3 tests/test_basic.py, reference §7.5) unchanged, and
upstream's README example (Rust) and docstring example in Python."""

from pathlib import Path
from typing import List
import pytest
import hannoy
from hannoy import Metric


# --- tests/test_basic.py (unchanged) ------------------------------------------------------


@pytest.fixture(scope="function", autouse=False)
def db(tmp_path: Path):
    db = hannoy.Database(tmp_path, Metric.HAMMING)

    with db.writer(3, m=4, ef=10) as writer:
        writer.add_item(0, [1.0, 0.0, 0.0])
        writer.add_item(1, [0.0, 1.0, 0.0])
        writer.add_item(2, [0.0, 0.0, 1.0])

    yield db


def test_exports() -> None:
    assert hannoy.__all__ == ["Metric", "Database", "Writer", "Reader"]


def test_read(db: hannoy.Database) -> None:
    reader = db.reader(0)
    query = [0.0, 1.0, 0.0]

    res = reader.by_vec(query, n=2)
    print(res)
    assert len(res) == 2

    (item_id, dist) = res[0]
    assert item_id == 1
    assert dist == 0.0


def test_multithreaded_reads(db) -> None:
    import threading

    def _read(db: hannoy.Database, query: List[float]):
        reader = db.reader(0)
        t_id = threading.get_ident()
        print(f"nns from thread {t_id}: {reader.by_vec(query, 1)}")

    threads = []
    for q in [
        [
            1.0,
            0.0,
            0.0,
        ],
        [0.0, 1.0, 0.0],
    ]:
        t = threading.Thread(target=_read, args=(db, q))
        threads.append(t)

    for t in threads:
        t.start()

    for t in threads:
        t.join()


# --- upstream README "quick demo" (Rust), in Python ----------------------------------------


def test_readme_example(tmp_path) -> None:
    # const DIM = 3; vecs = [[1,0,0],[0,1,0],[0,0,1]]; env 1 GiB; Database<Cosine>, index 0;
    # build::<16,32> with ef_construction 100 and seed 42; query [1,0,0], nns(1).ef_search(10)
    vecs = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    db = hannoy.Database(tmp_path, Metric.COSINE, env_size=1024 * 1024 * 1024 * 1)
    with db.writer(3, index=0, m=16, ef=100, seed=42) as writer:
        writer.add_item(0, vecs[0])
        writer.add_item(1, vecs[1])
        writer.add_item(2, vecs[2])

    reader = db.reader(0)
    query = [1.0, 0.0, 0.0]
    nns = reader.by_vec(query, n=1, ef_search=10)
    assert nns == [(0, 0.0)]
    db.close()


# --- upstream's docstring example (its `Metric.Cosine` typo fixed: reference §5.6.9) -------


def test_docstring_example(tmp_path) -> None:
    db = hannoy.Database(tmp_path, Metric.COSINE)
    with db.writer(3) as writer:
        writer.add_item(0, [0.1, 0.2, 0.3])
        writer.add_item(1, [0.3, 0.2, 0.1])
    res = db.reader().by_vec([0.1, 0.2, 0.3], n=1)
    assert res[0][0] == 0
    assert abs(res[0][1]) < 1e-6
    db.close()
