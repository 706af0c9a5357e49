"""The conversion of add_item's and by_vec's lists and tuples (hannoy._convert.vector_packer).

The C extension hannoy._fastconv and the pure-Python path (struct.pack and a look at the high
bytes) must give the same float32 bytes for every input they accept, refuse (None: the caller's
as_vector then raises) exactly the same inputs, and let the same non-Exception errors through.
test_fastpath.py checks add_item and by_vec themselves with whichever path this install uses;
here the same inputs also go through the pure-Python path (as without a C compiler).

The extension is built twice (setup.py): against the full C API for the building CPython, which
this interpreter loads when it is that CPython, and against the limited API
(``_fastconv.abi3.so``) for every other CPython. The tests run both builds: the one that is
not imported is loaded here from its file.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import struct
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pytest

import hannoy
from hannoy import _convert

import test_fastpath
from test_fastpath import BAD, GOOD, DIMS

DISABLED = os.environ.get("HANNOY_NO_FASTCONV", "") not in ("", "0")
INSTALLED = os.environ.get("HANNOY_TEST_INSTALLED") == "1"
PACKAGE_DIR = Path(hannoy.__file__).resolve().parent
ABI3_SUFFIX = next((s for s in importlib.machinery.EXTENSION_SUFFIXES if ".abi3." in s), None)


def _abi3_module() -> Optional[ModuleType]:
    """The limited-API build, _fastconv.abi3.so of the package: the imported module when it is
    that file, else loaded from it (without replacing hannoy._fastconv in sys.modules)."""
    if DISABLED or ABI3_SUFFIX is None:
        return None
    path = PACKAGE_DIR / ("_fastconv" + ABI3_SUFFIX)
    if not path.exists():
        return None
    current = _convert._fastconv
    if current is not None and Path(current.__file__).resolve() == path:
        return current
    spec = importlib.util.spec_from_file_location("hannoy._fastconv", path)
    assert spec is not None and spec.loader is not None
    saved = sys.modules.get(spec.name)
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is not None:
            sys.modules[spec.name] = saved
        else:
            sys.modules.pop(spec.name, None)
    return module


ABI3 = _abi3_module()
#: the builds of the extension to test: the one imported, and the abi3 one when it is another
C_MODULES = {"imported": _convert._fastconv, "abi3": ABI3 if ABI3 is not _convert._fastconv else None}


@pytest.fixture(params=list(C_MODULES))
def c_module(request: pytest.FixtureRequest) -> ModuleType:
    """Each build of the extension (skipped when it is not in this install)."""
    module = C_MODULES[request.param]
    if module is None:
        pytest.skip("no %s build of hannoy._fastconv in this install (or HANNOY_NO_FASTCONV is "
                    "set)" % request.param)
    return module


def _c_packers(dims: int) -> List[Callable[[Any], Any]]:
    return [m.Packer(dims).pack for m in C_MODULES.values() if m is not None]


def _python_packer(dims: int) -> Callable[[Any], Any]:
    saved = _convert._fastconv
    _convert._fastconv = None
    try:
        return _convert.vector_packer(dims)
    finally:
        _convert._fastconv = saved


@pytest.fixture(params=["fastconv", "abi3", "python"])
def conversion(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test with the imported C extension, with its abi3 build (each skipped when it is
    not there), and without."""
    if request.param == "fastconv":
        if _convert._fastconv is None:
            pytest.skip("hannoy._fastconv is not in this install (or HANNOY_NO_FASTCONV is set)")
    elif request.param == "abi3":
        if C_MODULES["abi3"] is None:
            pytest.skip("no other abi3 build of hannoy._fastconv in this install")
        monkeypatch.setattr(_convert, "_fastconv", C_MODULES["abi3"])
    else:
        monkeypatch.setattr(_convert, "_fastconv", None)
    return request.param


@pytest.mark.nolib
def test_the_extension_is_built() -> None:
    """The installed package has its C extension (unless HANNOY_NO_FASTCONV asks to ignore it):
    if it silently stops compiling, this fails."""
    if DISABLED:
        assert _convert._fastconv is None
        return
    if not INSTALLED:
        pytest.skip("testing the source tree: the extension is built by installing the package")
    assert _convert._fastconv is not None, "hannoy._fastconv did not build or does not import"
    pack = _convert.vector_packer(3)
    assert pack is not None and pack([1.0, 2, True]) == struct.pack("=3f", 1.0, 2.0, 1.0)
    # Both builds are there, and the import system takes this interpreter's own when it has
    # one (its suffix is listed first), the abi3 one otherwise.
    if ABI3_SUFFIX is not None:
        assert ABI3 is not None, "no _fastconv%s in %s" % (ABI3_SUFFIX, PACKAGE_DIR)
    built = [s for s in importlib.machinery.EXTENSION_SUFFIXES if (PACKAGE_DIR / ("_fastconv" + s)).exists()]
    assert built and Path(_convert._fastconv.__file__).name == "_fastconv" + built[0]


# -- the C packer against the Python packer ----------------------------------------------------


class _Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __float__(self) -> float:
        raise self.exc


class _FloatSub(float):
    def __float__(self) -> float:  # ignored: the float value is read directly (struct too)
        return 99.0


class _IntSub(int):
    def __float__(self) -> float:  # used (struct calls it too)
        return 7.5


class _Shrinks:
    """Its __float__ empties the list that holds it (struct.pack(*seq) took a copy first)."""

    def __init__(self, target: List[Any]) -> None:
        self.target = target

    def __float__(self) -> float:
        self.target.clear()
        return 1.5


def _shrinking(pos: int, n: int) -> List[Any]:
    lst: List[Any] = [0.25] * n
    lst[pos] = _Shrinks(lst)
    return lst


F32_MAX = float(np.finfo(np.float32).max)
F32_MAX_ROUNDS_DOWN = 3.4028235e38  # above F32_MAX as a double, rounds to it
SUBNORMAL = 1e-45


def _cases(n: int) -> Dict[str, Callable[[], Any]]:
    base = [((i * 37) % 11 - 5) / 3.0 for i in range(n)]
    cases: Dict[str, Callable[[], Any]] = {
        "floats": lambda: list(base),
        "tuple of floats": lambda: tuple(base),
        "ints": lambda: [i - n // 2 for i in range(n)],
        "bools": lambda: [i % 2 == 0 for i in range(n)],
        "large ints": lambda: [2**63 + i for i in range(n)],
        "int rounding in float32": lambda: [16777217 + i for i in range(n)],
        "numpy float32": lambda: [np.float32(x) for x in base],
        "numpy float64": lambda: [np.float64(x) for x in base],
        "numpy int64 and bool_": lambda: [np.int64(i) if i % 2 else np.bool_(1) for i in range(n)],
        "Decimal and Fraction": lambda: [Decimal(i) / 7 if i % 2 else Fraction(i, 3) for i in range(n)],
        "float and int subclasses": lambda: [_FloatSub(0.5) if i % 2 else _IntSub(i) for i in range(n)],
        "mixed": lambda: [[1.5, 2, True, np.float32(0.1), Fraction(1, 3)][i % 5] for i in range(n)],
        "-0.0 and subnormals": lambda: [[-0.0, SUBNORMAL, -SUBNORMAL, 1e-40][i % 4] for i in range(n)],
        "largest float32": lambda: [[F32_MAX, -F32_MAX, F32_MAX_ROUNDS_DOWN, 3e38][i % 4] for i in range(n)],
        "too short": lambda: list(base[:-1]),
        "too long": lambda: list(base) + [0.0],
        "empty": lambda: [],
        "str element": lambda: ["1.0"] + base[1:],
        "None element": lambda: base[:-1] + [None],
        "nested": lambda: [[x] for x in base],
        "complex": lambda: base[:-1] + [1j],
        "int beyond float32": lambda: base[:-1] + [10**39],
        "int beyond float64": lambda: [10**400] + base[1:],
        "float beyond float32": lambda: base[:-1] + [1e39],
        "numpy float64 beyond float32": lambda: base[:-1] + [np.float64(-1e39)],
        "__float__ raises ValueError": lambda: base[:-1] + [_Raises(ValueError("x"))],
        "__float__ raises TypeError": lambda: [_Raises(TypeError("x"))] + base[1:],
        "a list emptied by __float__ (first)": lambda: _shrinking(0, n),
        "a list emptied by __float__ (last)": lambda: _shrinking(n - 1, n),
    }
    for what, value in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))):
        for where, pos in (("first", 0), ("middle", n // 2), ("last", n - 1)):
            cases["%s %s" % (what, where)] = lambda v=value, p=pos: base[:p] + [v] + base[p + 1 :]
            cases["%s %s in a tuple" % (what, where)] = lambda v=value, p=pos: tuple(
                base[:p] + [v] + base[p + 1 :]
            )
        cases["numpy float32 %s" % what] = lambda v=value: [np.float32(v)] + base[1:]
    return cases


def _outcome(pack: Callable[[Any], Any], value: Any, n: int) -> Any:
    """What add_item stores for value (bytes), or the class of what it raises: the packer's
    bytes, or when it refuses (None), as_vector's."""
    try:
        data = pack(value)
        packed = data is not None
        if data is None:
            data = _convert.as_vector(value, n, "vector").tobytes()
        return packed, data
    except BaseException as e:  # noqa: B036 - the class of anything raised is compared
        return None, type(e)


@pytest.mark.nolib
@pytest.mark.parametrize("n", [1, 5, 50, 784])
def test_c_and_python_packers_agree(c_module: ModuleType, n: int) -> None:
    c_pack = c_module.Packer(n).pack
    py_pack = _python_packer(n)
    accepted = 0
    for name, make in _cases(n).items():
        (c_packed, c), (py_packed, py) = _outcome(c_pack, make(), n), _outcome(py_pack, make(), n)
        assert c == py, (name, c, py)
        # The C packer refuses nothing the Python one accepts; the Python one leaves the
        # float32s with exponent 0xfe (>= 2**127) to as_vector, the C one takes them.
        assert c_packed or not py_packed, name
        if py_packed != c_packed:
            assert name == "largest float32", name
        if isinstance(c, bytes):
            accepted += 1
            assert len(c) == 4 * n
            assert np.isfinite(np.frombuffer(c, dtype=np.float32)).all()
    assert accepted >= 14


@pytest.mark.nolib
def test_what_the_packers_refuse_or_accept() -> None:
    n = 4
    for pack in _c_packers(n) + [_python_packer(n)]:
        assert pack([1, 2.5, True, np.float32(0.25)]) == struct.pack("=4f", 1, 2.5, 1, 0.25)
        assert pack((2.0**126, SUBNORMAL, -0.0, 0)) == struct.pack("=4f", 2.0**126, SUBNORMAL, -0.0, 0)
        assert pack([_IntSub(1), _FloatSub(2.0), 0, 0]) == struct.pack("=4f", 7.5, 2, 0, 0)
        for bad in (
            [1.0] * 3,
            [1.0] * 5,
            [float("nan"), 0, 0, 0],
            [0, 0, 0, float("inf")],
            [0, 1e39, 0, 0],
            [0, 0, 10**400, 0],
            [0, 0, "1", 0],
            [0, 0, 0, None],
        ):
            assert pack(bad) is None, (pack, bad)


@pytest.mark.nolib
@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_non_exceptions_from_float_propagate(exc: type) -> None:
    """A KeyboardInterrupt (Ctrl-C in a __float__) propagates from the C packer; struct.pack
    turns it into struct.error, so the Python path raises it from as_vector's second try."""
    bad = [0.0, _Raises(exc()), 1.0]
    for c_pack in _c_packers(3):
        with pytest.raises(exc):
            c_pack(bad)
    for pack in _c_packers(3) + [_python_packer(3)]:
        assert _outcome(pack, bad, 3) == (None, exc)
        assert pack([0.0, 2.0, 1.0]) == struct.pack("=3f", 0, 2, 1)


@pytest.mark.nolib
def test_a_list_changed_by_float_packs_what_it_held_at_the_call() -> None:
    for pack in _c_packers(3) + [_python_packer(3)]:
        lst: List[Any] = [0.5, 0.25, 0.125]
        lst[1] = _Shrinks(lst)
        assert pack(lst) == struct.pack("=3f", 0.5, 1.5, 0.125)
        assert lst == []


@pytest.mark.nolib
def test_refcounts_do_not_leak(c_module: ModuleType) -> None:
    type_refs = sys.getrefcount(c_module.Packer)
    for _ in range(1000):
        c_module.Packer(3)  # an instance holds a reference to its (heap) type until freed
    after = sys.getrefcount(c_module.Packer)  # (not in the assert: pytest's rewrite holds one)
    assert after == type_refs
    pack = c_module.Packer(3).pack
    x, f32 = 12345.678, np.float32(0.5)
    objs = [x, f32, _FloatSub(1.0)]
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(1000):
        pack([x, f32, objs[2]])
        pack([x, f32, "no"])
        pack((f32, x, float("nan")))
        lst = [x, 0.0, 0.0]
        lst[1] = _Shrinks(lst)
        pack(lst)
    assert [sys.getrefcount(o) for o in objs] == before


@pytest.mark.nolib
def test_packer_arguments(c_module: ModuleType) -> None:
    Packer = c_module.Packer
    assert Packer(7).dims == 7
    for bad in (0, -1):
        with pytest.raises(ValueError):
            Packer(bad)
    with pytest.raises(TypeError):
        Packer("3")
    # only exact lists and tuples (the only types add_item and by_vec give it)
    pack = Packer(3).pack
    for other in ({1.0, 2.0, 3.0}, iter([1.0, 2.0, 3.0]), type("L", (list,), {})([1.0] * 3),
                  "abc", np.zeros(3, dtype=np.float32), None):
        assert pack(other) is None


# -- add_item and by_vec on each path ----------------------------------------------------------


@pytest.mark.parametrize("name", list(GOOD))
def test_add_item_and_by_vec_accept(
    conversion: str, make_db: Callable[..., hannoy.Database], name: str
) -> None:
    test_fastpath.test_add_item_and_by_vec_accept(make_db, name)


@pytest.mark.parametrize("name", list(BAD))
def test_add_item_refuses_like_the_array_path(
    conversion: str, make_db: Callable[..., hannoy.Database], name: str
) -> None:
    test_fastpath.test_add_item_refuses_like_the_array_path(make_db, name)


@pytest.mark.parametrize("name", list(BAD))
def test_by_vec_refuses_like_the_array_path(
    conversion: str, make_db: Callable[..., hannoy.Database], name: str
) -> None:
    db = make_db()
    with db.writer(DIMS, m=4, ef=10) as w:
        w.add_items(range(DIMS), np.eye(DIMS, dtype=np.float32))
    test_fastpath.test_by_vec_refuses_like_the_array_path(db, name)


def test_error_messages_match_the_array_path(
    conversion: str, make_db: Callable[..., hannoy.Database]
) -> None:
    test_fastpath.test_error_messages_match_the_array_path(make_db)
    db = make_db()
    with db.writer(DIMS) as w:
        for pos in (0, 2, DIMS - 1):
            for v in (float("nan"), float("inf"), float("-inf")):
                bad = [0.5] * DIMS
                bad[pos] = v
                with pytest.raises(hannoy.InvalidArgumentError, match="position %d" % pos):
                    w.add_item(0, bad)
                with pytest.raises(hannoy.InvalidArgumentError, match="position %d" % pos):
                    w.add_item(0, tuple(bad))
        with pytest.raises(OverflowError):
            w.add_item(0, [10**400] + [0.0] * (DIMS - 1))
        w.add_item(1, [1, 2, 3, 4, 5])
    with db.reader() as r:
        for pos in (0, DIMS - 1):
            bad = [0.5] * DIMS
            bad[pos] = float("nan")
            with pytest.raises(hannoy.InvalidArgumentError, match="position %d" % pos):
                r.by_vec(bad, n=1)
        assert r.by_vec((1, 2, 3, 4, 5), n=1) == [(1, 0.0)]


def test_interrupt_inside_add_item(conversion: str, make_db: Callable[..., hannoy.Database]) -> None:
    test_fastpath.test_interrupt_inside_add_item_keeps_the_writer_consistent(make_db, "at once")


def test_many_items_in_batches(conversion: str, make_db: Callable[..., hannoy.Database]) -> None:
    dims = 50
    rows = np.random.default_rng(3).standard_normal((700, dims)).astype(np.float32)
    db = make_db()
    with db.writer(dims, m=8, ef=20, seed=1, threads=1) as w:
        for i, row in enumerate(rows):
            w.add_item(i, row.tolist() if i % 2 else tuple(row.tolist()))
    with db.reader() as r:
        assert len(r) == 700
        for i in (0, 255, 256, 699):
            assert np.array_equal(r.item_vector(i), rows[i])
        assert r.by_vec(rows[5].tolist(), n=1)[0][0] == 5


# -- by_vec's search through the C extension (Searcher) or cffi ------------------------------


def test_by_vec_search_paths_agree(
    conversion: str, make_db: Callable[..., hannoy.Database], fashion_small: Any
) -> None:
    """by_vec gives by_array's results whether the C extension calls the library (the full-API
    build) or cffi does (the abi3 build, no extension), for every n (on the stack up to 64
    results, in allocated memory beyond, fewer than asked when the index is smaller)."""
    base, queries = fashion_small
    db = make_db(hannoy.Metric.EUCLIDEAN)
    with db.writer(784, m=8, ef=32, seed=1, threads=1) as w:
        w.add_items(range(300), base[:300])
    r = db.reader()
    uses_c = r._fast[1] is not None
    assert uses_c == (conversion == "fastconv" and hasattr(_convert._fastconv, "Searcher"))
    if conversion == "fastconv" and INSTALLED and sys.implementation.cache_tag == "cpython-311":
        assert uses_c, "the full-API build has no Searcher"
    for n in (1, 10, 64, 65, 200, 300, 1000):
        want = r.by_array(queries[:5], n=n, ef_search=max(n, 40), threads=1)
        for q, row in zip(queries[:5], want):
            expected = list(row)
            assert r.by_vec(q, n=n, ef_search=max(n, 40)) == expected
            assert r.by_vec(q.tolist(), n=n, ef_search=max(n, 40)) == expected
            assert len(expected) == min(n, 300)
    strided = np.repeat(queries[0], 2)[::2]  # not C-contiguous: the general path
    assert not strided.flags.c_contiguous
    assert r.by_vec(strided, n=5) == r.by_vec(queries[0], n=5)
    bad = queries[0].copy()
    bad[3] = np.nan
    with pytest.raises(hannoy.InvalidArgumentError, match="position 3"):
        r.by_vec(bad, n=5)
    r.close()
    with pytest.raises(hannoy.ClosedError, match="closed"):
        r.by_vec(queries[0], n=5)


def test_searcher_arguments(make_db: Callable[..., hannoy.Database]) -> None:
    module = _convert._fastconv
    if module is None or not hasattr(module, "Searcher"):
        pytest.skip("no Searcher in this build of hannoy._fastconv (abi3, or HANNOY_NO_FASTCONV)")
    from hannoy import _ffi

    address = int(_ffi.ffi().cast("uintptr_t", _ffi.lib().hannoy_reader_search_vec))
    for bad in ((0, 3), (address, 0), (address, 2**32)):
        with pytest.raises(ValueError):
            module.Searcher(*bad)
    db = make_db()
    with db.writer(3) as w:
        w.add_items([0, 1], np.eye(2, 3, dtype=np.float32))
    r = db.reader()
    search = module.Searcher(address, 3).search
    handle = r._h.value
    q = np.asarray([1.0, 0.0, 0.0], dtype=np.float32)
    assert search(handle, q, 1, 10) == [(0, 0.0)]
    assert search(handle, q.tobytes(), 5, 10) == [(0, 0.0), (1, 2.0)]
    # not dims float32 values: None (by_vec takes its general path)
    for other in (q[:2], np.zeros(4, dtype=np.float32), b"abc", None, 3.0, q[::2]):
        assert search(handle, other, 1, 10) is None
    for args in ((handle, q, 1), (handle, q, 1, 10, 0)):
        with pytest.raises(TypeError):
            search(*args)
    for k, ef in ((0, 10), (1, 0), (2**32, 10), (-1, 10)):
        with pytest.raises((ValueError, OverflowError)):
            search(handle, q, k, ef)
    with pytest.raises(TypeError):
        search(handle, q, "1", 10)
    # the library's refusals come back as (status, message), the message freed by the extension
    nan = np.asarray([1.0, np.nan, 0.0], dtype=np.float32)
    status, message = search(handle, nan, 1, 10)
    assert status != 0 and "NaN" in message
    status, message = search(12345, q, 1, 10)  # no such handle
    assert status != 0 and message
    refs = sys.getrefcount(q)
    for _ in range(1000):
        search(handle, q, 2, 10)
    assert sys.getrefcount(q) == refs
    r.close()
    status, message = search(handle, q, 1, 10)
    assert status != 0 and "closed" in message
