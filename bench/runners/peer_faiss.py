"""faiss: IndexHNSWFlat(d, 16) (M0 = 32) with efConstruction = 96; cosine = normalised vectors
with inner product; hamming sets use IndexBinaryHNSW on the packed bits. OpenMP threads are set
with omp_set_num_threads: all for the build, 1 for single queries, --threads for batches."""

import sys

import numpy as np

from runners.common import Runner, main


class Faiss(Runner):
    METRICS = ("euclidean", "cosine", "hamming")
    batch_api = "search (OpenMP threads)"
    batch_threads_control = True

    def __init__(self, metric, dims, n, threads):
        super().__init__(metric, dims, n, threads)
        self.binary = metric == "hamming"
        self.bits = (dims + 7) // 8 * 8

    @classmethod
    def version(cls):
        import faiss

        return faiss.__version__

    def _prep(self, x):
        if self.metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        return np.ascontiguousarray(x)

    def build(self, base, path):
        import faiss

        faiss.omp_set_num_threads(self.threads)
        if self.binary:
            index = faiss.IndexBinaryHNSW(self.bits, 16)
        else:
            metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
            index = faiss.IndexHNSWFlat(self.dims, 16, metric)
        index.hnsw.efConstruction = 96
        index.add(self._prep(base))
        (faiss.write_index_binary if self.binary else faiss.write_index)(index, path)
        kind = "IndexBinaryHNSW" if self.binary else "IndexHNSWFlat"
        return {"api": "%s.add (OpenMP, %d threads)" % (kind, self.threads), "params": {"M": 16, "efConstruction": 96}}

    def open(self, path):
        import faiss

        self.faiss = faiss
        faiss.omp_set_num_threads(1)
        self.index = (faiss.read_index_binary if self.binary else faiss.read_index)(path)

    def single_input(self, queries):
        return [q[None, :] for q in self._prep(queries)]

    def set_ef(self, ef):
        self.index.hnsw.efSearch = ef

    def single(self, q, k):
        return self.index.search(q, k)

    def ids_of(self, result):
        return result[1][0]

    def batch(self, queries, k, threads):
        self.faiss.omp_set_num_threads(threads)
        try:
            return self.index.search(self._prep(queries), k)[1]
        finally:
            self.faiss.omp_set_num_threads(1)


if __name__ == "__main__":
    sys.exit(main(Faiss))
