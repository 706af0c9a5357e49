"""The upstream-style phases of the two hannoy runners: Python lists in, one call per item or query,
exactly as upstream's README shows a user doing (driver: bench/upstream_style.py).

  lists-build  base.npy -> `ndarray.tolist()` (untimed), then, timed:
                   with db.writer(dims, m=16, ef=96) as writer:    # no threads=: the defaults
                       for i in range(n): writer.add_item(i, lists[i])
               the add_item loop and the build + commit (the `with` block's exit) separately and
               together, per-call µs of add_item (the loop timed in chunks: mean and best chunk),
               and the floor: per-call µs of struct.pack(f"{d}f", *row) over the same lists
  lists-query  open the index in a fresh process, queries as lists (`tolist()`, untimed) and as
               float32 ndarray rows; for each ef_search, timed like the numpy mode (warm-up, repeated
               passes, best pass): `reader.by_vec(list, n=k, ef_search=ef)` in a loop ("list"), the
               same with ndarray rows ("row", the numpy mode's single query) and by_array on one
               thread ("batch1"); struct.pack of the query lists as the floor; ids for the driver
"""

import os
import struct
import time

import numpy as np

from runners.common import (WARMUP, cpu_seconds, current_rss_bytes, disk_usage, load_base, load_queries,
                            maxrss_bytes, timed, to_ids)
from runners.hannoy_common import EF_CONSTRUCTION, M

CHUNKS = 20  # the add_item loop is timed in this many chunks (at least 100 calls each)


def pack_floor(lists, dims, min_time):
    """Per-call µs of struct.pack(f"{dims}f", *row) over the lists, best pass, and its stats."""
    fmt = "%df" % dims
    pack = struct.pack
    calls_per_s, _, stats = timed(lambda: [pack(fmt, *row) for row in lists], len(lists), min_time)
    return dict(stats, us=1e6 / calls_per_s, cpu_us=stats["cpu_s_best_pass"] / len(lists) * 1e6)


def phase_lists_build(r, a, meta):
    base = load_base(a.data, False)
    n, dims = base.shape
    rss_loaded = current_rss_bytes()
    lists = base.tolist()  # the user's data as lists, made before timing
    del base
    rss_lists = current_rss_bytes()
    pack = pack_floor(lists, dims, a.min_time)
    db = r._db(a.index)
    chunk = max(100, -(-n // CHUNKS))
    chunk_s, chunk_cpu = [], []
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    with db.writer(dims, m=M, ef=EF_CONSTRUCTION) as writer:
        t1 = time.perf_counter()
        for s in range(0, n, chunk):
            cs, ts = time.process_time(), time.perf_counter()
            for i in range(s, min(s + chunk, n)):
                writer.add_item(i, lists[i])
            chunk_s.append(time.perf_counter() - ts)
            chunk_cpu.append(time.process_time() - cs)
        t2 = time.perf_counter()
        cpu2 = cpu_seconds()
    t3 = time.perf_counter()
    cpu3 = cpu_seconds()
    calls = [min(s + chunk, n) - s for s in range(0, n, chunk)]
    per_call = [dt / c * 1e6 for dt, c in zip(chunk_s, calls)]
    per_call_cpu = [dt / c * 1e6 for dt, c in zip(chunk_cpu, calls)]
    alloc, apparent = disk_usage(a.index)
    return {
        "n": n,
        "dims": dims,
        "writer_open_s": t1 - t0,
        "add_s": t2 - t1,  # the add_item loop
        "build_s": t3 - t2,  # the with block's exit: build + commit
        "total_s": t3 - t0,  # load + build
        "add_cpu_s": cpu2 - cpu0,
        "build_cpu_s": cpu3 - cpu2,
        "add_item_us": (t2 - t1) / n * 1e6,  # mean per call over the whole loop
        "add_item_us_best_chunk": min(per_call),
        "add_item_us_median_chunk": float(np.median(per_call)),
        "add_item_us_chunks": per_call,
        "add_item_cpu_us": (cpu2 - cpu0) / n * 1e6,  # process CPU time per call (all its threads)
        "add_item_cpu_us_best_chunk": min(per_call_cpu),
        "chunk": chunk,
        "pack": pack,
        "rss_loaded": rss_loaded,
        "rss_lists": rss_lists,
        "rss_peak": maxrss_bytes(),
        "disk_bytes": alloc,
        "disk_apparent_bytes": apparent,
        "params": {"m": M, "m0": 2 * M, "ef_construction": EF_CONSTRUCTION, "writer_kwargs": "none (defaults)"},
        "loadavg": os.getloadavg()[0],
    }


def phase_lists_query(r, a, meta):
    queries = load_queries(a.data, False)
    nq, dims = queries.shape
    k = a.k
    qlists = queries.tolist()  # made before timing
    rows = list(queries)
    t = time.perf_counter()
    r.open(a.index)
    open_s = time.perf_counter() - t
    reader = r.reader
    pack = pack_floor(qlists, dims, a.min_time)

    def by_vec_loop(qs, ef):
        return [reader.by_vec(q, n=k, ef_search=ef) for q in qs]

    def by_array_1(qs, ef):  # on one thread (upstream's: RAYON_NUM_THREADS=1, set by the driver)
        r.set_ef(ef)
        return r.batch(qs, k, 1)

    modes = {"list": (by_vec_loop, qlists), "row": (by_vec_loop, rows)}
    if r.batch_api is not None:
        modes["batch1"] = (by_array_1, queries)
    out, ids = {}, {}
    for ef in a.efs:
        for key, (call, qs) in modes.items():
            call(qs[:WARMUP], ef)
            qps, res, stats = timed(lambda: call(qs, ef), nq, a.min_time)
            if key != "batch1":
                res = [r.ids_of(x) for x in res]
            ids["%s_ef%d" % (key, ef)] = to_ids(res, k)
            out.setdefault(key, {})[str(ef)] = dict(stats, qps=qps, us=1e6 / qps,
                                                    cpu_us=stats["cpu_s_best_pass"] / nq * 1e6)
    np.savez(a.ids, **ids)
    return {"open_s": open_s, "modes": out, "pack": pack, "batch_api": r.batch_api, "nq": nq,
            "rayon_threads": os.environ.get("RAYON_NUM_THREADS"), "rss_peak": maxrss_bytes(),
            "loadavg": os.getloadavg()[0]}


PHASES = {"lists-build": phase_lists_build, "lists-query": phase_lists_query}
