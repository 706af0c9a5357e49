"""Memory budgets and read modes: every mode gives the results a user relies on, the budget
chooses the mode, bad budgets and modes are refused."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Callable, Tuple

import numpy as np
import pytest

import hannoy
from hannoy import Metric

from helpers import build_index, subprocess_env

MODES = ("memory", "compressed", "disk")


def clustered(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    centres = rng.normal(0, 3, size=(16, dims))
    return (centres[rng.integers(0, 16, n)] + rng.normal(size=(n, dims))).astype(np.float32)


def exact_top(metric: Metric, base: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    if metric == Metric.EUCLIDEAN:
        d = ((base - q) ** 2).sum(1)
    elif metric == Metric.MANHATTAN:
        d = np.abs(base - q).sum(1)
    else:
        d = 1 - (base @ q) / (np.linalg.norm(base, axis=1) * np.linalg.norm(q))
    return np.argsort(d, kind="stable")[:k]


@pytest.fixture(params=[Metric.EUCLIDEAN, Metric.COSINE, Metric.MANHATTAN], ids=str)
def built(
    request: pytest.FixtureRequest, make_db: Callable[..., hannoy.Database]
) -> Tuple[hannoy.Database, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    base = clustered(rng, 3000, 40)
    queries = clustered(rng, 40, 40)
    db = make_db(request.param)
    build_index(db, base, m=12, ef=80, seed=5)
    return db, base, queries


def test_every_mode_finds_the_neighbours_with_exact_distances(
    built: Tuple[hannoy.Database, np.ndarray, np.ndarray],
) -> None:
    db, base, queries = built
    recalls = {}
    for mode in MODES:
        with db.reader(read_mode=mode) as r:
            assert r.stats()["read_mode"] == mode
            hits = 0
            for q in queries:
                res = r.by_vec(q, n=10, ef_search=100)
                assert [d for _, d in res] == sorted(d for _, d in res)
                hits += len({i for i, _ in res} & set(exact_top(db.metric, base, q, 10).tolist()))
                # compressed walks return the exact distances: the same as item_vector gives
                for i, d in res[:3]:
                    v = r.item_vector(i)
                    assert v is not None
                    exact = r.by_vec(q, n=1, ef_search=100, candidates=[i])
                    assert exact == [(i, d)]
            recalls[mode] = hits / (10 * len(queries))
    assert recalls["compressed"] >= recalls["memory"] - 0.02, recalls
    assert recalls["memory"] >= 0.9, recalls


def test_compressed_by_item_batches_and_filters(
    built: Tuple[hannoy.Database, np.ndarray, np.ndarray],
) -> None:
    db, _, queries = built
    with db.reader(read_mode="memory") as exact, db.reader(read_mode="compressed") as comp:
        res = comp.by_item(7, n=5)
        assert res is not None and 7 not in [i for i, _ in res]
        assert comp.by_item(999_999) is None
        ids = np.empty((len(queries), 10), np.uint32)
        dists = np.empty((len(queries), 10), np.float32)
        comp.by_array(queries, n=10, ef_search=100, out=(ids, dists))
        for row, q in enumerate(queries[:5]):
            assert [(int(i), float(d)) for i, d in zip(ids[row], dists[row])] == comp.by_vec(
                q, n=10, ef_search=100
            )
        evens = range(0, 3000, 2)
        for q in queries[:5]:
            got = comp.by_vec(q, n=10, ef_search=100, candidates=evens)
            assert len(got) == 10 and all(i % 2 == 0 for i, _ in got)
            overlap = {i for i, _ in got} & {
                i for i, _ in exact.by_vec(q, n=10, ef_search=100, candidates=evens)
            }
            assert len(overlap) >= 8
        assert len(comp) == 3000 and 5 in comp and comp.item_ids().shape == (3000,)


def test_budget_chooses_the_mode(make_db: Callable[..., hannoy.Database]) -> None:
    rng = np.random.default_rng(1)
    db = make_db(Metric.EUCLIDEAN)
    build_index(db, clustered(rng, 2000, 32), seed=1)
    with db.reader() as r:
        st = r.stats()
        used = st["file_bytes"]
        assert used > 2000 * 32 * 4
    with db.reader(memory_budget=used) as r:
        assert (r.stats()["read_mode"], r.stats()["memory_budget_source"]) == ("memory", "explicit")
    with db.reader(memory_budget=used - 1) as r:
        st = r.stats()
        assert st["read_mode"] == "compressed" and st["codes_bytes"] >= 2000 * 32
    with db.reader(memory_budget=1000) as r:
        assert r.stats()["read_mode"] == "disk"
    # the database's budget is the readers' default, and survives pickling
    small = hannoy.Database(db.path, Metric.EUCLIDEAN, memory_budget=used - 1)
    try:
        assert small.memory_budget == used - 1
        with small.reader() as r:
            assert r.stats()["read_mode"] == "compressed"
        again = pickle.loads(pickle.dumps(small))
        assert again.memory_budget == used - 1
        again.close()
    finally:
        small.close()


def test_binary_metrics_never_use_codes(make_db: Callable[..., hannoy.Database]) -> None:
    db = make_db(Metric.BQ_EUCLIDEAN)
    build_index(db, clustered(np.random.default_rng(2), 500, 64), seed=1)
    with db.reader(read_mode="compressed") as r:
        assert r.stats()["read_mode"] == "disk"
        assert len(r.by_vec(np.ones(64, np.float32), n=5)) == 5


@pytest.mark.parametrize("bad", [0, -1, 2**63, 1.5, "1G", True])
def test_bad_budgets_are_refused(array_db: hannoy.Database, bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        array_db.reader(memory_budget=bad)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError)):
        hannoy.Database(array_db.path, memory_budget=bad)  # type: ignore[arg-type]
    assert array_db.reader().by_vec([1.0, 0.0, 0.0], n=1) == [(0, 0.0)]


@pytest.mark.parametrize("bad", ["fast", "", None, 2])
def test_bad_read_modes_are_refused(array_db: hannoy.Database, bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="read_mode"):
        array_db.reader(read_mode=bad)  # type: ignore[arg-type]


def test_budget_from_the_environment(array_db: hannoy.Database) -> None:
    code = (
        "import hannoy, json; r = hannoy.Database(%r).reader(); s = r.stats(); "
        "print(json.dumps([s['read_mode'], s['memory_budget'], s['memory_budget_source']]))"
        % array_db.path
    )
    for value, want in [("16", ["disk", 16, "environment"]), ("1G", ["memory", 2**30, "environment"])]:
        env = subprocess_env()
        env["HANNOY_MEMORY_BUDGET"] = value
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == want


def test_codes_follow_commits(make_db: Callable[..., hannoy.Database], tmp_path: Path) -> None:
    """A compressed reader sees its own snapshot; one opened after a commit sees the commit."""
    rng = np.random.default_rng(4)
    db = make_db(Metric.EUCLIDEAN)
    base = clustered(rng, 1000, 24)
    build_index(db, base, seed=1)
    old = db.reader(read_mode="compressed")
    moved = base[0] + 100.0
    with db.writer(24) as w:
        w.add_item(0, moved)
    new = db.reader(read_mode="compressed")
    assert new.by_vec(moved, n=1) == [(0, 0.0)]
    assert old.by_vec(base[0], n=1) == [(0, 0.0)]
    old.close()
    new.close()
