"""Every error path: the right exception class (also the built-in upstream raises), a message
that says what was expected and what was received, and nothing changed."""

from __future__ import annotations

import re

import numpy as np
import pytest

import hannoy
from hannoy import Database, Metric
from helpers import build_index

EYE = np.eye(3, dtype=np.float32)


@pytest.fixture
def reader(array_db: Database) -> hannoy.Reader:
    return array_db.reader()


# -- dimensions, values, shapes ----------------------------------------------------------------


def test_wrong_dimensions(make_db, reader) -> None:
    db = make_db()
    w = db.writer(3)
    for call in (
        lambda: w.add_item(0, [1.0, 2.0]),
        lambda: w.add_items([0], [[1.0, 2.0, 3.0, 4.0]]),
        lambda: reader.by_vec([1.0, 2.0]),
        lambda: reader.by_array(np.zeros(4, np.float32)),
        lambda: reader.by_array(np.zeros((2, 4), np.float32)),
    ):
        with pytest.raises(hannoy.DimensionError) as info:
            call()
        e = info.value
        assert isinstance(e, ValueError) and isinstance(e, RuntimeError)
        assert re.search(r"Got \d but expected 3", str(e)), str(e)
    assert len(w) == 0
    w.abort()


def test_dimension_error_from_the_library(make_db) -> None:
    # a writer opened with other dimensions than the stored index: the library decides
    db = make_db()
    build_index(db, EYE)
    try:
        w = db.writer(4)
    except ValueError as e:  # rejected when opening: fine
        assert "4" in str(e) and "3" in str(e)
        return
    try:
        with pytest.raises(ValueError):
            with w:
                w.add_item(9, [1.0, 2.0, 3.0, 4.0])
    finally:
        if not w.closed:
            w.abort()
    assert len(db.reader()) == 3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_non_finite_values(make_db, reader, bad: float) -> None:
    db = make_db()
    w = db.writer(3)
    with pytest.raises(ValueError, match="finite") as info:
        w.add_item(0, [1.0, bad, 3.0])
    assert "position 1" in str(info.value)
    with pytest.raises(ValueError, match="finite"):
        w.add_items([0, 1], [[1.0, 2.0, 3.0], [1.0, 2.0, bad]])
    with pytest.raises(ValueError, match="finite"):
        reader.by_vec([bad, 0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        reader.by_array([[0.0, 0.0, 0.0], [bad, 0.0, 0.0]])
    assert len(w) == 0
    w.abort()


@pytest.mark.parametrize(
    "vector",
    [["a", "b", "c"], [None, 1.0, 2.0], "abc", None, [1 + 2j, 0, 0], object()],
    ids=["strings", "none-inside", "str", "none", "complex", "object"],
)
def test_non_numeric_vectors(reader, vector) -> None:
    with pytest.raises(TypeError) as info:
        reader.by_vec(vector)
    assert "query" in str(info.value)


def test_ragged_and_wrong_ndim(reader) -> None:
    with pytest.raises(ValueError):
        reader.by_array([[1.0, 0.0, 0.0], [1.0]])
    with pytest.raises(
        ValueError, match=r"1-D sequence of 3 numbers, got an array of shape \(1, 3\)"
    ):
        reader.by_vec([[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="1D or 2D"):
        reader.by_array(1.0)


# -- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [-1, 2**32, 2**64, np.int64(-5)])
def test_ids_out_of_range(make_db, reader, item) -> None:
    db = make_db()
    w = db.writer(3)
    for call in (
        lambda: w.add_item(item, [1.0, 2.0, 3.0]),
        lambda: w.add_items([0, item], EYE[:2]),
        lambda: w.del_item(item),
        lambda: reader.by_item(item),
        lambda: reader.item_vector(item),
        lambda: reader.by_items([item]),
    ):
        with pytest.raises(ValueError) as info:
            call()
        e = info.value
        assert isinstance(e, OverflowError) and isinstance(e, RuntimeError)
        assert "0..4294967295" in str(e) and str(int(item)) in str(e)
    assert len(w) == 0
    w.abort()


@pytest.mark.parametrize("item", [True, "1", 1.5, float("nan"), None, [1]])
def test_ids_of_wrong_type(make_db, reader, item) -> None:
    db = make_db()
    w = db.writer(3)
    with pytest.raises(TypeError) as info:
        w.add_item(item, [1.0, 2.0, 3.0])
    assert "item" in str(info.value) and type(item).__name__ in str(info.value)
    with pytest.raises(TypeError):
        reader.by_item(item)
    if not isinstance(item, list):
        with pytest.raises(TypeError):
            w.add_items([item], [[1.0, 2.0, 3.0]])
    w.abort()


def test_ids_boundaries(make_db) -> None:
    db = make_db()
    with db.writer(3) as w:
        w.add_item(0, [1.0, 0.0, 0.0])
        w.add_item(2**32 - 1, [0.0, 1.0, 0.0])
        w.add_item(np.uint32(7), [0.0, 0.0, 1.0])
        w.add_item(8.0, [1.0, 1.0, 1.0])
    assert db.reader().item_ids().tolist() == [0, 7, 8, 2**32 - 1]


# -- search parameters -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1])
def test_n_must_be_positive(reader, n: int) -> None:
    for call in (
        lambda: reader.by_vec([1.0, 0.0, 0.0], n=n),
        lambda: reader.by_item(0, n=n),
        lambda: reader.by_array(EYE, n=n),
        lambda: reader.by_items([0], n=n),
    ):
        with pytest.raises(
            ValueError, match=r"n must be an integer in 1\.\.4294967295, got %d" % n
        ):
            call()


def test_search_parameter_types(reader) -> None:
    with pytest.raises(TypeError, match="n must be an integer, got str"):
        reader.by_vec([1.0, 0.0, 0.0], n="10")
    with pytest.raises(ValueError, match="ef_search"):
        reader.by_vec([1.0, 0.0, 0.0], ef_search=0)
    with pytest.raises(TypeError, match="threads"):
        reader.by_array(EYE, threads="all")


# -- database arguments ------------------------------------------------------------------------


def test_database_argument_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="distance must be one of cosine, euclidean"):
        Database(tmp_path / "a", "chebyshev")
    with pytest.raises(TypeError, match="distance must be a hannoy.Metric"):
        Database(tmp_path / "a", 1.5)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int 5"):
        Database(5)
    with pytest.raises(TypeError, match="name must be a str or None, got int"):
        Database(tmp_path / "a", Metric.COSINE, 3)
    with pytest.raises(ValueError, match="env_size"):
        Database(tmp_path / "a", env_size=0)
    with pytest.raises(ValueError, match="index must be an integer in 0..65535, got 65536"):
        Database(tmp_path / "b").reader(65536)
    with pytest.raises(ValueError, match="dimensions must be an integer in 1"):
        Database(tmp_path / "c").writer(0)


def test_metric_given_as_string(tmp_path) -> None:
    db = Database(tmp_path / "db", "cosine")
    assert db.metric is Metric.COSINE
    db.close()


# -- library errors ----------------------------------------------------------------------------


def test_reader_on_unbuilt_index(make_db) -> None:
    db = make_db()
    with pytest.raises(hannoy.MissingMetadataError) as info:
        db.reader()
    assert isinstance(info.value, RuntimeError)
    assert str(info.value)
    build_index(db, EYE)
    with pytest.raises(RuntimeError):
        db.reader(1)


def test_metric_mismatch(tmp_path) -> None:
    db = Database(tmp_path / "db", Metric.EUCLIDEAN)
    build_index(db, EYE)
    other = Database(tmp_path / "db", Metric.COSINE)
    with pytest.raises(hannoy.MetricMismatchError) as info:
        other.reader()
    e = info.value
    assert isinstance(e, RuntimeError) and isinstance(e, ValueError)
    assert "cosine" in str(e) and "euclidean" in str(e)
    other.close()
    assert len(db.reader()) == 3
    db.close()


def test_path_is_a_file(tmp_path) -> None:
    path = tmp_path / "file"
    path.write_text("not a database")
    with pytest.raises(OSError) as info:
        Database(path)
    assert isinstance(info.value, hannoy.HannoyIOError)
    assert isinstance(info.value, RuntimeError)


def test_path_is_not_an_lmdb_file(tmp_path) -> None:
    d = tmp_path / "db"
    d.mkdir()
    (d / "data.mdb").write_bytes(b"garbage" * 1000)
    with pytest.raises((OSError, hannoy.CorruptDatabaseError)):
        Database(d)


def test_directory_is_created(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "c"
    db = Database(path)
    assert path.is_dir()
    db.close()


# -- closed handles ----------------------------------------------------------------------------


def test_closed_reader(array_db: Database) -> None:
    r = array_db.reader()
    r.close()
    r.close()  # idempotent
    assert r.closed
    assert repr(r) == "<hannoy.Reader index=0 closed>"
    for call in (
        lambda: r.by_vec([1.0, 0.0, 0.0]),
        lambda: r.by_item(0),
        lambda: r.by_array(EYE),
        lambda: r.item_vector(0),
        lambda: len(r),
        lambda: 0 in r,
        r.item_ids,
        r.stats,
    ):
        with pytest.raises(
            hannoy.ClosedError, match="expected an open reader, but this one is closed"
        ) as info:
            call()
        assert isinstance(info.value, RuntimeError)


def test_closed_database(tmp_path) -> None:
    db = Database(tmp_path / "db")
    build_index(db, EYE)
    r = db.reader()
    db.close()
    db.close()  # idempotent
    assert db.closed and r.closed
    assert repr(db).endswith("closed>")
    for call in (db.reader, lambda: db.writer(3), db.stats):
        with pytest.raises(hannoy.ClosedError, match="expected an open database") as info:
            call()
        assert isinstance(info.value, RuntimeError)
    with pytest.raises(hannoy.ClosedError):
        with db:
            pass
