#!/usr/bin/env python3
"""hannoy.dask on a Dask LocalCluster beside one unsharded index: build time, batch queries/s,
recall and what sharding costs per query and per call.

  bash bench/run.sh --dask                       # fashion-mnist, 1, 2 and 4 shards (~10 min)
  bash bench/run.sh --dask --quick               # fashion-mnist-quick: a smoke test (~1 min)
  python bench/dask_bench.py --dataset glove-50 --shards 1,2,4,8 --ef 40,160
  python bench/dask_bench.py --report bench/results/dask-fashion-mnist.json   # rewrite the .md

Steps, in this process (which is also the Dask client and scheduler), with a
LocalCluster(processes=True, n_workers=--workers, threads_per_worker=--threads-per-worker) up:

 1. Dask's own cost of a fan-out: k no-op tasks, one per shard's worker, gathered (median);
 2. the builds, one after the other, each timed (wall) with the CPU seconds of every process
    (this one and the workers): the unsharded database (--workers x --threads-per-worker
    threads, no Dask), hannoy.dask without a cluster (--local-shards, threads of this process),
    and hannoy.dask on the cluster for each of --shards (from the numpy array in this process to
    the manifest: splitting, sending each shard's rows to its worker, the builds);
 3. the queries, per ef_search in --rounds rounds that take every configuration in turn (the
    machine's load changes over minutes: it falls on all of them alike): batch passes (all
    queries in one by_array call; unsharded Reader.by_array on as many threads) for at least
    --min-time seconds in all, and --calls one-query calls in all. Per configuration: the best
    pass, recall@10 of its results (ties counted, as in bench.py), the median call.

Overhead per query = (1 / QPS sharded - 1 / QPS unsharded), overhead per call = median latency of
a one-query call sharded - unsharded. Results: <out>/dask-<dataset>.json and .md.
"""

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import datasets  # noqa: E402

K = 10


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fashion-mnist-quick, ef 40, 0.2 s per measurement")
    p.add_argument("--dataset", help="a float data set of bench/datasets.py (default fashion-mnist)")
    p.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    p.add_argument("--shards", default="1,2,4", help="shard counts on the cluster (default 1,2,4)")
    p.add_argument("--local-shards", default="4",
                   help="shard counts also run in threads of this process, no cluster ('' for none)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--ef", help="ef_search values (default 40,160; quick 40)")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=96)
    p.add_argument("--min-time", type=float, help="seconds of timed batch passes (default 2, quick 0.2)")
    p.add_argument("--calls", type=int, help="one-query calls timed per ef (default 200, quick 20)")
    p.add_argument("--rounds", type=int, help="rounds over every configuration per ef (default 4, quick 1)")
    p.add_argument("--out", help="results folder (default bench/results; quick bench/.cache/results-quick)")
    p.add_argument("--work", default=os.path.join(HERE, ".cache", "dask-work"))
    p.add_argument("--report", metavar="JSON", help="only rewrite the .md of a results file")
    a = p.parse_args(argv)
    a.dataset = a.dataset or ("fashion-mnist-quick" if a.quick else "fashion-mnist")
    a.shards = [int(x) for x in a.shards.split(",") if x]
    a.local_shards = [int(x) for x in a.local_shards.split(",") if x]
    a.efs = [int(x) for x in a.ef.split(",")] if a.ef else ([40] if a.quick else [40, 160])
    a.min_time = a.min_time if a.min_time is not None else (0.2 if a.quick else 2.0)
    a.calls = a.calls if a.calls is not None else (20 if a.quick else 200)
    a.rounds = a.rounds if a.rounds is not None else (1 if a.quick else 4)
    a.out = a.out or (os.path.join(HERE, ".cache", "results-quick") if a.quick else os.path.join(HERE, "results"))
    return a


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cluster_cpu(client):
    """CPU seconds of this process (client and scheduler) and of every worker process so far."""
    if client is None:
        return cpu_seconds()
    return cpu_seconds() + sum(client.run(cpu_seconds).values())


class Config:
    """One configuration under test: its build figures and a search(Q, ef) -> ids."""

    def __init__(self, label, shards, cluster, build_s, build_cpu_s, sizes, search, close):
        self.label, self.shards, self.cluster = label, shards, cluster
        self.build_s, self.build_cpu_s, self.sizes = build_s, build_cpu_s, sizes
        self.search, self.close = search, close
        self.efs = {}


def build_unsharded(ds, a, threads, client):
    import hannoy

    path = os.path.join(a.work, "unsharded")
    shutil.rmtree(path, ignore_errors=True)
    base = ds["base"]
    load0, cpu0, t = os.getloadavg()[0], cluster_cpu(client), time.perf_counter()
    with hannoy.Database(path, ds["metric"]) as db:
        with db.writer(base.shape[1], m=a.m, ef=a.ef_construction, threads=threads) as w:
            w.add_items(np.arange(len(base), dtype=np.uint32), base)
    build_s, cpu = time.perf_counter() - t, cluster_cpu(client) - cpu0
    print("  unsharded: build %.2f s (%.1f CPU s) on %d threads, load %.1f"
          % (build_s, cpu, threads, load0), file=sys.stderr)
    db = hannoy.Database(path, ds["metric"])
    r = db.reader()

    def search(q, ef):
        ids = np.empty((len(q), K), np.uint32)
        r.by_array(q, K, ef, out=(ids, np.empty((len(q), K), np.float32)),
                   threads=threads if len(q) > 1 else 1)
        return ids

    def close():
        r.close()
        db.close()

    c = Config("unsharded", None, False, build_s, cpu, [len(base)], search, close)
    c.build_load = load0
    return c


def build_sharded(ds, a, shards, client, label, cpu_client):
    import hannoy.dask as hd

    path = os.path.join(a.work, "sharded-%d-%s" % (shards, "cluster" if client is not None else "threads"))
    shutil.rmtree(path, ignore_errors=True)
    load0, cpu0, t = os.getloadavg()[0], cluster_cpu(cpu_client), time.perf_counter()
    idx = hd.build(ds["base"], path, metric=ds["metric"], shards=shards, m=a.m, ef=a.ef_construction,
                   client=client)
    build_s, cpu = time.perf_counter() - t, cluster_cpu(cpu_client) - cpu0
    sizes = idx.shard_lengths()
    assert sum(sizes) == len(ds["base"]), sizes
    print("  %s: build %.2f s (%.1f CPU s), load %.1f, shards of %s items"
          % (label, build_s, cpu, load0, sizes), file=sys.stderr)
    c = Config(label, shards, client is not None, build_s, cpu, sizes,
               lambda q, ef: idx.by_array(q, n=K, ef_search=ef)[0], idx.close)
    c.build_load = load0
    return c


def measure(configs, ds, a):
    """Per ef, in rounds that take every configuration in turn (so that the load of the machine,
    which changes over minutes, falls on all of them alike): batch passes over all queries and
    one-query calls. Per configuration: the best batch pass, recall, the median call."""
    queries = ds["queries"]
    per_round = max(a.min_time / a.rounds, 0.0)
    calls_per_round = max(1, a.calls // a.rounds)
    for ef in a.efs:
        for c in configs:
            c.search(queries[:100], ef)  # warm up (opens readers, touches pages)
        best = {c.label: float("inf") for c in configs}
        passes = {c.label: 0 for c in configs}
        calls = {c.label: [] for c in configs}
        loads = []
        found = {}
        for rnd in range(a.rounds):
            loads.append(os.getloadavg()[0])
            for c in configs:
                spent = 0.0
                while spent < per_round or spent == 0.0:
                    t = time.perf_counter()
                    found[c.label] = c.search(queries, ef)
                    dt = time.perf_counter() - t
                    best[c.label] = min(best[c.label], dt)
                    passes[c.label] += 1
                    spent += dt
                for i in range(calls_per_round):
                    q = queries[(rnd * calls_per_round + i) % len(queries)][None, :]
                    t = time.perf_counter()
                    c.search(q, ef)
                    calls[c.label].append(time.perf_counter() - t)
        for c in configs:
            rec = datasets.recall(found[c.label], ds["gt_dist"], ds["base"], queries, ds["gt_metric"], K)
            call = statistics.median(calls[c.label])
            c.efs[ef] = {"ef": ef, "batch_s": best[c.label], "passes": passes[c.label],
                         "qps": len(queries) / best[c.label], "recall": rec, "call_s": call,
                         "calls": len(calls[c.label]), "loadavg_rounds": loads}
            print("    ef %d, %s: %.0f queries/s, recall %.4f, one-query call %.2f ms"
                  % (ef, c.label, len(queries) / best[c.label], rec, call * 1e3), file=sys.stderr)


def noop(x):
    return x


def fanout_cost(client, counts, calls):
    """Median seconds of submitting k no-op tasks (task s on worker s % workers) and gathering."""
    workers = sorted(client.nthreads())
    out = {}
    for k in counts:
        times = []
        for i in range(calls):
            t = time.perf_counter()
            fs = [client.submit(noop, s, pure=False, workers=[workers[s % len(workers)]],
                                allow_other_workers=True) for s in range(k)]
            client.gather(fs)
            times.append(time.perf_counter() - t)
        out[str(k)] = statistics.median(times)
    return out


def main(argv=None):
    a = parse_args(argv)
    if a.report:
        with open(a.report) as f:
            data = json.load(f)
        write_md(data, a.report[: -len(".json")] + ".md")
        return 0
    import dask
    import distributed

    import hannoy
    from bench import machine_info

    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    meta = datasets.prepare(a.dataset, a.data_dir)
    if meta["metric"] not in ("euclidean", "cosine"):
        raise SystemExit("--dataset: a float data set (euclidean or cosine), got %s" % meta["metric"])
    ds = {
        "base": datasets.load(meta["dir"], "base"),
        "queries": datasets.load(meta["dir"], "queries"),
        "gt_dist": datasets.load(meta["dir"], "gt_dist"),
        "metric": meta["metric"],
        "gt_metric": meta["gt_metric"],
    }
    threads = a.workers * a.threads_per_worker
    data = {
        "dataset": {k: meta[k] for k in ("name", "description", "metric", "n_base", "n_queries", "dims")},
        "params": {"m": a.m, "ef_construction": a.ef_construction, "k": K, "efs": a.efs,
                   "workers": a.workers, "threads_per_worker": a.threads_per_worker,
                   "min_time": a.min_time, "calls": a.calls, "rounds": a.rounds},
        "machine": machine_info(),
        "versions": {"hannoy": hannoy.__version__, "dask": dask.__version__,
                     "distributed": distributed.__version__, "numpy": np.__version__},
    }
    print("%s: %d x %d, %d queries" % (a.dataset, meta["n_base"], meta["dims"], meta["n_queries"]),
          file=sys.stderr)
    cluster = client = None
    configs = []
    try:
        cluster = distributed.LocalCluster(
            processes=True, n_workers=a.workers, threads_per_worker=a.threads_per_worker,
            dashboard_address=None, silence_logs=logging.CRITICAL,
        )
        client = distributed.Client(cluster, set_as_default=False)
        client.wait_for_workers(a.workers)
        data["fanout_s"] = fanout_cost(client, a.shards, max(20, a.calls // 2))
        # builds one after the other (the CPU seconds are those of every process involved) ...
        configs.append(build_unsharded(ds, a, threads, client))
        for k in a.local_shards:
            configs.append(build_sharded(ds, a, k, None, "%d shards, threads (no cluster)" % k, client))
        for k in a.shards:
            configs.append(build_sharded(ds, a, k, client, "%d shard%s, LocalCluster" % (k, "s" * (k > 1)),
                                         client))
        # ... then the queries, every configuration in turn
        measure(configs, ds, a)
    finally:
        for c in configs:
            c.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(a.work, ignore_errors=True)
    data["machine"]["loadavg_end"] = os.getloadavg()
    data["runs"] = [{"config": c.label, "shards": c.shards, "cluster": c.cluster, "build_s": c.build_s,
                     "build_cpu_s": c.build_cpu_s, "build_loadavg": c.build_load, "shard_sizes": c.sizes,
                     "efs": [c.efs[ef] for ef in a.efs]} for c in configs]
    path = os.path.join(a.out, "dask-%s.json" % a.dataset)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    write_md(data, path[: -len(".json")] + ".md")
    print("wrote %s and .md" % path, file=sys.stderr)
    return 0


def write_md(data, path):
    d, p, m = data["dataset"], data["params"], data["machine"]
    base = data["runs"][0]
    base_ef = {r["ef"]: r for r in base["efs"]}
    threads = p["workers"] * p["threads_per_worker"]
    lines = [
        "# hannoy.dask: sharded on a Dask LocalCluster vs one index — %s" % d["name"],
        "",
        "%s (%s base vectors, %s queries, %d-d, %s). M=%d, ef_construction=%d, k=%d. LocalCluster: "
        "%d worker processes x %d thread%s; the unsharded index is built and searched with %d threads "
        "in one process (no Dask)." % (d["description"], format(d["n_base"], ","), format(d["n_queries"], ","),
                                       d["dims"], d["metric"], p["m"], p["ef_construction"], p["k"],
                                       p["workers"], p["threads_per_worker"], "s" * (p["threads_per_worker"] > 1),
                                       threads),
        "",
        "Machine: %s, %s cores, %s; %s UTC; repository commit %s; load average %.1f at the start, %.1f at "
        "the end. Versions: hannoy %s, dask %s, distributed %s, numpy %s."
        % (m["cpu"], m["cores"], m["os"], m["date"], m.get("repo_commit") or "?", m["loadavg_start"][0],
           m.get("loadavg_end", [float("nan")])[0], data["versions"]["hannoy"], data["versions"]["dask"],
           data["versions"]["distributed"], data["versions"]["numpy"]),
        "",
        "## Build",
        "",
        "| configuration | build s | vs unsharded | CPU s, every process | load average at the start "
        "| items per shard |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for r in data["runs"]:
        lines.append("| %s | %.2f | %.2fx | %.1f | %.1f | %s |" % (
            r["config"], r["build_s"], r["build_s"] / base["build_s"], r["build_cpu_s"], r["build_loadavg"],
            ", ".join(format(x, ",") for x in r["shard_sizes"])))
    lines += [
        "",
        "The builds ran one after the other, so the machine's load differed between them (column 5); the "
        "CPU seconds (this process, which is also the client and the scheduler, plus the workers) depend "
        "on it less. Sharded builds include splitting the array in the client and sending each shard's "
        "rows to its worker. One shard on the cluster builds on one worker, i.e. on %d thread%s."
        % (p["threads_per_worker"], "s" * (p["threads_per_worker"] > 1)),
        "",
        "## Queries",
        "",
        "Batch: all queries in one call (`idx.by_array(Q, n=10, ef_search=ef)`; unsharded: "
        "`reader.by_array(..., threads=%d)`), the best of passes adding up to at least %.1f s. One-query "
        "call: the median of %d calls with one query each (unsharded: `by_array` with one query). Both in "
        "%d rounds taking every configuration in turn. Overhead per query: 1/QPS − 1/QPS(unsharded); per "
        "call: the one-query call − the unsharded one."
        % (threads, p["min_time"], p["calls"], p.get("rounds", 1)),
        "",
        "| configuration | ef_search | batch queries/s | recall@10 | overhead µs per query (batch) "
        "| one-query call ms | overhead ms per call |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in data["runs"]:
        for e in r["efs"]:
            b = base_ef[e["ef"]]
            over_q = (1 / e["qps"] - 1 / b["qps"]) * 1e6
            over_c = (e["call_s"] - b["call_s"]) * 1e3
            same = r is base
            lines.append("| %s | %d | %.0f | %.4f | %s | %.3f | %s |" % (
                r["config"], e["ef"], e["qps"], e["recall"], "–" if same else "%+.0f" % over_q,
                e["call_s"] * 1e3, "–" if same else "%+.2f" % over_c))
    loads = [x for e in base["efs"] for x in e.get("loadavg_rounds", [])]
    if loads:
        lines += ["", "Load average during the query rounds: %.1f to %.1f." % (min(loads), max(loads))]
    if data.get("fanout_s"):
        lines += [
            "",
            "Dask's own cost of a fan-out on this cluster (submit k no-op tasks, one per shard's worker, "
            "gather; median): "
            + ", ".join("%s task%s %.2f ms" % (k, "s" * (int(k) > 1), v * 1e3) for k, v in data["fanout_s"].items())
            + ".",
        ]
    lines += [
        "",
        "Caveats: the machine's cores are shared with other work (the load average is above); the",
        "client, the scheduler and the workers all run on them, so the cluster rows pay for",
        "serialisation and scheduling on the cores that search. Compare rows of one run.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
