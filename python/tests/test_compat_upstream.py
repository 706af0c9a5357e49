"""File compatibility with upstream hannoy 0.1.3 (the Rust package on PyPI), run side by side.

Upstream is installed from the package index into ``<repo>/.cache/upstream-hannoy`` (once,
reused; override with ``HANNOY_UPSTREAM_DIR``) and driven in a separate process by
``upstream_driver.py`` (both packages import as ``hannoy``; upstream has one process-global LMDB
environment, the first path wins, so each database gets its own driver process). Commands and
results go through JSON and .npy files in a temporary directory.

The module is skipped only when that install is impossible; when the environment variable ``CI``
is set, a failed install is a test failure. Raw LMDB key/values are read with py-lmdb (``lmdb``
on PyPI, a test requirement), read-only and without locking, from a copy of the directory.

Data: the repository's Fashion-MNIST subset (2,100 training images, 50 test images as queries;
pixels / 255, centred on the per-pixel mean for cosine, binary quantized and hamming, so signs
vary). Per metric, both sides build the same indexes with the same inputs:

* index 0: 2,000 items, 784 dims, m=16, ef=96, one build;
* index 1: 1,000 items (m=8, ef=64), then a second build that adds 200 items and overwrites
  100 (upstream's Python API has no ``del_item``: its incremental builds only add/overwrite);
* index 2: 500 items with sparse ids (up to 4,000,000,000), 100 dims (binary codecs pad to 128
  bits), m=4, ef=32, a few rows with +0.0 / -0.0 / subnormal values;
* here only, index 3: 1,000 items, then 100 deletes, 50 overwrites, 50 additions.

Agreement of searches (top 10, ef_search=200) is measured per query as the *tie-aware* overlap
(an id counts when the other side has it too or when its distance is not worse than the other
side's 10th distance; the smaller of both directions): binary metrics have many exact ties at
the 10th distance, and either side may return any of the tied ids. The plain overlap is printed
in every failure message next to it. Returned distances of the same (query, item) pairs must be
equal for binary metrics and within 1e-6 + 1e-5*max(1, max distance) for f32 metrics (both
sides sum in a different order). Two upstream quirks are accounted for, explicitly:

* binary quantized cosine: for queries with an exact binary match, at 65..128 (or 385..512)
  dims, the distance is -2**-24 and upstream ranks it after everything (src/ordered_float.rs
  compares f32 bit patterns as u32), which derails its search: such queries are left out of
  the agreement (exact_match_rows) and the divergence has its own test,
  test_bq_cosine_exact_match_ranking;
* cosine: upstream's own distance between identical vectors can be 2**-24 instead of 0.

Cosine norm headers are compared exactly only in test_bytes_identical; elsewhere the raw header
check uses a 1e-6 relative tolerance (the byte difference is reported once, there).
"""

from __future__ import annotations

import os
import shutil
import site
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

import helpers

# The suite imports hannoy from the source tree (conftest.py); after a plain `make install` the
# library is only in site-packages. Use it then, rather than skipping everything.
if not helpers.library_available() and not os.environ.get("HANNOY_LIBRARY"):
    for _sp in site.getsitepackages():
        _cand = Path(_sp) / "hannoy" / "libhannoy.so"
        if _cand.exists():
            os.environ["HANNOY_LIBRARY"] = str(_cand)
            break

import hannoy  # noqa: E402
from hannoy import Metric  # noqa: E402


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


try:  # py-lmdb reads the raw key/values; a test requirement (pip install lmdb)
    import lmdb  # noqa: F401
except ImportError:
    if in_ci():
        raise
    pytest.skip("py-lmdb is not installed (pip install lmdb)", allow_module_level=True)

from compat_helpers import (  # noqa: E402
    BINARY,
    HEADER_SIZE,
    MODE_ITEM,
    MODE_META,
    VERSION_0_1_3,
    Upstream,
    UpstreamUnavailable,
    agreement,
    check_index_validity,
    decode_item,
    ensure_upstream,
    expected_body,
    expected_header,
    expected_values,
    index_entries,
    key,
    parse_metadata,
    read_raw,
    upstream_cosine_norm,
)

pytestmark = pytest.mark.slow

METRICS = ["COSINE", "EUCLIDEAN", "MANHATTAN", "BQ_COSINE", "BQ_EUCLIDEAN", "BQ_MANHATTAN",
           "HAMMING"]
K = 10
EF_SEARCH = 200
MIN_AGREEMENT = 0.95
ABSENT = 0xFFFFFFFF


# -- data and the index plan ---------------------------------------------------------------


@dataclass
class Step:
    """One `with db.writer(...)` block."""

    index: int
    dims: int
    m: int
    ef: int
    ids: np.ndarray
    vectors: np.ndarray
    deletes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


@dataclass
class Plan:
    metric: str
    base: np.ndarray  # (2100, 784)
    queries: Dict[int, np.ndarray]  # per index
    steps: List[Step]

    def expected(self, steps: Optional[List[Step]] = None) -> Dict[int, Dict[int, np.ndarray]]:
        state: Dict[int, Dict[int, np.ndarray]] = {}
        for s in steps if steps is not None else self.steps:
            items = state.setdefault(s.index, {})
            for d in s.deletes:
                items.pop(int(d), None)
            for i, v in zip(s.ids, s.vectors):
                items[int(i)] = v
        return state

    def dims(self, index: int) -> int:
        return next(s.dims for s in self.steps if s.index == index)


SMALL_COLS = slice(342, 442)  # 100 central pixels
SMALL_IDS = np.arange(500, dtype=np.int64) * 131 + 5
SMALL_IDS[-1] = 4_000_000_000  # a second roaring container far away, near the u32 limit


def small_vectors(base: np.ndarray) -> np.ndarray:
    v = base[:500, SMALL_COLS].copy()
    v[0, :8] = [0.0, -0.0, 1e-40, -1e-40, 0.0, -0.0, 3.5, -2.25]  # signed zeros, subnormals
    v[1, ::2] = -0.0
    v[2, 1::2] = 0.0
    v[3, :50] = np.float32(1e-38)
    return v


@pytest.fixture(scope="module")
def pixels(fashion_train: np.ndarray, fashion_test: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return (fashion_train[:2100] / np.float32(255)).astype(np.float32), (
        fashion_test[:50] / np.float32(255)
    ).astype(np.float32)


def make_plan(metric: str, pixels: Tuple[np.ndarray, np.ndarray]) -> Plan:
    base, q = pixels
    if metric not in ("EUCLIDEAN", "MANHATTAN"):
        mean = base[:2000].mean(axis=0)
        base, q = (base - mean).astype(np.float32), (q - mean).astype(np.float32)
    steps = [
        Step(0, 784, 16, 96, np.arange(2000), base[:2000]),
        Step(1, 784, 8, 64, np.arange(1000), base[:1000]),
        Step(2, 100, 4, 32, SMALL_IDS, small_vectors(base)),
        # second build of index 1: 200 new items, 100 overwritten (no deletes: see module doc)
        Step(1, 784, 8, 64, np.concatenate([np.arange(1000, 1200), np.arange(100)]),
             np.concatenate([base[1000:1200], base[2000:2100]])),
    ]
    queries = {0: q, 1: q, 2: np.ascontiguousarray(q[:, SMALL_COLS]), 3: q}
    return Plan(metric, base, queries, steps)


def ours_only_steps(plan: Plan) -> List[Step]:
    """index 3, built here only (upstream's Python API cannot delete)."""
    base = plan.base
    ids = np.arange(1000)
    over = np.arange(5, 500, 10)  # 50 overwritten
    return [
        Step(3, 784, 16, 96, ids, base[:1000]),
        Step(3, 784, 16, 96, np.concatenate([over, np.arange(1000, 1050)]),
             np.concatenate([base[2000:2050], base[2050:2100]]),
             deletes=np.arange(0, 1000, 10)),
    ]


# -- running each side ---------------------------------------------------------------------


def np_file(workdir: Path, name: str, array: np.ndarray) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    np.save(workdir / name, array)
    return name


def upstream_write_ops(workdir: Path, steps: List[Step], tag: str) -> List[Dict[str, Any]]:
    ops = []
    for j, s in enumerate(steps):
        assert not len(s.deletes), "upstream's Python API has no delete"
        ops.append({
            "op": "write", "index": s.index, "dims": s.dims, "m": s.m, "ef": s.ef,
            "ids": np_file(workdir, "%s_ids_%d.npy" % (tag, j), np.asarray(s.ids, np.int64)),
            "vectors": np_file(workdir, "%s_vec_%d.npy" % (tag, j), s.vectors),
            # small steps go through add_item (lists), big ones through add_items (numpy)
            "method": "add_item" if len(s.ids) <= 500 else "add_items",
        })
    return ops


def upstream_search_ops(workdir: Path, plan: Plan, indexes: List[int], tag: str) -> List[Dict]:
    return [
        {"op": "search", "index": i, "n": K, "ef_search": EF_SEARCH, "out": "%s_s%d" % (tag, i),
         "queries": np_file(workdir, "%s_q%d.npy" % (tag, i), plan.queries[i])}
        for i in indexes
    ]


def ours_build(path: Path, metric: str, steps: List[Step], **db_kwargs: Any) -> None:
    with hannoy.Database(path, getattr(Metric, metric), **db_kwargs) as db:
        for s in steps:
            with db.writer(s.dims, index=s.index, m=s.m, ef=s.ef, seed=42) as w:
                for d in s.deletes:
                    assert w.del_item(int(d)), "del_item(%d) found nothing" % d
                w.add_items(np.asarray(s.ids, np.int64), s.vectors)


def ours_search(reader: Any, queries: np.ndarray, metric: str = "",
                ) -> Tuple[np.ndarray, np.ndarray]:
    """by_array with out=. For BQ_COSINE, the results are re-ranked as upstream would rank
    them (see upstream_rank): search K+10, move negative distances last, keep K."""
    n = K + 10 if metric == "BQ_COSINE" else K
    ids = np.empty((queries.shape[0], n), dtype=np.uint32)
    dists = np.empty((queries.shape[0], n), dtype=np.float32)
    reader.by_array(queries, n=n, ef_search=EF_SEARCH, out=(ids, dists))
    if metric == "BQ_COSINE":
        ids, dists = upstream_rank(ids, dists)
    return ids[:, :K].copy(), dists[:, :K].copy()


def upstream_rank(ids: np.ndarray, dists: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Upstream orders distances by their f32 bit pattern as a u32 (src/ordered_float.rs), so a
    negative distance ranks after every positive one (after +inf). Only binary quantized cosine
    produces negative distances: for an exact binary match, (1 - Dp / (sqrt(Dp)*sqrt(Dp))) / 2
    in f32 is -2**-24 when sqrt(Dp)**2 rounds below Dp (Dp = 128, 448, 512 bits, ...). Upstream
    therefore returns exact matches there last, if at all, and this package first: see
    test_bq_cosine_exact_match_ranking. To compare the rest, our results are re-ranked the
    upstream way."""
    order = np.argsort(dists.view(np.uint32), axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dists, order, 1)


def exact_match_rows(metric: str, queries: np.ndarray,
                     items: Dict[int, np.ndarray]) -> np.ndarray:
    """Queries whose binary code equals some item's code, where that match has a negative bq
    cosine distance (-2**-24): upstream ranks it last *during the graph walk* as well, which
    derails its search for these queries (upstream_rank). Empty for other metrics/sizes."""
    rows = np.zeros(len(queries), bool)
    if metric != "BQ_COSINE":
        return rows
    dp = 64 * ((queries.shape[1] + 63) // 64)
    n = np.float32(np.sqrt(np.float32(dp)))
    if (np.float32(1) - np.float32(dp) / (n * n)) / np.float32(2) >= 0:
        return rows
    codes = expected_values(metric, np.stack(list(items.values())))
    qc = expected_values(metric, queries)
    for j, q in enumerate(qc):
        rows[j] = bool((codes == q).all(axis=1).any())
    return rows


def assert_agree(what: str, metric: str, a: Tuple[np.ndarray, np.ndarray],
                 b: Tuple[np.ndarray, np.ndarray],
                 ctx: Optional[Tuple[np.ndarray, Dict[int, np.ndarray]]] = None) -> None:
    """a = this package, b = upstream, on the same file and queries. ctx = (queries, items)
    lets bq cosine leave out the queries that trigger upstream's negative-distance bug."""
    skip = exact_match_rows(metric, ctx[0], ctx[1]) if ctx is not None else np.zeros(len(a[0]), bool)
    keep = ~skip
    assert keep.sum() >= len(keep) // 2, "%s: too few queries left" % what
    ag = agreement(a[0][keep], a[1][keep], b[0][keep], b[1][keep], K)
    msg = ("%s (%s): tie-aware top-%d agreement %.3f (worst query %.2f), plain overlap %.3f, "
           "max |distance difference| %.3g (relative %.3g)%s"
           % (what, metric, K, ag.tie_aware, ag.worst, ag.strict, ag.max_dist_diff,
              ag.max_rel_diff, "; %d queries with an exact bq cosine match left out" % skip.sum()
              if skip.any() else ""))
    assert ag.tie_aware >= MIN_AGREEMENT, msg
    # the same (query, item) distance on both sides: binary metrics exactly, f32 metrics up to
    # summation order (upstream's AVX kernels add in another order than ours)
    if metric in BINARY:
        assert ag.max_rel_diff <= 1e-6, msg
    else:
        assert ag.max_dist_diff <= 1e-6 + 1e-5 * max(1.0, float(np.max(np.abs(b[1][b[0] != ABSENT])))), msg
    print(msg)


def check_items_here(reader: Any, metric: str, expected: Dict[int, np.ndarray], what: str) -> None:
    ids = reader.item_ids()
    assert ids.dtype == np.uint32
    assert ids.tolist() == sorted(expected), "%s: item ids differ: missing %r, extra %r" % (
        what, sorted(set(expected) - set(ids.tolist()))[:5],
        sorted(set(ids.tolist()) - set(expected))[:5])
    assert len(reader) == len(expected)
    keys = sorted(expected)
    want = expected_values(metric, np.stack([expected[i] for i in keys]))
    bad = []
    for j, i in enumerate(keys):
        got = reader.item_vector(i)
        if got is None or got.shape != want[j].shape or not np.array_equal(got, want[j]):
            bad.append(i)
    assert not bad, "%s: %d item vectors read back differently, e.g. item %d: got %r want %r" % (
        what, len(bad), bad[0], reader.item_vector(bad[0])[:8], want[keys.index(bad[0])][:8])


def check_raw_vectors(raw: Dict[bytes, bytes], metric: str, index: int,
                      expected: Dict[int, np.ndarray], what: str) -> None:
    """Every vector key's value against the encoding of §1.3/§2.1 (the cosine norm with a
    1e-6 relative tolerance: see test_bytes_identical for the exact comparison)."""
    e = index_entries(raw, index)
    dims = len(next(iter(expected.values())))
    bad_body, bad_header = [], []
    for i, v in expected.items():
        value = e.get((MODE_ITEM, i, 0))
        assert value is not None, "%s: no vector key for item %d" % (what, i)
        header, _ = decode_item(metric, value, dims)
        body = value[1 + len(header):]
        if body != expected_body(metric, v):
            bad_body.append(i)
        want_h = expected_header(metric, v)
        if metric == "COSINE":
            g, w = struct.unpack("<f", header)[0], struct.unpack("<f", want_h)[0]
            if abs(g - w) > 1e-6 * max(abs(w), 1e-30):
                bad_header.append(i)
        elif header != want_h:
            bad_header.append(i)
    assert not bad_body, "%s: %d vector bodies differ from the 0.1.3 encoding, e.g. item %d" % (
        what, len(bad_body), bad_body[0])
    assert not bad_header, "%s: %d headers differ, e.g. item %d: %s" % (
        what, len(bad_header), bad_header[0], e[(MODE_ITEM, bad_header[0], 0)][1:9].hex())


# -- the cached builds ---------------------------------------------------------------------


@dataclass
class Built:
    path: Path
    plan: Plan
    expected: Dict[int, Dict[int, np.ndarray]]
    searches: Dict[int, Tuple[np.ndarray, np.ndarray]]  # by the builder, on its own file
    by_item: Optional[List[Any]] = None


class Builds:
    """Each side's build of each metric, made once per module and shared (read-only: tests
    that modify a database work on a copy)."""

    def __init__(self, upstream: Upstream, root: Path, pixels: Tuple[np.ndarray, np.ndarray]):
        self.upstream_runner = upstream
        self.root = root
        self.pixels = pixels
        self._up: Dict[str, Built] = {}
        self._ours: Dict[str, Built] = {}

    def plan(self, metric: str) -> Plan:
        return make_plan(metric, self.pixels)

    def upstream(self, metric: str) -> Built:
        if metric not in self._up:
            plan = self.plan(metric)
            work = self.root / ("up-" + metric)
            path = work / "db"
            ops = upstream_write_ops(work, plan.steps, "b")
            ops += upstream_search_ops(work, plan, [0, 1, 2], "b")
            ops.append({"op": "by_item", "index": 0, "items": list(range(0, 2000, 100)),
                        "n": K, "ef_search": EF_SEARCH})
            run = self.upstream_runner.run(work, {"path": str(path), "metric": metric,
                                                  "ops": ops})
            for j in range(len(ops)):
                run.ok(j)
            searches = {i: run.search("b_s%d" % i) for i in (0, 1, 2)}
            self._up[metric] = Built(path, plan, plan.expected(), searches,
                                     run.result(len(ops) - 1)["results"])
        return self._up[metric]

    def ours(self, metric: str) -> Built:
        if metric not in self._ours:
            plan = self.plan(metric)
            steps = plan.steps + ours_only_steps(plan)
            path = self.root / ("ours-" + metric) / "db"
            ours_build(path, metric, steps)
            searches = {}
            with hannoy.Database(path, getattr(Metric, metric)) as db:
                for i in (0, 1, 2, 3):
                    r = db.reader(i)
                    searches[i] = ours_search(r, plan.queries[i], metric)
                    r.close()
            self._ours[metric] = Built(path, plan, plan.expected(steps), searches)
        return self._ours[metric]


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    try:
        target = ensure_upstream()
    except UpstreamUnavailable as exc:
        if in_ci():
            pytest.fail("CI is set, and upstream hannoy 0.1.3 could not be installed: %s" % exc)
        pytest.skip("upstream hannoy 0.1.3 cannot be installed here: %s" % exc)
    return Upstream(target)


@pytest.fixture(scope="module")
def builds(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory,
           pixels: Tuple[np.ndarray, np.ndarray]) -> Builds:
    return Builds(upstream, tmp_path_factory.mktemp("compat"), pixels)


# -- what upstream offers ------------------------------------------------------------------


def test_upstream_python_api(upstream: Upstream, tmp_path: Path) -> None:
    """What upstream 0.1.3's Python API actually offers, and that ours offers all of it."""
    run = upstream.run(tmp_path, {"ops": [{"op": "api"}]})
    assert run.out["version"] == "0.1.3"
    api = run.ok(0)
    assert api["all"] == ["Metric", "Database", "Writer", "Reader"] == hannoy.__all__
    assert sorted(api["metrics"]) == sorted(METRICS)
    for name, s in api["metric_str"].items():
        assert str(getattr(Metric, name)) == s
    assert api["Database"] == ["abort_rw_txn", "commit_rw_txn", "reader", "writer"]
    assert api["Writer"] == ["add_item", "add_items", "__enter__", "__exit__"]  # no del_item
    assert api["Reader"] == ["by_array", "by_item", "by_vec"]  # no item_vector, no len
    for cls in ("Database", "Writer", "Reader"):
        missing = [a for a in api[cls] if not hasattr(getattr(hannoy, cls), a)]
        assert not missing, "hannoy.%s lacks upstream's %r" % (cls, missing)


# -- 1. upstream builds, we read -----------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_upstream_built_reads_here(builds: Builds, metric: str) -> None:
    up = builds.upstream(metric)
    raw = read_raw(up.path)
    assert all(len(k) == 8 for k in raw), "upstream wrote non-hannoy keys?"
    for index in (0, 1, 2):
        check_index_validity(raw, index, metric)
    # hannoy.verify accepts the files Rust's LMDB (through heed) writes, and counts their keys
    report = hannoy.verify(up.path)
    assert [d["name"] for d in report["databases"]] == [""]
    assert report["databases"][0]["entries"] == len(raw)
    with hannoy.Database(up.path, getattr(Metric, metric)) as db:
        for index in (0, 1, 2):
            r = db.reader(index)
            assert r.dimensions == up.plan.dims(index)
            check_items_here(r, metric, up.expected[index], "upstream-built index %d" % index)
            assert_agree("upstream-built index %d, searched here vs there" % index, metric,
                         ours_search(r, up.plan.queries[index], metric), up.searches[index],
                         (up.plan.queries[index], up.expected[index]))
            assert r.stats()["n_items"] == len(up.expected[index])
            r.close()
        # by_item: upstream's own answers on the same file
        r = db.reader(0)
        ours_by_item = [r.by_item(i, n=K, ef_search=EF_SEARCH) for i in range(0, 2000, 100)]
        r.close()
    to_arrays = lambda res: (  # noqa: E731
        np.array([[p[0] for p in x] + [ABSENT] * (K - len(x)) for x in res], dtype=np.uint32),
        np.array([[p[1] for p in x] + [np.inf] * (K - len(x)) for x in res], dtype=np.float32))
    for j, (a, b) in enumerate(zip(ours_by_item, up.by_item)):
        assert a is not None and b is not None
        assert 100 * j not in [p[0] for p in a], "by_item returned the item itself"
    assert_agree("upstream-built index 0, by_item here vs there", metric,
                 to_arrays(ours_by_item), to_arrays(up.by_item))


# -- 2. we build, upstream reads -----------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_built_here_reads_upstream(builds: Builds, upstream: Upstream, metric: str,
                                   tmp_path: Path) -> None:
    ours = builds.ours(metric)
    raw = read_raw(ours.path)
    assert all(len(k) == 8 for k in raw), "non-hannoy keys in the unnamed database: %r" % [
        k for k in raw if len(k) != 8][:3]
    for index in (0, 1, 2, 3):
        check_index_validity(raw, index, metric)
        check_raw_vectors(raw, metric, index, ours.expected[index], "ours index %d" % index)
    deleted = [int(i) for i in range(0, 1000, 10)]
    ops = upstream_search_ops(tmp_path, ours.plan, [0, 1, 2, 3], "r")
    ops.append({"op": "by_item", "index": 3, "items": deleted[:20] + [1000, 1049, 5, 495],
                "n": K, "ef_search": EF_SEARCH})
    run = upstream.run(tmp_path, {"path": str(ours.path), "metric": metric, "ops": ops})
    for index, op in zip((0, 1, 2, 3), range(4)):
        run.ok(op)
        up_res = run.search("r_s%d" % index)
        assert_agree("built here index %d, searched there vs here" % index, metric,
                     ours.searches[index], up_res, (ours.plan.queries[index], ours.expected[index]))
        if index == 3:
            assert not set(up_res[0].ravel().tolist()) & set(deleted), "upstream found deleted ids"
    items = run.ok(4)["results"]
    assert items[:20] == [None] * 20, "upstream by_item of deleted items: %r" % items[:20]
    assert all(x is not None and len(x) == K for x in items[20:])


# -- byte-level: same inputs, same bytes ---------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_bytes_identical(builds: Builds, metric: str) -> None:
    """Vector values, the graph-independent part of the metadata (distance name, dimensions,
    items bitmap) and the version key are byte-identical for the same inputs. Entry points and
    max level depend on the random levels and may differ."""
    up_raw = read_raw(builds.upstream(metric).path)
    our_raw = read_raw(builds.ours(metric).path)
    problems = []
    for index in (0, 1, 2):
        a, b = index_entries(our_raw, index), index_entries(up_raw, index)
        ka = {k for k in a if k[0] == MODE_ITEM}
        kb = {k for k in b if k[0] == MODE_ITEM}
        assert ka == kb, "index %d: different vector keys" % index
        diff_h, diff_b = [], []
        ma_dims = builds.plan(metric).dims(index)
        h = 1 + HEADER_SIZE[metric]
        for k in sorted(kb):
            va, vb = a[k], b[k]
            if va[:h] != vb[:h]:
                diff_h.append((k[1], va, vb))
            if va[h:] != vb[h:]:
                diff_b.append((k[1], va, vb))
        for kind, lst in (("header", diff_h), ("vector", diff_b)):
            if lst:
                i, va, vb = lst[0]
                detail = ""
                if kind == "header" and metric == "COSINE":
                    ids = sorted(k[1] for k in kb)
                    emu = upstream_cosine_norm(np.stack([
                        decode_item(metric, b[(MODE_ITEM, i, 0)], ma_dims)[1] for i in ids]))
                    got_b = np.array([struct.unpack("<f", b[(MODE_ITEM, i, 0)][1:5])[0]
                                      for i in ids], np.float32)
                    got_a = np.array([struct.unpack("<f", a[(MODE_ITEM, i, 0)][1:5])[0]
                                      for i in ids], np.float32)
                    detail = ("; upstream's norms equal sqrt(dot) summed in the order of its "
                              "AVX kernel (compat_helpers.upstream_dot_avx) for %d/%d items, "
                              "ours for %d/%d" % ((emu == got_b).sum(), len(ids),
                                                  (emu == got_a).sum(), len(ids)))
                if kind == "header" and metric in ("COSINE", "BQ_COSINE"):
                    fa, fb = struct.unpack("<f", va[1:5])[0], struct.unpack("<f", vb[1:5])[0]
                    ulps = abs(struct.unpack("<i", va[1:5])[0] - struct.unpack("<i", vb[1:5])[0])
                    detail = " (norm ours %r, upstream %r, %d ulp)%s" % (fa, fb, ulps, detail)
                problems.append(
                    "index %d: %d/%d item values differ in the %s, e.g. item %d: ours %s… "
                    "upstream %s…%s" % (index, len(lst), len(kb), kind, i, va[:24].hex(),
                                        vb[:24].hex(), detail))
        ma, mb = parse_metadata(a[(MODE_META, 0, 0)]), parse_metadata(b[(MODE_META, 0, 0)])
        if ma.fixed_part != mb.fixed_part:
            problems.append("index %d: metadata name|dims|items differ: ours %s upstream %s"
                            % (index, ma.fixed_part.hex(), mb.fixed_part.hex()))
        if a.get((MODE_META, 1, 0)) != b.get((MODE_META, 1, 0)) or b.get((MODE_META, 1, 0)) != VERSION_0_1_3:
            problems.append("index %d: version ours %r upstream %r" % (
                index, a.get((MODE_META, 1, 0)), b.get((MODE_META, 1, 0))))
    assert not problems, "\n".join(problems)


# -- 3. modifications across -----------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_modify_upstream_db_here(builds: Builds, upstream: Upstream, metric: str,
                                 tmp_path: Path) -> None:
    """Deletes (including every upstream entry point of the index), overwrites and additions
    here, in an upstream-built database; upstream then reads the result."""
    up = builds.upstream(metric)
    path = tmp_path / "db"
    shutil.copytree(up.path, path)
    plan = up.plan
    base = plan.base
    md1 = parse_metadata(read_raw(path)[key(1, MODE_META)])
    deleted = sorted(set(md1.entry_points[:30]) | set(range(3, 1200, 20)))
    overwritten = [i for i in range(7, 1200, 40) if i not in deleted][:25]
    added = list(range(5000, 5025))
    new_vecs = base[2050:2100]  # 25 overwrites + 25 additions
    deleted0 = list(range(1, 2000, 200))
    expected = {i: dict(v) for i, v in up.expected.items()}
    for i in deleted:
        expected[1].pop(i)
    for i, v in zip(overwritten + added, new_vecs):
        expected[1][i] = v
    for i in deleted0:
        expected[0].pop(i)
    with hannoy.Database(path, getattr(Metric, metric)) as db:
        with db.writer(784, index=1, m=8, ef=64, seed=42) as w:
            for i in deleted:
                assert w.del_item(i)
            w.add_items(overwritten + added, new_vecs)
        with db.writer(784, index=0, m=16, ef=96, seed=42) as w:
            for i in deleted0:
                assert w.del_item(i)
        ours = {}
        for index in (0, 1, 2):
            r = db.reader(index)
            check_items_here(r, metric, expected[index], "modified here, index %d" % index)
            ours[index] = ours_search(r, plan.queries[index], metric)
            r.close()
    raw = read_raw(path)
    for index in (0, 1, 2):
        check_index_validity(raw, index, metric)
    check_raw_vectors(raw, metric, 1, expected[1], "modified here, index 1")

    vec_q = np.ascontiguousarray(np.stack([expected[1][i] for i in overwritten + added]))
    ops = upstream_search_ops(tmp_path, plan, [0, 1, 2], "m")
    ops.append({"op": "by_item", "index": 1, "items": deleted[:20] + overwritten[:5] + added[:5],
                "n": K, "ef_search": EF_SEARCH})
    ops.append({"op": "by_item", "index": 0, "items": deleted0, "n": K})
    ops.append({"op": "search", "index": 1, "n": K, "ef_search": EF_SEARCH, "out": "m_vec",
                "queries": np_file(tmp_path, "m_vecq.npy", vec_q)})
    run = upstream.run(tmp_path, {"path": str(path), "metric": metric, "ops": ops})
    for index in (0, 1, 2):
        run.ok(index)
        up_res = run.search("m_s%d" % index)
        assert_agree("modified here index %d, searched there vs here" % index, metric,
                     ours[index], up_res, (plan.queries[index], expected[index]))
        gone = set(deleted if index == 1 else deleted0 if index == 0 else [])
        assert not set(up_res[0].ravel().tolist()) & gone, "upstream returned deleted ids"
    res = run.ok(3)["results"]
    assert res[:20] == [None] * 20, "upstream by_item on ids deleted here: %r" % res[:20]
    assert all(x is not None and len(x) == K for x in res[20:])
    assert run.ok(4)["results"] == [None] * len(deleted0)
    # each overwritten/added vector, searched by upstream, finds its item at distance 0
    ids, dists = run.search("m_vec")
    want = expected_values(metric, vec_q)
    allv = expected_values(metric, np.stack([expected[1][i] for i in sorted(expected[1])]))
    keys = np.array(sorted(expected[1]))
    # cosine: upstream's own distance between identical vectors is (1 - dot/(n*n))/2 with
    # n = sqrt(dot) rounded to f32, i.e. 0 or 2**-24 (5.96e-8), whoever wrote the item
    self_tol = 2.0 ** -23 if metric == "COSINE" else 0.0
    for row, i in enumerate(overwritten + added):
        assert 0.0 <= dists[row, 0] <= self_tol, "upstream: item %d not at distance 0 (%r)" % (
            i, dists[row])
        twins = set(keys[(allv == want[row]).all(axis=1)].tolist())
        assert int(ids[row, 0]) in twins, "upstream: vector of %d found %d" % (i, ids[row, 0])


@pytest.mark.parametrize("metric", METRICS)
def test_upstream_modifies_db_built_here(builds: Builds, upstream: Upstream, metric: str,
                                         tmp_path: Path) -> None:
    """Upstream adds and overwrites items (it cannot delete) in a database built here, including
    in the index where deletes happened here, and rebuilds; we read the result."""
    ours = builds.ours(metric)
    path = tmp_path / "db"
    shutil.copytree(ours.path, path)
    base = ours.plan.base
    expected = {i: dict(v) for i, v in ours.expected.items()}
    steps = [
        Step(3, 784, 16, 96, np.concatenate([np.arange(505, 1000, 10), np.arange(6000, 6030)]),
             np.concatenate([base[1000:1050], base[1100:1130]])),
        Step(0, 784, 16, 96, np.arange(0, 2000, 100), base[2000:2020]),
    ]
    for s in steps:
        for i, v in zip(s.ids, s.vectors):
            expected[s.index][int(i)] = v
    ops = upstream_write_ops(tmp_path, steps, "w")
    ops += upstream_search_ops(tmp_path, ours.plan, [0, 1, 2, 3], "w")
    run = upstream.run(tmp_path, {"path": str(path), "metric": metric, "ops": ops})
    for j in range(len(ops)):
        run.ok(j)
    raw = read_raw(path)
    for index in (0, 1, 2, 3):
        check_index_validity(raw, index, metric)
    with hannoy.Database(path, getattr(Metric, metric)) as db:
        for index in (0, 1, 2, 3):
            r = db.reader(index)
            check_items_here(r, metric, expected[index], "modified by upstream, index %d" % index)
            res = ours_search(r, ours.plan.queries[index], metric)
            r.close()
            assert_agree("modified by upstream index %d, searched here vs there" % index, metric,
                         res, run.search("w_s%d" % index),
                         (ours.plan.queries[index], expected[index]))
            if index == 3:
                assert not set(res[0].ravel().tolist()) & set(range(0, 1000, 10))


# -- named databases and env_size ----------------------------------------------------------


def tiny_plan(pixels: Tuple[np.ndarray, np.ndarray]) -> Plan:
    base, q = pixels
    small = base[:300, SMALL_COLS].copy()
    return Plan("EUCLIDEAN", base, {0: np.ascontiguousarray(q[:, SMALL_COLS]),
                                   1: np.ascontiguousarray(q[:, SMALL_COLS])},
                [Step(0, 100, 8, 64, np.arange(300), small)])


def test_named_database_upstream(upstream: Upstream, tmp_path: Path,
                                 pixels: Tuple[np.ndarray, np.ndarray]) -> None:
    """name=: a named database built here, opened by upstream; and one built by upstream."""
    plan = tiny_plan(pixels)
    path = tmp_path / "ours"
    ours_build(path, "EUCLIDEAN", plan.steps, name="vectors")
    raw = read_raw(path, name="vectors")
    check_index_validity(raw, 0, "EUCLIDEAN")
    run = upstream.run(tmp_path / "r", {
        "path": str(path), "metric": "EUCLIDEAN", "name": "vectors",
        "ops": upstream_search_ops(tmp_path / "r", plan, [0], "n")})
    run2 = upstream.run(tmp_path / "w", {
        "path": str(tmp_path / "up"), "metric": "EUCLIDEAN", "name": "vectors",
        "ops": upstream_write_ops(tmp_path / "w", plan.steps, "n")})
    errors = [r.out["open"] for r in (run, run2) if not r.out["open"].get("ok")]
    if errors:
        assert all("MDB_DBS_FULL" in e["error"] for e in errors), errors
        pytest.xfail("upstream hannoy 0.1.3 cannot open or create a named database: its "
                     "Database never sets max_dbs, so LMDB answers %r (reference §5.6.5)"
                     % errors[0]["error"])
    # should a future upstream support names: check both directions
    with hannoy.Database(path, Metric.EUCLIDEAN, name="vectors") as db:
        r = db.reader(0)
        assert_agree("named, built here", "EUCLIDEAN", ours_search(r, plan.queries[0]),
                     run.search("n_s0"))
        r.close()
    run2.ok(0)
    with hannoy.Database(tmp_path / "up", Metric.EUCLIDEAN, name="vectors") as db:
        check_items_here(db.reader(0), "EUCLIDEAN", plan.expected()[0], "named, upstream")


def test_named_database_here_beside_upstream_unnamed(upstream: Upstream, tmp_path: Path,
                                                     pixels: Tuple[np.ndarray, np.ndarray]
                                                     ) -> None:
    """What works today: a named database made here lives beside the unnamed one in the same
    environment; upstream reads and extends the unnamed one, and the named one is untouched."""
    plan = tiny_plan(pixels)
    path = tmp_path / "db"
    ours_build(path, "EUCLIDEAN", plan.steps)
    named_vecs = plan.base[300:500, SMALL_COLS].copy()
    ours_build(path, "COSINE", [Step(0, 100, 4, 32, np.arange(200), named_vecs)], name="extra")
    main = read_raw(path)
    assert {k for k in main if len(k) != 8} == {b"extra"}, "sub-database record missing"
    work = tmp_path / "u"
    add = Step(1, 100, 8, 64, np.arange(300), plan.base[500:800, SMALL_COLS].copy())
    ops = upstream_search_ops(work, plan, [0], "x") + upstream_write_ops(work, [add], "x")
    ops += upstream_search_ops(work, plan, [1], "x")
    run = upstream.run(work, {"path": str(path), "metric": "EUCLIDEAN", "ops": ops})
    for j in range(len(ops)):
        run.ok(j)
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        for index in (0, 1):
            r = db.reader(index)
            want = plan.expected()[0] if index == 0 else {int(i): v for i, v in
                                                          zip(add.ids, add.vectors)}
            check_items_here(r, "EUCLIDEAN", want, "unnamed index %d" % index)
            assert_agree("unnamed beside a named database, index %d" % index, "EUCLIDEAN",
                         ours_search(r, plan.queries[index]), run.search("x_s%d" % index))
            r.close()
    with hannoy.Database(path, Metric.COSINE, name="extra") as db:
        check_items_here(db.reader(0), "COSINE", dict(enumerate(named_vecs)), "named, after upstream")
    check_index_validity(read_raw(path, name="extra"), 0, "COSINE")


def test_env_size_across(upstream: Upstream, tmp_path: Path,
                         pixels: Tuple[np.ndarray, np.ndarray]) -> None:
    """env_size on both sides: a database made with a small map opens with the other side's
    default and with the same small map, and can still be extended."""
    plan = tiny_plan(pixels)
    small = 8 * 1024 * 1024
    # upstream with a small map -> here (default, then the same small map, then writing)
    up = tmp_path / "up"
    run = upstream.run(tmp_path / "u1", {
        "path": str(up), "metric": "EUCLIDEAN", "env_size": small,
        "ops": upstream_write_ops(tmp_path / "u1", plan.steps, "e")
        + upstream_search_ops(tmp_path / "u1", plan, [0], "e")})
    run.ok(0)
    run.ok(1)
    for env_size in (None, small):
        with hannoy.Database(up, Metric.EUCLIDEAN, env_size=env_size) as db:
            r = db.reader(0)
            check_items_here(r, "EUCLIDEAN", plan.expected()[0], "upstream env_size=8MiB")
            assert_agree("upstream env_size=8MiB, read with env_size=%s" % env_size, "EUCLIDEAN",
                         ours_search(r, plan.queries[0]), run.search("e_s0"))
            r.close()
    with hannoy.Database(up, Metric.EUCLIDEAN, env_size=small) as db:
        with db.writer(100, index=1, m=8, ef=64) as w:
            w.add_items(np.arange(300), plan.base[300:600, SMALL_COLS])
    # here with a small map -> upstream with its default (1 GiB) and with the same small map
    ours = tmp_path / "ours"
    ours_build(ours, "EUCLIDEAN", plan.steps, env_size=small)
    for j, env_size in enumerate((None, small)):
        work = tmp_path / ("u2-%d" % j)
        ops = upstream_search_ops(work, plan, [0], "e")
        ops += upstream_write_ops(work, [Step(1 + j, 100, 8, 64, np.arange(50),
                                              plan.base[600:650, SMALL_COLS])], "e")
        run2 = upstream.run(work, {"path": str(ours), "metric": "EUCLIDEAN",
                                   "env_size": env_size, "ops": ops})
        run2.ok(0)
        run2.ok(1)
        with hannoy.Database(ours, Metric.EUCLIDEAN, env_size=small) as db:
            r = db.reader(0)
            assert_agree("built here with env_size=8MiB, upstream env_size=%s" % env_size,
                         "EUCLIDEAN", ours_search(r, plan.queries[0]), run2.search("e_s0"))
            r.close()
            assert len(db.reader(1 + j)) == 50
    raw = read_raw(ours)
    for index in (0, 1, 2):
        check_index_validity(raw, index, "EUCLIDEAN")


# -- a behavioural divergence: binary quantized cosine, exact matches ----------------------


def test_bq_cosine_exact_match_ranking(upstream: Upstream, tmp_path: Path,
                                       pixels: Tuple[np.ndarray, np.ndarray]) -> None:
    """With 100 dims (Dp = 128 bits), the bq cosine distance of an exact binary match is
    (1 - 128 / (sqrt(128)*sqrt(128) in f32)) / 2 = -2**-24 on both sides. Upstream ranks
    distances by their bit pattern as u32 (src/ordered_float.rs), so that negative distance
    ranks after everything: upstream returns exact matches last, if at all (an upstream bug);
    this package ranks them first. The distance values themselves agree."""
    base, _ = pixels
    x = base[:300, SMALL_COLS]
    x = (x - x.mean(axis=0)).astype(np.float32)
    plan = Plan("BQ_COSINE", base, {0: np.ascontiguousarray(x[:20])},
                [Step(0, 100, 8, 64, np.arange(300), x)])
    run = upstream.run(tmp_path / "u", {
        "path": str(tmp_path / "db"), "metric": "BQ_COSINE",
        "ops": upstream_write_ops(tmp_path / "u", plan.steps, "q")
        + upstream_search_ops(tmp_path / "u", plan, [0], "q")})
    run.ok(0)
    run.ok(1)
    up_ids, up_d = run.search("q_s0")
    codes = expected_values("BQ_COSINE", x)
    with hannoy.Database(tmp_path / "db", Metric.BQ_COSINE) as db:
        r = db.reader(0)
        ids = np.empty((20, K), np.uint32)
        d = np.empty((20, K), np.float32)
        r.by_array(plan.queries[0], n=K, ef_search=EF_SEARCH, out=(ids, d))
        r.close()
    for j in range(20):
        twins = set(np.nonzero((codes == codes[j]).all(axis=1))[0].tolist())
        assert int(ids[j, 0]) in twins and d[j, 0] == np.float32(-(2.0 ** -24)), (
            "here: query %d should find its exact match first at -2**-24, got %r %r"
            % (j, ids[j, :3], d[j, :3]))
        neg = up_d[j] < 0
        assert int(up_ids[j, 0]) not in twins and up_d[j, 0] > 0, (
            "upstream ranked an exact match first (%r %r): its ranking changed, update this test"
            % (up_ids[j, :3], up_d[j, :3]))
        # upstream's exact matches, when it returns them at all, come last
        assert not neg.any() or neg[np.argmax(neg):].all(), (up_ids[j], up_d[j])


# -- compressed readers and commits from upstream ---------------------------------------------


@pytest.mark.parametrize("metric", ["EUCLIDEAN", "COSINE"])
def test_compressed_readers_follow_upstream_commits(
    upstream: Upstream, tmp_path: Path, metric: str
) -> None:
    """A reader in compressed mode (codes in memory, as for an index larger than memory) on
    our build; then upstream adds and overwrites items and rebuilds in the same file; a
    compressed reader opened after that sees upstream's commit, never codes of the old one.
    (The two cannot have the file open at the same moment: upstream's LMDB and ours use lock
    files of different versions, MDB_VERSION_MISMATCH; each side opens it in turn.)"""
    rng = np.random.default_rng(8)
    base = rng.normal(size=(2000, 32)).astype(np.float32)
    path = tmp_path / "db"
    ours_build(path, metric, [Step(index=0, dims=32, m=16, ef=96, ids=np.arange(2000), vectors=base)])
    new_ids = np.concatenate([np.arange(2000, 2200), np.arange(0, 50)])
    new_vecs = rng.normal(size=(250, 32)).astype(np.float32) + 5.0
    np.save(tmp_path / "ids.npy", new_ids)
    np.save(tmp_path / "vectors.npy", new_vecs)
    with hannoy.Database(path, getattr(Metric, metric)) as db:
        with db.reader(read_mode="compressed") as before:
            assert before.stats()["read_mode"] == "compressed" and len(before) == 2000
            for item in (3, 40, 1999):
                got = before.by_vec(base[item], n=1, ef_search=100)
                assert got[0][0] == item and got[0][1] < 1e-5, (item, got)
    run = upstream.run(tmp_path / "up", {"path": str(path), "metric": metric, "ops": [
        {"op": "write", "index": 0, "dims": 32, "m": 16, "ef": 96,
         "ids": str(tmp_path / "ids.npy"), "vectors": str(tmp_path / "vectors.npy")}]})
    run.ok(0)
    with hannoy.Database(path, getattr(Metric, metric)) as db:
        with db.reader(read_mode="compressed") as after:
            assert after.stats()["read_mode"] == "compressed" and len(after) == 2200
            for row in (0, 120, 199, 210, 249):  # new items and overwritten ones
                item = int(new_ids[row])
                got = after.by_vec(new_vecs[row], n=1, ef_search=100)
                assert got[0][0] == item and got[0][1] < 1e-5, (row, got)
                np.testing.assert_array_equal(after.item_vector(item), new_vecs[row])
            for item in (60, 1999):  # untouched items
                got = after.by_vec(base[item], n=1, ef_search=100)
                assert got[0][0] == item and got[0][1] < 1e-5, (item, got)
