"""hannoy.sklearn.HannoyTransformer: a drop-in for scikit-learn's KNeighborsTransformer.

Checked against scikit-learn's exact KNeighborsTransformer (neighbours, distances, graph layout)
on scikit-learn's bundled digits (no download), in the pipelines users build (Isomap, TSNE,
SpectralClustering, KNeighborsClassifier), with scikit-learn's own estimator checks, and for
what a user relies on beyond: parameters, errors, pickling, the temporary directory's lifetime,
and that ``import hannoy`` never imports scikit-learn.
"""

from __future__ import annotations

import ast
import copy
import gc
import inspect
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple
from unittest import SkipTest

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed (hannoy[sklearn])")

import scipy.sparse as sp  # noqa: E402
from joblib import cpu_count, parallel_config  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.cluster import SpectralClustering  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.manifold import TSNE, Isomap, trustworthiness  # noqa: E402
from sklearn.metrics import adjusted_rand_score, pairwise_distances  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier, KNeighborsTransformer  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import hannoy  # noqa: E402
from hannoy.sklearn import HannoyTransformer  # noqa: E402

from helpers import in_forked_child, subprocess_env  # noqa: E402
from test_stubs import _decorators, _runtime_params, _same, _stub_params  # noqa: E402

METRICS = ["euclidean", "cosine", "manhattan", "hamming"]


# -- data ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (64 features, 0..16), shipped with scikit-learn."""
    X, y = load_digits(return_X_y=True)
    return X, y


def _data(digits: Tuple[np.ndarray, np.ndarray], metric: str) -> np.ndarray:
    X = digits[0]
    # hamming is for binary features (hannoy's HAMMING stores one bit per feature)
    return (X > 7).astype(np.float64) if metric == "hamming" else X


@pytest.fixture(autouse=True)
def one_native_thread() -> Iterator[None]:
    """scikit-learn's OpenMP and BLAS on one thread: on a busy machine their spinning threads
    make TSNE ten times slower. hannoy's threads (n_jobs) are its own, not limited."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary directories of this test (path=None) go under tmp_path/tmp, to be inspected."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _rows(graph: Any) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    for i in range(graph.shape[0]):
        lo, hi = graph.indptr[i], graph.indptr[i + 1]
        yield graph.indices[lo:hi], graph.data[lo:hi]


def _pairs(graph: Any) -> Dict[Tuple[int, int], float]:
    """{(row, column): value} of every stored entry (explicit zeros included)."""
    coo = graph.tocoo()
    return {(int(i), int(j)): float(v) for i, j, v in zip(coo.row, coo.col, coo.data)}


def _check_layout(graph: Any, n_queries: int, n_fit: int, per_row: int) -> None:
    """What scikit-learn's kneighbors_graph gives: CSR float64, per_row entries a row, sorted."""
    assert isinstance(graph, sp.csr_matrix)
    assert graph.shape == (n_queries, n_fit)
    assert graph.dtype == np.float64
    np.testing.assert_array_equal(graph.indptr, np.arange(0, n_queries * per_row + 1, per_row))
    for ind, dist in _rows(graph):
        assert len(set(ind.tolist())) == per_row  # distinct neighbours
        assert np.all(np.diff(dist) >= 0)  # ascending distances


# -- against the exact transformer ---------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_same_neighbours_and_distances_as_exact(digits, metric: str) -> None:
    X = _data(digits, metric)
    train, test = X[:1200], X[1200:]
    k = 10
    ours = HannoyTransformer(n_neighbors=k, metric=metric, random_state=0)
    exact = KNeighborsTransformer(n_neighbors=k, metric=metric)
    checks = [
        (ours.fit_transform(train), exact.fit_transform(train), train),
        (ours.transform(test), exact.fit(train).transform(test), test),
    ]
    for got, want, queries in checks:
        _check_layout(got, queries.shape[0], train.shape[0], k + 1)
        # the distance of every pair we return is the true one, in scikit-learn's convention
        true = pairwise_distances(queries, train, metric=metric)
        ind = got.indices.reshape(-1, k + 1)
        np.testing.assert_allclose(
            got.data.reshape(-1, k + 1),
            np.take_along_axis(true, ind, axis=1),
            rtol=1e-6,
            atol=1e-6,
        )
        # the pairs both found have the same distances in both graphs
        ours_pairs, exact_pairs = _pairs(got), _pairs(want)
        both = sorted(ours_pairs.keys() & exact_pairs.keys())
        if metric != "hamming":  # (hamming's ties: see below)
            assert len(both) >= 0.95 * got.nnz
        np.testing.assert_allclose(
            [ours_pairs[p] for p in both], [exact_pairs[p] for p in both], rtol=1e-6, atol=1e-6
        )
        # overlap: a neighbour counts when it is within the exact (k+1)-th distance, so that
        # neighbours tied at that distance count, whichever of them either search picked
        kth = np.sort(true, axis=1)[:, k]
        tie_aware = np.mean(np.take_along_axis(true, ind, axis=1) <= kth[:, None] + 1e-9)
        assert tie_aware >= 0.95, (metric, tie_aware)
        if metric != "hamming":  # hamming's integer distances tie a lot: only the above holds
            overlap = np.mean(
                [len(set(a[0]) & set(b[0])) / (k + 1) for a, b in zip(_rows(got), _rows(want))]
            )
            assert overlap >= 0.95, (metric, overlap)


def test_fit_transform_each_sample_is_its_own_first_neighbour(digits) -> None:
    X = digits[0][:500]
    for mode, per_row in (("distance", 6), ("connectivity", 5)):
        graph = HannoyTransformer(n_neighbors=5, mode=mode).fit_transform(X)
        _check_layout(graph, 500, 500, per_row)
        np.testing.assert_array_equal(graph.indices[::per_row], np.arange(500))
        if mode == "distance":
            assert np.all(graph.data[::per_row] == 0.0)
        else:
            assert np.all(graph.data == 1.0)
        exact = KNeighborsTransformer(n_neighbors=5, mode=mode).fit_transform(X)
        if mode == "distance":  # each row's distances (whichever of tied neighbours was picked)
            np.testing.assert_allclose(graph.data, exact.data, rtol=1e-6, atol=1e-6)
        assert len(_pairs(graph).keys() & _pairs(exact).keys()) >= 0.95 * graph.nnz


def test_connectivity_mode_matches_exact(digits) -> None:
    X = digits[0]
    ours = HannoyTransformer(n_neighbors=4, mode="connectivity").fit(X[:1000])
    exact = KNeighborsTransformer(n_neighbors=4, mode="connectivity").fit(X[:1000])
    got, want = ours.transform(X[1000:]), exact.transform(X[1000:])
    _check_layout(got, 797, 1000, 4)
    assert np.all(got.data == 1.0)
    assert len(_pairs(got).keys() & _pairs(want).keys()) >= 0.95 * got.nnz


def test_training_neighbours_without_themselves(digits) -> None:
    """transform(None) and kneighbors() as scikit-learn: each training sample without itself."""
    X = digits[0][:600]
    ours = HannoyTransformer(n_neighbors=5).fit(X)
    exact = KNeighborsTransformer(n_neighbors=5).fit(X)
    got, want = ours.transform(None), exact.transform(None)
    _check_layout(got, 600, 600, 6)
    assert got.diagonal().sum() == 0 and all(i not in ind for i, (ind, _) in enumerate(_rows(got)))
    assert len(_pairs(got).keys() & _pairs(want).keys()) >= 0.95 * got.nnz
    dist, ind = ours.kneighbors()
    edist, eind = exact.kneighbors()
    assert dist.shape == ind.shape == (600, 5) and dist.dtype == np.float64
    assert ind.dtype == np.intp
    np.testing.assert_allclose(dist, edist, rtol=1e-6, atol=1e-6)
    only = ours.kneighbors(X[:3], n_neighbors=2, return_distance=False)
    np.testing.assert_array_equal(only[:, 0], [0, 1, 2])  # a training sample finds itself
    conn = ours.kneighbors_graph(X[:3], n_neighbors=2)
    assert conn.shape == (3, 600) and np.all(conn.data == 1.0)


def test_too_many_neighbours_is_an_error_as_in_sklearn(digits) -> None:
    X = digits[0][:5]
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit"):
        HannoyTransformer(n_neighbors=5).fit_transform(X)  # 5 + 1 entries a row
    t = HannoyTransformer(n_neighbors=5, mode="connectivity")
    assert t.fit_transform(X).nnz == 25
    with pytest.raises(hannoy.InvalidArgumentError, match="n_neighbors < n_samples_fit"):
        t.kneighbors()
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit"):
        t.kneighbors(X, n_neighbors=6)


def test_sparse_input_gives_the_dense_result(digits) -> None:
    X = digits[0][:400]
    t = HannoyTransformer(random_state=0)
    dense = t.fit_transform(X)
    assert abs(t.fit_transform(sp.csr_matrix(X)) - dense).max() == 0
    assert abs(t.transform(sp.csr_array(X[:50])) - dense[:50]).max() < 1e-6


def test_sparray_when_sklearn_is_configured_so(digits) -> None:
    if "sparse_interface" not in sklearn.get_config():
        pytest.skip("scikit-learn %s has no sparse_interface setting" % sklearn.__version__)
    X = digits[0][:100]
    with sklearn.config_context(sparse_interface="sparray"):
        graph = HannoyTransformer().fit_transform(X)
    assert isinstance(graph, sp.csr_array) and not isinstance(graph, sp.csr_matrix)


# -- pipelines -----------------------------------------------------------------------------------


def _both(final: Any, n_neighbors: int) -> Tuple[Pipeline, Pipeline]:
    return (
        Pipeline([("knn", HannoyTransformer(n_neighbors=n_neighbors)), ("last", clone(final))]),
        Pipeline([("knn", KNeighborsTransformer(n_neighbors=n_neighbors)), ("last", final)]),
    )


def test_pipeline_isomap(digits) -> None:
    X = digits[0][:600]
    ours, exact = _both(Isomap(n_neighbors=10, metric="precomputed", n_components=2), 10)
    got, want = ours.fit_transform(X), exact.fit_transform(X)
    assert got.shape == (600, 2)
    t_got = trustworthiness(X, got, n_neighbors=10)
    t_want = trustworthiness(X, want, n_neighbors=10)
    assert t_got >= t_want - 0.01, (t_got, t_want)
    # new samples go through the transformer's transform (n_queries x n_samples_fit graph)
    assert ours.transform(digits[0][600:650]).shape == (50, 2)


def test_pipeline_tsne(digits) -> None:
    X = digits[0][:200]
    perplexity = 5
    tsne = TSNE(
        metric="precomputed", perplexity=perplexity, init="random", max_iter=250, random_state=0
    )
    ours, exact = _both(tsne, int(3 * perplexity + 1))
    got, want = ours.fit_transform(X), exact.fit_transform(X)
    t_got, t_want = trustworthiness(X, got, n_neighbors=5), trustworthiness(X, want, n_neighbors=5)
    assert t_got >= t_want - 0.02, (t_got, t_want)


def test_pipeline_spectral_clustering(digits) -> None:
    X, y = digits[0][:600], digits[1][:600]
    spectral = SpectralClustering(
        n_clusters=10, affinity="precomputed_nearest_neighbors", n_neighbors=10, random_state=0
    )
    ours, exact = _both(spectral, 10)
    got, want = ours.fit_predict(X), exact.fit_predict(X)
    assert adjusted_rand_score(want, got) >= 0.9
    assert adjusted_rand_score(y, got) >= adjusted_rand_score(y, want) - 0.05


def test_pipeline_kneighbors_classifier(digits) -> None:
    X, y = digits
    ours, exact = _both(KNeighborsClassifier(n_neighbors=10, metric="precomputed"), 10)
    got = ours.fit(X[:1200], y[:1200]).score(X[1200:], y[1200:])
    want = exact.fit(X[:1200], y[:1200]).score(X[1200:], y[1200:])
    assert got >= want - 0.01 and got > 0.9, (got, want)


# -- scikit-learn's estimator checks -------------------------------------------------------------

ESTIMATORS = [
    HannoyTransformer(random_state=0),
    HannoyTransformer(mode="connectivity", metric="manhattan", n_neighbors=3, random_state=0),
]
# Checks that skip here, and why (any other check that skips fails the test below).
SKIPPED_CHECKS: Dict[str, str] = {
    "check_array_api_input": (
        "runs only with SCIPY_ARRAY_API=1 set before scipy is imported: "
        "test_array_api_check_in_a_subprocess runs it so"
    ),
}
# Checks expected to fail, and why: none.
EXPECTED_FAILED_CHECKS: Dict[str, str] = {}


def _check_name(check: Any) -> str:
    return getattr(check, "func", check).__name__


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda e: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    name = _check_name(check)
    try:
        check(estimator)
    except SkipTest as exc:
        if name in SKIPPED_CHECKS and os.environ.get("SCIPY_ARRAY_API") != "1":
            pytest.skip("%s: %s (%s)" % (name, SKIPPED_CHECKS[name], exc))
        pytest.fail("%s skipped but is not in SKIPPED_CHECKS: %s" % (name, exc))


def test_array_api_check_in_a_subprocess() -> None:
    """check_array_api_input as check_estimator yields it for an estimator without array API
    support (NumPy inputs with array API dispatch on), where scipy's array API is enabled."""
    code = (
        "import pickle, sys\n"
        "from sklearn.utils import get_tags\n"
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "for est in pickle.loads(sys.stdin.buffer.read()):\n"
        "    assert not get_tags(est).array_api_support\n"
        "    check_array_api_input(type(est).__name__, est, array_namespace='numpy',\n"
        "                          expect_only_array_outputs=False)\n"
        "print('ok')\n"
    )
    env = subprocess_env()
    env["SCIPY_ARRAY_API"] = "1"
    res = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(ESTIMATORS),
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert res.stdout.decode().strip() == "ok"


# -- parameters ----------------------------------------------------------------------------------


def test_parameters_and_defaults() -> None:
    assert HannoyTransformer().get_params() == {
        "n_neighbors": 5,
        "mode": "distance",
        "metric": "euclidean",
        "n_jobs": None,
        "m": 16,
        "ef_construction": 96,
        "ef_search": 200,
        "path": None,
        "random_state": None,
    }
    t = HannoyTransformer().set_params(metric="cosine", n_neighbors=3)
    assert t.metric == "cosine" and t.n_neighbors == 3
    c = clone(t)
    assert c is not t and c.get_params() == t.get_params()


def test_clone_of_a_fitted_estimator_is_unfitted(digits) -> None:
    t = HannoyTransformer().fit(digits[0][:100])
    c = clone(t)
    with pytest.raises(NotFittedError):
        c.transform(digits[0][:5])
    assert t.transform(digits[0][:5]).shape == (5, 100)


def test_fitted_attributes(digits) -> None:
    X = digits[0][:300]
    t = HannoyTransformer(metric="l1").fit(X)
    assert t.n_features_in_ == 64 and t.n_samples_fit_ == 300
    assert t.effective_metric_ == "manhattan"
    assert os.path.isfile(os.path.join(t.index_path_, "data.mdb"))
    names = t.get_feature_names_out()
    assert len(names) == 300 and names[0] == "hannoytransformer0"
    with pytest.raises(ValueError, match="X has 8 features, but HannoyTransformer is expecting 64"):
        t.transform(X[:, :8])


def test_not_fitted_error() -> None:
    t = HannoyTransformer()
    for call in (lambda: t.transform([[0.0, 1.0]]), t.kneighbors, t.kneighbors_graph):
        with pytest.raises(NotFittedError):
            call()


def test_random_state_is_the_build_seed(digits, tmp_path: Path) -> None:
    """An int random_state builds the index hannoy builds with that seed (n_jobs=1)."""
    X = digits[0][:800].astype(np.float32)
    db = hannoy.Database(tmp_path / "direct", "euclidean")
    with db.writer(64, m=16, ef=96, seed=7, threads=1) as w:
        w.add_items(np.arange(800), X)
    direct = db.reader().stats()
    for random_state, same in ((7, True), (8, False)):
        t = HannoyTransformer(random_state=random_state).fit(X)
        stats = t._index.reader.stats()
        key = (stats["entry_points"], stats["max_level"])
        assert (key == (direct["entry_points"], direct["max_level"])) is same
        t.close()
    # an equal RandomState draws the same seed
    a = HannoyTransformer(random_state=np.random.RandomState(3)).fit(X)
    b = HannoyTransformer(random_state=np.random.RandomState(3)).fit(X)
    assert a._index.reader.stats()["entry_points"] == b._index.reader.stats()["entry_points"]
    db.close()


def test_n_jobs_is_the_thread_count(digits, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: Dict[str, list] = {"writer": [], "by_array": [], "by_items": []}
    real = {
        "writer": hannoy.Database.writer,
        "by_array": hannoy.Reader.by_array,
        "by_items": hannoy.Reader.by_items,
    }

    def spy(name: str) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen[name].append(kwargs.get("threads"))
            return real[name](self, *args, **kwargs)

        return call

    for name in real:
        target = hannoy.Database if name == "writer" else hannoy.Reader
        monkeypatch.setattr(target, name, spy(name))
    X = digits[0][:200]

    def threads(n_jobs: Any) -> set:
        for v in seen.values():
            v.clear()
        t = HannoyTransformer(n_jobs=n_jobs)
        t.fit_transform(X)
        t.transform(X[:10])
        return {x for v in seen.values() for x in v} if all(seen.values()) else set()

    assert threads(None) == {1}
    assert threads(2) == {2}
    assert threads(-1) == {cpu_count()}
    with parallel_config(n_jobs=2):
        assert threads(None) == {2}


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"n_neighbors": 0}, hannoy.InvalidArgumentError, "n_neighbors must be an int >= 1"),
        ({"n_neighbors": 2.5}, hannoy.ArgumentTypeError, "n_neighbors must be an int"),
        ({"mode": "weights"}, hannoy.InvalidArgumentError, "mode must be 'distance' or"),
        ({"metric": "minkowski"}, hannoy.InvalidArgumentError, "metric must be one of"),
        ({"n_jobs": 0}, hannoy.InvalidArgumentError, "n_jobs must be None or a non-zero"),
        ({"n_jobs": "all"}, hannoy.ArgumentTypeError, "n_jobs must be None or"),
        ({"m": 1}, hannoy.InvalidArgumentError, "m must be an int >= 2"),
        ({"ef_construction": 0}, hannoy.InvalidArgumentError, "ef_construction must be"),
        ({"ef_search": 0}, hannoy.InvalidArgumentError, "ef_search must be"),
        ({"path": 3}, hannoy.ArgumentTypeError, "path must be None or a path"),
        ({"random_state": -1}, hannoy.InvalidArgumentError, "random_state must be in"),
        ({"random_state": "x"}, hannoy.ArgumentTypeError, "random_state must be None"),
    ],
)
def test_bad_parameters(params: Dict[str, Any], error: type, match: str) -> None:
    t = HannoyTransformer(**params)  # accepted at construction, as scikit-learn wants
    with pytest.raises(error, match=match):
        t.fit(np.eye(8))
    assert not hasattr(t, "n_features_in_")


def test_bad_data_is_refused_and_a_previous_fit_kept(digits, private_tmp: Path) -> None:
    X = digits[0][:100]
    t = HannoyTransformer(metric="cosine").fit(X)
    before = t.transform(X[:5])
    path = t.index_path_
    bad = X.copy()
    bad[[3, 7]] = 0.0
    with pytest.raises(hannoy.InvalidArgumentError, match=r"all-zero samples: X\[3, 7\] are zero"):
        t.fit(bad)
    with pytest.raises(hannoy.InvalidArgumentError, match="all-zero"):
        t.transform(bad[2:4])
    with pytest.raises(ValueError, match="NaN"):
        t.fit(np.where(X == 0, np.nan, X))
    assert abs(t.transform(X[:5]) - before).max() == 0  # the failed fits changed nothing
    t.fit(X)  # and it fits again
    assert abs(t.transform(X[:5]) - before).max() < 1e-6
    # the failed fits left nothing behind, the good ones replaced their directory
    assert os.listdir(private_tmp) == [os.path.basename(t.index_path_)] != [path]
    with pytest.raises(hannoy.InvalidArgumentError, match="beyond float32"):
        HannoyTransformer().fit(np.full((4, 2), 1e39))
    assert os.listdir(private_tmp) == [os.path.basename(t.index_path_)]


def test_hamming_needs_binary_features() -> None:
    X = np.array([[0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    t = HannoyTransformer(metric="hamming", n_neighbors=1).fit(X)
    graph = t.fit_transform(X)
    # the fraction of differing features, as scikit-learn's hamming (not hannoy's h / 64)
    np.testing.assert_allclose(graph.toarray()[0], [0.0, 0.5, 0.0], atol=0)
    np.testing.assert_allclose(t.kneighbors([[0, 0, 0, 0]])[0], [[0.5]])
    with pytest.raises(hannoy.InvalidArgumentError, match=r"binary features .* X\[1\]"):
        t.transform([[0, 1, 0, 0], [0, 2, 0, 0]])
    with pytest.raises(hannoy.InvalidArgumentError, match="binary features"):
        HannoyTransformer(metric="hamming").fit(np.random.default_rng(0).random((10, 3)))


# -- the index's lifetime and pickling -----------------------------------------------------------


def test_temporary_directory_removed_on_close_and_collection(digits, private_tmp: Path) -> None:
    X = digits[0][:100]
    t = HannoyTransformer().fit(X)
    first = t.index_path_
    assert os.path.isdir(first) and os.path.dirname(first) == str(private_tmp)
    t.fit(X)  # a new fit, a new directory: the previous one goes
    assert not os.path.exists(first) and os.path.isdir(t.index_path_)
    second = t.index_path_
    t.close()
    assert not os.path.exists(second)
    with pytest.raises(NotFittedError):
        t.transform(X)
    t.close()  # idempotent
    t.fit(X)  # usable again
    third = t.index_path_
    del t
    gc.collect()
    assert not os.path.exists(third)
    with HannoyTransformer() as t:
        t.fit(X)
        fourth = t.index_path_
    assert not os.path.exists(fourth) and os.listdir(private_tmp) == []


def test_forked_child_leaves_the_parents_index_alone(digits, private_tmp: Path) -> None:
    X = digits[0][:100]
    t = HannoyTransformer().fit(X)
    path = t.index_path_

    def child() -> bool:
        t.close()  # the child's copy of the estimator: the directory is the parent's
        return os.path.isdir(path)

    assert in_forked_child(child) is True
    assert os.path.isdir(path) and t.transform(X[:2]).shape == (2, 100)
    t.close()
    assert not os.path.exists(path)


def test_given_path_is_kept_and_readable_with_hannoy(digits, tmp_path: Path) -> None:
    X = digits[0][:300]
    path = tmp_path / "knn-index"
    t = HannoyTransformer(path=path, metric="cosine", random_state=0).fit(X)
    assert t.index_path_ == str(path)
    graph = t.transform(X[:5])
    t.close()
    assert os.path.isfile(path / "data.mdb")
    with hannoy.Database(path, "cosine") as db:
        r = db.reader()
        assert len(r) == 300 and r.dimensions == 64
        ids, dists = zip(*r.by_vec(X[0], n=6))
    np.testing.assert_array_equal(graph.indices[:6], ids)
    np.testing.assert_allclose(graph.data[:6], 2 * np.array(dists), atol=1e-7)  # 1 - cos
    # fitting again replaces the index
    t.fit(X[:50])
    assert len(t._index.reader) == 50
    # another metric at the same path: hannoy's error, and the fit before stays usable
    with pytest.raises(hannoy.MetricMismatchError):
        t.set_params(metric="euclidean").fit(X)
    assert t.effective_metric_ == "cosine" and t.transform(X[:2]).shape == (2, 50)
    t.close()


def test_pickle_carries_the_index(digits, private_tmp: Path) -> None:
    X = digits[0][:400]
    t = HannoyTransformer(n_neighbors=7, random_state=0).fit(X)
    want = t.transform(X[:20])
    blob = pickle.dumps(t)
    t.close()  # the original's directory is gone: the copy does not need it
    loaded = pickle.loads(blob)
    assert loaded.index_path_ != t.__dict__.get("index_path_")
    assert os.path.dirname(loaded.index_path_) == str(private_tmp)
    assert abs(loaded.transform(X[:20]) - want).max() == 0
    assert loaded.get_params() == t.get_params()
    deep = copy.deepcopy(loaded)
    assert deep.index_path_ != loaded.index_path_
    assert abs(deep.transform(X[:20]) - want).max() == 0
    paths = [loaded.index_path_, deep.index_path_]
    del loaded, deep
    gc.collect()
    assert not any(os.path.exists(p) for p in paths)
    assert os.listdir(private_tmp) == []
    # an unfitted or closed estimator pickles as its parameters
    assert pickle.loads(pickle.dumps(t)).get_params() == t.get_params()


def test_pickle_with_a_path_reopens_it(digits, tmp_path: Path) -> None:
    X = digits[0][:200]
    path = tmp_path / "idx"
    t = HannoyTransformer(path=str(path)).fit(X)
    blob = pickle.dumps(t)
    assert len(blob) < 20_000  # the path, not the index
    loaded = pickle.loads(blob)
    assert loaded.index_path_ == str(path)
    assert abs(loaded.transform(X[:10]) - t.transform(X[:10])).max() == 0
    loaded.close()
    assert os.path.isfile(path / "data.mdb")  # a given path is never removed
    t.fit(X[:100])  # written again: the pickle no longer describes it
    with pytest.raises(hannoy.HannoyError, match="holds 100 samples of 64 features, not the 200"):
        pickle.loads(blob)
    t.close()
    moved = pickle.dumps(HannoyTransformer(path=str(tmp_path / "gone")).fit(X[:20]))
    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(hannoy.HannoyIOError, match="no hannoy index at"):
        pickle.loads(moved)
    assert not (tmp_path / "gone").exists()


def test_damaged_pickle_gives_an_error_not_a_crash(digits, private_tmp: Path) -> None:
    t = HannoyTransformer().fit(digits[0][:300])
    state = t.__getstate__()
    data = bytearray(state["_index_pickle"]["data"])
    data[4096 * 2 : 4096 * 2 + 64] = b"\xff" * 64  # the first page after LMDB's two meta pages
    state["_index_pickle"] = {"data": bytes(data)}
    fresh = HannoyTransformer.__new__(HannoyTransformer)
    with pytest.raises(hannoy.CorruptDatabaseError):
        fresh.__setstate__(state)
    t.close()
    assert os.listdir(private_tmp) == []


# -- packaging -----------------------------------------------------------------------------------


def test_import_hannoy_never_imports_sklearn() -> None:
    code = (
        "import sys, hannoy\n"
        "hannoy.Metric('cosine')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sklearn', 'scipy', 'joblib'))\n"
        "assert not loaded, loaded\n"
        "sys.modules['sklearn'] = None  # as if scikit-learn were not installed\n"
        "try:\n"
        "    import hannoy.sklearn\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "pip install 'hannoy[sklearn]'" in res.stdout
    assert "sklearn" in sys.modules  # and this process, which imported hannoy.sklearn, has it


def test_stubs_match() -> None:
    import hannoy.sklearn as module

    stub = ast.parse(Path(module.__file__).with_suffix(".pyi").read_text(encoding="utf-8"))
    classes = {n.name: n for n in stub.body if isinstance(n, ast.ClassDef)}
    assert set(classes) == set(module.__all__) == {"HannoyTransformer"}
    node = classes["HannoyTransformer"]
    defs: Dict[str, list] = {}
    for n in node.body:
        if isinstance(n, ast.FunctionDef):
            defs.setdefault(n.name, []).append(n)
    cls = module.HannoyTransformer
    public = {k for k in vars(cls) if not k.startswith("_") or k.startswith("__")}
    public -= {"__module__", "__doc__", "__dict__", "__weakref__", "__qualname__"}
    public -= {k for k in public if k.startswith("__") and not callable(vars(cls)[k])}
    assert set(defs) == public
    for name, fns in defs.items():
        runtime = _runtime_params(getattr(cls, name))
        if "overload" in _decorators(fns[0]):
            for fn in fns:
                assert {p[0] for p in _stub_params(fn)} == {p[0] for p in runtime}, name
            continue
        assert len(fns) == 1 and _same(_stub_params(fns[0]), runtime), (name, runtime)
    attributes = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}  # type: ignore
    assert set(inspect.signature(cls).parameters) <= attributes
    assert {"n_features_in_", "n_samples_fit_", "effective_metric_", "index_path_"} <= attributes
