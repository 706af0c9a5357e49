"""Shared fixtures of the hannoy test suite.

By default the tests import the package from the source tree (``python/hannoy``) and load the
library from ``HANNOY_LIBRARY`` or, failing that, ``python/hannoy/libhannoy.so`` (an editable
install puts it there). Set ``HANNOY_TEST_INSTALLED=1`` to test the installed package instead.

Tests that need the library are skipped (with the reason) when it cannot be found, unless
``HANNOY_REQUIRE_LIBRARY=1``; tests that do not need it are marked ``nolib``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import pytest

PYTHON_DIR = Path(__file__).resolve().parent.parent

if os.environ.get("HANNOY_TEST_INSTALLED") != "1":
    sys.path.insert(0, str(PYTHON_DIR))

import hannoy  # noqa: E402
from hannoy import Metric  # noqa: E402

from helpers import FASHION_DIR, library_available, load_idx_images  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "nolib: the test does not need libhannoy.so")
    config.addinivalue_line("markers", "slow: a slower test (large build or subprocess)")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if library_available() or os.environ.get("HANNOY_REQUIRE_LIBRARY") == "1":
        return
    skip = pytest.mark.skip(
        reason="libhannoy.so not found at %s (set HANNOY_LIBRARY or build the package)"
        % hannoy._ffi.library_path()
    )
    for item in items:
        if "nolib" not in item.keywords:
            item.add_marker(skip)


# -- data ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fashion_train() -> np.ndarray:
    """The 10,000 Fashion-MNIST training images of testdata/, (10000, 784) float32 0..255."""
    path = FASHION_DIR / "train-images-10k-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip("test data missing: %s" % path)
    return load_idx_images(path)


@pytest.fixture(scope="session")
def fashion_test() -> np.ndarray:
    """The 500 Fashion-MNIST test images of testdata/, (500, 784) float32 0..255."""
    path = FASHION_DIR / "t10k-images-500-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip("test data missing: %s" % path)
    return load_idx_images(path)


@pytest.fixture(scope="session")
def fashion_small(
    fashion_train: np.ndarray, fashion_test: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """2,000 base vectors and 50 queries (real data, 784 dims)."""
    return fashion_train[:2000].copy(), fashion_test[:50].copy()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# -- databases ----------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a database (the directory does not exist yet: hannoy creates it)."""
    return tmp_path / "db"


@pytest.fixture
def make_db(tmp_path: Path) -> Iterator[Callable[..., hannoy.Database]]:
    """make_db(metric=..., name=None, path=None, env_size=None) -> an open Database, closed at
    teardown. Every call without path uses a new directory."""
    opened: List[hannoy.Database] = []
    counter = [0]

    def make(
        metric: Metric = Metric.EUCLIDEAN,
        name: Optional[str] = None,
        path: Optional[Path] = None,
        env_size: Optional[int] = None,
    ) -> hannoy.Database:
        if path is None:
            counter[0] += 1
            path = tmp_path / ("db%d" % counter[0])
        db = hannoy.Database(path, metric, name=name, env_size=env_size)
        opened.append(db)
        return db

    yield make
    for db in reversed(opened):
        try:
            db.close()
        except Exception:
            pass


@pytest.fixture
def hamming_db(make_db: Callable[..., hannoy.Database]) -> hannoy.Database:
    """upstream's fixture: HAMMING, dims 3, m=4, ef=10, items 0..2 = the unit vectors."""
    db = make_db(Metric.HAMMING)
    with db.writer(3, m=4, ef=10) as writer:
        writer.add_item(0, [1.0, 0.0, 0.0])
        writer.add_item(1, [0.0, 1.0, 0.0])
        writer.add_item(2, [0.0, 0.0, 1.0])
    return db


@pytest.fixture
def array_db(make_db: Callable[..., hannoy.Database]) -> hannoy.Database:
    """EUCLIDEAN, dims 3, m=4, ef=10, items 0..2 = the unit vectors (added with add_items)."""
    db = make_db(Metric.EUCLIDEAN)
    vectors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    with db.writer(3, m=4, ef=10) as writer:
        writer.add_items([0, 1, 2], vectors)
    return db


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory uid 65534 can enter (pytest's tmp_path base is 0o700), removed at the end
    (permissions the test took away are given back first)."""
    d = Path(tempfile.mkdtemp(prefix="hannoy-shared-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for root, dirs, _ in os.walk(d):
            os.chmod(root, 0o755)
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(d)
