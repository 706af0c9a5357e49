"""Helpers shared by the tests (data loading, exact distances, subprocess environment)."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np

import hannoy
from hannoy import Metric

TESTS_DIR = Path(__file__).resolve().parent
PYTHON_DIR = TESTS_DIR.parent
REPO_DIR = PYTHON_DIR.parent
FASHION_DIR = REPO_DIR / "testdata" / "fashion-mnist"


def library_available() -> bool:
    return os.path.exists(hannoy._ffi.library_path())


def subprocess_env() -> dict:
    """Environment for a child Python that imports the same hannoy with the same library."""
    env = dict(os.environ)
    if os.environ.get("HANNOY_TEST_INSTALLED") != "1":
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PYTHON_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
    if hannoy._ffi.is_loaded() or library_available():
        env[hannoy._ffi.LIBRARY_ENV] = os.path.abspath(hannoy._ffi.library_path())
    return env


def load_idx_images(path: Path) -> np.ndarray:
    """IDX images (gzip): big-endian int32 header (magic 2051, n, rows, cols), uint8 pixels."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = np.frombuffer(data, dtype=">i4", count=4)
    assert magic == 2051, "not an IDX image file: %s" % path
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16)
    assert pixels.size == n * rows * cols
    return pixels.reshape(n, rows * cols).astype(np.float32)


def build_index(
    db: hannoy.Database,
    vectors: np.ndarray,
    ids: Optional[np.ndarray] = None,
    index: int = 0,
    **kwargs: object,
) -> None:
    """Add vectors (ids 0..n-1 unless given) to an index, build and commit."""
    if ids is None:
        ids = np.arange(vectors.shape[0])
    with db.writer(vectors.shape[1], index=index, **kwargs) as w:
        w.add_items(ids, vectors)


# -- exact distances ------------------------------------------------------------------------


def padded_bits(dims: int) -> int:
    return 64 * ((dims + 63) // 64)


def reference_distances(metric: Metric, query: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Distances of upstream hannoy (reference §2.2), computed with numpy in float64."""
    q = query.astype(np.float64)
    x = items.astype(np.float64)
    dp = padded_bits(items.shape[1])
    if metric == Metric.COSINE:
        qn = np.linalg.norm(q)
        xn = np.linalg.norm(x, axis=1)
        denom = qn * xn
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.clip((x @ q) / denom, -1.0, 1.0)
        return np.where(denom > np.finfo(np.float32).eps, (1.0 - cos) / 2.0, 0.0)
    if metric == Metric.EUCLIDEAN:
        return ((x - q) ** 2).sum(axis=1)
    if metric == Metric.MANHATTAN:
        return np.abs(x - q).sum(axis=1)
    if metric == Metric.HAMMING:
        h = ((items > 0) != (query > 0)).sum(axis=1)
        return h / dp
    # binary quantized: bit = sign bit clear (+0.0 -> 1, -0.0 -> 0)
    h = (np.signbit(items) != np.signbit(query)).sum(axis=1).astype(np.float64)
    if metric == Metric.BQ_EUCLIDEAN:
        return 4.0 * h
    if metric == Metric.BQ_MANHATTAN:
        return 2.0 * h
    if metric == Metric.BQ_COSINE:
        return (1.0 - (dp - 2.0 * h) / dp) / 2.0
    raise AssertionError(metric)


def exact_knn(
    metric: Metric, query: np.ndarray, items: np.ndarray, k: int
) -> List[Tuple[int, float]]:
    d = reference_distances(metric, query, items)
    order = np.lexsort((np.arange(len(d)), d))[:k]
    return [(int(i), float(d[i])) for i in order]


def in_forked_child(fn: Callable[[], object], timeout: float = 60.0) -> object:
    """Run fn in a forked child and return what it returned (JSON-able), failing the test if
    the child hangs (it is killed), raises, or exits other than through fn's return."""
    import json

    import pytest

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            os.write(wfd, json.dumps(fn()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.05)
    data = os.read(rfd, 65536)
    os.close(rfd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return json.loads(data)


def lmdb_page_size(path: Path) -> int:
    """The page size of ``path``/data.mdb, from its first meta page (mm_dbs[FREE_DBI].md_pad,
    LMDB 0.9, 64-bit layout)."""
    with open(Path(path) / "data.mdb", "rb") as f:
        return struct.unpack_from("<I", f.read(152), 16 + 24)[0]


def lmdb_used_bytes(path: Path) -> int:
    """The bytes of ``path``/data.mdb that LMDB's newest commit uses: (last page + 1) x page size,
    from the newer of the two meta pages (LMDB 0.9, 64-bit layout)."""
    psize = lmdb_page_size(path)
    with open(Path(path) / "data.mdb", "rb") as f:
        best = (0, -1)
        for page in (0, 1):
            f.seek(page * psize)
            last_pg, txnid = struct.unpack_from("<QQ", f.read(152), 16 + 120)
            best = max(best, (txnid, last_pg))
    return (best[1] + 1) * psize


def data_digest(path: Path) -> str:
    """SHA-256 of the part of ``path``/data.mdb that the last commit uses. The file may be longer:
    pages past the used size are free space to LMDB, where a writable environment (MDB_WRITEMAP)
    keeps its write transaction's reserved blocks and the pages of aborted transactions."""
    with open(Path(path) / "data.mdb", "rb") as f:
        return hashlib.sha256(f.read(lmdb_used_bytes(path))).hexdigest()
