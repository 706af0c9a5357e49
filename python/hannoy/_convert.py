"""Argument validation and conversion to the C types (numpy conventions).

Everything a user passes is checked here, before any call into the library, so that bad input
gets a clear Python exception that says what was expected and what was received, and changes
nothing.
"""

from __future__ import annotations

import numbers
import operator
import os
import struct
import sys
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np

from ._errors import ArgumentTypeError, DimensionError, InvalidArgumentError, InvalidItemError

MAX_ITEM = 0xFFFFFFFF  # item ids are u32
MAX_U32 = 0xFFFFFFFF
MAX_U64 = 0xFFFFFFFFFFFFFFFF
MAX_I64 = 0x7FFFFFFFFFFFFFFF
MAX_INDEX = 0xFFFF  # index ids are u16 in the on-disk key

# The optional C extension behind vector_packer (setup.py builds it when it can);
# HANNOY_NO_FASTCONV=1 ignores it (the pure-Python path, e.g. to test it).
_fastconv: Any
if os.environ.get("HANNOY_NO_FASTCONV", "") in ("", "0"):
    try:
        from . import _fastconv  # type: ignore[attr-defined,no-redef]
    except ImportError:
        _fastconv = None
else:
    _fastconv = None


def vector_searcher(address: int, dims: int) -> Optional[Callable[[int, Any, int, int], Any]]:
    """by_vec's search without cffi, or None where the C extension lacks it (its abi3 build,
    HANNOY_NO_FASTCONV=1): ``search(handle, query, k, ef)`` calls the library's
    ``hannoy_reader_search_vec`` at ``address`` and returns the ``[(id, distance), ...]`` list;
    None when ``query`` is not a C-contiguous buffer of ``dims`` float32 values; or
    ``(status, message)`` when the library refused the search.
    """
    searcher = getattr(_fastconv, "Searcher", None)
    if searcher is None:
        return None
    return searcher(address, dims).search  # type: ignore[no-any-return]


def vector_packer(dims: int) -> Callable[[Any], Optional[bytes]]:
    """The fast path of add_item and by_vec for lists and tuples: ``pack(seq)`` returns the
    native float32 bytes of a list or tuple of ``dims`` numbers that are all finite in float32
    (converted like ``struct.pack("=<dims>f", *seq)``), or None for anything else, which the
    caller hands to :func:`as_vector` for the error it always raised.

    The C extension ``hannoy._fastconv`` when it is there; else struct.pack and a look at the
    high byte of each float32.
    """
    if _fastconv is not None:
        return _fastconv.Packer(dims).pack  # type: ignore[no-any-return]
    pack = struct.Struct("=%df" % dims).pack
    # the byte of each float32 that holds the sign and the 7 high exponent bits
    high = slice(3 if sys.byteorder == "little" else 0, None, 4)

    def pack_f32(seq: Any) -> Optional[bytes]:
        try:
            data: bytes = pack(*seq)
        except Exception:  # wrong length, not numbers, beyond float32
            return None
        # NaN and inf have every exponent bit set, so their high byte is 0x7f or 0xff; the few
        # finite values with exponent 0xfe share it: as_vector decides.
        h = data[high]
        if 0x7F in h or 0xFF in h:
            return None
        return data

    return pack_f32


def describe(value: Any, limit: int = 60) -> str:
    """A short description of a received value for error messages: its type and a repr."""
    if isinstance(value, np.ndarray):
        return "array of shape %s and dtype %s" % (tuple(value.shape), value.dtype)
    r = repr(value)
    if len(r) > limit:
        r = r[: limit - 3] + "..."
    return "%s %s" % (type(value).__name__, r)


def _integer(value: Any) -> Optional[int]:
    """The int value of an int-like (numpy integers, integral finite floats), else None.
    bool is not an integer here."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def as_int(value: Any, what: str, lo: int, hi: int, *, error: type = InvalidArgumentError) -> int:
    """An integer argument in lo..hi (bools and non-integral floats are rejected)."""
    i = _integer(value)
    if i is None:
        raise ArgumentTypeError("%s must be an integer, got %s" % (what, describe(value)))
    if i < lo or i > hi:
        rng = "0..2**64-1" if (lo, hi) == (0, MAX_U64) else "%d..%d" % (lo, hi)
        raise error("%s must be an integer in %s, got %d" % (what, rng, i))
    return i


def as_item(value: Any, what: str = "item") -> int:
    """An item id: an integer in 0..2**32-1 (numpy integers and integral floats accepted)."""
    i = _integer(value)
    if i is None:
        raise ArgumentTypeError(
            "%s must be an integer id in 0..4294967295, got %s" % (what, describe(value))
        )
    if i < 0 or i > MAX_ITEM:
        raise InvalidItemError("%s must be an integer id in 0..4294967295, got %d" % (what, i))
    return i


def is_item(value: Any) -> Optional[int]:
    """The id if value is a valid item id, else None (for ``in`` tests)."""
    try:
        return as_item(value)
    except (TypeError, ValueError):
        return None


def as_positive(value: Any, what: str, hi: int = MAX_U32) -> int:
    """An integer in 1..hi."""
    return as_int(value, what, 1, hi)


def as_threads(value: Any, what: str = "threads") -> int:
    """None -> 0 (every core); else an integer >= 1 (0 or negative also mean every core)."""
    if value is None:
        return 0
    t = as_int(value, what, -(2**31), 2**31 - 1)
    return t if t > 0 else 0


def _to_array(value: Any) -> np.ndarray:
    """np.asarray that also accepts sets, dict views, iterators and generators."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (set, frozenset)) or not hasattr(value, "__len__"):
        if not hasattr(value, "__array__") and not hasattr(value, "__array_interface__"):
            try:
                value = list(value)
            except TypeError:
                pass
    a = np.asarray(value)
    if (
        a.ndim == 0
        and a.dtype == object
        and hasattr(value, "__iter__")
        and not isinstance(value, (str, bytes))
    ):
        a = np.asarray(list(value))
    return a


def as_items(value: Any, what: str = "items", allow_empty: bool = True) -> np.ndarray:
    """A 1-D C-contiguous uint32 array of item ids from any iterable or array of integers."""
    if isinstance(value, (str, bytes)):
        raise ArgumentTypeError(
            "%s must be an iterable or array of integer ids, got %s" % (what, describe(value))
        )
    try:
        a = _to_array(value)
    except (TypeError, ValueError) as e:
        raise ArgumentTypeError(
            "%s must be an iterable or array of integer ids, got %s (%s)"
            % (what, describe(value), e)
        ) from None
    if a.ndim != 1:
        if a.ndim == 0:
            raise ArgumentTypeError(
                "%s must be an iterable or array of integer ids, got %s" % (what, describe(value))
            )
        raise InvalidArgumentError(
            "%s must be a 1-D sequence of integer ids, got an array of shape %s" % (what, a.shape)
        )
    if a.size == 0:
        if not allow_empty:
            raise InvalidArgumentError("%s must not be empty" % what)
        return np.empty(0, dtype=np.uint32)
    kind = a.dtype.kind
    if kind == "u" or kind == "i":
        if a.dtype == np.uint32:
            return np.ascontiguousarray(a)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > MAX_ITEM:
            bad = lo if lo < 0 else hi
            raise InvalidItemError("%s must be integer ids in 0..4294967295, got %d" % (what, bad))
        return np.ascontiguousarray(a, dtype=np.uint32)
    if kind == "f":
        fin = np.isfinite(a)
        safe = np.where(fin, a, 0)
        ok = fin & (safe == np.floor(safe))
        if not ok.all():
            bad = a[~ok][0]
            raise ArgumentTypeError(
                "%s must be integer ids, got the non-integral value %r (dtype %s)"
                % (what, float(bad), a.dtype)
            )
        flo, fhi = float(a.min()), float(a.max())
        if flo < 0 or fhi > MAX_ITEM:
            fbad = flo if flo < 0 else fhi
            raise InvalidItemError("%s must be integer ids in 0..4294967295, got %r" % (what, fbad))
        return np.ascontiguousarray(a, dtype=np.uint32)
    if kind == "O":
        out = np.empty(a.shape[0], dtype=np.uint32)
        for i, x in enumerate(a.tolist()):
            out[i] = as_item(x, "%s[%d]" % (what, i))
        return out
    raise ArgumentTypeError("%s must be integer ids, got an array of dtype %s" % (what, a.dtype))


def _float32(value: Any, what: str) -> np.ndarray:
    """Convert an array-like of numbers to a C-contiguous float32 array (ndim preserved);
    TypeError for anything that is not made of real numbers."""
    if value is None or isinstance(value, (str, bytes)):
        raise ArgumentTypeError(
            "%s must be a sequence of numbers, got %s" % (what, describe(value))
        )
    try:
        a = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError) as e:
        # e.g. ragged nested lists
        raise InvalidArgumentError(
            "%s must be a rectangular array of numbers, got %s (%s)" % (what, describe(value), e)
        ) from None
    kind = a.dtype.kind
    if kind == "O":
        # lists mixing numbers with None / str / other objects: never convert None to NaN
        bad = next(
            (x for x in a.flat if x is None or isinstance(x, (str, bytes)) or not np.isrealobj(x)),
            _NOTHING,
        )
        if bad is _NOTHING:
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    return np.asarray(a, dtype=np.float32, order="C")
            except (TypeError, ValueError):
                bad = value
        raise ArgumentTypeError(
            "%s must contain real numbers convertible to float32, got %s" % (what, describe(bad))
        )
    if kind not in "biuf":
        raise ArgumentTypeError(
            "%s must contain real numbers convertible to float32, got %s"
            % (what, describe(a) if isinstance(value, np.ndarray) else describe(value))
        )
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(a, dtype=np.float32, order="C")


_NOTHING = object()


_FINITE_BLOCK = 1 << 20


def _check_finite(a: np.ndarray, what: str) -> None:
    if a.size > _FINITE_BLOCK:
        # In blocks: a boolean copy of a large batch would raise the peak memory of a build.
        flat = a.reshape(-1)
        for start in range(0, flat.size, _FINITE_BLOCK):
            if not np.isfinite(flat[start : start + _FINITE_BLOCK]).all():
                break
        else:
            return
    finite = np.isfinite(a)
    if not finite.all():
        where = np.argwhere(~finite)[0]
        pos = tuple(int(i) for i in where)
        pos_s = str(pos[0]) if len(pos) == 1 else str(pos)
        raise InvalidArgumentError(
            "%s must contain only finite float32 values, got %r at position %s"
            % (what, float(a[tuple(where)]), pos_s)
        )


def as_vector(value: Any, dims: int, what: str = "vector") -> np.ndarray:
    """A 1-D C-contiguous finite float32 array of length dims."""
    a = _float32(value, what)
    if a.ndim != 1:
        raise InvalidArgumentError(
            "%s must be a 1-D sequence of %d numbers, got an array of shape %s"
            % (what, dims, a.shape)
        )
    if a.shape[0] != dims:
        raise DimensionError(
            "Invalid vector dimensions. Got %d but expected %d (%s)" % (a.shape[0], dims, what)
        )
    _check_finite(a, what)
    return a


def as_matrix(value: Any, dims: int, what: str = "vectors") -> np.ndarray:
    """A 2-D C-contiguous finite float32 array with dims columns."""
    a = _float32(value, what)
    if a.ndim != 2:
        raise InvalidArgumentError(
            "%s must be a 2-D array of shape (n, %d), got an array of shape %s"
            % (what, dims, a.shape)
        )
    if a.shape[1] != dims:
        raise DimensionError(
            "Invalid vector dimensions. Got %d but expected %d (%s has shape %s)"
            % (a.shape[1], dims, what, a.shape)
        )
    _check_finite(a, what)
    return a


def as_queries(value: Any, dims: int, what: str = "array") -> Tuple[np.ndarray, bool]:
    """1-D or 2-D float32 queries -> (2-D C-contiguous array, was_1d)."""
    a = _float32(value, what)
    if a.ndim not in (1, 2):
        raise InvalidArgumentError(
            "by_array requires a 1D or 2D array, got %dD (shape %s)" % (a.ndim, a.shape)
        )
    was_1d = a.ndim == 1
    if was_1d:
        a = a.reshape(1, -1)
    if a.shape[1] != dims:
        raise DimensionError(
            "Invalid vector dimensions. Got %d but expected %d (%s has shape %s)"
            % (a.shape[1], dims, what, a.shape[1:] if was_1d else a.shape)
        )
    _check_finite(a[0] if was_1d else a, what)
    return a, was_1d


def as_candidates(value: Any) -> Optional[np.ndarray]:
    """None -> None (no filter), else a uint32 array of ids (duplicates allowed)."""
    if value is None:
        return None
    return as_items(value, "candidates")


#: The candidates of a batch search: None (no filter), one uint32 array of ids (the same filter
#: for every query), or ``(ids, lens)`` — one filter per query: ``lens`` (int64, one per query,
#: -1 for a query without a filter) cuts ``ids`` (every filter, one after another) into rows.
BatchCandidates = Union[None, np.ndarray, Tuple[np.ndarray, np.ndarray]]


def _is_filter(value: Any) -> bool:
    """Whether an element of ``candidates`` reads as one query's filter (None, an array of one
    or more dimensions, or any other iterable but a string) rather than as an id."""
    if value is None:
        return True
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    if isinstance(value, (str, bytes)):
        return False
    return hasattr(value, "__iter__")


def as_batch_candidates(value: Any, rows: int) -> BatchCandidates:
    """The ``candidates=`` of a batch search of ``rows`` queries (by_array, by_items).

    One filter per query when ``value`` is

    - a list, tuple or 1-D object array whose first element is a collection of ids or None
      (then every element must be one, and there must be one per query), or an iterator
      (e.g. a generator) that yields such elements;
    - a 2-D array of ids with one row per query.

    Anything else is one filter shared by every query, as before (a flat sequence of ids, a
    1-D array, a set, a range...): a list of ``rows`` ints is one filter, never one id per
    query. In a per-query list, None means "no filter" for that query and an empty collection
    matches nothing.
    """
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.ndim == 2:
            if value.shape[0] != rows:
                raise InvalidArgumentError(
                    "candidates as a 2-D array holds one row of ids per query: expected %d rows, "
                    "got an array of shape %s" % (rows, value.shape)
                )
            ids = as_items(value.reshape(-1), "candidates")
            return ids, np.full(rows, value.shape[1], dtype=np.int64)
        if not (value.ndim == 1 and value.dtype.kind == "O"):
            return as_candidates(value)
        seq: Any = value.tolist()
    elif isinstance(value, (list, tuple)):
        seq = value
    elif hasattr(value, "__next__") and hasattr(value, "__iter__"):
        seq = list(value)  # an iterator can be read once: read it here, for both cases
    else:
        return as_candidates(value)
    if len(seq) == 0 or not _is_filter(seq[0]):
        return as_candidates(seq)
    if len(seq) != rows:
        raise InvalidArgumentError(
            "candidates holds one filter per query (its first element is %s, not an id), so it "
            "needs %d filters, one per query, got %d"
            % (describe(seq[0], 40), rows, len(seq))
        )
    lens = np.empty(rows, dtype=np.int64)
    parts = []
    for i, row in enumerate(seq):
        if row is None:
            lens[i] = -1
            continue
        if not _is_filter(row):
            raise ArgumentTypeError(
                "candidates[%d] must be a collection of ids or None (candidates holds one filter "
                "per query), got %s" % (i, describe(row))
            )
        a = as_items(row, "candidates[%d]" % i)
        lens[i] = a.shape[0]
        parts.append(a)
    ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint32)
    return ids, lens


#: Upstream's defaults for the linear scan of filtered searches (hannoy 0.1.3's QueryBuilder).
LINEAR_BELOW = 1000
LINEAR_BELOW_RATIO = 1.0


def as_linear_below(value: Any) -> int:
    """``linear_below``: an integer >= 0 (0: a filtered search never scans its candidates)."""
    return as_int(value, "linear_below", 0, MAX_I64)


def as_linear_below_ratio(value: Any) -> float:
    """``linear_below_ratio``: a real number in [0, 1] (upstream panics outside it)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            "linear_below_ratio must be a number between 0 and 1, got %s" % describe(value)
        )
    try:
        r = float(value)
    except (OverflowError, ValueError):
        r = float("nan")
    if not 0.0 <= r <= 1.0:  # NaN too
        raise InvalidArgumentError(
            "linear_below_ratio must be a number between 0 and 1, got %s" % describe(value)
        )
    return r


def check_out(out: Any, shape: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """Validate the ``out=(ids, distances)`` buffers of by_array."""
    if not isinstance(out, (tuple, list)):
        raise ArgumentTypeError(
            "out must be a tuple (ids, distances) of numpy arrays, got %s" % describe(out)
        )
    if len(out) != 2:
        raise InvalidArgumentError(
            "expected tuple of length 2, but got %s of length %d (out must be (ids, distances))"
            % (type(out).__name__, len(out))
        )
    names = ("ids", "distances")
    dtypes = (np.dtype(np.uint32), np.dtype(np.float32))
    for i, (arr, name, dt) in enumerate(zip(out, names, dtypes)):
        if not isinstance(arr, np.ndarray):
            raise ArgumentTypeError(
                "out[%d] (%s) must be a numpy array of dtype %s, got %s"
                % (i, name, dt, describe(arr))
            )
        if arr.dtype != dt:
            raise ArgumentTypeError(
                "out[%d] (%s) must have dtype %s, got %s" % (i, name, dt, arr.dtype)
            )
        if tuple(arr.shape) != tuple(shape):
            raise InvalidArgumentError(
                "out[%d] (%s) must have shape %s, got %s" % (i, name, list(shape), list(arr.shape))
            )
        if not arr.flags.c_contiguous:
            raise InvalidArgumentError(
                "out[%d] (%s) must be C-contiguous, got a non-contiguous array "
                "(use np.empty(%s, dtype=np.%s))" % (i, name, tuple(shape), dt)
            )
        if not arr.flags.writeable:
            raise ArgumentTypeError(
                "The given array is not writeable: out[%d] (%s) must be a writeable array"
                % (i, name)
            )
    return out[0], out[1]


def as_bool_or_callable(value: Any, what: str) -> Any:
    if value is None or isinstance(value, bool) or callable(value):
        return value
    raise ArgumentTypeError(
        "%s must be True, False, None or a callable(phase, done, total), got %s"
        % (what, describe(value))
    )


def as_path(path: Any) -> str:
    """A database path as a non-empty str without NUL characters (str, bytes or PathLike)."""
    try:
        fspath = os.fspath(path)
    except TypeError:
        raise ArgumentTypeError("path must be a str or os.PathLike, got %s" % describe(path)) from None
    text = os.fsdecode(fspath)
    if not text:
        raise InvalidArgumentError("path must be a non-empty path, got ''")
    if "\x00" in text:
        raise InvalidArgumentError("path must not contain NUL characters, got %r" % text)
    return text
