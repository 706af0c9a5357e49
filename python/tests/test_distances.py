"""Every metric's returned distances against the numpy formulas of the reference (§2.2), on
small indexes searched with n >= count so that every item comes back."""

from __future__ import annotations

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from helpers import build_index, padded_bits, reference_distances

COUNT = 60


def _data(metric: Metric, dims: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.uniform(-1.0, 1.0, size=(COUNT, dims)).astype(np.float32)
    if metric in (Metric.HAMMING, Metric.BQ_COSINE, Metric.BQ_EUCLIDEAN, Metric.BQ_MANHATTAN):
        # exact zeros of both signs exercise the bit rules (+0.0 vs -0.0 vs > 0)
        x[0, :] = 0.0
        x[1, :] = -0.0
        x[2, ::2] = 0.0
    if metric == Metric.COSINE:
        x[0, :] = 0.0  # zero vector: distance 0 to everything
    return x


@pytest.mark.parametrize("dims", [1, 10, 64, 70])
@pytest.mark.parametrize("metric", list(Metric), ids=str)
def test_distances_match_reference(make_db, metric: Metric, dims: int) -> None:
    rng = np.random.default_rng(1000 + 10 * int(metric) + dims)
    x = _data(metric, dims, rng)
    db = make_db(metric)
    build_index(db, x, m=8, ef=64, seed=3)
    reader = db.reader()
    assert len(reader) == COUNT
    queries = [x[5], rng.uniform(-1, 1, dims).astype(np.float32), np.zeros(dims, np.float32)]
    for q in queries:
        res = reader.by_vec(q, n=COUNT, ef_search=COUNT)
        assert len(res) == COUNT, "every item must come back when n >= count"
        assert sorted(i for i, _ in res) == list(range(COUNT))
        expected = reference_distances(metric, q, x)
        got = np.array([d for _, d in res])
        ids = np.array([i for i, _ in res])
        if metric in (Metric.BQ_EUCLIDEAN, Metric.BQ_MANHATTAN):
            np.testing.assert_array_equal(got, expected[ids])
        elif metric in (Metric.HAMMING, Metric.BQ_COSINE):
            np.testing.assert_allclose(got, expected[ids], rtol=0, atol=1e-6)
        else:
            np.testing.assert_allclose(got, expected[ids], rtol=2e-4, atol=2e-5)
        # ascending by (distance, id)
        assert res == sorted(res, key=lambda t: (t[1], t[0]))


@pytest.mark.parametrize("metric", list(Metric), ids=str)
def test_item_vector_round_trip(make_db, metric: Metric) -> None:
    rng = np.random.default_rng(7)
    dims = 70
    x = _data(metric, dims, rng)
    db = make_db(metric)
    build_index(db, x, m=8, ef=32)
    reader = db.reader()
    for i in (0, 1, 2, 9):
        v = reader.item_vector(i)
        assert v is not None and v.dtype == np.float32 and v.shape == (dims,)
        if metric == Metric.HAMMING:
            np.testing.assert_array_equal(v, (x[i] > 0).astype(np.float32))
        elif metric in (Metric.BQ_COSINE, Metric.BQ_EUCLIDEAN, Metric.BQ_MANHATTAN):
            np.testing.assert_array_equal(
                v, np.where(np.signbit(x[i]), -1.0, 1.0).astype(np.float32)
            )
        else:
            np.testing.assert_array_equal(v, x[i])


def test_euclidean_is_squared(make_db) -> None:
    db = make_db(Metric.EUCLIDEAN)
    build_index(db, np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32))
    assert db.reader().by_vec([0.0, 0.0], n=2) == [(0, 0.0), (1, 25.0)]


def test_cosine_range(make_db) -> None:
    db = make_db(Metric.COSINE)
    build_index(db, np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32))
    res = dict(db.reader().by_vec([2.0, 0.0], n=3))
    assert res[0] == pytest.approx(0.0, abs=1e-7)
    assert res[1] == pytest.approx(0.5, abs=1e-6)
    assert res[2] == pytest.approx(1.0, abs=1e-6)


def test_manhattan(make_db) -> None:
    db = make_db(Metric.MANHATTAN)
    build_index(db, np.array([[1.0, -2.0, 3.0]], dtype=np.float32))
    assert db.reader().by_vec([0.0, 0.0, 0.0], n=1) == [(0, 6.0)]


def test_hamming_divides_by_padded_bits(make_db) -> None:
    db = make_db(Metric.HAMMING)
    build_index(db, np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    res = dict(db.reader().by_vec([1.0, 0.0, 0.0], n=2))
    assert res[0] == pytest.approx(2 / padded_bits(3))
    assert res[1] == pytest.approx(1 / 64)


def test_bq_zero_sign(make_db) -> None:
    # +0.0 is sign-positive (bit 1), -0.0 is not (bit 0)
    db = make_db(Metric.BQ_EUCLIDEAN)
    build_index(db, np.array([[0.0, 0.0], [-0.0, -0.0]], dtype=np.float32))
    res = dict(db.reader().by_vec([1.0, 1.0], n=2))
    assert res == {0: 0.0, 1: 8.0}


def test_all_metrics_open_with_their_name(make_db, tmp_path) -> None:
    for metric in Metric:
        db = hannoy.Database(tmp_path / str(metric), metric)
        build_index(db, np.ones((2, 4), dtype=np.float32))
        assert db.reader().metric is metric
        assert db.stats()["metric"] in (str(metric), int(metric))
        db.close()
