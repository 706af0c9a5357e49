"""The upstream-style mode of the benchmark (bench.py --modes upstream-style; part of every full
and --quick run): what upstream hannoy's README shows a user doing, for ours and upstream 0.1.3,
beside the numpy mode measured in the same run.

For each data set (default fashion-mnist and glove-50; --quick: fashion-mnist-quick) and each
hannoy library, three fresh processes (runners/hannoy_lists.py and runners/common.py):

  1. lists-build  lists from `ndarray.tolist()` before timing; `with db.writer(d, m=16, ef=96)`
                  and `writer.add_item(i, list)` in a loop; the loop, the build + commit and both
                  together timed; struct.pack of the same lists as the floor of list conversion
  2. build        the numpy mode's build (add_items of the float32 array, --threads threads) into
                  a second index, only for its time beside step 1
  3. lists-query  on the index of step 1, with RAYON_NUM_THREADS=1: per ef_search, single
                  queries `reader.by_vec(list, n=k, ef_search=ef)` in a loop, the same with float32
                  ndarray rows (the numpy mode's single-query loop) and by_array on one thread;
                  struct.pack of the query lists

The driver scores the returned ids (recall@k, ties counted) and writes
<out>/upstream-style-<set>.json, then rebuilds <out>/upstream-style.md from every
upstream-style-*.json there (report.write_upstream_style).
"""

import json
import os
import shutil
import sys

import numpy as np

import datasets
import report
from runners import HANNOY_LIBS

DEFAULT_DATASETS = ["fashion-mnist", "glove-50"]
QUICK_DATASETS = ["fashion-mnist-quick"]
MODE = "upstream-style"


def libs_of(a):
    """The hannoy libraries the mode runs for: ours and upstream, or those of an explicit --libs."""
    return [lib for lib in (a.libs if a.libs_given else HANNOY_LIBS) if lib in HANNOY_LIBS]


def steps_per_lib():
    return 3


def bench_library(bench, lib, meta, ds, a, prog):
    res = {"errors": []}
    work = os.path.join(bench.WORK, MODE, meta["name"], lib)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    common = ["--data", meta["dir"], "--k", str(a.k), "--threads", str(a.threads), "--min-time", str(a.min_time)]
    lists_index, numpy_index = os.path.join(work, "lists"), os.path.join(work, "numpy")
    try:
        prog.step("%s (%s): %s add_item loop + build" % (meta["name"], MODE, lib))
        res["lists_build"], err = bench.run_worker(lib, "lists-build", common + ["--index", lists_index], a)
        prog.step("", 1)
        if err:
            res["errors"].append(err)
            prog.step("", 2)
            return res
        prog.step("%s (%s): %s numpy-mode build" % (meta["name"], MODE, lib))
        res["numpy_build"], err = bench.run_worker(lib, "build", common + ["--index", numpy_index], a)
        shutil.rmtree(numpy_index, ignore_errors=True)
        prog.step("", 1)
        if err:
            res["errors"].append(err)
        prog.step("%s (%s): %s by_vec loops" % (meta["name"], MODE, lib))
        ids = os.path.join(work, "ids.npz")
        q, err = bench.run_worker(lib, "lists-query", common + ["--index", lists_index, "--ids", ids,
                                                               "--efs", ",".join(map(str, a.efs))], a,
                                  extra_env={"RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        prog.step("", 1)
        if err:
            res["errors"].append(err)
        else:
            with np.load(ids) as z:
                for mode, per_ef in q["modes"].items():
                    for ef, m in per_ef.items():
                        m["recall"] = datasets.recall(z["%s_ef%s" % (mode, ef)], ds["gt_dist"], ds["base"],
                                                      ds["queries"], ds["gt_metric"], a.k)
            res["query"] = q
    finally:
        if not a.keep_indexes:
            shutil.rmtree(work, ignore_errors=True)
    return res


def run(bench, a, versions):
    """Run the mode; -> list of problems (one line each). `bench` is the driver module (bench.py:
    run_worker, machine_info, Progress); libraries missing from `versions` did not import, which
    the driver has reported already."""
    libs = [lib for lib in libs_of(a) if lib in versions]
    failures = []
    if not libs:
        print("%s: no hannoy library to run, skipped" % MODE, file=sys.stderr)
        return failures
    machine = bench.machine_info()
    prog = bench.Progress(len(a.style_datasets) * (1 + steps_per_lib() * len(libs)))
    for name in a.style_datasets:
        prog.step("%s (%s): data + exact neighbours" % (name, MODE))
        try:
            meta = datasets.prepare(name, a.data_dir)
        except datasets.DataUnavailable as e:
            msg = "%s (%s): data not here, skipped: %s" % (name, MODE, e)
            prog.write(msg)
            failures.append(msg)
            prog.step("", 1 + steps_per_lib() * len(libs))
            continue
        prog.step("", 1)
        ds = {"base": datasets.load(meta["dir"], "base"), "queries": datasets.load(meta["dir"], "queries"),
              "gt_dist": datasets.load(meta["dir"], "gt_dist"), "gt_metric": meta["gt_metric"]}
        result = {
            "mode": MODE,
            "dataset": {k: v for k, v in meta.items() if k != "dir"},
            "machine": dict(machine, loadavg_start=os.getloadavg()),
            "params": dict(bench.PARAMS, ef_search=a.efs, k=a.k, threads=a.threads, min_time=a.min_time,
                           recall="recall@%d, ties counted (ann-benchmarks)" % a.k),
            "libs": {},
            "skipped": {},
        }
        for lib in libs_of(a):
            if lib not in versions:
                result["skipped"][lib] = "not available"
                continue
            r = bench_library(bench, lib, meta, ds, a, prog)
            r["version"] = versions[lib]
            for err in r["errors"]:
                prog.write("FAILED %s: %s" % (MODE, err))
                failures.append("%s: %s" % (MODE, err.splitlines()[0]))
            result["libs"][lib] = r
        result["machine"]["loadavg_end"] = os.getloadavg()
        with open(os.path.join(a.out, "%s-%s.json" % (MODE, name)), "w") as f:
            json.dump(result, f, indent=1)
        report.write_upstream_style(a.out)
    prog.close()
    print("%s results in %s (%s.md, %s-<dataset>.json)" % (MODE, a.out, MODE, MODE), file=sys.stderr)
    return failures
