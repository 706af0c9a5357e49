"""Functions run by a ``multiprocessing`` pool with the "spawn" context (they must be importable
by the pool's fresh interpreters, so they live in a module of their own)."""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

import numpy as np

import hannoy

_reader: Optional[hannoy.Reader] = None
_barrier: Any = None
_waited = False


def init(db: hannoy.Database, barrier: Any) -> None:
    """Pool initializer: ``db`` arrives pickled by path and is reopened here."""
    global _reader, _barrier
    _reader = db.reader()
    _barrier = barrier


def search(queries: np.ndarray) -> Tuple[int, List[List[Tuple[int, float]]]]:
    """Search a chunk of queries; a worker's first chunk waits until every worker is searching,
    so the pool is seen to search in parallel."""
    global _waited
    assert _reader is not None
    if not _waited:
        _waited = True
        _barrier.wait(120)
    return os.getpid(), _reader.by_array(queries, n=10, ef_search=64)
