"""The public surface: names, enum, signatures, exception hierarchy (no library needed)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import hannoy
from hannoy import Database, Metric, Reader, Writer
from helpers import subprocess_env

pytestmark = pytest.mark.nolib


def test_all() -> None:
    assert hannoy.__all__ == ["Metric", "Database", "Writer", "Reader"]


def test_star_import_exports_only_all() -> None:
    ns: dict = {}
    exec("from hannoy import *", ns)
    assert sorted(k for k in ns if not k.startswith("__")) == sorted(hannoy.__all__)


@pytest.mark.parametrize(
    "member, value, text",
    [
        (Metric.COSINE, 0, "cosine"),
        (Metric.EUCLIDEAN, 1, "euclidean"),
        (Metric.MANHATTAN, 2, "manhattan"),
        (Metric.BQ_COSINE, 3, "bq_cosine"),
        (Metric.BQ_EUCLIDEAN, 4, "bq_euclidean"),
        (Metric.BQ_MANHATTAN, 5, "bq_manhattan"),
        (Metric.HAMMING, 6, "hamming"),
    ],
)
def test_metric(member: Metric, value: int, text: str) -> None:
    assert member.value == value
    assert int(member) == value
    assert str(member) == text
    assert f"{member}" == text
    assert repr(member) == "Metric.%s" % member.name
    assert Metric(text) is member  # upstream: Metric(variant: str)
    assert Metric(text.upper()) is member
    assert Metric(value) is member


def test_metric_order_and_names() -> None:
    assert [m.name for m in Metric] == [
        "COSINE",
        "EUCLIDEAN",
        "MANHATTAN",
        "BQ_COSINE",
        "BQ_EUCLIDEAN",
        "BQ_MANHATTAN",
        "HAMMING",
    ]


def test_metric_unknown() -> None:
    with pytest.raises(ValueError):
        Metric("chebyshev")
    with pytest.raises(ValueError):
        Metric(7)


def _params(fn: object) -> list:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


P = inspect.Parameter
E = P.empty


def test_database_signature() -> None:
    assert _params(Database.__init__) == [
        ("self", P.POSITIONAL_OR_KEYWORD, E),
        ("path", P.POSITIONAL_OR_KEYWORD, E),
        ("distance", P.POSITIONAL_OR_KEYWORD, Metric.EUCLIDEAN),
        ("name", P.POSITIONAL_OR_KEYWORD, None),
        ("env_size", P.POSITIONAL_OR_KEYWORD, None),
        ("read_only", P.KEYWORD_ONLY, False),  # ours: keyword-only, upstream's calls unchanged
        ("memory_budget", P.KEYWORD_ONLY, None),
    ]
    assert _params(Database.writer) == [
        ("self", P.POSITIONAL_OR_KEYWORD, E),
        ("dimensions", P.POSITIONAL_OR_KEYWORD, E),
        ("index", P.POSITIONAL_OR_KEYWORD, 0),
        ("m", P.POSITIONAL_OR_KEYWORD, 16),
        ("ef", P.POSITIONAL_OR_KEYWORD, 96),
        ("m0", P.KEYWORD_ONLY, None),
        ("seed", P.KEYWORD_ONLY, None),
        ("progress", P.KEYWORD_ONLY, None),
        ("threads", P.KEYWORD_ONLY, None),
    ]
    assert _params(Database.reader) == [
        ("self", P.POSITIONAL_OR_KEYWORD, E),
        ("index", P.POSITIONAL_OR_KEYWORD, 0),
        ("memory_budget", P.KEYWORD_ONLY, None),  # ours: keyword-only
        ("read_mode", P.KEYWORD_ONLY, "auto"),
    ]
    assert isinstance(inspect.getattr_static(Database, "commit_rw_txn"), staticmethod)
    assert isinstance(inspect.getattr_static(Database, "abort_rw_txn"), staticmethod)
    assert _params(Database.commit_rw_txn) == []
    assert _params(Database.abort_rw_txn) == []


def test_writer_signature() -> None:
    assert _params(Writer.add_item) == [
        ("self", P.POSITIONAL_OR_KEYWORD, E),
        ("item", P.POSITIONAL_OR_KEYWORD, E),
        ("vector", P.POSITIONAL_OR_KEYWORD, E),
    ]
    assert _params(Writer.add_items) == [
        ("self", P.POSITIONAL_OR_KEYWORD, E),
        ("items", P.POSITIONAL_OR_KEYWORD, E),
        ("vectors", P.POSITIONAL_OR_KEYWORD, E),
    ]
    for name in ("del_item", "clear", "build", "commit", "abort", "__enter__", "__exit__"):
        assert callable(getattr(Writer, name)), name


def test_reader_signature() -> None:
    search = [
        ("n", P.POSITIONAL_OR_KEYWORD, 10),
        ("ef_search", P.POSITIONAL_OR_KEYWORD, 200),
    ]
    # upstream's linear_below and linear_below_ratio, with its defaults (ours: keyword-only)
    linear = [("linear_below", P.KEYWORD_ONLY, 1000), ("linear_below_ratio", P.KEYWORD_ONLY, 1.0)]
    assert _params(Reader.by_vec) == (
        [("self", P.POSITIONAL_OR_KEYWORD, E), ("query", P.POSITIONAL_OR_KEYWORD, E)]
        + search
        + [("candidates", P.KEYWORD_ONLY, None)]
        + linear
    )
    assert _params(Reader.by_item) == (
        [("self", P.POSITIONAL_OR_KEYWORD, E), ("item", P.POSITIONAL_OR_KEYWORD, E)]
        + search
        + [("candidates", P.KEYWORD_ONLY, None)]
        + linear
    )
    assert _params(Reader.by_items) == (
        [("self", P.POSITIONAL_OR_KEYWORD, E), ("items", P.POSITIONAL_OR_KEYWORD, E)]
        + search
        + [("candidates", P.KEYWORD_ONLY, None), ("threads", P.KEYWORD_ONLY, None)]
        + linear
    )
    assert _params(Reader.by_array) == (
        [("self", P.POSITIONAL_OR_KEYWORD, E), ("array", P.POSITIONAL_OR_KEYWORD, E)]
        + search
        + [
            ("out", P.POSITIONAL_OR_KEYWORD, None),
            ("candidates", P.KEYWORD_ONLY, None),
            ("threads", P.KEYWORD_ONLY, None),
        ]
        + linear
    )
    for name in ("item_vector", "item_ids", "stats", "close", "__contains__", "__len__"):
        assert callable(getattr(Reader, name)), name
    for name in ("dimensions", "metric"):
        assert isinstance(inspect.getattr_static(Reader, name), property)


def test_every_public_callable_has_a_docstring_with_an_example() -> None:
    missing = []
    for cls in (Metric, Database, Writer, Reader):
        if "Example" not in (cls.__doc__ or ""):
            missing.append(cls.__name__)
        for name, member in vars(cls).items():
            if name.startswith("_"):
                continue
            fn = (
                member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            )
            if not callable(fn) or isinstance(member, Metric):
                continue
            doc = inspect.getdoc(fn) or ""
            if not doc:
                missing.append("%s.%s (no docstring)" % (cls.__name__, name))
            elif not isinstance(member, property) and "Example" not in doc:
                missing.append("%s.%s (no example)" % (cls.__name__, name))
    assert missing == []


# -- exceptions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, bases",
    [
        (hannoy.HannoyError, (RuntimeError,)),
        (hannoy.InvalidArgumentError, (hannoy.HannoyError, RuntimeError, ValueError)),
        (hannoy.ArgumentTypeError, (hannoy.HannoyError, TypeError)),
        (hannoy.InvalidItemError, (ValueError, OverflowError, RuntimeError)),
        (hannoy.HannoyIOError, (hannoy.HannoyError, OSError, RuntimeError)),
        (hannoy.LibraryNotFoundError, (OSError,)),
        (hannoy.MapFullError, (hannoy.HannoyError,)),
        (hannoy.MissingMetadataError, (hannoy.HannoyError, RuntimeError)),
        (hannoy.NeedBuildError, (hannoy.HannoyError,)),
        (hannoy.MetricMismatchError, (hannoy.HannoyError, ValueError)),
        (hannoy.DimensionError, (hannoy.HannoyError, ValueError)),
        (hannoy.BuildCancelledError, (hannoy.HannoyError,)),
        (hannoy.CorruptDatabaseError, (hannoy.HannoyError,)),
        (hannoy.WriterBusyError, (hannoy.HannoyError,)),
        (hannoy.ClosedError, (hannoy.HannoyError, ValueError)),
        (hannoy.ReadersFullError, (hannoy.HannoyError,)),
        (hannoy.InternalError, (hannoy.HannoyError,)),
        (hannoy.ForkedProcessError, (hannoy.HannoyError,)),
    ],
)
def test_exception_hierarchy(cls: type, bases: tuple) -> None:
    for base in bases:
        assert issubclass(cls, base), (cls, base)
    assert cls.__name__ not in hannoy.__all__
    e = cls("message")
    assert str(e) == "message"


def test_status_mapping() -> None:
    from hannoy._errors import STATUS, error_for_status

    assert sorted(STATUS) == list(range(1, 16))
    assert isinstance(error_for_status(2, "x"), OSError)
    full = error_for_status(15, "commit: the disk is full")
    assert isinstance(full, hannoy.DiskFullError) and isinstance(full, OSError) and full.status == 15
    e = error_for_status(5, "Metadata are missing on index 0")
    assert isinstance(e, hannoy.MissingMetadataError) and isinstance(e, RuntimeError)
    assert str(e) == "Metadata are missing on index 0"
    assert e.status == 5
    assert "HANNOY_E_BUSY" in str(error_for_status(11, None))
    assert type(error_for_status(99, "odd")) is hannoy.HannoyError


# -- laziness --------------------------------------------------------------------------------


def test_import_does_not_load_the_library() -> None:
    code = (
        "import sys, hannoy\n"
        "from hannoy import *\n"
        "assert not hannoy._ffi.is_loaded(), 'library loaded at import'\n"
        "assert hannoy._ffi._lib is None\n"
        "assert 'cffi' not in sys.modules, 'cffi imported at import'\n"
        "print('ok')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_missing_library_error(tmp_path, monkeypatch) -> None:
    code = (
        "import hannoy\n"
        "try:\n"
        "    hannoy.Database(%r)\n"
        "except OSError as e:\n"
        "    assert isinstance(e, hannoy.LibraryNotFoundError), type(e)\n"
        "    assert 'HANNOY_LIBRARY' in str(e) and 'no-such-lib.so' in str(e), str(e)\n"
        "    print('ok')\n" % str(tmp_path / "db")
    )
    env = subprocess_env()
    env["HANNOY_LIBRARY"] = str(tmp_path / "no-such-lib.so")
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
