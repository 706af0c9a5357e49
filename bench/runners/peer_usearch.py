"""usearch: Index(ndim, metric, dtype="f32", connectivity=16, expansion_add=96) — layer 0 gets
2 x connectivity links, like M0 = 32 — with f32 storage (no down-casting) for float sets and
b1 (packed bits) with the hamming metric for hamming sets; save / restore; search."""

import sys

import numpy as np

from runners.common import Runner, main

METRICS = {"euclidean": ("l2sq", "f32"), "cosine": ("cos", "f32"), "hamming": ("hamming", "b1")}


class Usearch(Runner):
    METRICS = tuple(METRICS)
    batch_api = "search(threads=)"
    batch_threads_control = True

    def __init__(self, metric, dims, n, threads):
        super().__init__(metric, dims, n, threads)
        self.binary = metric == "hamming"
        self.ndim = (dims + 7) // 8 * 8 if self.binary else dims  # whole bytes of packed bits

    @classmethod
    def version(cls):
        import usearch

        return usearch.__version__

    def build(self, base, path):
        from usearch.index import Index

        metric, dtype = METRICS[self.metric]
        index = Index(ndim=self.ndim, metric=metric, dtype=dtype, connectivity=16, expansion_add=96)
        index.add(np.arange(len(base), dtype=np.uint64), base, threads=self.threads)
        index.save(path)
        return {"api": "add(threads=%d), dtype=%s" % (self.threads, dtype),
                "params": {"connectivity": 16, "expansion_add": 96, "metric": metric}}

    def open(self, path):
        from usearch.index import Index

        self.index = Index.restore(path)

    def set_ef(self, ef):
        self.index.expansion_search = ef

    def single(self, q, k):
        return self.index.search(q, k)

    def ids_of(self, result):
        return result.keys

    def batch(self, queries, k, threads):
        return self.index.search(queries, k, threads=threads).keys


if __name__ == "__main__":
    sys.exit(main(Usearch))
