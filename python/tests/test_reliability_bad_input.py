"""Reliability: bad input leaves the database unchanged.

Every bad call is made on a real database (300 Fashion-MNIST images, euclidean, built and
committed), whose state is recorded first: the sha256 of data.mdb, the item ids, every stored
vector and the top-10 results of a few queries (:class:`State`). After each bad call the test
checks the specific exception, then :func:`assert_unchanged` reopens the database and compares
all of it. A writer that saw a bad call must stay usable and keep only what valid calls put in
it: the bad call is made three times, followed by an abort, inside a ``with`` block after a
valid add (the exception aborts everything), and followed by a valid add, a build and a commit
(exactly that item is added).

Covered: wrong dimensions, NaN and +-inf (also in one row of a large batch), ids below 0 or
above 2**32-1, non-numeric data, wrong array shapes and dtypes, mismatched ids/vectors, n,
ef_search and out buffers out of range, a reader on an index never built, a reader (and writer)
with another metric than stored, a pending (committed, unbuilt) change, a path that is a file,
a read-only path (in a child process that drops root's privileges to uid 65534), a directory
holding a data.mdb that is not LMDB, and a directory that does not exist yet (it is created).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from helpers import data_digest, subprocess_env

DIMS = 784
N_ITEMS = 300
METRIC = Metric.EUCLIDEAN
BUILD: Dict[str, Any] = dict(m=8, ef=32, seed=7, threads=1)
NEW_ID = 2**32 - 1  # the valid item added after a bad call: the largest id
NEW_ROW = 5000  # its vector: fashion_train[NEW_ROW]
PROBE_ITEMS = (0, 150, 299)  # by_item results recorded in the state
# A large batch: overwrites of ids 0..99 and new ids 300..1699, rows 1000..2499 of the data.
# 1500 * 784 values is more than the 2**20 that _check_finite scans block by block.
BATCH_IDS = np.concatenate([np.arange(0, 100), np.arange(300, 1700)]).astype(np.int64)
BATCH_ROWS = slice(1000, 2500)
# Ids a wrong conversion could land on (-1 -> 2**32-1, 2**32 -> 0), checked in every writer.
WRAP_IDS = (0, 1, N_ITEMS - 1, N_ITEMS, NEW_ID)

Neighbours = List[Tuple[int, float]]
BadWrite = Callable[[hannoy.Writer, np.ndarray], object]
BadRead = Callable[[hannoy.Reader, np.ndarray], object]


# -- the recorded state ----------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """Everything a reader can see of the database, and the bytes of data.mdb."""

    digest: str
    ids: np.ndarray  # uint32, ascending
    vectors: np.ndarray  # (len(ids), DIMS) float32, in id order
    queries: np.ndarray  # (4, DIMS) float32
    results: List[Neighbours]  # by_vec(query, n=10) per query
    item_results: Dict[int, Optional[Neighbours]]  # by_item(item, n=10) for PROBE_ITEMS
    indexes: List[int]  # Database.stats()["indexes"]

    def stored(self, item: int) -> Optional[np.ndarray]:
        pos = int(np.searchsorted(self.ids, item))
        if pos < len(self.ids) and int(self.ids[pos]) == item:
            return self.vectors[pos]
        return None


def file_bytes(path: Path) -> Dict[str, bytes]:
    """Name -> bytes of every file directly in a directory (sub-directories: b"<dir>")."""
    out = {}
    for p in sorted(Path(path).iterdir()):
        out[p.name] = b"<dir>" if p.is_dir() else p.read_bytes()
    return out


def record_state(db: hannoy.Database, path: Path, queries: np.ndarray) -> State:
    with db.reader() as r:
        ids = r.item_ids()
        vectors = np.stack([r.item_vector(int(i)) for i in ids])
        results = [r.by_vec(q, n=10) for q in queries]
        item_results = {i: r.by_item(i, n=10) for i in PROBE_ITEMS}
    return State(
        digest=data_digest(path),
        ids=ids,
        vectors=vectors,
        queries=queries,
        results=results,
        item_results=item_results,
        indexes=list(db.stats()["indexes"]),
    )


def assert_unchanged(path: Path, state: State) -> None:
    """data.mdb has the recorded bytes and a fresh Database + reader sees the recorded state."""
    assert data_digest(path) == state.digest, "data.mdb changed"
    db = hannoy.Database(path, METRIC)
    try:
        assert db.stats()["indexes"] == state.indexes
        with db.reader() as r:
            ids = r.item_ids()
            assert ids.tolist() == state.ids.tolist(), "the item ids changed"
            assert len(r) == len(state.ids)
            vectors = np.stack([r.item_vector(int(i)) for i in ids])
            assert np.array_equal(vectors, state.vectors), "a stored vector changed"
            assert [r.by_vec(q, n=10) for q in state.queries] == state.results
            assert {i: r.by_item(i, n=10) for i in PROBE_ITEMS} == state.item_results
    finally:
        db.close()
    assert data_digest(path) == state.digest, "data.mdb changed while reading it"


def assert_added(path: Path, state: State, item: int, vector: np.ndarray) -> None:
    """The database holds the recorded items, unchanged, plus exactly ``item``."""
    assert data_digest(path) != state.digest, "the commit of a valid add changed nothing"
    db = hannoy.Database(path, METRIC)
    try:
        with db.reader() as r:
            ids = r.item_ids()
            assert ids.tolist() == sorted(state.ids.tolist() + [item])
            old = np.stack([r.item_vector(int(i)) for i in state.ids])
            assert np.array_equal(old, state.vectors), "a stored vector changed"
            assert np.array_equal(r.item_vector(item), vector)
            assert r.by_vec(vector, n=1) == [(item, 0.0)]
    finally:
        db.close()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(
    tmp_path_factory: pytest.TempPathFactory, fashion_train: np.ndarray, fashion_test: np.ndarray
) -> Tuple[Path, State]:
    """The database every test copies (built once), closed, and its recorded state."""
    path = tmp_path_factory.mktemp("bad-input") / "pristine"
    db = hannoy.Database(path, METRIC)
    with db.writer(DIMS, **BUILD) as w:
        w.add_items(np.arange(N_ITEMS), fashion_train[:N_ITEMS])
    state = record_state(db, path, fashion_test[:4].copy())
    db.close()
    # what was recorded is what was written, and closing wrote nothing
    assert state.ids.tolist() == list(range(N_ITEMS))
    assert np.array_equal(state.vectors, fashion_train[:N_ITEMS])
    assert all(len(res) == 10 for res in state.results)
    assert data_digest(path) == state.digest
    return path, state


@dataclass
class Built:
    path: Path
    db: hannoy.Database
    state: State
    data: np.ndarray  # fashion_train (10000, DIMS) float32

    @property
    def new_vector(self) -> np.ndarray:
        return self.data[NEW_ROW]


@pytest.fixture
def built(
    pristine: Tuple[Path, State], tmp_path: Path, fashion_train: np.ndarray
) -> Iterator[Built]:
    """A copy of the pristine database, open."""
    src, state = pristine
    path = tmp_path / "db"
    shutil.copytree(src, path)
    db = hannoy.Database(path, METRIC)
    try:
        yield Built(path, db, state, fashion_train)
    finally:
        db.close()


def raised(call: Callable[[], object]) -> Exception:
    """The exception the call raises; the test fails if it returns."""
    try:
        result = call()
    except Exception as e:  # checked by the caller
        return e
    pytest.fail("the bad call was accepted (it returned %.200r)" % (result,))


def assert_class(err: BaseException, expected: Type[BaseException]) -> None:
    assert isinstance(err, expected), "expected %s, got %s: %s" % (
        expected.__name__,
        type(err).__name__,
        err,
    )


# -- writers ---------------------------------------------------------------------------------


def assert_writer_sees(
    w: hannoy.Writer,
    state: State,
    touched: Sequence[int],
    added: Optional[Tuple[int, np.ndarray]] = None,
) -> None:
    """Inside the transaction: the recorded items plus ``added``, nothing of the bad call."""
    assert not w.closed, "the bad call closed the writer"
    n = len(state.ids) + (0 if added is None else 1)
    assert len(w) == n, "the writer holds %d items, expected %d" % (len(w), n)
    for item in touched:
        want = added[1] if added is not None and item == added[0] else state.stored(item)
        got = w.item_vector(item)
        if want is None:
            assert got is None, "item %d was stored by the bad call" % item
        else:
            assert got is not None and np.array_equal(got, want), "item %d changed" % item


def run_writer_case(
    b: Built, bad: BadWrite, expected: Type[BaseException], touched: Sequence[int] = ()
) -> None:
    touched = sorted(set(WRAP_IDS) | {int(i) for i in touched})

    # 1. the bad call, then abort
    w = b.db.writer(DIMS, **BUILD)
    err = raised(lambda: bad(w, b.data))
    assert_writer_sees(w, b.state, touched)
    w.abort()
    assert_unchanged(b.path, b.state)

    # 2. a valid add, then the bad call inside `with`: the exception aborts both
    with pytest.raises(Exception) as info:
        with b.db.writer(DIMS, **BUILD) as w:
            w.add_item(NEW_ID, b.new_vector)
            bad(w, b.data)
    assert type(info.value) is type(err)
    assert w.closed
    assert_unchanged(b.path, b.state)

    # 3. the writer stays usable: a valid add after the bad call, build, commit
    w = b.db.writer(DIMS, **BUILD)
    err3 = raised(lambda: bad(w, b.data))
    assert type(err3) is type(err)
    w.add_item(NEW_ID, b.new_vector)
    assert_writer_sees(w, b.state, touched, added=(NEW_ID, b.new_vector))
    w.build()
    w.commit()
    assert_added(b.path, b.state, NEW_ID, b.new_vector)

    assert_class(err, expected)
    assert isinstance(err, (ValueError, TypeError)), "a bad argument is a ValueError/TypeError"


def with_value(x: np.ndarray, row: int, value: float, col: int = 5) -> np.ndarray:
    """A copy of x[row] with x[row][col] = value (float64 for a finite value beyond float32)."""
    v = x[row].astype(np.float64 if np.isfinite(value) else np.float32)
    v[col] = value
    return v


def item_with(value: float) -> BadWrite:
    """add_item overwriting item 0 with row 300 of the data, holding one bad value."""

    def bad(w: hannoy.Writer, x: np.ndarray) -> None:
        w.add_item(0, with_value(x, 300, value))

    return bad


def batch_with(value: float, row: int) -> BadWrite:
    """add_items of the large batch (1500 rows, 100 of them overwrites) with one bad value."""

    def bad(w: hannoy.Writer, x: np.ndarray) -> None:
        vecs = x[BATCH_ROWS].astype(np.float64 if np.isfinite(value) else np.float32)
        vecs[row, 5] = value
        w.add_items(BATCH_IDS, vecs)

    return bad


def batch_ids_with(last: Any, kind: str) -> BadWrite:
    """add_items of the large batch whose last id is ``last``."""

    def bad(w: hannoy.Writer, x: np.ndarray) -> None:
        ids: Any = BATCH_IDS.tolist()
        ids[-1] = last
        if kind == "int64":
            ids = np.array(ids, dtype=np.int64)
        elif kind == "float64":
            ids = np.array(ids, dtype=np.float64)
        w.add_items(ids, x[BATCH_ROWS])

    return bad


def object_rows(bad_row: List[Any]) -> BadWrite:
    def bad(w: hannoy.Writer, x: np.ndarray) -> None:
        rows = np.empty((2, DIMS), dtype=object)
        rows[0] = x[300].tolist()
        rows[1] = bad_row
        w.add_items([300, 301], rows)

    return bad


def ragged_object_array(w: hannoy.Writer, x: np.ndarray) -> None:
    rows = np.empty(2, dtype=object)
    rows[0], rows[1] = x[300], x[301][:-1]
    w.add_items([300, 301], rows)


def rows_as(dtype: str) -> BadWrite:
    """add_items of two rows converted to a dtype that holds no real numbers."""

    def bad(w: hannoy.Writer, x: np.ndarray) -> None:
        w.add_items([300, 301], x[300:302].astype(np.int64).astype(dtype))

    return bad


# the exception classes the cases expect (short names for the tables)
DIM_E = hannoy.DimensionError
ARG_E = hannoy.InvalidArgumentError
TYPE_E = hannoy.ArgumentTypeError
ID_E = hannoy.InvalidItemError
NON_FINITE = (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf), ("1e39", 1e39))

# (name, bad call on a writer of the recorded database, exception, ids the call names)
WRITER_CASES: List[Tuple[str, BadWrite, Type[BaseException], Sequence[int]]] = [
    # wrong dimensions
    ("add_item-783-dims", lambda w, x: w.add_item(300, x[300][:-1]), DIM_E, ()),
    ("add_item-785-dims", lambda w, x: w.add_item(300, np.append(x[300], 1.0)), DIM_E, ()),
    ("add_item-0-dims", lambda w, x: w.add_item(300, []), DIM_E, ()),
    ("add_items-700-dims", lambda w, x: w.add_items([0, 300], x[300:302, :700]), DIM_E, ()),
    # NaN, +inf, -inf, a float64 beyond float32 (overwriting item 0, or in the large batch)
    *[
        ("add_item-%s" % name, item_with(value), ARG_E, ())
        for name, value in NON_FINITE
    ],
    *[
        ("batch-%s-%s-row" % (name, where), batch_with(value, row), ARG_E, BATCH_IDS)
        for name, value in NON_FINITE
        for where, row in (("first", 0), ("last", len(BATCH_IDS) - 1))
    ],
    # ids outside 0..2**32-1
    *[
        ("add_item-id-%s" % name, (lambda i: lambda w, x: w.add_item(i, x[300]))(item), ID_E, ())
        for name, item in (
            ("-1", -1),
            ("2**32", 2**32),
            ("2**64", 2**64),
            ("int64(-1)", np.int64(-1)),
            ("float-2**32", float(2**32)),
        )
    ],
    *[
        ("batch-last-id-%s-%s" % (name, kind), batch_ids_with(last, kind), ID_E, BATCH_IDS[:-1])
        for name, last in (("-1", -1), ("2**32", 2**32))
        for kind in ("list", "int64", "float64")
    ],
    (
        "add_items-id-uint64-max",
        lambda w, x: w.add_items(np.array([300, 2**64 - 1], dtype=np.uint64), x[300:302]),
        ID_E,
        (),
    ),
    ("del_item--1", lambda w, x: w.del_item(-1), ID_E, ()),
    ("del_item-2**32", lambda w, x: w.del_item(2**32), ID_E, ()),
    # ids of the wrong type
    ("add_item-id-str", lambda w, x: w.add_item("300", x[300]), TYPE_E, ()),
    ("add_item-id-nan", lambda w, x: w.add_item(np.nan, x[300]), TYPE_E, ()),
    ("add_items-ids-300.5", lambda w, x: w.add_items([300.5, 301], x[300:302]), TYPE_E, ()),
    ("add_items-ids-None", lambda w, x: w.add_items([300, None], x[300:302]), TYPE_E, ()),
    ("add_items-ids-bool", lambda w, x: w.add_items([True, False], x[300:302]), TYPE_E, ()),
    ("add_items-ids-str", lambda w, x: w.add_items("ab", x[300:302]), TYPE_E, ()),
    # non-numeric data
    ("add_item-strings", lambda w, x: w.add_item(300, ["a"] * DIMS), TYPE_E, ()),
    ("add_item-one-string", lambda w, x: w.add_item(300, x[300].tolist()[1:] + ["1"]), TYPE_E, ()),
    ("add_item-str", lambda w, x: w.add_item(300, "abc"), TYPE_E, ()),
    ("add_item-bytes", lambda w, x: w.add_item(300, b"a" * DIMS), TYPE_E, ()),
    ("add_item-None", lambda w, x: w.add_item(300, None), TYPE_E, ()),
    ("add_item-object", lambda w, x: w.add_item(300, object()), TYPE_E, ()),
    ("add_item-dict", lambda w, x: w.add_item(300, {0: 1.0}), TYPE_E, ()),
    ("add_item-Nones", lambda w, x: w.add_item(300, [None] * DIMS), TYPE_E, ()),
    ("add_item-complex128", lambda w, x: w.add_item(300, x[300].astype(complex)), TYPE_E, ()),
    ("add_items-object-None", object_rows([None] * DIMS), TYPE_E, ()),
    ("add_items-object-str", object_rows(["x"] * DIMS), TYPE_E, ()),
    ("add_items-object-object", object_rows([object()] * DIMS), TYPE_E, ()),
    *[
        ("add_items-dtype-%s" % dtype, rows_as(dtype), TYPE_E, ())
        for dtype in ("complex64", "complex128", "U8", "S8", "datetime64[s]", "timedelta64[s]")
    ],
    # wrong shapes
    ("add_item-2d", lambda w, x: w.add_item(300, x[300:301]), ARG_E, ()),
    ("add_item-3d", lambda w, x: w.add_item(300, x[300].reshape(1, 1, DIMS)), ARG_E, ()),
    ("add_item-ragged", lambda w, x: w.add_item(300, [[1.0, 2.0], [3.0]]), ARG_E, ()),
    ("add_items-1d", lambda w, x: w.add_items([300], x[300]), ARG_E, ()),
    ("add_items-3d", lambda w, x: w.add_items([300, 301], x[300:302, None]), ARG_E, ()),
    (
        "add_items-ragged-list",
        lambda w, x: w.add_items([300, 301], [x[300].tolist(), x[301].tolist()[:-1]]),
        ARG_E,
        (),
    ),
    ("add_items-ragged-object-array", ragged_object_array, TYPE_E, ()),
    ("add_items-ids-2d", lambda w, x: w.add_items([[300, 301]], x[300:302]), ARG_E, ()),
    # ids and rows of different lengths
    *[
        (
            "add_items-%d-ids-%d-rows" % (len(ids), rows),
            (lambda i, r: lambda w, x: w.add_items(i, x[300 : 300 + r]))(ids, rows),
            ARG_E,
            (300, 301, 302),
        )
        for ids, rows in (([300, 301, 302], 2), ([300], 2), ([], 2), ([300, 301], 0))
    ],
]


@pytest.mark.parametrize(
    "bad, expected, touched",
    [case[1:] for case in WRITER_CASES],
    ids=[case[0] for case in WRITER_CASES],
)
def test_bad_write_leaves_the_database_unchanged(
    built: Built, bad: BadWrite, expected: Type[BaseException], touched: Sequence[int]
) -> None:
    run_writer_case(built, bad, expected, touched)


@pytest.mark.parametrize(
    "dimensions, expected",
    [
        (DIMS - 1, hannoy.DimensionError),
        (DIMS + 1, hannoy.DimensionError),
        (1, hannoy.DimensionError),
        (0, hannoy.InvalidArgumentError),
        (-1, hannoy.InvalidArgumentError),
        (2**32, hannoy.InvalidArgumentError),
        ("784", hannoy.ArgumentTypeError),
    ],
)
def test_writer_with_other_dimensions(
    built: Built, dimensions: Any, expected: Type[BaseException]
) -> None:
    err = raised(lambda: built.db.writer(dimensions, **BUILD))
    assert_class(err, expected)
    assert_unchanged(built.path, built.state)
    # the failed open left no writer behind: a valid one opens at once and commits
    with built.db.writer(DIMS, **BUILD) as w:
        w.add_item(NEW_ID, built.new_vector)
    assert_added(built.path, built.state, NEW_ID, built.new_vector)


# -- readers ---------------------------------------------------------------------------------


def ragged_object_queries(r: hannoy.Reader, q: np.ndarray) -> object:
    rows = np.empty(2, dtype=object)
    rows[0], rows[1] = q[0], q[1][:-1]
    return r.by_array(rows)


def search(method: str, **kwargs: Any) -> BadRead:
    """reader.<method> on valid queries or items, with the keyword arguments kwargs."""

    def bad(r: hannoy.Reader, q: np.ndarray) -> object:
        if method == "by_vec":
            return r.by_vec(q[0], **kwargs)
        if method == "by_item":
            return r.by_item(0, **kwargs)
        if method == "by_items":
            return r.by_items([0, 1], **kwargs)
        return r.by_array(q, **kwargs)

    return bad


READER_CASES: List[Tuple[str, BadRead, Type[BaseException]]] = [
    # n and ef_search out of range, or of the wrong type
    *[
        ("%s-%s=%r" % (method, arg, value), search(method, **{arg: value}), exc)
        for method in ("by_vec", "by_item", "by_items", "by_array")
        for arg, value, exc in (
            ("n", 0, hannoy.InvalidArgumentError),
            ("n", -1, hannoy.InvalidArgumentError),
            ("n", 2**32, hannoy.InvalidArgumentError),
            ("ef_search", -1, hannoy.InvalidArgumentError),
            ("ef_search", 0, hannoy.InvalidArgumentError),
            ("n", "10", hannoy.ArgumentTypeError),
            ("ef_search", 1.5, hannoy.ArgumentTypeError),
        )
    ],
    *[
        ("by_vec-n=%r" % (value,), search("by_vec", n=value), hannoy.ArgumentTypeError)
        for value in (1.5, None, True)
    ],
    # wrong dimensions
    ("by_vec-783-dims", lambda r, q: r.by_vec(q[0][:-1]), hannoy.DimensionError),
    ("by_vec-785-dims", lambda r, q: r.by_vec(np.append(q[0], 1.0)), hannoy.DimensionError),
    ("by_vec-0-dims", lambda r, q: r.by_vec([]), hannoy.DimensionError),
    ("by_array-10-dims", lambda r, q: r.by_array(q[:, :10]), hannoy.DimensionError),
    ("by_array-1d-783-dims", lambda r, q: r.by_array(q[0][:-1]), hannoy.DimensionError),
    # NaN and inf (float32 arrays take by_vec's fast path, lists the general one)
    *[
        (
            "by_vec-%s-%s" % (name, kind),
            (
                lambda v, k: lambda r, q: r.by_vec(
                    with_value(q, 0, v, col=700) if k == "array" else with_value(q, 0, v).tolist()
                )
            )(value, kind),
            hannoy.InvalidArgumentError,
        )
        for name, value in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf), ("1e39", 1e39))
        for kind in ("array", "list")
    ],
    *[
        (
            "by_array-%s-last-row" % name,
            (lambda v: lambda r, q: r.by_array(np.vstack([q, with_value(q, 3, v)])))(value),
            hannoy.InvalidArgumentError,
        )
        for name, value in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf))
    ],
    # non-numeric queries, wrong dtypes
    ("by_vec-str", lambda r, q: r.by_vec("x" * DIMS), hannoy.ArgumentTypeError),
    ("by_vec-strings", lambda r, q: r.by_vec(["x"] * DIMS), hannoy.ArgumentTypeError),
    ("by_vec-None", lambda r, q: r.by_vec(None), hannoy.ArgumentTypeError),
    ("by_vec-Nones", lambda r, q: r.by_vec([None] * DIMS), hannoy.ArgumentTypeError),
    ("by_vec-object", lambda r, q: r.by_vec(object()), hannoy.ArgumentTypeError),
    (
        "by_vec-complex64",
        lambda r, q: r.by_vec(q[0].astype(np.complex64)),
        hannoy.ArgumentTypeError,
    ),
    (
        "by_array-complex128",
        lambda r, q: r.by_array(q.astype(np.complex128)),
        hannoy.ArgumentTypeError,
    ),
    ("by_array-str-dtype", lambda r, q: r.by_array(q.astype("U8")), hannoy.ArgumentTypeError),
    (
        "by_array-object-None",
        lambda r, q: r.by_array(np.array([q[0].tolist(), [None] * DIMS], dtype=object)),
        hannoy.ArgumentTypeError,
    ),
    # wrong shapes
    ("by_vec-2d", lambda r, q: r.by_vec(q[:1]), hannoy.InvalidArgumentError),
    ("by_vec-scalar", lambda r, q: r.by_vec(5.0), hannoy.InvalidArgumentError),
    ("by_array-3d", lambda r, q: r.by_array(q.reshape(2, 2, DIMS)), hannoy.InvalidArgumentError),
    ("by_array-0d", lambda r, q: r.by_array(1.0), hannoy.InvalidArgumentError),
    (
        "by_array-ragged-list",
        lambda r, q: r.by_array([q[0].tolist(), q[1].tolist()[:-1]]),
        hannoy.InvalidArgumentError,
    ),
    ("by_array-ragged-object-array", ragged_object_queries, hannoy.ArgumentTypeError),
    # item ids
    ("by_item--1", lambda r, q: r.by_item(-1), hannoy.InvalidItemError),
    ("by_item-2**32", lambda r, q: r.by_item(2**32), hannoy.InvalidItemError),
    ("by_item-str", lambda r, q: r.by_item("0"), hannoy.ArgumentTypeError),
    ("by_item-1.5", lambda r, q: r.by_item(1.5), hannoy.ArgumentTypeError),
    ("by_items--1", lambda r, q: r.by_items([0, -1]), hannoy.InvalidItemError),
    (
        "by_items-2**32",
        lambda r, q: r.by_items(np.array([0, 2**32], dtype=np.int64)),
        hannoy.InvalidItemError,
    ),
    ("by_items-2d", lambda r, q: r.by_items([[0, 1]]), hannoy.InvalidArgumentError),
    ("by_items-str", lambda r, q: r.by_items("01"), hannoy.ArgumentTypeError),
    ("item_vector--1", lambda r, q: r.item_vector(-1), hannoy.InvalidItemError),
    ("item_vector-2**32", lambda r, q: r.item_vector(2**32), hannoy.InvalidItemError),
    (
        "by_vec-candidates--1",
        lambda r, q: r.by_vec(q[0], candidates=[1, -1]),
        hannoy.InvalidItemError,
    ),
    (
        "by_array-candidates-str",
        lambda r, q: r.by_array(q, candidates="abc"),
        hannoy.ArgumentTypeError,
    ),
    ("by_array-threads-str", lambda r, q: r.by_array(q, threads="all"), hannoy.ArgumentTypeError),
]


@pytest.mark.parametrize(
    "bad, expected", [case[1:] for case in READER_CASES], ids=[case[0] for case in READER_CASES]
)
def test_bad_read_leaves_the_database_unchanged(
    built: Built, bad: BadRead, expected: Type[BaseException]
) -> None:
    state = built.state
    r = built.db.reader()
    err = raised(lambda: bad(r, state.queries))
    # the reader stays usable and sees the same snapshot
    assert [r.by_vec(q, n=10) for q in state.queries] == state.results
    assert r.by_array(state.queries, n=10) == state.results
    assert {i: r.by_item(i, n=10) for i in PROBE_ITEMS} == state.item_results
    r.close()
    assert_unchanged(built.path, state)
    assert_class(err, expected)
    assert isinstance(err, (ValueError, TypeError)), "a bad argument is a ValueError/TypeError"


OUT_CASES: List[Tuple[str, Callable[[], Any], Type[BaseException]]] = [
    (
        "ids-int64",
        lambda: (np.full((4, 5), 7, np.int64), np.full((4, 5), 7.0, np.float32)),
        hannoy.ArgumentTypeError,
    ),
    (
        "distances-float64",
        lambda: (np.full((4, 5), 7, np.uint32), np.full((4, 5), 7.0, np.float64)),
        hannoy.ArgumentTypeError,
    ),
    (
        "shape-4x4",
        lambda: (np.full((4, 4), 7, np.uint32), np.full((4, 4), 7.0, np.float32)),
        hannoy.InvalidArgumentError,
    ),
    (
        "shape-1d",
        lambda: (np.full(20, 7, np.uint32), np.full(20, 7.0, np.float32)),
        hannoy.InvalidArgumentError,
    ),
    (
        "non-contiguous",
        lambda: (np.full((4, 10), 7, np.uint32)[:, ::2], np.full((4, 5), 7.0, np.float32)),
        hannoy.InvalidArgumentError,
    ),
    (
        "three-arrays",
        lambda: (np.full((4, 5), 7, np.uint32),) * 3,
        hannoy.InvalidArgumentError,
    ),
    (
        "lists",
        lambda: ([[7] * 5] * 4, [[7.0] * 5] * 4),
        hannoy.ArgumentTypeError,
    ),
]


@pytest.mark.parametrize(
    "make_out, expected", [case[1:] for case in OUT_CASES], ids=[case[0] for case in OUT_CASES]
)
def test_bad_out_buffers_are_not_written(
    built: Built, make_out: Callable[[], Any], expected: Type[BaseException]
) -> None:
    state = built.state
    out = make_out()
    before = [np.array(a, copy=True) for a in out]
    with built.db.reader() as r:
        err = raised(lambda: r.by_array(state.queries, n=5, out=out))
        for a, b in zip(out, before):
            assert np.array_equal(np.asarray(a), b), "a rejected out buffer was written"
        ids = np.empty((4, 5), np.uint32)
        dists = np.empty((4, 5), np.float32)
        r.by_array(state.queries, n=5, out=(ids, dists))
        assert [list(zip(i.tolist(), d.tolist())) for i, d in zip(ids, dists)] == [
            res[:5] for res in state.results
        ]
    assert_unchanged(built.path, state)
    assert_class(err, expected)


def test_read_only_out_buffer_is_not_written(built: Built) -> None:
    ids = np.full((4, 5), 7, np.uint32)
    ids.setflags(write=False)
    dists = np.full((4, 5), 7.0, np.float32)
    with built.db.reader() as r:
        err = raised(lambda: r.by_array(built.state.queries, n=5, out=(ids, dists)))
    assert (ids == 7).all() and (dists == 7.0).all()
    assert_unchanged(built.path, built.state)
    assert_class(err, hannoy.ArgumentTypeError)


@pytest.mark.parametrize(
    "index, expected",
    [
        (-1, hannoy.InvalidArgumentError),
        (65536, hannoy.InvalidArgumentError),
        ("0", hannoy.ArgumentTypeError),
        (0.5, hannoy.ArgumentTypeError),
    ],
)
def test_bad_reader_index(built: Built, index: Any, expected: Type[BaseException]) -> None:
    assert_class(raised(lambda: built.db.reader(index)), expected)
    assert_unchanged(built.path, built.state)


# -- indexes never built, other metrics, pending builds --------------------------------------


@pytest.mark.parametrize("index", [1, 2, 65535])
def test_reader_on_an_index_never_built(built: Built, index: int) -> None:
    for _ in range(2):  # the failure leaves nothing behind that changes the second attempt
        assert_class(raised(lambda: built.db.reader(index)), hannoy.MissingMetadataError)
    other = hannoy.Database(built.path, METRIC)
    assert_class(raised(lambda: other.reader(index)), hannoy.MissingMetadataError)
    other.close()
    assert built.db.stats()["indexes"] == [0]
    assert_unchanged(built.path, built.state)


def test_reader_on_a_new_database(tmp_path: Path, fashion_train: np.ndarray) -> None:
    path = tmp_path / "db"
    db = hannoy.Database(path, METRIC)
    digest = data_digest(path)
    assert_class(raised(db.reader), hannoy.MissingMetadataError)
    assert data_digest(path) == digest
    assert db.stats()["indexes"] == []
    # items committed but never built: still no index to read
    w = db.writer(DIMS, **BUILD)
    w.add_items(range(10), fashion_train[:10])
    w.commit()
    digest = data_digest(path)
    assert_class(raised(db.reader), hannoy.MissingMetadataError)
    assert data_digest(path) == digest
    db.close()


@pytest.mark.parametrize("other", [m for m in Metric if m != METRIC], ids=str)
def test_reader_with_another_metric(built: Built, other: Metric) -> None:
    db = hannoy.Database(built.path, other)
    try:
        for _ in range(2):
            err = raised(db.reader)
            assert_class(err, hannoy.MetricMismatchError)
            # e.g. 'got "binary quantized cosine" but the index is stored with "euclidean"'
            assert str(other).split("_")[-1] in str(err), str(err)
            assert '"%s"' % METRIC in str(err), str(err)
        # a writer with the other metric is refused too (it would write foreign vectors)
        assert_class(raised(lambda: db.writer(DIMS, **BUILD)), hannoy.MetricMismatchError)
        assert data_digest(built.path) == built.state.digest
    finally:
        db.close()
    assert_unchanged(built.path, built.state)
    # the database opened with the stored metric still reads and writes
    with built.db.writer(DIMS, **BUILD) as w:
        w.add_item(NEW_ID, built.new_vector)
    assert_added(built.path, built.state, NEW_ID, built.new_vector)


def test_pending_build(built: Built) -> None:
    db, path, state = built.db, built.path, built.state
    old_reader = db.reader()
    w = db.writer(DIMS, **BUILD)
    w.add_item(NEW_ID, built.new_vector)
    assert w.del_item(7)
    w.commit()  # without a build: the change is pending
    pending = data_digest(path)
    assert pending != state.digest

    for _ in range(2):
        assert_class(raised(db.reader), hannoy.NeedBuildError)
    other = hannoy.Database(path, METRIC)
    assert_class(raised(other.reader), hannoy.NeedBuildError)
    other.close()
    assert data_digest(path) == pending, "a failed reader changed data.mdb"

    # a reader opened before the pending commit keeps its snapshot
    assert [old_reader.by_vec(q, n=10) for q in state.queries] == state.results
    assert old_reader.item_ids().tolist() == state.ids.tolist()
    old_reader.close()

    # a writer sees the pending change; aborting it changes nothing
    w = db.writer(DIMS, **BUILD)
    assert w.need_build()
    assert NEW_ID in w and 7 not in w and len(w) == N_ITEMS
    w.abort()
    assert data_digest(path) == pending
    assert_class(raised(db.reader), hannoy.NeedBuildError)

    # building resolves it: exactly the pending change, nothing else
    with db.writer(DIMS, **BUILD) as w:
        pass
    with db.reader() as r:
        ids = r.item_ids().tolist()
        assert ids == [i for i in state.ids.tolist() if i != 7] + [NEW_ID]
        got = np.stack([r.item_vector(i) for i in ids[:-1]])
        assert np.array_equal(got, np.delete(state.vectors, 7, axis=0))
        assert r.by_vec(built.new_vector, n=1) == [(NEW_ID, 0.0)]
        assert r.item_vector(7) is None


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize("below", ["", "sub", "sub/deeper"])
def test_path_is_a_file(tmp_path: Path, below: str) -> None:
    f = tmp_path / "file"
    content = b"not a database\n" * 100
    f.write_bytes(content)
    f.chmod(0o640)
    path = f / below if below else f
    for _ in range(2):
        err = raised(lambda: hannoy.Database(path, METRIC))
        assert_class(err, hannoy.HannoyIOError)
        assert isinstance(err, OSError)
    assert f.read_bytes() == content
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


NOT_LMDB: Dict[str, bytes] = {
    "text": b"this is not an LMDB database\n" * 400,
    "zeros": bytes(16384),
    "short": b"\x00" * 100,
    "sqlite": b"SQLite format 3\x00" + bytes(4080),
    "random": np.random.default_rng(2024).integers(0, 256, 12288, dtype=np.uint8).tobytes(),
}


@pytest.mark.parametrize("kind", list(NOT_LMDB) + ["directory"])
def test_directory_holding_a_non_lmdb_data_mdb(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "db"
    path.mkdir()
    if kind == "directory":
        (path / "data.mdb").mkdir()
    else:
        (path / "data.mdb").write_bytes(NOT_LMDB[kind])
    before = file_bytes(path)
    for _ in range(2):
        err = raised(lambda: hannoy.Database(path, METRIC))
        assert_class(err, hannoy.HannoyIOError)
        assert "data.mdb" in str(err), str(err)
    assert file_bytes(path) == before, "the directory changed (data.mdb rewritten or lock.mdb)"
    # the failure left nothing behind in this process: without the bad file, the path opens
    if kind == "directory":
        (path / "data.mdb").rmdir()
    else:
        (path / "data.mdb").unlink()
    db = hannoy.Database(path, METRIC)
    assert_class(raised(db.reader), hannoy.MissingMetadataError)
    db.close()


def test_non_lmdb_data_mdb_next_to_a_real_lock_file(
    pristine: Tuple[Path, State], tmp_path: Path
) -> None:
    src, state = pristine
    path = tmp_path / "db"
    shutil.copytree(src, path)
    good = (path / "data.mdb").read_bytes()
    garbage = np.random.default_rng(7).integers(0, 256, len(good), dtype=np.uint8).tobytes()
    (path / "data.mdb").write_bytes(garbage)
    before = file_bytes(path)
    assert "lock.mdb" in before
    err = raised(lambda: hannoy.Database(path, METRIC))
    assert_class(err, hannoy.HannoyIOError)
    assert file_bytes(path) == before, "data.mdb or lock.mdb changed"
    # put the real data file back: the database is intact
    (path / "data.mdb").write_bytes(good)
    assert_unchanged(path, state)


def test_directory_that_does_not_exist_is_created(
    tmp_path: Path, fashion_train: np.ndarray
) -> None:
    path = tmp_path / "a" / "b" / "c" / "db"
    db = hannoy.Database(path, METRIC)
    try:
        assert path.is_dir() and (path / "data.mdb").is_file()
        assert db.stats()["indexes"] == []
        digest = data_digest(path)
        assert_class(raised(db.reader), hannoy.MissingMetadataError)
        assert data_digest(path) == digest
        with db.writer(DIMS, **BUILD) as w:
            w.add_items(range(20), fashion_train[:20])
        with db.reader() as r:
            assert r.item_ids().tolist() == list(range(20))
            assert r.by_vec(fashion_train[3], n=1) == [(3, 0.0)]
    finally:
        db.close()


# -- read-only paths (in a child process without root's privileges) --------------------------

# The child imports what it needs while it may still be root (the interpreter's standard library
# may be unreadable for uid 65534, e.g. under /root), but does not load libhannoy.so (importing
# hannoy never does): the library and its Go runtime start after the privileges are dropped.
CHILD = r"""
import hashlib, json, os, sys
import numpy as np
import cffi
import hannoy
from hannoy import _ffi
cffi.FFI().cdef(_ffi._read_cdef())  # warm cffi's lazy imports; does not load the library
assert not _ffi.is_loaded()
args = json.loads(sys.argv[1])
out = {"euid": os.geteuid()}
if os.geteuid() == 0:
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except OSError as e:
        out["setuid_error"] = str(e)
out["uid"] = os.geteuid()
try:
    open(os.path.join(args["probe"], ".probe"), "xb").close()
    out["probe"] = "writable"
except PermissionError:
    out["probe"] = "denied"

def describe(e):
    return {"type": type(e).__name__, "io": isinstance(e, hannoy.HannoyIOError),
            "oserror": isinstance(e, OSError), "hannoy": isinstance(e, hannoy.HannoyError),
            "message": str(e)}

queries = np.array(args["queries"], dtype=np.float32)
results = []
for path in args["paths"]:
    r = {"path": path}
    try:
        db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
    except Exception as e:
        r["open_error"] = describe(e)
    else:
        r["opened"] = True
        try:
            with db.reader() as rd:
                ids = rd.item_ids()
                r["ids"] = ids.tolist()
                r["vectors"] = hashlib.sha256(
                    b"".join(rd.item_vector(int(i)).tobytes() for i in ids)).hexdigest()
                r["results"] = [rd.by_vec(q, n=10) for q in queries]
        except Exception as e:
            r["reader_error"] = describe(e)
        try:
            w = db.writer(queries.shape[1])
        except Exception as e:
            r["writer_error"] = describe(e)
        else:
            r["writer"] = "opened"
            w.abort()
        db.close()
    results.append(r)
out["results"] = results
print("JSON " + json.dumps(out), flush=True)
"""



def make_read_only(path: Path) -> None:
    for p in path.iterdir():
        if p.is_file():
            p.chmod(0o444)
    path.chmod(0o555)


def run_unprivileged(shared: Path, probe: Path, paths: List[Path], state: State) -> Dict[str, Any]:
    """Run CHILD (as uid/gid 65534 when root) on paths; its findings, or skip if the
    environment cannot run the test (privileges not dropped, library unreadable)."""
    args = {
        "probe": str(probe),
        "paths": [str(p) for p in paths],
        "queries": state.queries.tolist(),
    }
    env = subprocess_env()
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=str(shared),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, "the child died (rc %d):\n%s\n%s" % (
        proc.returncode,
        proc.stdout[-3000:],
        proc.stderr[-3000:],
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON ")]
    assert lines, "no report from the child:\n%s\n%s" % (proc.stdout, proc.stderr)
    out: Dict[str, Any] = json.loads(lines[-1][5:])
    if "setuid_error" in out:
        pytest.skip("cannot drop root's privileges: %s" % out["setuid_error"])
    if out["probe"] != "denied":
        pytest.skip("permissions are not enforced for the child (uid %d)" % out["uid"])
    for r in out["results"]:
        err = r.get("open_error") or {}
        if err.get("type") == "LibraryNotFoundError":
            pytest.skip("uid %d cannot load the library: %s" % (out["uid"], err["message"]))
    return out


@pytest.mark.parametrize("target", ["missing-nested-directory", "existing-empty-directory"])
def test_read_only_directory_new_database(
    shared_dir: Path, pristine: Tuple[Path, State], target: str
) -> None:
    ro = shared_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    path = ro / "new" / "db" if target == "missing-nested-directory" else ro
    out = run_unprivileged(shared_dir, ro, [path], pristine[1])
    r = out["results"][0]
    assert "opened" not in r, "a database was opened in a read-only directory: %r" % r
    assert sorted(os.listdir(ro)) == [], "something was created in the read-only directory"
    err = r["open_error"]
    assert err["io"] and err["oserror"], (
        "expected hannoy.HannoyIOError (an OSError) for a directory that is not writable, "
        "got %s: %s" % (err["type"], err["message"])
    )


def test_read_only_existing_database(shared_dir: Path, pristine: Tuple[Path, State]) -> None:
    src, state = pristine
    path = shared_dir / "db"
    shutil.copytree(src, path)
    make_read_only(path)
    before = file_bytes(path)
    out = run_unprivileged(shared_dir, path, [path], state)
    r = out["results"][0]
    # whatever happened, nothing on disk changed
    assert file_bytes(path) == before, "data.mdb or lock.mdb of a read-only database changed"
    assert data_digest(path) == state.digest
    path.chmod(0o755)
    for f in path.iterdir():
        f.chmod(0o644)
    assert_unchanged(path, state)
    if "opened" in r:
        # reading works: it must see the database as it is; writing must be refused
        assert "reader_error" not in r, r["reader_error"]
        assert r["ids"] == state.ids.tolist()
        want = hashlib.sha256(b"".join(v.tobytes() for v in state.vectors)).hexdigest()
        assert r["vectors"] == want
        assert [[tuple(p) for p in res] for res in r["results"]] == state.results
        assert "writer_error" in r, "a writer was opened on a read-only database"
        assert r["writer_error"]["io"], r["writer_error"]
    else:
        err = r["open_error"]
        assert err["io"] and err["oserror"], (
            "expected hannoy.HannoyIOError (an OSError) for a read-only database, got %s: %s"
            % (err["type"], err["message"])
        )
