"""Searches: by_vec, by_item, by_items, by_array (lists and out= buffers), candidates, and the
item accessors of Reader."""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import pytest

import hannoy
from hannoy import Metric, Reader
from helpers import build_index, exact_knn

U32_MAX = 4294967295


# -- adapted from upstream's newer tests/test_array.py and tests/test_items.py ---------------


def test_add_items_from_numpy_array(array_db: hannoy.Database) -> None:
    reader: Reader = array_db.reader(0)
    assert reader.by_vec([1.0, 0.0, 0.0], n=1) == [(0, 0.0)]
    assert reader.by_vec([0.0, 1.0, 0.0], n=1) == [(1, 0.0)]
    assert reader.by_vec([0.0, 0.0, 1.0], n=1) == [(2, 0.0)]


def test_add_items_row_count_mismatch(make_db: Callable[..., hannoy.Database]) -> None:
    db = make_db()
    vectors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    msg = "add_items requires as many items as the array has rows: got 1 items for 2 rows"
    with pytest.raises(ValueError, match=re.escape(msg)):
        with db.writer(3, m=4, ef=10) as writer:
            writer.add_items([0], vectors)


def test_add_items_requires_2d(make_db: Callable[..., hannoy.Database]) -> None:
    db = make_db()
    with pytest.raises(
        ValueError, match=r"2-D array of shape \(n, 3\), got an array of shape \(3,\)"
    ):
        with db.writer(3, m=4, ef=10) as writer:
            writer.add_items([0], np.array([1.0, 0.0, 0.0], dtype=np.float32))


def test_by_array_1d_matches_by_vec(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    res = reader.by_array(query, n=2, ef_search=10)
    assert res == reader.by_vec([1.0, 0.0, 0.0], n=2, ef_search=10)


def test_by_array_2d_batches_queries(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    queries = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    assert reader.by_array(queries, n=1, ef_search=10) == [[(0, 0.0)], [(1, 0.0)]]


def test_by_array_out_1d(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    expected = reader.by_array(query, n=2, ef_search=10)
    ids = np.zeros(2, dtype=np.uint32)
    distances = np.zeros(2, dtype=np.float32)
    assert reader.by_array(query, n=2, ef_search=10, out=(ids, distances)) is None
    assert list(zip(ids.tolist(), distances.tolist())) == expected


def test_by_array_out_2d(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    queries = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    expected = reader.by_array(queries, n=1, ef_search=10)
    ids = np.zeros((2, 1), dtype=np.uint32)
    distances = np.zeros((2, 1), dtype=np.float32)
    assert reader.by_array(queries, n=1, ef_search=10, out=(ids, distances)) is None
    for row in range(2):
        assert list(zip(ids[row].tolist(), distances[row].tolist())) == expected[row]


def test_by_array_out_pads_missing_hits(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    ids = np.zeros(5, dtype=np.uint32)
    distances = np.zeros(5, dtype=np.float32)
    reader.by_array(query, n=5, ef_search=10, out=(ids, distances))
    assert ids[3:].tolist() == [np.iinfo(np.uint32).max] * 2
    assert distances[3:].tolist() == [float("inf")] * 2
    assert sorted(ids[:3].tolist()) == [0, 1, 2]


def test_by_array_out_2d_pads_every_row(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    queries = np.eye(3, dtype=np.float32)
    ids = np.zeros((3, 6), dtype=np.uint32)
    dists = np.zeros((3, 6), dtype=np.float32)
    reader.by_array(queries, n=6, out=(ids, dists), candidates=[0, 1])
    for row in range(3):
        assert sorted(ids[row, :2].tolist()) == [0, 1]
        assert ids[row, 2:].tolist() == [U32_MAX] * 4
        assert np.isinf(dists[row, 2:]).all() and (dists[row, 2:] > 0).all()


def test_by_array_accepts_float64_and_lists(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    expected = reader.by_vec([1.0, 0.0, 0.0], n=2)
    # upstream raised TypeError for float64; numpy conventions: convert
    assert reader.by_array(np.array([1.0, 0.0, 0.0], dtype=np.float64), n=2) == expected
    assert reader.by_array([1.0, 0.0, 0.0], n=2) == expected
    assert reader.by_array([[1, 0, 0]], n=2) == [expected]


def test_by_array_rejects_3d(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    with pytest.raises(ValueError, match=re.escape("by_array requires a 1D or 2D array, got 3D")):
        reader.by_array(np.zeros((2, 2, 2), dtype=np.float32), n=1)


def _readonly_ids():
    ids = np.zeros(2, dtype=np.uint32)
    ids.flags.writeable = False
    return (ids, np.zeros(2, dtype=np.float32))


@pytest.mark.parametrize(
    ("out", "exc", "message"),
    [
        pytest.param(
            (np.zeros(2, dtype=np.uint32),),
            ValueError,
            "expected tuple of length 2, but got tuple of length 1",
            id="wrong-tuple-length",
        ),
        pytest.param(
            (np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.float32)),
            TypeError,
            "out[0] (ids) must have dtype uint32, got int32",
            id="wrong-ids-dtype",
        ),
        pytest.param(
            (np.zeros(2, dtype=np.uint32), np.zeros(2, dtype=np.float64)),
            TypeError,
            "out[1] (distances) must have dtype float32, got float64",
            id="wrong-distances-dtype",
        ),
        pytest.param(
            (np.zeros(3, dtype=np.uint32), np.zeros(2, dtype=np.float32)),
            ValueError,
            "out[0] (ids) must have shape [2], got [3]",
            id="wrong-ids-shape",
        ),
        pytest.param(
            (np.zeros(2, dtype=np.uint32), np.zeros((1, 2), dtype=np.float32)),
            ValueError,
            "out[1] (distances) must have shape [2], got [1, 2]",
            id="wrong-distances-shape",
        ),
        pytest.param(
            (np.zeros(4, dtype=np.uint32)[::2], np.zeros(2, dtype=np.float32)),
            ValueError,
            "out[0] (ids) must be C-contiguous",
            id="not-contiguous",
        ),
        pytest.param(
            _readonly_ids(), TypeError, "The given array is not writeable", id="read-only"
        ),
        pytest.param(
            ([0, 0], np.zeros(2, dtype=np.float32)),
            TypeError,
            "out[0] (ids) must be a numpy array",
            id="list",
        ),
        pytest.param(
            np.zeros(2, dtype=np.uint32),
            TypeError,
            "out must be a tuple (ids, distances)",
            id="not-a-tuple",
        ),
    ],
)
def test_by_array_out_rejects_invalid_out(array_db: hannoy.Database, out, exc, message) -> None:
    reader = array_db.reader(0)
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    with pytest.raises(exc, match=re.escape(message)):
        reader.by_array(query, n=2, out=out)


def test_by_array_out_2d_shape_checked(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    queries = np.eye(3, dtype=np.float32)
    with pytest.raises(
        ValueError, match=re.escape("out[0] (ids) must have shape [3, 2], got [2, 3]")
    ):
        reader.by_array(
            queries, n=2, out=(np.zeros((2, 3), np.uint32), np.zeros((3, 2), np.float32))
        )


def test_by_array_empty_batch(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    assert reader.by_array(np.zeros((0, 3), dtype=np.float32)) == []
    ids = np.zeros((0, 4), dtype=np.uint32)
    dists = np.zeros((0, 4), dtype=np.float32)
    assert reader.by_array(np.zeros((0, 3), dtype=np.float32), n=4, out=(ids, dists)) is None


def test_by_items_matches_by_item(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    batch = reader.by_items([1, 2, 3], n=2, ef_search=10)
    per_item = [reader.by_item(i, n=2, ef_search=10) for i in (1, 2, 3)]
    assert batch == per_item
    assert batch[2] is None


def test_by_items_batches_query(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    res = reader.by_items([0, 1, 2], n=2, ef_search=10)
    assert [sorted(i for i, _ in row) for row in res] == [[1, 2], [0, 2], [0, 1]]


def test_by_items_none_and_order(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    res = reader.by_items([0, 999, 1], n=2, ef_search=10)
    assert res[0] is not None and res[1] is None and res[2] is not None


def test_by_items_duplicates_and_empty(array_db: hannoy.Database) -> None:
    reader = array_db.reader(0)
    res = reader.by_items([0, 0, 1], n=2, ef_search=10)
    assert res[0] == res[1] == reader.by_item(0, n=2, ef_search=10)
    assert reader.by_items([], n=2, ef_search=10) == []


# -- by_vec / by_item on real data -------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_db(tmp_path_factory, fashion_small):
    base, queries = fashion_small
    db = hannoy.Database(tmp_path_factory.mktemp("fashion") / "db", Metric.EUCLIDEAN)
    build_index(db, base, m=16, ef=96, seed=1)
    yield db, base, queries
    db.close()


def test_results_sorted_and_exact_distances(fashion_db) -> None:
    db, base, queries = fashion_db
    reader = db.reader()
    for q in queries[:10]:
        res = reader.by_vec(q, n=10)
        assert len(res) == 10
        assert res == sorted(res, key=lambda t: (t[1], t[0]))
        for item, dist in res:
            assert isinstance(item, int) and isinstance(dist, float)
            exact = float(((base[item].astype(np.float64) - q) ** 2).sum())
            assert dist == pytest.approx(exact, rel=1e-4)


def test_recall_on_fashion_mnist(fashion_db) -> None:
    db, base, queries = fashion_db
    reader = db.reader()
    hits = 0
    for q in queries:
        truth = {i for i, _ in exact_knn(Metric.EUCLIDEAN, q, base, 10)}
        got = {i for i, _ in reader.by_vec(q, n=10, ef_search=200)}
        hits += len(truth & got)
    recall = hits / (10 * len(queries))
    assert recall >= 0.95, recall


def test_by_array_2d_matches_by_vec_rows(fashion_db) -> None:
    db, base, queries = fashion_db
    reader = db.reader()
    batch = reader.by_array(queries, n=10)
    assert batch == [reader.by_vec(q, n=10) for q in queries]
    assert reader.by_array(queries, n=10, threads=1) == batch
    ids = np.empty((len(queries), 10), dtype=np.uint32)
    dists = np.empty((len(queries), 10), dtype=np.float32)
    reader.by_array(queries, n=10, out=(ids, dists), threads=2)
    assert [list(zip(i.tolist(), d.tolist())) for i, d in zip(ids, dists)] == batch


def test_by_item_never_returns_itself(fashion_db) -> None:
    db, base, _ = fashion_db
    reader = db.reader()
    for item in (0, 7, 1999):
        res = reader.by_item(item, n=20)
        assert res is not None and len(res) == 20
        assert item not in [i for i, _ in res]
        assert res == sorted(res, key=lambda t: (t[1], t[0]))


def test_by_item_absent_is_none(fashion_db) -> None:
    reader = fashion_db[0].reader()
    assert reader.by_item(2000) is None
    assert reader.by_item(U32_MAX) is None


def test_n_larger_than_index(array_db: hannoy.Database) -> None:
    reader = array_db.reader()
    assert len(reader.by_vec([0.0, 0.0, 1.0], n=100)) == 3
    res = reader.by_item(0, n=100)
    assert res is not None and sorted(i for i, _ in res) == [1, 2]


# -- candidates ------------------------------------------------------------------------------


def test_candidates_restrict_results(fashion_db) -> None:
    db, base, queries = fashion_db
    reader = db.reader()
    allowed = np.arange(0, 2000, 7)
    for q in queries[:5]:
        res = reader.by_vec(q, n=10, candidates=allowed)
        assert len(res) == 10
        assert set(i for i, _ in res) <= set(allowed.tolist())
        truth = exact_knn(Metric.EUCLIDEAN, q, base[allowed], 10)
        truth_ids = {int(allowed[i]) for i, _ in truth}
        assert len(truth_ids & {i for i, _ in res}) >= 8


@pytest.mark.parametrize(
    "make",
    [
        lambda ids: list(ids),
        lambda ids: tuple(ids),
        lambda ids: set(ids),
        lambda ids: frozenset(ids),
        lambda ids: (i for i in ids),
        lambda ids: np.array(ids, dtype=np.int64),
        lambda ids: np.array(ids, dtype=np.uint32),
        lambda ids: {i: None for i in ids}.keys(),
        lambda ids: range(ids[0], ids[-1] + 1),
    ],
    ids=["list", "tuple", "set", "frozenset", "generator", "int64", "uint32", "keys", "range"],
)
def test_candidates_any_iterable(array_db: hannoy.Database, make) -> None:
    reader = array_db.reader()
    res = reader.by_vec([1.0, 0.0, 0.0], n=3, candidates=make([1, 2]))
    assert sorted(i for i, _ in res) == [1, 2]


def test_candidates_everywhere(array_db: hannoy.Database) -> None:
    reader = array_db.reader()
    assert [i for i, _ in reader.by_vec([1.0, 0.0, 0.0], n=3, candidates=[2])] == [2]
    assert [i for i, _ in reader.by_item(0, n=3, candidates=[0, 2])] == [2]
    assert reader.by_array(np.eye(3, dtype=np.float32), n=3, candidates=[1]) == [
        [(1, 2.0)],
        [(1, 0.0)],
        [(1, 2.0)],
    ]
    assert reader.by_items([0, 1], n=3, candidates=[2]) == [[(2, 2.0)], [(2, 2.0)]]


def test_candidates_empty_and_unknown(array_db: hannoy.Database) -> None:
    reader = array_db.reader()
    assert reader.by_vec([1.0, 0.0, 0.0], n=3, candidates=[]) == []
    assert reader.by_vec([1.0, 0.0, 0.0], n=3, candidates=[77, 78]) == []
    assert [i for i, _ in reader.by_vec([1.0, 0.0, 0.0], n=3, candidates=[1, 77])] == [1]


def test_candidates_invalid(array_db: hannoy.Database) -> None:
    reader = array_db.reader()
    with pytest.raises(ValueError, match="candidates"):
        reader.by_vec([1.0, 0.0, 0.0], candidates=[-1])
    with pytest.raises(OverflowError):
        reader.by_vec([1.0, 0.0, 0.0], candidates=[2**32])
    with pytest.raises(TypeError, match="candidates"):
        reader.by_vec([1.0, 0.0, 0.0], candidates=["a"])
    with pytest.raises(TypeError, match="candidates"):
        reader.by_vec([1.0, 0.0, 0.0], candidates=3)
    with pytest.raises(TypeError, match="candidates"):
        reader.by_vec([1.0, 0.0, 0.0], candidates=[0.5])


# -- accessors -------------------------------------------------------------------------------


def test_reader_accessors(array_db: hannoy.Database) -> None:
    reader = array_db.reader()
    assert len(reader) == 3
    assert reader.dimensions == 3
    assert reader.metric is Metric.EUCLIDEAN
    assert reader.index == 0
    assert 0 in reader and 2 in reader and 3 not in reader
    assert np.int64(1) in reader
    assert "a" not in reader and -1 not in reader and 2**40 not in reader and None not in reader
    ids = reader.item_ids()
    assert ids.dtype == np.uint32 and ids.tolist() == [0, 1, 2]
    v = reader.item_vector(1)
    assert v is not None and v.dtype == np.float32 and v.shape == (3,)
    assert v.tolist() == [0.0, 1.0, 0.0]
    assert reader.item_vector(5) is None


def test_reader_stats(array_db: hannoy.Database) -> None:
    stats = array_db.reader().stats()
    assert isinstance(stats, dict)
    for key in ("index", "metric", "dimensions", "n_items", "entry_points", "max_level", "version"):
        assert key in stats, key
    assert stats["n_items"] == 3
    assert stats["dimensions"] == 3
    assert stats["index"] == 0
    assert str(stats["metric"]) in ("euclidean", "1")
    assert "library" in stats


def test_database_stats(array_db: hannoy.Database) -> None:
    stats = array_db.stats()
    assert stats["indexes"] == [0]
    assert str(stats["metric"]) in ("euclidean", "1")


def test_item_ids_sparse_and_large(make_db) -> None:
    db = make_db()
    ids = np.array([5, 2**32 - 1, 0, 123456789], dtype=np.uint32)
    vecs = np.arange(12, dtype=np.float32).reshape(4, 3)
    build_index(db, vecs, ids=ids)
    reader = db.reader()
    assert reader.item_ids().tolist() == sorted(ids.tolist())
    assert reader.item_vector(2**32 - 1).tolist() == vecs[1].tolist()
    assert reader.by_vec(vecs[3], n=1) == [(123456789, 0.0)]


def test_multiple_indexes(make_db) -> None:
    db = make_db()
    build_index(db, np.eye(3, dtype=np.float32), index=0)
    build_index(db, np.eye(5, dtype=np.float32) * 2, index=7)
    build_index(db, np.ones((1, 2), dtype=np.float32), index=65535)
    assert db.reader(0).dimensions == 3 and len(db.reader(0)) == 3
    assert db.reader(7).dimensions == 5 and len(db.reader(7)) == 5
    assert db.reader(65535).by_vec([1.0, 1.0]) == [(0, 0.0)]
    assert sorted(db.stats()["indexes"]) == [0, 7, 65535]


def test_reader_snapshot_isolation(make_db) -> None:
    db = make_db()
    build_index(db, np.eye(3, dtype=np.float32))
    old = db.reader()
    with db.writer(3) as w:
        w.add_item(3, [1.0, 1.0, 1.0])
        w.del_item(0)
    new = db.reader()
    assert len(old) == 3 and 0 in old and 3 not in old
    assert len(new) == 3 and 0 not in new and 3 in new
    assert [i for i, _ in old.by_vec([1.0, 1.0, 1.0], n=4)].count(3) == 0
    assert new.by_vec([1.0, 1.0, 1.0], n=1) == [(3, 0.0)]
