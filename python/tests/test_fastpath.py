"""The upstream-style call paths: add_item(i, list) in a loop, by_vec(list).

add_item packs lists, tuples and float32 rows with struct and keeps them pending until a batch
is full (then queued: the library stores it in the background) or another writer call needs
them; by_vec packs a list into one library call. These tests check that every input gives the
vector and the error it always gave, and that pending and queued items behave like items added
one call at a time (order, visibility, threads, failures, abort, fork).
"""

from __future__ import annotations

import ast
import os
import threading
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

import hannoy

from helpers import in_forked_child
from hannoy import Metric
from hannoy._writer import _BATCH_ITEMS

DIMS = 5
ROW = [0.1, -2.5, 1.0 / 3.0, 7.0, 1e-40]  # rounds in float32; the last is a float32 subnormal


def _f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


# -- inputs that are accepted ---------------------------------------------------------------

GOOD: Dict[str, Callable[[], Any]] = {
    "list of float": lambda: list(ROW),
    "tuple of float": lambda: tuple(ROW),
    "list of int": lambda: [1, -2, 3, 0, 5],
    "list of bool and int": lambda: [True, False, 2, 3, 4],
    "list of numpy scalars": lambda: [np.float32(x) for x in ROW],
    "list of Decimal and Fraction": lambda: [Decimal("0.5"), Fraction(1, 3), 2, 3.25, -1],
    "float32 row": lambda: np.asarray(ROW, dtype=np.float32),
    "float64 row": lambda: np.asarray(ROW, dtype=np.float64),
    "int64 row": lambda: np.arange(DIMS, dtype=np.int64),
    "non-contiguous float32 row": lambda: np.asarray(ROW * 2, dtype=np.float32)[::2],
    "big-endian float32 row": lambda: np.asarray(ROW, dtype=">f4"),
    "row of a 2-D array": lambda: np.asarray([ROW, ROW], dtype=np.float32)[1],
    "list beyond float32's largest finite": lambda: [3.4028235e38, -3.4028235e38, 0, 0, 0],
    "largest finite float32s (exponent 0xfe)": lambda: [3e38, -2e38, 1.7e38, 0.0, 1.0],
}


def _expected(vector: Any) -> np.ndarray:
    """What the ndarray path stores: np.asarray(...).astype(float32)."""
    if isinstance(vector, np.ndarray):
        return vector.astype(np.float32)
    return np.asarray([float(x) for x in vector], dtype=np.float64).astype(np.float32)


@pytest.mark.parametrize("name", list(GOOD))
def test_add_item_and_by_vec_accept(make_db: Callable[..., hannoy.Database], name: str) -> None:
    vector = GOOD[name]()
    want = _expected(vector)
    assert np.isfinite(want).all()
    db = make_db()
    with db.writer(DIMS, m=4, ef=10) as w:
        w.add_item(3, vector)
        got = w.item_vector(3)  # hands the pending item over
        assert got is not None and np.array_equal(got, want), (got, want)
        w.add_item(4, np.zeros(DIMS, dtype=np.float32) + 1)
    with db.reader() as r:
        assert np.array_equal(r.item_vector(3), want)
        by_vec = r.by_vec(vector, n=2, ef_search=10)
        assert by_vec == r.by_vec(want, n=2, ef_search=10)
        assert by_vec == r.by_array(want[None, :], n=2, ef_search=10, threads=1)[0]
        assert by_vec[0][0] == 3


# -- inputs that are refused ----------------------------------------------------------------


class _Raises:
    def __float__(self) -> float:
        raise ValueError("no float here")


BAD: Dict[str, Callable[[], Any]] = {
    "too short": lambda: [1.0, 2.0],
    "too long": lambda: [1.0] * (DIMS + 1),
    "empty": lambda: [],
    "nan": lambda: [1.0, float("nan"), 0, 0, 0],
    "inf": lambda: [float("inf"), 0.0, 0, 0, 0],
    "-inf in a tuple": lambda: (0.0, 0.0, 0.0, 0.0, float("-inf")),
    "beyond float32": lambda: [1e39, 0, 0, 0, 0],
    "int beyond float32": lambda: [10**39, 0, 0, 0, 0],
    "int beyond float64": lambda: [10**400, 0, 0, 0, 0],
    "str element": lambda: ["a", 1, 2, 3, 4],
    "None element": lambda: [None, 1, 2, 3, 4],
    "nested": lambda: [[1.0]] * DIMS,
    "complex": lambda: [1j, 0, 0, 0, 0],
    "__float__ raises": lambda: [_Raises(), 0, 0, 0, 0],
    "nan float32 row": lambda: np.asarray([0, np.nan, 0, 0, 0], dtype=np.float32),
    "inf float32 row": lambda: np.asarray([0, 0, 0, 0, np.inf], dtype=np.float32),
    "short float32 row": lambda: np.zeros(DIMS - 1, dtype=np.float32),
    "2-D float32": lambda: np.zeros((1, DIMS), dtype=np.float32),
    "str": lambda: "hello",
    "None": lambda: None,
}


def _error_of(call: Callable[[], Any]) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def _reference_error(vector: Any) -> type:
    """The error class of the general path: as_vector on the same value (numpy conversion)."""
    from hannoy._convert import as_vector

    return type(_error_of(lambda: as_vector(vector, DIMS, "vector")))


@pytest.mark.parametrize("name", list(BAD))
def test_add_item_refuses_like_the_array_path(
    make_db: Callable[..., hannoy.Database], name: str
) -> None:
    db = make_db()
    want = _reference_error(BAD[name]())
    with db.writer(DIMS, m=4, ef=10) as w:
        w.add_item(0, [1.0] * DIMS)  # pending when the bad call comes
        e = _error_of(lambda: w.add_item(1, BAD[name]()))
        assert type(e) is want, (name, e)
        # the writer is still usable and the refused vector left no trace
        w.add_item(2, [2.0] * DIMS)
        assert len(w) == 2 and 1 not in w and 0 in w and 2 in w
    with db.reader() as r:
        assert r.item_ids().tolist() == [0, 2]


@pytest.fixture
def small_db(make_db: Callable[..., hannoy.Database]) -> hannoy.Database:
    db = make_db()
    with db.writer(DIMS, m=4, ef=10) as w:
        w.add_items(range(DIMS), np.eye(DIMS, dtype=np.float32))
    return db


@pytest.mark.parametrize("name", list(BAD))
def test_by_vec_refuses_like_the_array_path(small_db: hannoy.Database, name: str) -> None:
    from hannoy._convert import as_vector

    want = type(_error_of(lambda: as_vector(BAD[name](), DIMS, "query")))
    with small_db.reader() as r:
        e = _error_of(lambda: r.by_vec(BAD[name](), n=1))
        assert type(e) is want, (name, e)
        assert r.by_vec([0.0, 1.0, 0.0, 0.0, 0.0], n=1) == [(1, 0.0)]


def test_error_messages_match_the_array_path(make_db: Callable[..., hannoy.Database]) -> None:
    db = make_db()
    with db.writer(DIMS) as w:
        for bad in ([1.0, float("nan"), 0, 0, 0], [1e39, 0, 0, 0, 0], [1.0, 2.0], ["x"] * DIMS):
            fast = _error_of(lambda: w.add_item(0, bad))
            general = _error_of(lambda: w.add_item(0, np.asarray(bad, dtype=object)))
            assert type(fast) is type(general)
            if not isinstance(bad[0], str):
                assert str(fast) == str(general)
        w.add_item(0, [0.0] * DIMS)
    with db.reader() as r:
        e = _error_of(lambda: r.by_vec([0.0, float("inf"), 0, 0, 0]))
        assert isinstance(e, hannoy.InvalidArgumentError)
        assert "finite" in str(e) and "position 1" in str(e)


def test_item_ids_are_checked_first(make_db: Callable[..., hannoy.Database]) -> None:
    db = make_db()
    with db.writer(DIMS) as w:
        with pytest.raises(hannoy.InvalidItemError):
            w.add_item(-1, [float("nan")] * DIMS)  # the id is checked before the vector
        with pytest.raises(hannoy.ArgumentTypeError):
            w.add_item(True, [1.0] * DIMS)
        w.add_item(np.uint64(2**32 - 1), [1.0] * DIMS)
        assert 2**32 - 1 in w


def test_interrupt_inside_add_item_keeps_the_writer_consistent(
    make_db: Callable[..., hannoy.Database], batch_store: str
) -> None:
    class Interrupts:
        def __float__(self) -> float:
            raise KeyboardInterrupt

    db = make_db()
    with db.writer(DIMS, m=4, ef=10) as w:
        for i in range(300):
            w.add_item(i, [float(i)] * DIMS)
            if i % 97 == 0:
                with pytest.raises(KeyboardInterrupt):
                    w.add_item(10_000 + i, [Interrupts()] + [0.0] * (DIMS - 1))
        assert len(w) == 300
    with db.reader() as r:
        assert r.item_ids().tolist() == list(range(300))
        assert np.array_equal(r.item_vector(299), np.full(DIMS, 299.0, dtype=np.float32))


# -- pending and queued items behave like items added one by one ------------------------------


@pytest.fixture(params=["at once", "queued"])
def batch_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test with full batches stored at once (as for vectors under
    _writer._QUEUE_BYTES) and queued to be stored in the background (as for larger ones)."""
    from hannoy import _writer

    monkeypatch.setattr(_writer, "_QUEUE_BYTES", 0 if request.param == "queued" else 1 << 62)
    return request.param


def test_pending_items_are_seen_in_order(
    make_db: Callable[..., hannoy.Database], batch_store: str
) -> None:
    db = make_db()
    n = 3 * _BATCH_ITEMS + 17  # full (queued) batches and a pending rest
    with db.writer(DIMS, m=4, ef=10) as w:
        w.add_item(5, [1.0] * DIMS)
        for i in range(100, 100 + n):
            w.add_item(i, [float(i)] * DIMS)
        w.add_item(5, [2.0] * DIMS)  # overwrites, across batches
        assert 5 in w and 100 + n - 1 in w
        assert np.array_equal(w.item_vector(5), np.full(DIMS, 2.0, dtype=np.float32))
        assert len(w) == n + 1
        w.add_item(6, [6.0] * DIMS)
        w.add_items([6], [[7.0] * DIMS])  # add_items comes after the pending add_item
        assert np.array_equal(w.item_vector(6), np.full(DIMS, 7.0, dtype=np.float32))
        w.add_item(7, [7.0] * DIMS)
        assert w.del_item(7) is True  # the delete sees the pending item
        assert 7 not in w
        w.add_item(8, [8.0] * DIMS)
        assert w.need_build()
    with db.reader() as r:
        assert len(r) == n + 3
        assert 7 not in r and 8 in r
        assert np.array_equal(r.item_vector(5), np.full(DIMS, 2.0, dtype=np.float32))
    with db.writer(DIMS, m=4, ef=10) as w:
        w.add_item(9, [9.0] * DIMS)
        w.clear()  # the clear sees the pending item too
        w.add_item(10, [10.0] * DIMS)
    with db.reader() as r:
        assert r.item_ids().tolist() == [10]


def test_commit_without_build_and_abort_with_pending_items(
    make_db: Callable[..., hannoy.Database], batch_store: str
) -> None:
    db = make_db()
    w = db.writer(DIMS, m=4, ef=10)
    for i in range(_BATCH_ITEMS + 3):
        w.add_item(i, [float(i)] * DIMS)
    w.commit()  # without a build: hands everything over first
    w = db.writer(DIMS, m=4, ef=10)
    assert len(w) == _BATCH_ITEMS + 3
    for i in range(1000, 1000 + 2 * _BATCH_ITEMS):
        w.add_item(i, [1.0] * DIMS)
    w.abort()
    with db.writer(DIMS, m=4, ef=10) as w:
        assert len(w) == _BATCH_ITEMS + 3
    with pytest.raises(ZeroDivisionError):
        with db.writer(DIMS, m=4, ef=10) as w:
            for i in range(2000, 2000 + _BATCH_ITEMS + 5):
                w.add_item(i, [1.0] * DIMS)
            1 / 0
    with db.reader() as r:
        assert len(r) == _BATCH_ITEMS + 3


def test_commit_rw_txn_hands_pending_items_over(make_db: Callable[..., hannoy.Database]) -> None:
    db = make_db()
    w = db.writer(DIMS, m=4, ef=10)
    for i in range(10):
        w.add_item(i, [1.0 + i] * DIMS)
    w.build()
    w.add_item(10, [0.5] * DIMS)
    w.add_item(11, [0.5] * DIMS)
    w.build()
    assert hannoy.Database.commit_rw_txn() is True
    with db.reader() as r:
        assert len(r) == 12


def test_add_item_after_commit_is_closed(make_db: Callable[..., hannoy.Database]) -> None:
    db = make_db()
    w = db.writer(DIMS)
    w.add_item(0, [1.0] * DIMS)
    w.commit()
    with pytest.raises(hannoy.ClosedError, match="committed"):
        w.add_item(1, [1.0] * DIMS)
    assert w._pending.items == []  # nothing left behind
    with db.writer(DIMS) as w2:
        assert len(w2) == 1


def test_add_item_from_other_threads(
    make_db: Callable[..., hannoy.Database], batch_store: str
) -> None:
    db = make_db()
    w = db.writer(DIMS, m=4, ef=10)  # opened by this thread
    errors: List[BaseException] = []

    def add(start: int) -> None:
        try:
            for i in range(start, start + 2 * _BATCH_ITEMS + 11):
                w.add_item(i, [float(i)] * DIMS)
                if i % 101 == 0:
                    assert i in w
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    n = 4 * (2 * _BATCH_ITEMS + 11)
    assert len(w) == n
    # and from yet another thread, alone
    t = threading.Thread(target=lambda: w.add_item(99_999, [3.0] * DIMS))
    t.start()
    t.join()
    w.build()
    w.commit()
    with db.reader() as r:
        assert len(r) == n + 1
        for k in range(4):
            i = k * 10_000 + 7
            assert np.array_equal(r.item_vector(i), np.full(DIMS, float(i), dtype=np.float32))


def test_a_full_map_is_reported_and_the_last_commit_survives(
    tmp_path: Path, batch_store: str
) -> None:
    db = hannoy.Database(tmp_path / "db", Metric.EUCLIDEAN, env_size=1 << 20)
    with db.writer(DIMS, m=4, ef=10) as w:
        w.add_item(0, [1.0] * DIMS)
    rows = np.random.default_rng(1).random((4000, 256)).tolist()  # 4 MB of vectors
    w = db.writer(256, index=1)
    with pytest.raises(hannoy.MapFullError):
        for i, row in enumerate(rows):
            w.add_item(i, row)
        w.commit()
    with pytest.raises(RuntimeError):
        w.commit()  # the transaction failed: it can only be aborted
    w.abort()
    with db.reader() as r:
        assert len(r) == 1
    db.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_forked_child_cannot_add_items(
    make_db: Callable[..., hannoy.Database], batch_store: str
) -> None:
    db = make_db()
    w = db.writer(DIMS)
    w.add_item(0, [1.0] * DIMS)  # pending in the parent
    def child() -> list:  # never calls into Go
        out = []
        for call in (lambda: w.add_item(1, [1.0] * DIMS), lambda: len(w), lambda: w.commit()):
            start = time.monotonic()
            try:
                call()
                out.append("no error")
            except hannoy.ForkedProcessError:
                out.append(time.monotonic() - start < 1.0)
            except BaseException as e:
                out.append(repr(e))
        return out

    result = in_forked_child(child)
    # commit in a child forgets the writer without calling the library (as before)
    assert result == [True, True, "no error"]
    w.add_item(1, [2.0] * DIMS)  # the parent is unaffected
    w.commit()
    with db.writer(DIMS) as w2:
        assert len(w2) == 2


# -- by_vec -----------------------------------------------------------------------------------


def test_by_vec_list_row_and_by_array_agree(
    make_db: Callable[..., hannoy.Database], fashion_small: Any
) -> None:
    base, queries = fashion_small
    db = make_db(Metric.COSINE)
    with db.writer(784, m=8, ef=32, seed=1, threads=1) as w:
        for i, row in enumerate(base[:500].tolist()):
            w.add_item(i, row)
    with db.reader() as r:
        table = r.by_array(queries[:20], n=10, ef_search=10, threads=1)
        for q, want in zip(queries[:20], table):
            assert r.by_vec(q.tolist(), n=10, ef_search=10) == want
            assert r.by_vec(tuple(q.tolist()), n=10, ef_search=10) == want
            assert r.by_vec(q, n=10, ef_search=10) == want
            assert r.by_vec(q.astype(np.float64), n=10, ef_search=10) == want
        # n beyond the items, and a filter (the general path)
        assert len(r.by_vec(queries[0], n=600)) == 500
        assert [i for i, _ in r.by_vec(queries[0].tolist(), n=3, candidates=[7, 8])] in (
            [7, 8],
            [8, 7],
        )


def test_by_vec_after_close_and_from_threads(array_db: hannoy.Database) -> None:
    r = array_db.reader()
    results: List[Any] = []

    def search() -> None:
        for _ in range(200):
            results.append(r.by_vec([0.0, 0.0, 1.0], n=1))

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[(2, 0.0)]] * 800
    r.close()
    with pytest.raises(hannoy.ClosedError, match="closed"):
        r.by_vec([0.0, 0.0, 1.0])


# -- module structure ---------------------------------------------------------------------------


@pytest.mark.nolib
def test_no_import_cycle_between_modules() -> None:
    """No module of the package imports (even for type checking) one that imports it back."""
    pkg = Path(hannoy.__file__).resolve().parent
    graph: Dict[str, set] = {}
    for f in pkg.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[f.stem] = deps

    def reaches(start: str, goal: str, seen: set) -> bool:
        for d in graph.get(start, ()):
            if d == goal or (d not in seen and (seen.add(d) or reaches(d, goal, seen))):
                return True
        return False

    cycles = [m for m in graph if m != "__init__" and reaches(m, m, set())]
    assert not cycles, {m: sorted(graph[m]) for m in cycles}
