"""hannoy demo on real data: build an index of Fashion-MNIST images and measure it.

Uses the 10,000-image subset shipped in testdata/ (or, with --full and ../shared/data present,
all 60,000 training images), 500 test images as queries, euclidean distance. Prints the build
time, recall@10 against exact brute-force neighbours, and queries per second for a Python loop
of single queries and for one batch call.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import hannoy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_idx(path: str, limit: int | None = None) -> np.ndarray:
    """Read a gzip IDX image file as an (n, 784) float32 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = np.frombuffer(data, dtype=">i4", count=4)
    assert magic == 2051, f"{path} is not an IDX image file"
    images = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows * cols)
    if limit is not None:
        images = images[:limit]
    return images.astype(np.float32)


def exact_neighbours(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact k nearest neighbours by squared L2, in chunks."""
    norms = (base.astype(np.float64) ** 2).sum(1)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 100):
        q = queries[start : start + 100].astype(np.float64)
        d = norms[None, :] - 2 * q @ base.T.astype(np.float64) + (q**2).sum(1)[:, None]
        part = np.argpartition(d, k, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1)
        out[start : start + 100] = np.take_along_axis(part, order, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="use all 60,000 images from ../shared/data")
    parser.add_argument("--ef-search", type=int, default=200)
    args = parser.parse_args()

    shared = os.path.join(ROOT, "..", "shared", "data", "fashion-mnist")
    if args.full and os.path.exists(os.path.join(shared, "train-images-idx3-ubyte.gz")):
        base = load_idx(os.path.join(shared, "train-images-idx3-ubyte.gz"))
        queries = load_idx(os.path.join(shared, "t10k-images-idx3-ubyte.gz"), 500)
        source = "Fashion-MNIST, 60,000 training images"
    else:
        data = os.path.join(ROOT, "testdata", "fashion-mnist")
        base = load_idx(os.path.join(data, "train-images-10k-idx3-ubyte.gz"))
        queries = load_idx(os.path.join(data, "t10k-images-500-idx3-ubyte.gz"))
        source = "Fashion-MNIST subset, 10,000 training images"
    k = 10
    print(f"data: {source}; {len(queries)} test images as queries; 784 dimensions, euclidean")
    truth = exact_neighbours(base, queries, k)

    path = tempfile.mkdtemp(prefix="hannoy-demo-")
    try:
        db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
        start = time.perf_counter()
        with db.writer(base.shape[1], m=16, ef=96) as writer:
            writer.add_items(np.arange(len(base), dtype=np.uint32), base)
        build = time.perf_counter() - start
        print(f"build: {build:.2f} s for {len(base):,} vectors (M=16, ef_construction=96)")

        reader = db.reader()
        start = time.perf_counter()
        found = [reader.by_vec(q, n=k, ef_search=args.ef_search) for q in queries]
        loop = time.perf_counter() - start
        recall = np.mean([len({i for i, _ in f} & set(t)) / k for f, t in zip(found, truth)])

        ids = np.empty((len(queries), k), dtype=np.uint32)
        dists = np.empty((len(queries), k), dtype=np.float32)
        start = time.perf_counter()
        reader.by_array(queries, n=k, ef_search=args.ef_search, out=(ids, dists))
        batch = time.perf_counter() - start
        batch_recall = np.mean([len(set(r) & set(t)) / k for r, t in zip(ids.tolist(), truth)])

        print(f"recall@10: {recall:.4f} (ef_search={args.ef_search})")
        print(f"queries per second, Python loop of by_vec: {len(queries) / loop:,.0f}")
        print(f"queries per second, one by_array batch on {os.cpu_count()} cores: "
              f"{len(queries) / batch:,.0f} (recall@10 {batch_recall:.4f})")
        reader.close()
        db.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    sys.exit(0 if recall >= 0.9 else 1)


if __name__ == "__main__":
    main()
