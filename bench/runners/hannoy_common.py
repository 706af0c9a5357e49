"""What the two hannoy runners (ours and upstream 0.1.3) share: the same Python API.

Build: `Database(path, metric, env_size=...)`, `with db.writer(dims, m=16, ef=96) as w:
w.add_items(ids, vectors)` (or an add_item loop where add_items is missing); the writer builds
and commits on exit. Queries: `reader.by_vec(q, n=k, ef_search=ef)` in a loop, and
`reader.by_array(Q, n=k, ef_search=ef, out=(ids, dists))` as the batch call where it exists.
Hamming sets get 0/1 floats (hannoy sets bit = 1 for values > 0); BQ sets get the float vectors.
"""

import os
import time

import numpy as np

from runners.common import Runner

M, EF_CONSTRUCTION = 16, 96


class HannoyRunner(Runner):
    METRICS = ("euclidean", "cosine", "hamming", "bq_euclidean", "bq_cosine")
    writer_kwargs = {}  # extra keyword arguments for db.writer (ours: threads)

    @classmethod
    def import_hannoy(cls):
        """The hannoy module to measure: each subclass (ours, upstream) imports its own."""
        raise TypeError("%s must define import_hannoy()" % cls.__name__)

    @classmethod
    def extra_phases(cls):
        from runners.hannoy_lists import PHASES  # the upstream-style mode: lists-build, lists-query

        return PHASES

    @classmethod
    def version(cls):
        from importlib.metadata import version

        h = cls.import_hannoy()
        return getattr(h, "__version__", None) or version("hannoy")

    def __init__(self, metric, dims, n, threads):
        super().__init__(metric, dims, n, threads)
        self.h = self.import_hannoy()
        self.metric_enum = getattr(self.h.Metric, metric.upper())
        # Upstream's default map (1 GiB) may be short for the largest set; same size for both.
        # A whole number of MiB: upstream (LMDB through heed) refuses a map size that is not a
        # multiple of the page size.
        self.env_size = max(1 << 30, -(-8 * n * (dims * 4 + 1024) // (1 << 20)) << 20)
        self.add_api = None

    def _db(self, path):
        os.makedirs(path, exist_ok=True)
        return self.h.Database(path, self.metric_enum, env_size=self.env_size)

    def _add(self, db, ids, vectors):
        with db.writer(self.dims, m=M, ef=EF_CONSTRUCTION, **self.writer_kwargs) as w:
            if hasattr(w, "add_items"):
                self.add_api = "add_items"
                w.add_items(self.ids_arg(ids), vectors)
            else:
                self.add_api = "add_item loop"
                for i, v in zip(ids.tolist(), vectors):
                    w.add_item(i, v.tolist())

    def ids_arg(self, ids):
        return ids

    def build(self, base, path):
        self._add(self._db(path), np.arange(len(base), dtype=np.uint32), base)
        return {"api": self.add_api, "params": {"m": M, "m0": 2 * M, "ef_construction": EF_CONSTRUCTION,
                                                 **self.writer_kwargs}}

    def incremental(self, base, split, path):
        ids = np.arange(len(base), dtype=np.uint32)
        db = self._db(path)
        t = time.perf_counter()
        self._add(db, ids[:split], base[:split])
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        self._add(db, ids[split:], base[split:])  # a second writer: add, build, commit
        return {"build_first_s": first_s, "incr_s": time.perf_counter() - t, "api": self.add_api}

    def open(self, path):
        self.db = self._db(path)
        self.reader = self.db.reader()
        self.batch_api = "by_array(out=...)" if hasattr(self.reader, "by_array") else None
        if self.batch_api and self.batch_threads_control:
            self.batch_api += ", threads="

    def set_ef(self, ef):
        self.ef = ef

    def single(self, q, k):
        return self.reader.by_vec(q, n=k, ef_search=self.ef)

    def ids_of(self, result):
        return [i for i, _ in result]

    def batch(self, queries, k, threads):
        ids = np.empty((len(queries), k), np.uint32)
        dists = np.empty((len(queries), k), np.float32)
        kw = {"threads": threads} if self.batch_threads_control else {}
        self.reader.by_array(queries, n=k, ef_search=self.ef, out=(ids, dists), **kw)
        return ids
