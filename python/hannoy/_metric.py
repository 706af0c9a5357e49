"""The distance metrics."""

from __future__ import annotations

import enum
from typing import Any, Optional

from ._errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["Metric"]


class Metric(enum.IntEnum):
    """A distance metric; its value is the metric code of the C library.

    ``str(metric)`` is the name stored in the database (``"cosine"``, ``"bq_cosine"`` ...).
    ``Metric("cosine")`` (any case) and ``Metric(0)`` both give :attr:`COSINE`.

    Distances returned by searches are those of upstream hannoy:

    ============  =========================================================================
    COSINE        ``(1 - cos(a, b)) / 2`` in ``[0, 1]`` (0 when either vector is zero)
    EUCLIDEAN     squared L2: ``sum((a - b) ** 2)``
    MANHATTAN     L1: ``sum(abs(a - b))``
    BQ_COSINE     1-bit quantised (bit = value is not negative): ``h / Dp``
    BQ_EUCLIDEAN  ``4 * h``
    BQ_MANHATTAN  ``2 * h``
    HAMMING       bit = value ``> 0``: ``h / Dp``
    ============  =========================================================================

    where ``h`` is the number of differing bits and ``Dp = 64 * ceil(dimensions / 64)``.

    Example
    -------
    >>> from hannoy import Metric
    >>> str(Metric.BQ_COSINE)
    'bq_cosine'
    >>> Metric("euclidean") is Metric.EUCLIDEAN
    True
    """

    COSINE = 0
    EUCLIDEAN = 1
    MANHATTAN = 2
    BQ_COSINE = 3
    BQ_EUCLIDEAN = 4
    BQ_MANHATTAN = 5
    HAMMING = 6

    def __str__(self) -> str:
        return self.name.lower()

    def __repr__(self) -> str:
        return "Metric.%s" % self.name

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    @classmethod
    def _missing_(cls, value: object) -> Optional["Metric"]:
        if isinstance(value, str):
            key = value.strip().upper().replace("-", "_")
            aliases = {
                "BINARY_QUANTIZED_COSINE": "BQ_COSINE",
                "BINARY_QUANTIZED_EUCLIDEAN": "BQ_EUCLIDEAN",
                "BINARY_QUANTIZED_MANHATTAN": "BQ_MANHATTAN",
            }
            key = aliases.get(key, key)
            member = cls.__members__.get(key)
            if member is not None:
                return member
        return None


def as_metric(value: Any, what: str = "distance") -> Metric:
    """Convert a Metric, its name or its code to a Metric, with a clear error."""
    if isinstance(value, Metric):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ArgumentTypeError(
            "%s must be a hannoy.Metric (or its name), got %s %r"
            % (what, type(value).__name__, value)
        )
    try:
        return Metric(value)  # type: ignore[arg-type]  # _missing_ accepts names
    except ValueError:
        names = ", ".join(str(m) for m in Metric)
        raise InvalidArgumentError(
            "%s must be one of %s (or codes 0..6), got %r" % (what, names, value)
        ) from None
