"""A filter per query in one batch call (by_array, by_items), and upstream's linear_below and
linear_below_ratio on every search call.

The index is a sparse graph (m=4) searched with a small ef, so that a graph walk is visibly
approximate while a scan of the candidates (what linear_below chooses) is exact.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from helpers import exact_knn

N, DIMS, NQ = 2000, 16, 24
K, EF = 10, 10


@pytest.fixture(scope="module")
def index(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Tuple[hannoy.Reader, np.ndarray, np.ndarray]]:
    """(reader, item vectors, queries) of N random items, built reproducibly."""
    rng = np.random.default_rng(12)
    base = rng.random((N, DIMS), dtype=np.float32)
    queries = rng.random((NQ, DIMS), dtype=np.float32)
    path: Path = tmp_path_factory.mktemp("filters") / "db"
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    with db.writer(DIMS, m=4, ef=20, seed=3, threads=1) as w:
        w.add_items(np.arange(N), base)
    reader = db.reader()
    yield reader, base, queries
    reader.close()
    db.close()


def _filters(rng: np.random.Generator) -> List[Any]:
    """One filter per query, of every kind: none, empty, ids not in the index, small ones in
    several containers (scanned), large ones (walked)."""
    out: List[Any] = []
    for i in range(NQ):
        small = rng.choice(N, size=int(rng.integers(1, 60)), replace=False)
        kind = i % 8
        if kind == 0:
            out.append(None)
        elif kind == 1:
            out.append([])
        elif kind == 2:
            out.append([N, N + 5, 2**32 - 1])  # no item of the index
        elif kind == 3:
            out.append(small.tolist() + [N + 1, int(small[0])])  # an unknown id, a duplicate
        elif kind == 4:
            out.append(set(small.tolist()))
        elif kind == 5:
            out.append(np.asarray(small, dtype=np.uint32))
        elif kind == 6:
            out.append(range(i * 10, i * 10 + 1500))  # 1500 >= linear_below: a graph walk
        else:
            out.append(np.flatnonzero(rng.random(N) < 0.7))  # about 1400 ids, int64
    return out


def _alone(reader: hannoy.Reader, q: np.ndarray, f: Any, **kw: Any) -> Any:
    return reader.by_vec(q, K, EF, candidates=f, **kw)


@pytest.mark.parametrize("threads", [1, 2, None])
def test_by_array_per_query_equals_each_query_alone(index, threads: Optional[int]) -> None:
    reader, _, queries = index
    filters = _filters(np.random.default_rng(1))
    got = reader.by_array(queries, K, EF, candidates=filters, threads=threads)
    assert len(got) == NQ
    for i, f in enumerate(filters):
        assert got[i] == _alone(reader, queries[i], f), i
        if f is not None:
            assert {j for j, _ in got[i]} <= set(np.asarray(list(f), dtype=np.int64).tolist())
    # kinds whose outcome is known without searching
    assert len(got[0]) == K  # no filter
    assert got[1] == [] and got[2] == []  # empty filter; ids that are not items

    ids = np.empty((NQ, K), dtype=np.uint32)
    dists = np.empty((NQ, K), dtype=np.float32)
    out = (ids, dists)
    assert reader.by_array(queries, K, EF, out=out, candidates=filters, threads=threads) is None
    for i in range(NQ):
        c = len(got[i])
        assert list(zip(ids[i, :c].tolist(), dists[i, :c].tolist())) == got[i]
        assert (ids[i, c:] == 2**32 - 1).all() and np.isinf(dists[i, c:]).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_by_items_per_query_equals_each_item_alone(index, threads: int) -> None:
    reader, _, _ = index
    filters = _filters(np.random.default_rng(2))
    items = [i * 37 for i in range(NQ)]
    items[3] = N + 10  # not in the index: None, whatever its filter
    got = reader.by_items(items, K, EF, candidates=filters, threads=threads)
    for i, (item, f) in enumerate(zip(items, filters)):
        assert got[i] == reader.by_item(item, K, EF, candidates=f), i
        if got[i] is not None:
            assert item not in {j for j, _ in got[i]}
    assert got[3] is None
    assert got[1] == [] and got[2] == []


def test_the_scan_is_chosen_per_query(index) -> None:
    """In one batch, a small filter is scanned (exact) while a large one is walked."""
    reader, base, queries = index
    rng = np.random.default_rng(5)
    small = [np.sort(rng.choice(N, size=200, replace=False)) for _ in range(NQ)]
    got = reader.by_array(queries, K, EF, candidates=small)
    for i, f in enumerate(small):
        truth = [(int(f[j]), d) for j, d in exact_knn(Metric.EUCLIDEAN, queries[i], base[f], K)]
        _check_exact(got[i], truth)
    # the same filters with linear_below=0 walk the graph: not exact for every query
    walked = reader.by_array(queries, K, EF, candidates=small, linear_below=0)
    assert any(
        [j for j, _ in walked[i]] != [j for j, _ in got[i]] for i in range(NQ)
    ), "linear_below=0 gave the scan's results for every query"


def _check_exact(got: List[Tuple[int, float]], truth: List[Tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in truth]
    np.testing.assert_allclose([d for _, d in got], [d for _, d in truth], rtol=1e-5)


# -- which form is per-query -----------------------------------------------------------------


def _rows(reader: hannoy.Reader, queries: np.ndarray, filters: List[Any]) -> List[Any]:
    return [_alone(reader, q, f) for q, f in zip(queries, filters)]


def test_a_list_of_ints_as_long_as_the_queries_is_one_filter(index) -> None:
    reader, _, queries = index
    ids = list(range(100, 100 + NQ))  # NQ ids for NQ queries: still one filter
    got = reader.by_array(queries, K, EF, candidates=ids)
    assert got == _rows(reader, queries, [ids] * NQ)
    assert got == reader.by_array(queries, K, EF, candidates=np.asarray(ids))
    assert got == reader.by_array(queries, K, EF, candidates=tuple(ids))
    assert got == reader.by_array(queries, K, EF, candidates=(i for i in ids))
    assert got == reader.by_array(queries, K, EF, candidates=range(100, 100 + NQ))
    assert got == reader.by_array(queries, K, EF, candidates=np.asarray(ids, dtype=object))
    items = list(range(NQ))
    assert reader.by_items(items, K, EF, candidates=ids) == [
        reader.by_item(i, K, EF, candidates=ids) for i in items
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda rows: rows,  # list of lists
        lambda rows: tuple(tuple(r) for r in rows),
        lambda rows: [np.asarray(r, dtype=np.int32) for r in rows],
        lambda rows: [set(r) for r in rows],
        lambda rows: (list(r) for r in rows),  # a generator of rows
        lambda rows: np.asarray(rows, dtype=np.uint32),  # 2-D: one row per query
        lambda rows: np.asarray([np.asarray(r) for r in rows] + [None], dtype=object)[:-1],
    ],
    ids=["list of lists", "tuple of tuples", "list of arrays", "list of sets", "generator",
         "2-D array", "object array"],  # fmt: skip
)
def test_per_query_forms(index, make) -> None:
    reader, _, queries = index
    rows = [[i, i + 1, i + 500] for i in range(NQ)]
    want = _rows(reader, queries, rows)
    assert [[j for j, _ in r] for r in want] != [[j for j, _ in want[0]]] * NQ  # rows differ
    assert reader.by_array(queries, K, EF, candidates=make(rows)) == want


def test_none_rows_and_a_single_query(index) -> None:
    reader, _, queries = index
    filters: List[Any] = [None] * NQ
    filters[4] = [7, 8]
    got = reader.by_array(queries, K, EF, candidates=filters)
    assert got[:4] == reader.by_array(queries[:4], K, EF)
    assert [j for j, _ in got[4]] in ([7, 8], [8, 7])
    # a 1-D query with a list of one filter: that query's filter
    q = queries[0]
    alone = reader.by_vec(q, K, EF, candidates=[7, 8])
    assert reader.by_array(q, K, EF, candidates=[[7, 8]]) == alone
    assert reader.by_array(q, K, EF, candidates=[None]) == reader.by_vec(q, K, EF)
    # an empty list is one empty filter: nothing for any query
    assert reader.by_array(queries, K, EF, candidates=[]) == [[]] * NQ
    # every row None: no filter at all
    plain = reader.by_array(queries, K, EF)
    assert reader.by_array(queries, K, EF, candidates=[None] * NQ) == plain


def test_per_query_errors(index) -> None:
    reader, _, queries = index
    rows = [[1, 2]] * NQ
    with pytest.raises(ValueError, match=r"needs %d filters, one per query, got %d" % (NQ, NQ - 1)):
        reader.by_array(queries, K, EF, candidates=rows[:-1])
    with pytest.raises(ValueError, match=r"needs 3 filters, one per query, got %d" % NQ):
        reader.by_items([0, 1, 2], K, EF, candidates=rows)
    with pytest.raises(ValueError, match=r"2-D array holds one row of ids per query: expected"):
        reader.by_array(queries, K, EF, candidates=np.ones((NQ + 1, 2), dtype=np.int64))
    with pytest.raises(TypeError, match=r"candidates\[1\] must be a collection of ids or None"):
        reader.by_array(queries, K, EF, candidates=[[1]] + [5] * (NQ - 1))
    with pytest.raises(TypeError, match="candidates"):
        reader.by_array(queries, K, EF, candidates=[5] + [[1]] * (NQ - 1))  # ids first: one filter
    with pytest.raises(ValueError, match=r"candidates\[2\]"):
        reader.by_array(queries, K, EF, candidates=[[1], [2], [-1]] + [None] * (NQ - 3))
    with pytest.raises(OverflowError, match=r"candidates\[0\]"):
        reader.by_array(queries, K, EF, candidates=[[2**32]] + [None] * (NQ - 1))
    with pytest.raises(TypeError, match=r"candidates\[1\]"):
        reader.by_array(queries, K, EF, candidates=[[1], ["a"]] + [None] * (NQ - 2))
    with pytest.raises(TypeError, match=r"candidates\[1\]"):
        reader.by_array(queries, K, EF, candidates=[[1], "ab"] + [None] * (NQ - 2))
    with pytest.raises(ValueError, match="1-D"):
        reader.by_vec(queries[0], K, EF, candidates=[[1, 2]])  # single searches: one filter
    with pytest.raises(ValueError, match="1-D"):
        reader.by_item(0, K, EF, candidates=np.ones((1, 2), dtype=np.int64))
    # nothing broke
    assert reader.by_array(queries, K, EF, candidates=rows) == _rows(reader, queries, rows)


# -- linear_below and linear_below_ratio ------------------------------------------------------


@pytest.fixture(scope="module")
def tenth(index) -> Tuple[np.ndarray, List[List[Tuple[int, float]]]]:
    """A filter of a tenth of the items (200, every tenth id) and each query's exact answer."""
    _, base, queries = index
    f = np.arange(0, N, 10)
    truth = [
        [(int(f[j]), d) for j, d in exact_knn(Metric.EUCLIDEAN, q, base[f], K)] for q in queries
    ]
    return f, truth


def _exact_everywhere(got: List[Any], truth: List[Any]) -> bool:
    return all([i for i, _ in g] == [i for i, _ in t] for g, t in zip(got, truth))


@pytest.mark.parametrize(
    "options, scans",
    [
        ({}, True),  # upstream's defaults: 200 < 1000 and 0.1 <= 1.0
        ({"linear_below": 0}, False),
        ({"linear_below": 200}, False),  # c < linear_below, strictly
        ({"linear_below": 201}, True),
        ({"linear_below": 2**63 - 1}, True),
        ({"linear_below_ratio": 0.1}, True),  # c / n == ratio scans
        ({"linear_below_ratio": 0.09}, False),
        ({"linear_below_ratio": 0}, False),
        ({"linear_below": 201, "linear_below_ratio": 1}, True),
        ({"linear_below": np.int64(5000), "linear_below_ratio": np.float32(0.5)}, True),
        ({"linear_below": 5000.0, "linear_below_ratio": Fraction(1, 20)}, False),
    ],
)
def test_linear_below_on_every_search_call(index, tenth, options, scans: bool) -> None:
    reader, _, queries = index
    f, truth = tenth
    by_vec = [reader.by_vec(q, K, EF, candidates=f, **options) for q in queries]
    assert reader.by_array(queries, K, EF, candidates=f, **options) == by_vec
    assert reader.by_array(queries, K, EF, candidates=[f] * NQ, threads=2, **options) == by_vec
    assert _exact_everywhere(by_vec, truth) == scans
    if scans:
        for got, t in zip(by_vec, truth):
            _check_exact(got, t)
    # by item: the item counts among the candidates (upstream's rule), never comes back
    items = f[:NQ].tolist()
    by_item = [reader.by_item(i, K, EF, candidates=f, **options) for i in items]
    assert reader.by_items(items, K, EF, candidates=f, **options) == by_item
    assert reader.by_items(items, K, EF, candidates=[f] * NQ, threads=2, **options) == by_item
    _, base, _ = index
    rest = [f[f != i] for i in items]
    item_truth = [
        [(int(r[j]), d) for j, d in exact_knn(Metric.EUCLIDEAN, base[i], base[r], K)]
        for i, r in zip(items, rest)
    ]
    assert _exact_everywhere(by_item, item_truth) == scans


def test_linear_below_without_candidates_changes_nothing(index) -> None:
    reader, _, queries = index
    plain = reader.by_array(queries, K, EF)
    for options in ({"linear_below": 0}, {"linear_below": 10**6, "linear_below_ratio": 0.0}):
        assert reader.by_array(queries, K, EF, **options) == plain
        assert [reader.by_vec(q, K, EF, **options) for q in queries] == plain
        assert [reader.by_vec(q.tolist(), K, EF, **options) for q in queries] == plain


BAD_VALUES = [
    ({"linear_below": -1}, ValueError, r"linear_below must be an integer in 0\.\.\d+, got -1"),
    ({"linear_below": 2**63}, ValueError, "linear_below must be an integer in"),
    ({"linear_below": 1.5}, TypeError, "linear_below must be an integer, got float 1.5"),
    ({"linear_below": "10"}, TypeError, "linear_below must be an integer, got str '10'"),
    ({"linear_below": None}, TypeError, "linear_below must be an integer, got NoneType"),
    ({"linear_below": True}, TypeError, "linear_below must be an integer, got bool"),
    ({"linear_below_ratio": -0.1}, ValueError, "linear_below_ratio must be a number between 0"),
    ({"linear_below_ratio": 1.01}, ValueError, "between 0 and 1, got float 1.01"),
    ({"linear_below_ratio": 2}, ValueError, "between 0 and 1, got int 2"),
    ({"linear_below_ratio": float("nan")}, ValueError, "between 0 and 1, got float nan"),
    ({"linear_below_ratio": float("inf")}, ValueError, "between 0 and 1, got float inf"),
    ({"linear_below_ratio": 10**400}, ValueError, "between 0 and 1"),
    ({"linear_below_ratio": "0.5"}, TypeError, "between 0 and 1, got str '0.5'"),
    ({"linear_below_ratio": None}, TypeError, "got NoneType None"),
    ({"linear_below_ratio": True}, TypeError, "got bool True"),
    ({"linear_below_ratio": 0.5j}, TypeError, "got complex"),
]  # fmt: skip


@pytest.mark.parametrize("options, error, message", BAD_VALUES)
def test_bad_linear_values(index, options, error, message) -> None:
    reader, _, queries = index
    calls = [
        lambda: reader.by_vec(queries[0], K, EF, **options),  # no candidates: still checked
        lambda: reader.by_vec(queries[0].tolist(), K, EF, **options),
        lambda: reader.by_vec(queries[0], K, EF, candidates=[1, 2], **options),
        lambda: reader.by_item(0, K, EF, **options),
        lambda: reader.by_items([0, 1], K, EF, candidates=[[1], None], **options),
        lambda: reader.by_array(queries, K, EF, **options),
        lambda: reader.by_array(queries[0], K, EF, candidates=[3], **options),
        lambda: reader.by_array(queries[:0], K, EF, **options),  # no query: checked all the same
        lambda: reader.by_items([], K, EF, **options),
    ]
    for call in calls:
        with pytest.raises(error, match=message) as info:
            call()
        assert isinstance(info.value, hannoy.HannoyError)
    assert len(reader.by_vec(queries[0], K, EF)) == K


# -- the C ABI ------------------------------------------------------------------------------


def test_abi_refuses_inconsistent_filters(index) -> None:
    """hannoy_reader_search checks what a caller other than the Python package could get
    wrong: lengths that do not add up, a NULL pointer, bad linear options."""
    from hannoy import _ffi

    reader, _, queries = index
    ffi, lib = _ffi.ffi(), _ffi.lib()
    q = np.ascontiguousarray(queries[:2])
    cands = np.array([1, 2, 3], dtype=np.uint32)
    ids = np.empty((2, K), dtype=np.uint32)
    dists = np.empty((2, K), dtype=np.float32)
    counts = np.empty(2, dtype=np.uint32)

    def search(
        c: Any, nc: int, lens: Optional[np.ndarray], lb: int = 1000, ratio: float = 1.0
    ) -> Tuple[int, str]:
        err = ffi.new("char **")
        rc = lib.hannoy_reader_search(
            reader._h.value, ffi.from_buffer("float[]", q), 2, DIMS, K, EF, c, nc,
            ffi.NULL if lens is None else ffi.from_buffer("int64_t[]", lens), lb, ratio, 1,
            ffi.from_buffer("uint32_t[]", ids), ffi.from_buffer("float[]", dists),
            ffi.from_buffer("uint32_t[]", counts), err,
        )  # fmt: skip
        return rc, (_ffi.take_string(err[0]) if rc else "")

    cp = ffi.from_buffer("uint32_t[]", cands)
    assert search(cp, 3, np.array([1, 2], dtype=np.int64)) == (0, "")
    assert counts.tolist() == [1, 2]
    assert set(ids[1, :2].tolist()) == {2, 3}
    assert search(cp, 3, np.array([-1, 3], dtype=np.int64))[0] == 0
    assert counts[0] == K and counts[1] == 3
    rc, msg = search(cp, 3, np.array([1, 1], dtype=np.int64))
    assert rc == 1 and "hold 2 ids in all but n_candidates is 3" in msg
    rc, msg = search(ffi.NULL, 3, np.array([1, 2], dtype=np.int64))
    assert rc == 1 and "NULL" in msg
    rc, msg = search(cp, 3, None, lb=-1)
    assert rc == 1 and "linear_below must not be negative" in msg
    for ratio in (1.5, -0.5, float("nan")):
        rc, msg = search(cp, 3, None, ratio=ratio)
        assert rc == 1 and "linear_below_ratio must be between 0 and 1" in msg
