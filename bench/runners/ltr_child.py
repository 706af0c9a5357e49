"""The child of the larger-than-RAM benchmark (bench/ltr.py): one library, one step, one process.

bench/ltr.py starts it inside a memory cgroup (bench/cgroup.py), from bench/:

  python -m runners.ltr_child version --lib ours
  python -m runners.ltr_child build  --lib ours --metric euclidean --base B.npy --n N --chunks 12 --index DIR
  python -m runners.ltr_child search --lib ours --metric euclidean --index DIR --queries Q.npy
                                     --efs 10,20,40 --ids-dir DIR [--per-ef-time S] [--warmup 100] [--prewarm]
  python -m runners.ltr_child cold   --lib ours --metric euclidean --index DIR --queries Q.npy
                                     --ef 40 --counts 300,1000 --ids-dir DIR

It prints one JSON object per line as it goes (flushed), so that what was measured before the
memory limit killed it, or before the parent's time limit did, is not lost:
  {"event": "ready", ...}                  after importing the library
  {"event": "chunk", "chunk": i, ...}      after each commit of a chunked build
  {"event": "ef", "ef": ef, ...}           after each ef_search of a search
  {"event": "cold", "count": c, ...}       after the first c queries of a cold start
  {"event": "done", ...}                   at the end
  {"event": "error", "error": ...}         on an exception (then exit status 1)
Times are time.monotonic() (system-wide on Linux), so the parent can line its memory samples up
with chunks. Returned ids go to --ids-dir as ef<ef>.npy (int64, rows of finished queries only),
written after each ef; the parent scores them.

The build is the same as runners/hannoy_common.py: `with db.writer(dims, m=16, ef=96) as w:
w.add_items(ids, vectors)` per chunk (a commit each); ours also gets threads=--threads. Searches
are `reader.by_vec(q, n=k, ef_search=ef)` in a Python loop.
"""

import argparse
import json
import os
import struct
import sys
import time
import traceback

import numpy as np

LMDB_MAGIC = 0xBEEFC0DE


def emit(**kw):
    print(json.dumps(kw), flush=True)


def proc_status():
    """VmHWM, VmRSS, RssAnon, RssFile of this process, in bytes."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def majflt():
    """Major page faults of this process so far (/proc/self/stat, field 12)."""
    try:
        with open("/proc/self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[9])
    except (OSError, IndexError, ValueError):
        return None


def lmdb_used_bytes(data_mdb):
    """Bytes of data.mdb that LMDB uses: (last page number + 1) x page size, from the newer of the
    two meta pages. The file can be longer (MDB_WRITEMAP grows it to the map size) or sparse.
    None when the file does not look like LMDB."""
    try:
        with open(data_mdb, "rb") as f:
            head = f.read(16 + 136)
            if len(head) < 152:
                return None
            magic, = struct.unpack_from("<I", head, 16)
            if magic != LMDB_MAGIC:
                return None
            psize, = struct.unpack_from("<I", head, 16 + 24)  # mm_dbs[FREE_DBI].md_pad = page size
            if psize < 512 or psize > (1 << 20):
                return None
            best = None
            for page in (0, 1):
                f.seek(page * psize)
                m = f.read(16 + 136)
                if len(m) < 152 or struct.unpack_from("<I", m, 16)[0] != LMDB_MAGIC:
                    continue
                last_pg, txnid = struct.unpack_from("<QQ", m, 16 + 120)
                if best is None or txnid > best[1]:
                    best = (last_pg, txnid)
            return None if best is None else (best[0] + 1) * psize
    except OSError:
        return None


def index_size(index_dir):
    """Sizes of an index directory's data.mdb: LMDB's used bytes, the file size, allocated bytes."""
    p = os.path.join(index_dir, "data.mdb")
    try:
        st = os.stat(p)
    except OSError:
        return {"used_bytes": None, "file_bytes": None, "alloc_bytes": None}
    return {"used_bytes": lmdb_used_bytes(p), "file_bytes": st.st_size, "alloc_bytes": st.st_blocks * 512}


def make_runner(lib, metric, dims, n, threads):
    if lib == "ours":
        from runners.ours import Ours as cls
    elif lib == "upstream":
        from runners.upstream import Upstream as cls
    else:
        raise ValueError("unknown library %r (ours, upstream)" % lib)
    return cls(metric, dims, n, threads)


def version_of(lib):
    from runners.ours import Ours
    from runners.upstream import Upstream

    return {"ours": Ours, "upstream": Upstream}[lib].version()


def ready(a, r):
    emit(event="ready", lib=a.lib, version=version_of(a.lib), t=time.monotonic(), pid=os.getpid(),
         memory_budget_env=os.environ.get("HANNOY_MEMORY_BUDGET"), **proc_status())


def read_rows(f, offset, dims, s, e):
    """Rows s..e of a float32 .npy (data at `offset`), read with pread; their page cache is dropped
    again (POSIX_FADV_DONTNEED), so the input file does not take up the memory under test."""
    out = np.empty((e - s, dims), np.float32)
    start, length = offset + s * dims * 4, (e - s) * dims * 4
    view, got = memoryview(out).cast("B"), 0
    while got < length:
        k = os.preadv(f.fileno(), [view[got:]], start + got)
        if k <= 0:
            raise OSError("short read of the base vectors at byte %d" % (start + got))
        got += k
    try:
        os.posix_fadvise(f.fileno(), start, length, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass
    return out


def step_build(a):
    base = np.load(a.base, mmap_mode="r")
    n = a.n or len(base)
    dims = base.shape[1]
    if base.dtype != np.float32 or not base.flags.c_contiguous:
        raise ValueError("%s: expected a C-ordered float32 array" % a.base)
    offset = base.offset
    del base
    f = open(a.base, "rb", buffering=0)
    r = make_runner(a.lib, a.metric, dims, n, a.threads)
    ready(a, r)
    db = r._db(a.index)
    t_start = time.monotonic()
    for c in range(a.chunks):
        s, e = c * n // a.chunks, (c + 1) * n // a.chunks
        f0 = majflt()
        t0 = time.monotonic()
        vectors = read_rows(f, offset, dims, s, e)  # this chunk only
        ids = np.arange(s, e, dtype=np.uint32)
        t1 = time.monotonic()
        r._add(db, ids, vectors)  # one writer: add_items, build, commit
        t2 = time.monotonic()
        del vectors, ids
        extra = {}
        if a.lib == "ours":
            extra["write_map"] = bool(db.stats().get("write_map"))  # MDB_WRITEMAP during the next chunk
        emit(event="chunk", chunk=c, items=e - s, items_total=e, t_start=t0, t_added=t1, t_end=t2, **extra,
             load_s=t1 - t0, chunk_s=t2 - t1, majflt=(majflt() - f0) if f0 is not None else None,
             api=r.add_api, **proc_status(), **index_size(a.index))
    emit(event="done", build_s=time.monotonic() - t_start, n=n, dims=dims, chunks=a.chunks, api=r.add_api,
         **proc_status(), **index_size(a.index))


def prewarm(index_dir):
    """Read data.mdb once, so the search starts with the index in the page cache."""
    t = time.monotonic()
    total = 0
    with open(os.path.join(index_dir, "data.mdb"), "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        while True:
            k = f.readinto(buf)
            if not k:
                break
            total += k
    return {"prewarm_s": time.monotonic() - t, "prewarm_bytes": total}


def step_search(a):
    queries = np.load(a.queries)
    r = make_runner(a.lib, a.metric, queries.shape[1], 0, a.threads)
    ready(a, r)
    extra = prewarm(a.index) if a.prewarm else {}
    f0 = majflt()
    t = time.monotonic()
    r.open(a.index)
    emit(event="opened", open_s=time.monotonic() - t, majflt=(majflt() - f0) if f0 is not None else None,
         **extra, **proc_status())
    qs = r.single_input(queries)
    nq, k = len(qs), a.k
    os.makedirs(a.ids_dir, exist_ok=True)
    for ef in a.efs:
        r.set_ef(ef)
        f0 = majflt()
        t0 = time.monotonic()
        deadline = t0 + a.per_ef_time if a.per_ef_time else None
        over = False
        w = min(a.warmup, nq)
        warm_done = 0
        for q in qs[:w]:
            r.single(q, k)
            warm_done += 1
            if deadline is not None and time.monotonic() > deadline:
                over = True
                break
        t1 = time.monotonic()
        ids = np.full((nq, k), -1, np.int64)
        done = 0
        if not over:
            for i, q in enumerate(qs):
                row = r.ids_of(r.single(q, k))
                row = np.asarray(row, dtype=np.int64).reshape(-1)[:k]
                ids[i, : len(row)] = row
                done += 1
                if deadline is not None and time.monotonic() > deadline and done < nq:
                    over = True
                    break
        t2 = time.monotonic()
        ids[(ids < 0) | (ids >= 2**32 - 1)] = -1
        np.save(os.path.join(a.ids_dir, "ef%d.npy" % ef), ids[:done])
        emit(event="ef", ef=ef, nq=nq, done=done, finished=done == nq, warmup=w, warmup_done=warm_done,
             warmup_s=t1 - t0, pass_s=t2 - t1, qps=(done / (t2 - t1)) if done and t2 > t1 else 0.0,
             warmup_qps=(warm_done / (t1 - t0)) if warm_done and t1 > t0 else 0.0,
             time_limit_s=a.per_ef_time, majflt=(majflt() - f0) if f0 is not None else None, t_start=t0,
             t_end=t2, **proc_status())
    emit(event="done", **proc_status())


def step_cold(a):
    queries = np.load(a.queries)
    r = make_runner(a.lib, a.metric, queries.shape[1], 0, a.threads)
    ready(a, r)
    qs = r.single_input(queries)
    counts = sorted(c for c in a.counts if c <= len(qs)) or [len(qs)]
    f0 = majflt()
    t0 = time.monotonic()
    r.open(a.index)
    t1 = time.monotonic()
    emit(event="opened", open_s=t1 - t0, **proc_status())
    r.set_ef(a.ef)
    ids = np.full((counts[-1], a.k), -1, np.int64)
    for i, q in enumerate(qs[: counts[-1]]):
        row = np.asarray(r.ids_of(r.single(q, a.k)), dtype=np.int64).reshape(-1)[: a.k]
        ids[i, : len(row)] = row
        if i + 1 in counts:
            t = time.monotonic()
            emit(event="cold", count=i + 1, ef=a.ef, search_s=t - t1, qps=(i + 1) / (t - t1), open_s=t1 - t0,
                 qps_with_open=(i + 1) / (t - t0), majflt=(majflt() - f0) if f0 is not None else None,
                 **proc_status())
    ids[(ids < 0) | (ids >= 2**32 - 1)] = -1
    os.makedirs(a.ids_dir, exist_ok=True)
    np.save(os.path.join(a.ids_dir, "ef%d.npy" % a.ef), ids)
    emit(event="done", **proc_status())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["version", "build", "search", "cold"])
    p.add_argument("--lib", required=True, choices=["ours", "upstream"])
    p.add_argument("--metric", default="euclidean")
    p.add_argument("--base", help="base vectors (.npy, read as a memmap)")
    p.add_argument("--n", type=int, default=0, help="first n base vectors (default all)")
    p.add_argument("--chunks", type=int, default=12)
    p.add_argument("--index", help="index directory")
    p.add_argument("--queries", help="query vectors (.npy)")
    p.add_argument("--efs", default="10,20,40,80,160,320")
    p.add_argument("--ef", type=int, default=40)
    p.add_argument("--counts", default="300,1000")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--per-ef-time", type=float, default=0, help="seconds per ef_search (0: no limit)")
    p.add_argument("--prewarm", action="store_true", help="read data.mdb once before opening it")
    p.add_argument("--ids-dir")
    a = p.parse_args(argv)
    a.efs = [int(x) for x in a.efs.split(",") if x]
    a.counts = [int(x) for x in a.counts.split(",") if x]
    try:
        if a.step == "version":
            emit(event="done", version=version_of(a.lib))
        else:
            {"build": step_build, "search": step_search, "cold": step_cold}[a.step](a)
    except BaseException as e:  # reported as data; the traceback goes to stderr
        traceback.print_exc()
        emit(event="error", error="%s: %s" % (type(e).__name__, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
