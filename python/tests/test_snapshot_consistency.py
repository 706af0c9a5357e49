"""Readers see one committed snapshot while a writer commits: 8 reader threads open, search and
close readers while a writer thread commits 20 batches."""

from __future__ import annotations

import threading

import numpy as np

import hannoy
from hannoy import Metric

BATCH = 50
BATCHES = 20
DIMS = 16


def batch_vectors(b: int) -> np.ndarray:
    """Batch b's vectors: the first value marks the batch, the rest is noise."""
    v = np.random.default_rng(b).standard_normal((BATCH, DIMS)).astype(np.float32)
    v[:, 0] = b
    return v


def test_readers_see_one_committed_snapshot_while_a_writer_commits(tmp_path) -> None:
    db = hannoy.Database(tmp_path / "db", Metric.EUCLIDEAN)
    with db.writer(DIMS, m=8, ef=32) as w:
        w.add_items(np.arange(BATCH), batch_vectors(0))
    done = threading.Event()
    errors: list = []
    seen_sizes: list = []

    def write() -> None:
        try:
            for b in range(1, BATCHES):
                with db.writer(DIMS, m=8, ef=32) as w:
                    w.add_items(np.arange(b * BATCH, (b + 1) * BATCH), batch_vectors(b))
        except BaseException as e:  # reported below
            errors.append(("writer", repr(e)))
        finally:
            done.set()

    def read(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while True:
                finished = done.is_set()
                with db.reader() as r:
                    n = len(r)
                    # A prefix of whole batches, never a partial one.
                    assert n % BATCH == 0 and BATCH <= n <= BATCH * BATCHES, n
                    assert np.array_equal(r.item_ids(), np.arange(n, dtype=np.uint32))
                    q = rng.standard_normal(DIMS).astype(np.float32)
                    q[0] = rng.integers(0, n // BATCH)
                    res = r.by_vec(q, n=10, ef_search=64)
                    assert len(res) == 10
                    for item, dist in res:
                        assert item < n, (item, n)
                        v = r.item_vector(item)
                        assert v[0] == item // BATCH  # the committed vector of its batch
                        assert abs(float(((v - q) ** 2).sum()) - dist) <= 1e-3 * max(1.0, dist)
                    seen_sizes.append(n)
                if finished:
                    return
        except BaseException as e:
            errors.append(("reader %d" % seed, repr(e)))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    writer = threading.Thread(target=write)
    for t in threads:
        t.start()
    writer.start()
    writer.join(timeout=300)
    for t in threads:
        t.join(timeout=300)
    assert not writer.is_alive() and not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    assert max(seen_sizes) == BATCH * BATCHES
    assert len(set(seen_sizes)) > 1, "the readers never overlapped a commit"
    with db.reader() as r:
        assert len(r) == BATCH * BATCHES
    db.close()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_many_readers_opened_and_closed_leak_nothing(tmp_path) -> None:
    import os

    db = hannoy.Database(tmp_path / "db", Metric.EUCLIDEAN)
    with db.writer(DIMS, m=8, ef=32) as w:
        w.add_items(np.arange(BATCH), batch_vectors(0))
    q = batch_vectors(0)[3]
    for _ in range(200):  # warm up allocators before measuring
        with db.reader() as r:
            r.by_vec(q, n=1)
    fds = len(os.listdir("/proc/self/fd"))
    rss = _rss_kib()
    for _ in range(10_000):
        with db.reader() as r:
            assert r.by_vec(q, n=1)[0][0] == 3
    assert len(os.listdir("/proc/self/fd")) == fds
    assert _rss_kib() - rss < 50 * 1024, "RSS grew by more than 50 MiB over 10,000 readers"
    # Reader slots were all given back: far more readers than the table holds can still be
    # opened one after another, and a few hundred at once.
    held = [db.reader() for _ in range(300)]
    assert all(len(r) == BATCH for r in held)
    for r in held:
        r.close()
    db.close()
