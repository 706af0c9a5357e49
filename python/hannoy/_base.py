"""What :class:`Database`, :class:`Writer` and :class:`Reader` share, in a module they all import.

``_database`` imports ``_reader`` and ``_writer`` (``Database.reader()`` and ``.writer()`` make
them), so these two never import ``_database``: they only need the few members of a database
described by :class:`DatabaseLike`, which :class:`~hannoy.Database` has.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Protocol, Tuple

from ._handle import SharedHandle
from ._metric import Metric

__all__ = ["DatabaseLike", "Neighbours", "ProgressCallback"]

#: Search results: ``(item id, distance)`` pairs, ascending by distance.
Neighbours = List[Tuple[int, float]]

#: A build progress callable: ``(phase, done, total)``.
ProgressCallback = Callable[[str, int, int], Any]


class DatabaseLike(Protocol):
    """The members of a :class:`~hannoy.Database` its writers and readers use."""

    _h: Optional[SharedHandle]

    @property
    def path(self) -> str: ...

    @property
    def metric(self) -> Metric: ...
