"""hnswlib: Index(space, dim).init_index(M=16, ef_construction=96), add_items on every core,
save_index / load_index; knn_query for single queries (num_threads=1) and batches."""

import sys

import numpy as np

from runners.common import Runner, main

SPACES = {"euclidean": "l2", "cosine": "cosine"}


class Hnswlib(Runner):
    METRICS = tuple(SPACES)
    batch_api = "knn_query(num_threads=)"
    batch_threads_control = True

    @classmethod
    def version(cls):
        from importlib.metadata import version

        import hnswlib  # noqa: F401

        return version("hnswlib")

    def _index(self):
        import hnswlib

        return hnswlib.Index(space=SPACES[self.metric], dim=self.dims)

    def build(self, base, path):
        index = self._index()
        index.init_index(max_elements=len(base), M=16, ef_construction=96, random_seed=100)
        index.add_items(base, np.arange(len(base)), num_threads=self.threads)
        index.save_index(path)
        return {"api": "add_items(num_threads=%d)" % self.threads, "params": {"M": 16, "ef_construction": 96}}

    def open(self, path):
        self.index = self._index()
        self.index.load_index(path, max_elements=self.n)

    def set_ef(self, ef):
        self.index.set_ef(ef)

    def single(self, q, k):
        return self.index.knn_query(q, k=k, num_threads=1)

    def ids_of(self, result):
        return result[0][0]

    def batch(self, queries, k, threads):
        return self.index.knn_query(queries, k=k, num_threads=threads)[0]


if __name__ == "__main__":
    sys.exit(main(Hnswlib))
