#!/usr/bin/env python3
"""Benchmark driver: this hannoy against upstream hannoy 0.1.3, hnswlib, usearch and faiss.

Run through bench/run.sh, which sets up bench/.venv first. Two modes, both run by default:

  numpy           for every data set and library, the library's build and its queries in separate
                  processes (runners/), the returned ids scored against exact neighbours;
                  -> <out>/<dataset>.json, .md, .png and <out>/SUMMARY.md
  upstream-style  ours and upstream hannoy as upstream's README uses them: add_item(i, list) in a
                  loop, then by_vec(list) per query, beside the numpy-mode calls of the same run
                  (upstream_style.py); -> <out>/upstream-style-<dataset>.json, upstream-style.md

  python bench/bench.py                        # both modes, every data set, every library
  python bench/bench.py --quick                # CI smoke test: small subset, ours vs hnswlib, and
                                               # the upstream-style mode, ours vs upstream
  python bench/bench.py --datasets sift-5k --libs upstream,hnswlib --modes numpy
  python bench/bench.py --modes upstream-style # only the upstream-style mode
"""

import argparse
import datetime
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np

import datasets
import report
import upstream_style
from runners import HANNOY_LIBS, LIBS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".cache", "work")
EFS = [10, 20, 40, 80, 160, 320]
MODES = ("numpy", upstream_style.MODE)
PARAMS = {"M": 16, "M0": 32, "ef_construction": 96}

try:
    from tqdm import tqdm
except ImportError:  # the harness still runs, without a bar
    tqdm = None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="CI mode: fashion-mnist-quick (testdata/, 2,000 base, 50 queries), ours and hnswlib, "
                        "ef 10 and 40; exits non-zero if anything fails")
    p.add_argument("--datasets", help="comma-separated, 'all' for every known one (default: %s)"
                   % ",".join(datasets.DEFAULT))
    p.add_argument("--libs", help="comma-separated subset of %s (default: all; the upstream-style mode "
                   "runs for the hannoy ones)" % ",".join(LIBS))
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of %s (default: both)"
                   % ",".join(MODES))
    p.add_argument("--style-datasets", help="data sets of the upstream-style mode (default: %s; quick: %s)"
                   % (",".join(upstream_style.DEFAULT_DATASETS), ",".join(upstream_style.QUICK_DATASETS)))
    p.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"),
                   help="folder holding fashion-mnist/ and sift-ngt-5k/ (default: ../shared/data from the repository root)")
    p.add_argument("--out", help="output folder (default: bench/results, or bench/.cache/results-quick with --quick)")
    p.add_argument("--ef", help="comma-separated ef_search values (default: %s)" % ",".join(map(str, EFS)))
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="threads for builds and batch queries (default 2)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of repeated timed passes per measurement (default 1, quick 0.2)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per step")
    p.add_argument("--no-incremental", action="store_true", help="skip hannoy's incremental (99%% + 1%%) build")
    p.add_argument("--keep-indexes", action="store_true", help="keep the built indexes in bench/.cache/work")
    p.add_argument("--strict", action="store_true", help="exit non-zero when any step fails (implied by --quick)")
    a = p.parse_args(argv)
    a.libs_given = bool(a.libs)
    a.libs = a.libs.split(",") if a.libs else (["ours", "hnswlib"] if a.quick else list(LIBS))
    a.modes = a.modes.split(",")
    if [m for m in a.modes if m not in MODES]:
        p.error("unknown mode in --modes %s; known: %s" % (",".join(a.modes), ",".join(MODES)))
    a.style_datasets = (a.style_datasets.split(",") if a.style_datasets
                        else upstream_style.QUICK_DATASETS if a.quick else upstream_style.DEFAULT_DATASETS)
    for name in a.style_datasets:
        try:
            if datasets.split_name(name)[1]:
                p.error("--style-datasets: %s is not a float data set" % name)
        except ValueError as e:
            p.error(str(e))
    unknown = [x for x in a.libs if x not in LIBS]
    if unknown:
        p.error("unknown library %s; known: %s" % (", ".join(unknown), ", ".join(LIBS)))
    if a.datasets == "all":
        a.datasets = datasets.DEFAULT
    elif a.datasets:
        a.datasets = a.datasets.split(",")
    else:
        a.datasets = ["fashion-mnist-quick"] if a.quick else datasets.DEFAULT
    for name in a.datasets:
        try:
            datasets.split_name(name)
        except ValueError as e:
            p.error(str(e))
    a.efs = [int(x) for x in a.ef.split(",")] if a.ef else ([10, 40] if a.quick else EFS)
    a.min_time = a.min_time if a.min_time is not None else (0.2 if a.quick else 1.0)
    if not a.out:
        a.out = os.path.join(HERE, ".cache", "results-quick") if a.quick else os.path.join(HERE, "results")
    a.strict = a.strict or a.quick
    return a


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx2": " avx2" in flags,
        "memory_bytes": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
        "repo_commit": commit.stdout.strip() or None,
    }


def run_worker(lib, phase, args, a, extra_env=None):
    """Run one phase of a runner in a fresh process; -> (result dict, error string or None).
    extra_env: variables to set in the process (over the thread counts)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "runners." + LIBS[lib], phase] + args
    try:
        proc = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {}, "%s %s: timed out after %.0f s" % (lib, phase, a.timeout)
    res = {}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                res = json.loads(line)
            except ValueError:
                pass
            break
    if proc.returncode != 0 or "error" in res or not res:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        why = res.get("error") or "exit status %d" % proc.returncode
        return res, "%s %s: %s\n%s" % (lib, phase, why, tail)
    return res, None


class Progress:
    def __init__(self, total):
        self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=1.0) if tqdm else None

    def step(self, what, n=0):
        """Show what runs now (what != ""), or count n finished steps."""
        if self.bar:
            if what:
                self.bar.set_description(what, refresh=False)
            self.bar.update(n)
            if what:
                self.bar.refresh()
        elif what:
            print("..", what, flush=True)

    def write(self, msg):
        (self.bar.write if self.bar else print)(msg)

    def close(self):
        if self.bar:
            self.bar.close()


def plan(a, metrics_of):
    """Steps per (data set, library): build + query (+ incremental for hannoy on float sets)."""
    steps = {}
    for name in a.datasets:
        metric = datasets.metric_of(name)
        for lib in a.libs:
            if metric in metrics_of[lib]:
                n = 2 + (lib in HANNOY_LIBS and incremental_for(name, a))
                steps[(name, lib)] = n
    return steps


def incremental_for(name, a):
    return not a.no_incremental and datasets.split_name(name)[1] == ""


def score(ids_file, ds, a):
    """recall@k of every id array in an npz written by a runner."""
    out = {}
    with np.load(ids_file) as z:
        for key in z.files:
            out[key] = datasets.recall(z[key], ds["gt_dist"], ds["base"], ds["queries"], ds["gt_metric"], a.k)
    return out


def bench_library(lib, meta, ds, a, prog):
    res = {"errors": []}
    work = os.path.join(WORK, meta["name"], lib)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    index = os.path.join(work, "index" if lib in HANNOY_LIBS else "index.bin")
    common = ["--data", meta["dir"], "--k", str(a.k), "--threads", str(a.threads)]
    try:
        prog.step("%s: %s build" % (meta["name"], lib))
        res["build"], err = run_worker(lib, "build", common + ["--index", index], a)
        prog.step("", 1)
        if err:
            res["errors"].append(err)
            prog.step("", 1 + (lib in HANNOY_LIBS and incremental_for(meta["name"], a)))
            return res
        prog.step("%s: %s query" % (meta["name"], lib))
        ids = os.path.join(work, "ids.npz")
        q, err = run_worker(lib, "query", common + ["--index", index, "--ids", ids, "--efs", ",".join(map(str, a.efs)),
                                                   "--min-time", str(a.min_time)], a)
        prog.step("", 1)
        if err:
            res["errors"].append(err)
        else:
            recalls = score(ids, ds, a)
            for mode, per_ef in q["modes"].items():
                for ef, m in per_ef.items():
                    m["recall"] = recalls["%s_ef%s" % (mode, ef)]
            res["query"] = q
        if lib in HANNOY_LIBS and incremental_for(meta["name"], a):
            prog.step("%s: %s incremental" % (meta["name"], lib))
            incr_ef = 80 if 80 in a.efs else a.efs[-1]
            ids = os.path.join(work, "incr_ids.npz")
            inc, err = run_worker(lib, "incremental", common + ["--index", os.path.join(work, "incr"), "--ids", ids,
                                                                 "--incr-ef", str(incr_ef)], a)
            prog.step("", 1)
            if err:
                res["errors"].append(err)
            else:
                inc["recall"] = score(ids, ds, a)["incr_ef%d" % incr_ef]
                res["incremental"] = inc
    finally:
        if not a.keep_indexes:
            shutil.rmtree(work, ignore_errors=True)
    return res


def main(argv=None):
    a = parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    machine = machine_info()
    failures = []

    # Which libraries import here, and their versions (each in its own process, like the runs).
    versions, metrics_of = {}, {}
    numpy_libs = a.libs if "numpy" in a.modes else []
    style_libs = upstream_style.libs_of(a) if upstream_style.MODE in a.modes else []
    for lib in numpy_libs + [x for x in style_libs if x not in numpy_libs]:
        mod = importlib.import_module("runners." + LIBS[lib])
        metrics_of[lib] = next(v.METRICS for v in vars(mod).values()
                               if isinstance(v, type) and v.__module__ == mod.__name__ and hasattr(v, "METRICS"))
        info, err = run_worker(lib, "version", [], a)
        if err:
            msg = "%s: not available, skipped (%s). bash bench/run.sh installs it; see its output." % (
                lib, info.get("error") or err.splitlines()[0])
            print(msg, file=sys.stderr)
            failures.append(msg)
            metrics_of[lib] = ()
        else:
            versions[lib] = info["version"]
    print("libraries: %s" % ", ".join("%s %s" % kv for kv in versions.items()) or "none", file=sys.stderr)

    results = numpy_mode(a, machine, versions, metrics_of, failures) if numpy_libs else []
    style_failures = upstream_style.run(sys.modules[__name__], a, versions) if style_libs else []
    failures += style_failures
    if failures:
        print("\n%d problem(s):\n  %s" % (len(failures), "\n  ".join(failures)), file=sys.stderr)
    ran = results or (style_libs and not style_failures)
    return 1 if (a.strict and (failures or not ran)) else 0


def numpy_mode(a, machine, versions, metrics_of, failures):
    """The numpy mode over a.datasets and a.libs; -> the results written (problems go to failures)."""
    steps = plan(a, metrics_of)
    prog = Progress(sum(steps.values()) + len(a.datasets))
    results = []
    for name in a.datasets:
        prog.step("%s: data + exact neighbours" % name)
        try:
            meta = datasets.prepare(name, a.data_dir)
        except datasets.DataUnavailable as e:
            msg = "%s: data not here, skipped: %s" % (name, e)
            prog.write(msg)
            failures.append(msg)
            prog.step("", 1 + sum(n for (d, _), n in steps.items() if d == name))
            continue
        prog.step("", 1)
        ds = {"base": datasets.load(meta["dir"], "base"), "queries": datasets.load(meta["dir"], "queries"),
              "gt_dist": datasets.load(meta["dir"], "gt_dist"), "gt_metric": meta["gt_metric"]}
        result = {
            "dataset": {k: v for k, v in meta.items() if k != "dir"},
            "machine": machine,
            "params": dict(PARAMS, ef_search=a.efs, k=a.k, threads=a.threads, min_time=a.min_time,
                           recall="recall@%d, ties counted (ann-benchmarks)" % a.k),
            "libs": {},
            "skipped": {},
        }
        for lib in a.libs:
            if (name, lib) not in steps:
                result["skipped"][lib] = ("not available" if lib not in versions
                                          else "metric %s not supported" % meta["metric"])
                continue
            r = bench_library(lib, meta, ds, a, prog)
            r["version"] = versions[lib]
            for err in r["errors"]:
                prog.write("FAILED " + err)
                failures.append(err.splitlines()[0])
            result["libs"][lib] = r
        machine["loadavg_end"] = os.getloadavg()
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(result, f, indent=1)
        report.write_dataset(a.out, result)
        results.append(result)
    prog.close()
    if results:
        report.write_summary(a.out, results)
        print("results in %s (SUMMARY.md, <dataset>.md/.json/.png)" % a.out, file=sys.stderr)
    return results


if __name__ == "__main__":
    sys.exit(main())
