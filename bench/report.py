#!/usr/bin/env python3
"""Reports from the raw results: <dataset>.md tables, <dataset>.png recall-vs-QPS plots and
SUMMARY.md with the project's target ratios (each marked PASS or MISS); upstream-style.md from the
upstream-style mode's upstream-style-<dataset>.json files.

bench.py calls it after each run; `python bench/report.py [folder]` rebuilds the reports from the
JSON files in a folder (default bench/results).
"""

import glob
import json
import math
import os
import sys

MiB = 1 << 20
TARGET_RECALL = 0.95
ORDER = ["ours", "upstream", "hnswlib", "usearch", "faiss"]
COLORS = {"ours": "tab:red", "upstream": "tab:orange", "hnswlib": "tab:blue", "usearch": "tab:green",
          "faiss": "tab:purple"}


# --- figures --------------------------------------------------------------------------------------


def libs_of(result):
    return sorted(result["libs"], key=lambda x: ORDER.index(x) if x in ORDER else 99)


def curve(lib, mode):
    """[(ef, recall, qps)] of one library and query mode ("single", "batch2", "batch1")."""
    per_ef = lib.get("query", {}).get("modes", {}).get(mode, {})
    return sorted((int(ef), m["recall"], m["qps"]) for ef, m in per_ef.items())


def batch_mode(result):
    return "batch%d" % result["params"]["threads"]


def qps_at_recall(points, target=TARGET_RECALL):
    """QPS at a recall, interpolated (log QPS, linear in recall) on the Pareto frontier of
    (recall, QPS) points. None when the curve never reaches the target; when every point is above
    it, the fastest point's QPS (a lower bound: see above_target)."""
    pts = sorted(((r, q) for _, r, q in points), key=lambda p: (-p[0], -p[1]))
    frontier, best = [], 0.0
    for r, q in pts:  # from high recall down: keep points faster than every better-recall point
        if q > best:
            frontier.append((r, q))
            best = q
    frontier.reverse()  # ascending recall, descending QPS
    if not frontier or frontier[-1][0] < target:
        return None
    if frontier[0][0] >= target:
        return frontier[0][1]
    for (r0, q0), (r1, q1) in zip(frontier, frontier[1:]):
        if r0 <= target <= r1:
            t = (target - r0) / (r1 - r0) if r1 > r0 else 1.0
            return math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0)))
    return None


def above_target(points, target=TARGET_RECALL):
    """True when even the lowest ef_search beats the target recall (QPS there is a lower bound)."""
    return bool(points) and min(r for _, r, _ in points) > target


def fmt_at(points):
    q = qps_at_recall(points)
    return ("≥ " if q is not None and above_target(points) else "") + fmt(q)


def fmt(x, nd=0, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float) and nd == 0 and abs(x) < 10:
        nd = 2
    return ("{:,.%df}" % nd).format(x) + unit


def mib(x):
    return None if x is None else x / MiB


# --- per data set ---------------------------------------------------------------------------------


def dataset_markdown(result):
    d, p, m = result["dataset"], result["params"], result["machine"]
    bm = batch_mode(result)
    lines = [
        "# %s" % d["name"],
        "",
        "%s. Metric **%s**; %s base vectors, %s queries, %d dimensions. "
        "Ground truth: exact neighbours by brute force (%s distance)."
        % (d["description"], d["metric"], fmt(d["n_base"]), fmt(d["n_queries"]), d["dims"], d["gt_metric"]),
        "",
        "Parameters for every library: M=%d (M0=%d), ef_construction=%d, k=%d, builds and batch queries on "
        "%d threads; %s; QPS = best of repeated passes (%.1f s each measurement)."
        % (p["M"], p["M0"], p["ef_construction"], p["k"], p["threads"], p["recall"], p["min_time"]),
        "Machine: %s, %d cores, %s; %s UTC; load average %.1f at start."
        % (m["cpu"], m["cores"], m["os"], m["date"], m["loadavg_start"][0]),
        "",
        "## Build, size and memory",
        "",
        "| library | version | build call | build s (CPU s) | build peak RSS MiB (after data load) | disk MiB | "
        "query process peak RSS MiB (before open) | open s | +1% incremental s (full build s) | "
        "recall after incremental |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in libs_of(result):
        lib = result["libs"][name]
        b, q, inc = lib.get("build", {}), lib.get("query", {}), lib.get("incremental")
        incr = "–"
        if inc:
            incr = "%s (%s)" % (fmt(inc["incr_s"], 2), fmt(b.get("build_s"), 2))
        lines.append("| %s | %s | %s | %s (%s) | %s (%s) | %s | %s (%s) | %s | %s | %s |" % (
            name, lib.get("version", "?"), b.get("api", "–"), fmt(b.get("build_s"), 2), fmt(b.get("build_cpu_s"), 1),
            fmt(mib(b.get("rss_peak")), 1), fmt(mib(b.get("rss_loaded")), 1), fmt(mib(b.get("disk_bytes")), 2),
            fmt(mib(q.get("rss_peak")), 1), fmt(mib(q.get("rss_idle")), 1), fmt(q.get("open_s"), 3), incr,
            fmt(inc["recall"], 3) + " (ef %d)" % inc["incr_ef"] if inc else "–"))
    lines += [
        "",
        "## Recall and queries per second",
        "",
        "Single = a Python loop of one query per call; batch = one call with every query "
        "(%s threads; 1 thread for ours as well)." % p["threads"],
        "",
        "| library | batch call | ef_search | recall@%d | QPS single | QPS batch %d thr | QPS batch 1 thr |"
        % (p["k"], p["threads"]),
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for name in libs_of(result):
        lib = result["libs"][name]
        q = lib.get("query")
        if not q:
            continue
        modes = q["modes"]
        for ef in p["ef_search"]:
            s = modes.get("single", {}).get(str(ef), {})
            b2 = modes.get(bm, {}).get(str(ef), {})
            b1 = modes.get("batch1", {}).get(str(ef), {}) if bm != "batch1" else {}
            lines.append("| %s | %s | %d | %s | %s | %s | %s |" % (
                name, q.get("batch_api") or "none", ef, fmt(s.get("recall"), 3), fmt(s.get("qps")),
                fmt(b2.get("qps")), fmt(b1.get("qps"))))
    lines += ["", "## QPS at recall@%d = %.2f" % (p["k"], TARGET_RECALL), "",
              "Interpolated on each curve; ≥ marks a curve whose lowest ef_search is already above it.", "",
              "| library | single | batch %d thr |" % p["threads"], "|---|--:|--:|"]
    for name in libs_of(result):
        lib = result["libs"][name]
        if lib.get("query"):
            lines.append("| %s | %s | %s |" % (name, fmt_at(curve(lib, "single")), fmt_at(curve(lib, bm))))
    notes = ["- %s: skipped, %s" % kv for kv in result.get("skipped", {}).items()]
    for name in libs_of(result):
        notes += ["- %s: failed: `%s`" % (name, e.splitlines()[0]) for e in result["libs"][name].get("errors", [])]
    if notes:
        lines += ["", "## Notes", ""] + notes
    return "\n".join(lines) + "\n"


def plot(result, path):
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot %s" % path, file=sys.stderr)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    bm = batch_mode(result)
    for name in libs_of(result):
        lib = result["libs"][name]
        for mode, style, label in (("single", "-o", "single loop"), (bm, "--s", "batch %s thr" % bm[5:]),
                                   ("batch1", ":^", "batch 1 thr")):
            if mode == "batch1" and bm == "batch1":
                continue
            pts = curve(lib, mode)
            if pts:
                ax.plot([r for _, r, _ in pts], [q for _, _, q in pts], style, color=COLORS.get(name),
                        label="%s, %s" % (name, label), markersize=4, linewidth=1.2)
    d = result["dataset"]
    ax.set_yscale("log")
    ax.set_xlabel("recall@%d" % result["params"]["k"])
    ax.set_ylabel("queries per second (log)")
    ax.set_title("%s (%s, n=%s, d=%d): M=16, ef_construction=96, ef_search %s"
                 % (d["name"], d["metric"], fmt(d["n_base"]), d["dims"],
                    "–".join(map(str, result["params"]["ef_search"][:: max(1, len(result["params"]["ef_search"]) - 1)]))),
                 fontsize=10)
    ax.axvline(TARGET_RECALL, color="grey", linewidth=0.6, linestyle=":")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_dataset(out, result):
    name = result["dataset"]["name"]
    with open(os.path.join(out, name + ".md"), "w") as f:
        f.write(dataset_markdown(result))
    plot(result, os.path.join(out, name + ".png"))


# --- targets --------------------------------------------------------------------------------------


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def targets(result):
    """Rows (what, value text, goal text, status) of the project's targets for one data set."""
    libs, bm, rows = result["libs"], batch_mode(result), []
    ours, up, hn = libs.get("ours"), libs.get("upstream"), libs.get("hnswlib")

    def row(what, value, goal, ok, text=None):
        status = "n/a" if ok is None else ("PASS" if ok else "MISS")
        rows.append((what, text if text is not None else fmt(value, 3), goal, status))

    def get(lib, *keys):
        for k in keys:
            lib = (lib or {}).get(k)
        return lib

    if not ours:
        return rows
    efs = result["params"]["ef_search"]
    s_ours = {ef: (r, q) for ef, r, q in curve(ours, "single")}
    if up:
        s_up = {ef: (r, q) for ef, r, q in curve(up, "single")}
        for ef in efs:
            v = ratio(s_ours.get(ef, (0, None))[1], s_up.get(ef, (0, None))[1])
            row("single-query QPS ours / upstream, ef=%d" % ef, v, "≥ 1.5", None if v is None else v >= 1.5)
        for ef in efs:
            ro, ru = s_ours.get(ef, (None,))[0], s_up.get(ef, (None,))[0]
            ok = None if ro is None or ru is None else ro >= ru
            row("recall ours vs upstream, ef=%d" % ef, None, "ours ≥ upstream", ok,
                "%s vs %s" % (fmt(ro, 4), fmt(ru, 4)))
    b_ours = {ef: q for ef, _, q in curve(ours, bm)}
    b1 = {ef: q for ef, _, q in curve(ours, "batch1")}
    for ef in efs:
        v = ratio(b_ours.get(ef), s_ours.get(ef, (0, None))[1])
        row("batch %s-thread QPS / single-query loop QPS (ours), ef=%d" % (bm[5:], ef), v, "≥ 1.8",
            None if v is None else v >= 1.8)
    for ef in efs:
        v = ratio(b_ours.get(ef), b1.get(ef))
        if v is not None:
            row("by_array threads=%s / threads=1 QPS (ours), ef=%d" % (bm[5:], ef), v, "(info)", None)
    if up:
        for what, keys, goal, lim in (("build time", ("build", "build_s"), "≤ 0.8", 0.8),
                                      ("peak build RSS", ("build", "rss_peak"), "≤ 1", 1.0),
                                      ("disk size", ("build", "disk_bytes"), "≤ 1.05", 1.05)):
            v = ratio(get(ours, *keys), get(up, *keys))
            row("%s ours / upstream" % what, v, goal, None if v is None else v <= lim)
    v = ratio(get(ours, "incremental", "incr_s"), get(ours, "build", "build_s"))
    if v is not None or get(ours, "incremental") is not None:
        row("incremental +1% / full build time (ours)", v, "≤ 0.10", None if v is None else v <= 0.10)
        vu = ratio(get(up, "incremental", "incr_s"), get(up, "build", "build_s"))
        if vu is not None:
            row("incremental +1% / full build time (upstream, for reference)", vu, "(info)", None)
    if hn:
        for mode, label, goal in (("single", "single-query", "≥ 0.7"), (bm, "batch", "(info)")):
            co, ch = curve(ours, mode), curve(hn, mode)
            qo, qh = qps_at_recall(co), qps_at_recall(ch)
            v, ok, text = ratio(qo, qh), None, None
            if above_target(ch):  # hnswlib's figure is only a lower bound: no fair ratio
                v, text = None, "n/a: hnswlib is above %.2f at every ef (ours %s, hnswlib %s)" % (
                    TARGET_RECALL, fmt_at(co), fmt_at(ch))
            elif qh is not None:
                ok = qo is not None and v >= 0.7
            if v is None and text is None:
                text = "ours %s, hnswlib %s" % (fmt_at(co), fmt_at(ch))
            row("%s QPS at recall %.2f ours / hnswlib" % (label, TARGET_RECALL), v, goal,
                ok if goal != "(info)" else None, text)
        ro, rh = get(ours, "query", "rss_peak"), get(hn, "query", "rss_peak")
        ok = None if ro is None or rh is None else ro < rh
        row("query-process peak RSS ours vs hnswlib", None, "ours < hnswlib", ok,
            "%s vs %s MiB" % (fmt(mib(ro), 1), fmt(mib(rh), 1)))
    return rows


def summary_markdown(results):
    m = results[0]["machine"]
    lines = [
        "# Benchmark summary",
        "",
        "One run of `bash bench/run.sh` on %s (%d cores, %s), %s UTC, repository commit %s. "
        "Load average at start %.1f. Library versions: %s."
        % (m["cpu"], m["cores"], m["os"], m["date"], m.get("repo_commit") or "?", m["loadavg_start"][0],
           ", ".join(sorted({"%s %s" % (k, v.get("version")) for r in results for k, v in r["libs"].items()}))),
        "",
        "Ratios against the project's targets, computed from this run only. Details per data set in "
        "`<dataset>.md` (tables), `<dataset>.png` (recall vs QPS) and `<dataset>.json` (raw figures).",
        "",
    ]
    counts = {"PASS": 0, "MISS": 0, "n/a": 0}
    body = []
    overview = {}  # target family -> data set -> [statuses]
    for r in results:
        rows = targets(r)
        for what, _, goal, status in rows:
            if goal != "(info)":
                overview.setdefault(what.split(", ef=")[0], {}).setdefault(r["dataset"]["name"], []).append(status)
        d = r["dataset"]
        body += ["## %s (%s, %s base, %s queries)" % (d["name"], d["metric"], fmt(d["n_base"]), fmt(d["n_queries"])), "",
                 "Load average during the steps: %s." % ", ".join(
                     "%s %s" % (lib, "/".join("%.1f" % v[p]["loadavg"] for p in ("build", "query", "incremental")
                                              if "loadavg" in v.get(p, {})))
                     for lib, v in r["libs"].items()), ""]
        if not rows:
            body += ["No figures for ours in this run (%s)." % (
                r.get("skipped", {}).get("ours") or "; ".join(r["libs"].get("ours", {}).get("errors", [])[:1])
                or "not requested"), ""]
            continue
        body += ["| target | value | goal | status |", "|---|--:|---|---|"]
        for what, value, goal, status in rows:
            if goal != "(info)":
                counts[status] += 1
            body.append("| %s | %s | %s | %s |" % (what, value, goal, status if goal != "(info)" else ""))
        body.append("")
    lines += ["**%d PASS, %d MISS, %d n/a.**" % (counts["PASS"], counts["MISS"], counts["n/a"]), ""]
    names = [r["dataset"]["name"] for r in results if any(r["dataset"]["name"] in v for v in overview.values())]
    if overview:
        lines += ["## Overview", "", "PASS count per target and data set (per-ef targets count each ef).", "",
                  "| target | %s |" % " | ".join(names), "|---|%s" % ("---|" * len(names))]
        for what, per in overview.items():
            cells = []
            for n in names:
                st = per.get(n, [])
                if not st:
                    cells.append("")
                elif len(st) == 1:
                    cells.append(st[0])
                else:
                    cells.append("%d/%d PASS" % (st.count("PASS"), len(st)))
            lines.append("| %s | %s |" % (what, " | ".join(cells)))
        lines.append("")
    lines += body
    return "\n".join(lines)


def write_summary(out, results):
    with open(os.path.join(out, "SUMMARY.md"), "w") as f:
        f.write(summary_markdown(results))


# --- upstream-style mode (upstream_style.py) -------------------------------------------------------

STYLE = "upstream-style"
# issue #14's goal for add_item per call, ours / upstream, by dimension (other dimensions: none)
ADD_ITEM_GOAL = {784: 0.8, 50: 1.0}
BY_VEC_OVERHEAD_US = 3.0  # issue #14: by_vec at most by_array(threads=1) per query + 3 µs (+ struct.pack for lists)


def style_targets(result):
    """Rows (what, ours, upstream, value text, goal text, status) of one upstream-style data set."""
    libs, rows = result["libs"], []
    ours, up = libs.get("ours", {}), libs.get("upstream", {})
    dims = result["dataset"]["dims"]

    def get(lib, *keys):
        for k in keys:
            lib = (lib or {}).get(k)
        return lib

    def row(what, o, u, goal=None, le=None, ge=None, nd=2):
        v = ratio(o, u)
        ok = None
        if v is not None and le is not None:
            ok = v <= le
        if v is not None and ge is not None:
            ok = v >= ge
        rows.append((what, fmt(o, nd), fmt(u, nd), fmt(v, 3), goal or "(info)",
                     "" if goal is None else ("n/a" if ok is None else "PASS" if ok else "MISS")))

    goal = ADD_ITEM_GOAL.get(dims)
    row("add_item µs per call (mean over the loop)", get(ours, "lists_build", "add_item_us"),
        get(up, "lists_build", "add_item_us"), goal and "≤ %s (at %d-d)" % (goal, dims), le=goal)
    row("add_item µs per call (best chunk)", get(ours, "lists_build", "add_item_us_best_chunk"),
        get(up, "lists_build", "add_item_us_best_chunk"))
    row("add_item process CPU µs per call (mean)", get(ours, "lists_build", "add_item_cpu_us"),
        get(up, "lists_build", "add_item_cpu_us"))
    row("add_item loop s", get(ours, "lists_build", "add_s"), get(up, "lists_build", "add_s"))
    row("build + commit s (after the loop)", get(ours, "lists_build", "build_s"), get(up, "lists_build", "build_s"))
    row("load + build s (loop + build + commit)", get(ours, "lists_build", "total_s"),
        get(up, "lists_build", "total_s"), "≤ 0.8", le=0.8)
    row("numpy mode: add_items + build s", get(ours, "numpy_build", "build_s"), get(up, "numpy_build", "build_s"))
    for ef in result["params"]["ef_search"]:
        e = str(ef)
        row("by_vec(list) QPS, ef=%d" % ef, get(ours, "query", "modes", "list", e, "qps"),
            get(up, "query", "modes", "list", e, "qps"), "≥ 1.5", ge=1.5, nd=0)
    for ef in result["params"]["ef_search"]:
        e = str(ef)
        ro, ru = get(ours, "query", "modes", "list", e, "recall"), get(up, "query", "modes", "list", e, "recall")
        ok = None if ro is None or ru is None else ro >= ru
        rows.append(("recall@%d by_vec(list), ef=%d" % (result["params"]["k"], ef), fmt(ro, 4), fmt(ru, 4), "",
                     "ours ≥ upstream", "n/a" if ok is None else "PASS" if ok else "MISS"))
    for ef in result["params"]["ef_search"]:
        e = str(ef)
        over = {}
        for unit in ("us", "cpu_us"):
            lst, rw, b1 = (get(ours, "query", "modes", m, e, unit) for m in ("list", "row", "batch1"))
            pack = get(ours, "query", "pack", unit)
            over["row", unit] = None if rw is None or b1 is None else rw - b1
            over["list", unit] = None if lst is None or b1 is None or pack is None else lst - b1 - pack
        for key, what in (("row", "by_vec(ndarray row) − by_array(threads=1)"),
                          ("list", "by_vec(list) − by_array(threads=1) − struct.pack")):
            v = over[key, "us"]
            ok = None if v is None else v <= BY_VEC_OVERHEAD_US
            rows.append(("%s µs per query, wall (CPU), ours, ef=%d" % (what, ef),
                         "%s (%s)" % (fmt(v, 1), fmt(over[key, "cpu_us"], 1)), "", "", "≤ %g" % BY_VEC_OVERHEAD_US,
                         "n/a" if ok is None else "PASS" if ok else "MISS"))
    return rows


def style_dataset_markdown(result):
    d, p, m = result["dataset"], result["params"], result["machine"]
    libs = libs_of(result)

    def loads(lib):
        return "/".join("%.1f" % lib[s]["loadavg"] for s in ("lists_build", "numpy_build", "query")
                        if "loadavg" in lib.get(s, {}))

    cpw = [x["cpu_per_wall"] for name in libs
           for per_ef in result["libs"][name].get("query", {}).get("modes", {}).values()
           for x in per_ef.values() if "cpu_per_wall" in x]
    lines = [
        "## %s (%s, %s base, %s queries, %d-d)"
        % (d["name"], d["metric"], fmt(d["n_base"]), fmt(d["n_queries"]), d["dims"]),
        "",
        "%s. %s UTC, repository commit %s, %s (%d cores). Load average %.1f at start, %.1f at end; "
        "per step (lists build / numpy build / queries): %s. Timed single-thread query loops ran at %s CPU/wall "
        "(1 = a core of their own)."
        % (d["description"], m["date"], m.get("repo_commit") or "?", m["cpu"], m["cores"], m["loadavg_start"][0],
           m.get("loadavg_end", [float("nan")])[0], ", ".join("%s %s" % (n, loads(result["libs"][n])) for n in libs),
           "%.2f-%.2f" % (min(cpw), max(cpw)) if cpw else "–"),
        "",
        "### Load and build",
        "",
        "`with db.writer(%d, m=%d, ef=%d) as writer:` then `writer.add_item(i, lists[i])` for every item; the "
        "build and commit happen at the end of the `with` block. add_item µs per call: mean over the loop "
        "(best and median chunk: the loop is timed in chunks of n/20 calls, at least 100). struct.pack: "
        "`struct.pack(f\"%df\", *row)` of the same lists, best pass. Numpy mode: `add_items(ids, float32 array)` "
        "with `threads=%d` for ours, in its own process, into a second index."
        % (d["dims"], p["M"], p["ef_construction"], d["dims"], p["threads"]),
        "",
        "| library | version | add_item loop s | add_item µs/call (best, median chunk) | add_item CPU µs/call "
        "(best chunk) | struct.pack µs/call | build + commit s | load + build s | numpy mode: add_items + build s | "
        "lists / numpy | CPU s loop / build | peak RSS MiB (lists alone) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in libs:
        lib = result["libs"][name]
        b, nb = lib.get("lists_build", {}), lib.get("numpy_build", {})
        lines.append("| %s | %s | %s | %s (%s, %s) | %s (%s) | %s | %s | %s | %s | %s | %s / %s | %s (%s) |" % (
            name, lib.get("version", "?"), fmt(b.get("add_s"), 2), fmt(b.get("add_item_us"), 1),
            fmt(b.get("add_item_us_best_chunk"), 1), fmt(b.get("add_item_us_median_chunk"), 1),
            fmt(b.get("add_item_cpu_us"), 1), fmt(b.get("add_item_cpu_us_best_chunk"), 1),
            fmt(b.get("pack", {}).get("us"), 2), fmt(b.get("build_s"), 2), fmt(b.get("total_s"), 2),
            fmt(nb.get("build_s"), 2), fmt(ratio(b.get("total_s"), nb.get("build_s")), 2),
            fmt(b.get("add_cpu_s"), 1), fmt(b.get("build_cpu_s"), 1), fmt(mib(b.get("rss_peak")), 0),
            fmt(mib(None if b.get("rss_lists") is None else b["rss_lists"] - b["rss_loaded"]), 0)))
    lines += [
        "",
        "### Single queries",
        "",
        "In a fresh process on the index built above, RAYON_NUM_THREADS=1. Per ef_search: %d warm-up queries, "
        "then repeated passes over every query for %.1f s, best pass. list = `reader.by_vec(q, n=%d, "
        "ef_search=ef)` with q from `tolist()`; row = the same with a float32 ndarray row (the numpy mode's "
        "single query); by_array = `by_array(Q, n=%d, ef_search=ef, out=...)` on one thread (ours "
        "`threads=1`; upstream through RAYON_NUM_THREADS=1), per query. Overheads: list − by_array − struct.pack "
        "of the query list, row − by_array. µs = wall time of the best pass per query; in parentheses the "
        "least process CPU time of a pass per query, which other work on the machine disturbs less."
        % (100, p["min_time"], p["k"], p["k"]),
        "",
        "| library | ef_search | recall@%d list | QPS list | µs list (CPU) | QPS row | µs row (CPU) | "
        "µs by_array 1 thr (CPU) | list overhead µs (CPU) | row overhead µs (CPU) |" % p["k"],
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in libs:
        q = result["libs"][name].get("query")
        if not q:
            continue
        pack = q.get("pack", {})
        for ef in p["ef_search"]:
            lst, rw, b1 = (q["modes"].get(mo, {}).get(str(ef), {}) for mo in ("list", "row", "batch1"))

            def both(x, key="us"):
                return "%s (%s)" % (fmt(x.get(key), 1), fmt(x.get("cpu_" + key), 1))

            over = {}
            for unit in ("us", "cpu_us"):
                vals = (lst.get(unit), b1.get(unit), pack.get(unit), rw.get(unit))
                over["list_" + unit] = None if None in vals[:3] else vals[0] - vals[1] - vals[2]
                over["row_" + unit] = None if None in vals[1::2] else vals[3] - vals[1]
            lines.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name, ef, fmt(lst.get("recall"), 3), fmt(lst.get("qps")), both(lst), fmt(rw.get("qps")), both(rw),
                both(b1), "%s (%s)" % (fmt(over["list_us"], 1), fmt(over["list_cpu_us"], 1)),
                "%s (%s)" % (fmt(over["row_us"], 1), fmt(over["row_cpu_us"], 1))))
    lines += ["", "struct.pack of a query list, µs (CPU): %s." % ", ".join(
        "%s %s (%s)" % (n, fmt(result["libs"][n].get("query", {}).get("pack", {}).get("us"), 2),
                        fmt(result["libs"][n].get("query", {}).get("pack", {}).get("cpu_us"), 2)) for n in libs)]
    rows = style_targets(result) if "ours" in result["libs"] and "upstream" in result["libs"] else []
    if rows:
        lines += ["", "### Ours / upstream", "",
                  "Goals from issue #14; ratios from this run only.", "",
                  "| figure | ours | upstream | ours / upstream | goal | status |", "|---|--:|--:|--:|---|---|"]
        lines += ["| %s |" % " | ".join(r) for r in rows]
    notes = ["- %s: skipped, %s" % kv for kv in result.get("skipped", {}).items()]
    for name in libs:
        notes += ["- %s: failed: `%s`" % (name, e.splitlines()[0]) for e in result["libs"][name].get("errors", [])]
    if notes:
        lines += ["", "### Notes", ""] + notes
    return "\n".join(lines) + "\n"


def style_markdown(results):
    counts = {"PASS": 0, "MISS": 0, "n/a": 0}
    for r in results:
        if "ours" in r["libs"] and "upstream" in r["libs"]:
            for row in style_targets(r):
                if row[5] in counts:
                    counts[row[5]] += 1
    lines = [
        "# Upstream-style mode: add_item and by_vec with Python lists",
        "",
        "What upstream hannoy's README shows a user doing, measured for this package and upstream hannoy 0.1.3 "
        "beside the numpy mode's calls in the same run: lists from `ndarray.tolist()` made before timing, "
        "`writer.add_item(i, list)` in a loop, the build at the end of the `with` block, then "
        "`reader.by_vec(list, n=10, ef_search=ef)` per query. Rerun: `bash bench/run.sh --modes upstream-style`; "
        "rebuild this page: `python bench/report.py bench/results`. Each data set below is one run (its own date "
        "and load); compare ratios within a data set.",
        "",
        "**Goals of issue #14: %d PASS, %d MISS, %d n/a.**" % (counts["PASS"], counts["MISS"], counts["n/a"]),
        "",
    ]
    for r in results:
        lines.append(style_dataset_markdown(r))
    return "\n".join(lines)


def write_upstream_style(out):
    """Rebuild <out>/upstream-style.md from every <out>/upstream-style-*.json; -> how many."""
    results = []
    for path in sorted(glob.glob(os.path.join(out, STYLE + "-*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    if results:
        with open(os.path.join(out, STYLE + ".md"), "w") as f:
            f.write(style_markdown(results))
    return len(results)


def main(argv):
    out = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    results = []
    def order(path):  # plain sets first, then -hamming, then -bq
        name = os.path.basename(path)[:-5]
        return (name.endswith("-bq"), name.endswith("-hamming"), name)

    for path in sorted(glob.glob(os.path.join(out, "*.json")), key=order):
        with open(path) as f:
            result = json.load(f)
        if "dataset" not in result or "libs" not in result or "mode" in result:
            continue  # not a numpy-mode result (larger-than-ram*.json: ltr.py --report)
        results.append(result)
        write_dataset(out, result)
    styles = write_upstream_style(out)
    if not results and not styles:
        print("no results in %s" % out, file=sys.stderr)
        return 1
    if results:
        write_summary(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
