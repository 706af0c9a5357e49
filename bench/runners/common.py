"""The worker side of the benchmark: phases run in a fresh process, one JSON line out.

  version      print {"version": ...} (checks that the library imports)
  build        load base vectors, build the index with every core, save it to --index;
               -> build_s, peak RSS of the process, RSS after loading the data, disk size
  query        open the saved index (in a process that never loaded the base vectors) and, for
               each ef_search, time (a) a Python loop of single queries and (b) one batch call on
               --threads threads (and on 1 thread for ours); returned ids go to --ids (npz) for
               the driver to score; -> QPS per mode and ef, open time, peak RSS of the process
  incremental  (hannoy only) build 99% of the base, then time a second writer adding the last 1%
               (add + build + commit), and save the ids of one query pass at --incr-ef
  lists-build, lists-query
               (hannoy only) the upstream-style mode: add_item and by_vec with Python lists, one
               call per item or query (runners/hannoy_lists.py)

A runner class implements: build(base, path), open(path), set_ef(ef), single(q, k) -> raw result
(ids_of(raw) -> ids, applied after timing),
batch(Q, k, threads) -> (nq, k) ids or None, and optionally incremental(base, split, path).
`single_input(queries)` may pre-convert queries to the form the library takes fastest (untimed).
"""

import argparse
import json
import os
import resource
import sys
import time
import traceback

import numpy as np

MIN_TIME = 1.0  # seconds of timed passes per (mode, ef); best pass wins
MAX_PASSES = 1000
WARMUP = 100  # queries run before timing each (mode, ef)


def maxrss_bytes():
    """Peak resident set size of this process (VmHWM). Not getrusage's ru_maxrss: on Linux that
    one keeps the high-water mark of the process that forked us across exec (here the driver,
    which holds the data sets), so every worker would report at least the driver's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def current_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def disk_usage(path):
    """(allocated bytes like du, apparent bytes) of a file or a directory tree."""
    files = [path]
    if os.path.isdir(path):
        files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    alloc = apparent = 0
    for p in files:
        st = os.stat(p)
        alloc += st.st_blocks * 512
        apparent += st.st_size
    return alloc, apparent


def timed(fn, nq, min_time):
    """Run fn() repeatedly until min_time has passed.

    -> (best QPS, first result, {"passes", "cpu_per_wall", "cpu_s_best_pass"}), cpu_per_wall being
    the process's CPU time over wall time for all passes (about 1 for one busy thread, 2 for two:
    lower means the machine was busy with other work), cpu_s_best_pass the least process CPU time
    of a pass (less sensitive than wall time to other work on the machine)."""
    first, best, best_cpu, total, passes = None, float("inf"), float("inf"), 0.0, 0
    cpu = cpu_seconds()
    while True:
        c = time.process_time()
        t = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t
        best_cpu = min(best_cpu, time.process_time() - c)
        if passes == 0:
            first = res
        best, total, passes = min(best, dt), total + dt, passes + 1
        if total >= min_time or passes >= MAX_PASSES:
            return nq / best, first, {"passes": passes, "cpu_per_wall": (cpu_seconds() - cpu) / total,
                                      "cpu_s_best_pass": best_cpu}


def load_queries(data_dir, binary):
    name = "bits_queries.npy" if binary else "queries.npy"
    return np.load(os.path.join(data_dir, name))


def load_base(data_dir, binary):
    name = "bits_base.npy" if binary else "base.npy"
    return np.load(os.path.join(data_dir, name))


def phase_build(r, a, meta):
    base = load_base(a.data, r.binary)
    rss_loaded = current_rss_bytes()
    cpu, t = cpu_seconds(), time.perf_counter()
    info = r.build(base, a.index) or {}
    build_s = time.perf_counter() - t
    cpu = cpu_seconds() - cpu
    peak = maxrss_bytes()
    alloc, apparent = disk_usage(a.index)
    return dict(info, build_s=build_s, build_cpu_s=cpu, rss_peak=peak, rss_loaded=rss_loaded,
                disk_bytes=alloc, disk_apparent_bytes=apparent, n=len(base), loadavg=os.getloadavg()[0])


def phase_query(r, a, meta):
    queries = load_queries(a.data, r.binary)
    nq, k = len(queries), a.k
    t = time.perf_counter()
    r.open(a.index)
    open_s = time.perf_counter() - t
    rss_open = current_rss_bytes()
    singles = r.single_input(queries)

    def single_loop(qs):
        return [r.single(q, k) for q in qs]

    modes = {"single": (single_loop, singles)}  # key -> (call on a list of queries, queries)
    if r.batch_api is not None:
        modes["batch%d" % a.threads] = (lambda qs, t=a.threads: r.batch(qs, k, t), queries)
        if r.batch_also_one_thread and a.threads != 1:
            modes["batch1"] = (lambda qs: r.batch(qs, k, 1), queries)
    out, ids = {}, {}
    for ef in a.efs:
        r.set_ef(ef)
        for key, (call, qs) in modes.items():
            call(qs[:WARMUP])
            qps, res, stats = timed(lambda: call(qs), nq, a.min_time)
            if key == "single":
                res = [r.ids_of(x) for x in res]
            ids["%s_ef%d" % (key, ef)] = to_ids(res, k)
            out.setdefault(key, {})[str(ef)] = dict(stats, qps=qps)
    np.savez(a.ids, **ids)
    return {"open_s": open_s, "rss_idle": a.rss_start, "rss_open": rss_open, "rss_peak": maxrss_bytes(),
            "modes": out, "batch_api": r.batch_api, "nq": nq, "loadavg": os.getloadavg()[0]}


def to_ids(res, k):
    """Results (list of per-query id arrays, or an (nq, k) array) -> (nq, k) int64, -1 padded."""
    if isinstance(res, np.ndarray):
        arr = res.astype(np.int64)
    else:
        arr = np.full((len(res), k), -1, np.int64)
        for i, row in enumerate(res):
            row = np.asarray(row, dtype=np.int64).reshape(-1)[:k]
            arr[i, : len(row)] = row
    arr[(arr < 0) | (arr >= 2**32 - 1)] = -1
    return arr


def phase_incremental(r, a, meta):
    base = load_base(a.data, r.binary)
    split = int(round(len(base) * 0.99))
    info = r.incremental(base, split, a.index)
    r.open(a.index)
    r.set_ef(a.incr_ef)
    queries = load_queries(a.data, r.binary)
    res = [r.ids_of(r.single(q, a.k)) for q in r.single_input(queries)]
    np.savez(a.ids, **{"incr_ef%d" % a.incr_ef: to_ids(res, a.k)})
    alloc, _ = disk_usage(a.index)
    return dict(info, n_first=split, n_added=len(base) - split, incr_ef=a.incr_ef, disk_bytes=alloc,
                rss_peak=maxrss_bytes(), loadavg=os.getloadavg()[0])


def main(runner_cls):
    p = argparse.ArgumentParser()
    phases = {"build": phase_build, "query": phase_query, "incremental": phase_incremental}
    phases.update(runner_cls.extra_phases())
    p.add_argument("phase", choices=["version"] + list(phases))
    p.add_argument("--data", help="prepared data set directory (bench/.cache/data/<name>)")
    p.add_argument("--index", help="index file or directory to write or read")
    p.add_argument("--ids", help="npz file for the returned ids")
    p.add_argument("--efs", default="10,20,40,80,160,320")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-time", type=float, default=MIN_TIME)
    p.add_argument("--incr-ef", type=int, default=80)
    a = p.parse_args()
    a.efs = [int(x) for x in a.efs.split(",") if x]
    try:
        if a.phase == "version":
            print(json.dumps(runner_cls.describe()))
            return 0
        with open(os.path.join(a.data, "meta.json")) as f:
            meta = json.load(f)
        a.rss_start = current_rss_bytes()  # before the library is imported
        r = runner_cls(meta["metric"], meta["dims"], meta["n_base"], a.threads)
        res = phases[a.phase](r, a, meta)
    except Exception as e:  # reported to the driver as data, with the traceback on stderr
        traceback.print_exc()
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    print(json.dumps(res))
    return 0


class Runner:
    """Defaults shared by the runners. Subclasses set METRICS and implement the methods."""

    METRICS = ()
    binary = False  # True: the runner takes packed bits (np.packbits) for hamming sets
    batch_api = None  # a short description of the batch call used, or None
    batch_threads_control = False  # the batch call takes a thread count
    batch_also_one_thread = False  # also time the batch call on one thread

    def __init__(self, metric, dims, n, threads):
        if metric not in self.METRICS:
            raise ValueError("metric %s not supported by this runner" % metric)
        self.metric, self.dims, self.n, self.threads = metric, dims, n, threads

    @classmethod
    def describe(cls):
        return {"version": cls.version(), "python": sys.version.split()[0]}

    @classmethod
    def extra_phases(cls):
        """{name: phase(runner, args, meta)} beyond build, query and incremental."""
        return {}

    def single_input(self, queries):
        return list(queries)

    def batch(self, queries, k, threads):
        return None

    def ids_of(self, result):
        """ids of one single() result (single() returns the library's raw result, untouched)."""
        return result
