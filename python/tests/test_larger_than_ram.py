"""An index larger than the memory the process may use, for real: child processes run in a
memory cgroup (v1 or v2, as root) whose limit is a quarter of the index file plus 48 MiB, and
a full disk is a size-limited tmpfs. What is asserted is what a user relies on: the process is
not killed, results and recall hold, the last commit survives. Speeds are measured by the
benchmark (bench/ltr.py), not here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest

import hannoy
from hannoy import Metric

from helpers import subprocess_env

MIB = 1 << 20
N, DIMS, CHUNKS = 100_000, 256, 5


def _memory_controller() -> Optional[Tuple[str, bool]]:
    """(the memory controller's root, is it cgroup v2), or None."""
    if os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        return "/sys/fs/cgroup/memory", False
    controllers = Path("/sys/fs/cgroup/cgroup.controllers")
    if controllers.exists() and "memory" in controllers.read_text().split():
        return "/sys/fs/cgroup", True
    return None


CONTROLLER = _memory_controller()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="memory cgroups and tmpfs mounts need root"),
    pytest.mark.skipif(CONTROLLER is None, reason="no memory cgroup controller on this machine"),
]


class Cgroup:
    """A memory cgroup with a limit; run() starts a child inside it."""

    def __init__(self, limit: int) -> None:
        assert CONTROLLER is not None
        root, self.v2 = CONTROLLER
        self.dir = Path(root) / ("hannoy-test-" + uuid.uuid4().hex[:8])
        self.dir.mkdir()
        try:
            if self.v2:
                (self.dir / "memory.max").write_text(str(limit))
                if (self.dir / "memory.swap.max").exists():
                    (self.dir / "memory.swap.max").write_text("0")
            else:
                (self.dir / "memory.limit_in_bytes").write_text(str(limit))
        except OSError:
            self.dir.rmdir()  # no group left behind when the limit is refused
            raise
        self.limit = limit

    def popen(self, code: str, *args: str) -> "subprocess.Popen[str]":
        cmd = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.dir / "cgroup.procs"),
               sys.executable, "-c", code, *args]
        return subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.dir / name).read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        p = self.dir / name
        return int(p.read_text()) if p.exists() else -1

    def remove(self) -> None:
        for pid in (self.dir / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(100):
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def run_limited(code: str, limit: int, timeout: float, *args: str) -> Tuple[int, Dict, str, int, int]:
    """Run code in a child limited to limit bytes: (exit status, its last JSON line, stderr,
    OOM kills, peak usage)."""
    drop_page_cache()
    group = Cgroup(limit)
    try:
        proc = group.popen(code, *args)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("not done in %d s under a %d MiB limit (a stall)\n%s" % (timeout, limit // MIB, err[-3000:]))
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        result = json.loads(lines[-1]) if lines else {}
        return proc.returncode, result, err, group.oom_kills(), group.peak()
    finally:
        group.remove()


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    labels = rng.integers(0, len(centres), n)
    return (centres[labels] + rng.normal(size=(n, centres.shape[1]))).astype(np.float32)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, object]]:
    """100,000 clustered 256-d vectors (about 220 MiB of LMDB file) built in 5 commits, 200
    held-out queries and their exact top 10."""
    root = tmp_path_factory.mktemp("ltr")
    rng = np.random.default_rng(2026)
    centres = rng.normal(0, 3, size=(256, DIMS)).astype(np.float32)
    base = clustered(rng, centres, N)
    queries = clustered(rng, centres, 200)
    norms = (base.astype(np.float64) ** 2).sum(1)
    d = norms[None, :] - 2 * queries.astype(np.float64) @ base.T.astype(np.float64)
    truth = np.argsort(d, axis=1)[:, :10]
    path = root / "db"
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        step = N // CHUNKS
        for c in range(CHUNKS):
            with db.writer(DIMS, m=16, ef=96, seed=1) as w:
                w.add_items(np.arange(c * step, (c + 1) * step), base[c * step:(c + 1) * step])
    np.save(root / "queries.npy", queries)
    np.save(root / "truth.npy", truth)
    report = hannoy.verify(path)
    used = (report["last_page"] + 1) * report["page_size"]
    yield {"root": root, "path": path, "base": base, "centres": centres, "used": used,
           "limit": used // 4 + 48 * MIB}
    shutil.rmtree(root, ignore_errors=True)


def copy_of(big: Dict[str, object], name: str) -> Path:
    dst = Path(str(big["root"])) / name
    shutil.copytree(Path(str(big["path"])), dst)
    return dst


SEARCH = textwrap.dedent("""
    import json, sys, time, numpy as np, hannoy
    path, root = sys.argv[1], sys.argv[2]
    queries, truth = np.load(root + "/queries.npy"), np.load(root + "/truth.npy")
    db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
    r = db.reader()
    st = r.stats()
    hits = 0
    t = time.perf_counter()
    for q, want in zip(queries, truth):
        got = r.by_vec(q, n=10, ef_search=100)
        hits += len({i for i, _ in got} & set(want.tolist()))
        assert [d for _, d in got] == sorted(d for _, d in got)
    print(json.dumps({"mode": st["read_mode"], "budget": st["memory_budget"],
                      "source": st["memory_budget_source"], "codes": st["codes_bytes"],
                      "recall": hits / (10 * len(queries)), "qps": len(queries) / (time.perf_counter() - t)}))
""")


def test_search_under_a_limit_of_a_quarter_of_the_file(big: Dict[str, object]) -> None:
    limit = int(big["limit"])  # type: ignore[arg-type]
    assert int(big["used"]) > 3 * (limit - 48 * MIB)  # type: ignore[arg-type]
    rc, res, err, ooms, peak = run_limited(SEARCH, limit, 600, str(big["path"]), str(big["root"]))
    assert rc == 0 and ooms == 0, "exit %d, %d OOM kills\n%s" % (rc, ooms, err[-3000:])
    print("search under %d MiB (file %d MiB): %s, peak %d MiB" % (
        limit // MIB, int(big["used"]) // MIB, res, peak // MIB))  # type: ignore[arg-type]
    # The budget came from the cgroup, by itself; the file does not fit, so codes are used.
    assert res["source"] == "automatic" and res["budget"] < limit
    assert res["mode"] == "compressed" and res["codes"] >= N * DIMS
    assert res["recall"] >= 0.95


ADD = textwrap.dedent("""
    import json, sys, numpy as np, hannoy
    path, first, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    centres = np.load(sys.argv[5])
    rng = np.random.default_rng(seed)
    v = (centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, centres.shape[1]))).astype(np.float32)
    db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
    def progress(phase, done, total):
        if phase == "inserting items" and done > 0:
            print("building", flush=True)
    with db.writer(v.shape[1], m=16, ef=96, progress=progress) as w:
        w.add_items(np.arange(first, first + n), v)
    r = db.reader()
    found = sum(r.by_vec(x, n=1, ef_search=100)[0][0] == first + i for i, x in enumerate(v[:50]))
    print(json.dumps({"n": len(r), "found": int(found), "mode": r.stats()["read_mode"]}))
""")


def test_add_a_chunk_under_the_limit(big: Dict[str, object]) -> None:
    path = copy_of(big, "add")
    np.save(Path(str(big["root"])) / "centres.npy", big["centres"])
    limit = int(big["limit"])  # type: ignore[arg-type]
    rc, res, err, ooms, peak = run_limited(
        ADD, limit, 600, str(path), str(N), "1000", "7", str(Path(str(big["root"])) / "centres.npy"))
    assert rc == 0 and ooms == 0, "exit %d, %d OOM kills\n%s" % (rc, ooms, err[-3000:])
    print("added 1,000 under %d MiB: %s, peak %d MiB" % (limit // MIB, res, peak // MIB))
    assert res["n"] == N + 1000 and res["found"] >= 45  # of 50 new items, each its own top 1
    assert hannoy.verify(path)["txn_id"] > 0


def test_sigkill_during_a_build_under_the_limit(big: Dict[str, object]) -> None:
    path = copy_of(big, "kill")
    np.save(Path(str(big["root"])) / "centres.npy", big["centres"])
    before = hannoy.verify(path)["txn_id"]
    drop_page_cache()
    group = Cgroup(int(big["limit"]))  # type: ignore[arg-type]
    try:
        proc = group.popen(ADD, str(path), str(N), "5000", "8", str(Path(str(big["root"])) / "centres.npy"))
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        line = ""
        while time.monotonic() < deadline and "building" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "building" in line, "the child never reached the build: %s" % proc.stderr.read()[-2000:]  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        group.remove()
    report = hannoy.verify(path)
    assert report["txn_id"] == before  # nothing of the killed transaction
    with hannoy.Database(path, Metric.EUCLIDEAN) as db, db.reader() as r:
        assert len(r) == N and N not in r
        base = big["base"]
        assert r.by_vec(base[123], n=1, candidates=[123, 124]) == [(123, 0.0)]  # type: ignore[index]
        assert len(r.by_vec(base[123], n=10)) == 10  # type: ignore[index]


BUILD = textwrap.dedent("""
    import json, sys, numpy as np, hannoy
    path, base_file, chunks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    base = np.load(base_file, mmap_mode="r")  # file pages: the chunk in hand is copied out
    n = len(base)
    db = hannoy.Database(path, hannoy.Metric.EUCLIDEAN)
    for c in range(chunks):
        s, e = c * n // chunks, (c + 1) * n // chunks
        v = np.array(base[s:e])
        with db.writer(v.shape[1], m=16, ef=96, seed=1) as w:
            w.add_items(np.arange(s, e), v)
        del v
        print(json.dumps({"chunk": c}), flush=True)
    print(json.dumps({"n": n}))
""")


def test_chunked_build_under_the_limit(big: Dict[str, object]) -> None:
    """The whole index built again, in commits of 5% (as in the benchmark of issue #10), inside
    the limit the search tests use (a quarter of the finished file plus 48 MiB): the build is
    never killed, and what it built searches as well as the unlimited build. (In commits of
    10% it passes most runs but not all: a CI run was killed at 103 MiB.)"""
    root = Path(str(big["root"]))
    np.save(root / "base.npy", big["base"])
    path = root / "built-under-limit"
    limit = int(big["limit"])  # type: ignore[arg-type]
    try:
        rc, res, err, ooms, peak = run_limited(BUILD, limit, 900, str(path), str(root / "base.npy"), "20")
    finally:
        (root / "base.npy").unlink()
    assert rc == 0 and ooms == 0, "exit %d, %d OOM kills\n%s" % (rc, ooms, err[-3000:])
    print("built %d vectors in 20 commits under %d MiB: peak %d MiB" % (N, limit // MIB, peak // MIB))
    assert res == {"n": N}
    assert hannoy.verify(path)["txn_id"] > 0
    # What was built under the limit answers like the unlimited build (read without a limit).
    queries, truth = np.load(root / "queries.npy"), np.load(root / "truth.npy")
    with hannoy.Database(path, Metric.EUCLIDEAN) as db, db.reader() as r:
        assert len(r) == N
        hits = sum(len({i for i, _ in r.by_vec(q, n=10, ef_search=100)} & set(t.tolist()))
                   for q, t in zip(queries, truth))
        base = big["base"]
        for item in (0, N // 2, N - 1):
            np.testing.assert_array_equal(r.item_vector(item), base[item])  # type: ignore[index]
    assert hits / (10 * len(queries)) >= 0.95


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_chunked_builds(tmpfs: Path) -> None:
    """Chunks of 2,000 128-d vectors are committed, each with its build, into an 8 MiB tmpfs
    until the disk is full; then the mount grows and the writing goes on."""
    rng = np.random.default_rng(5)
    path = tmpfs / "db"
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    committed: List[np.ndarray] = []
    with pytest.raises(hannoy.DiskFullError) as info:
        for c in range(100):
            v = rng.normal(size=(2000, 128)).astype(np.float32)
            with db.writer(128, m=8, ef=32) as w:
                w.add_items(np.arange(c * 2000, (c + 1) * 2000), v)
            committed.append(v)
    assert isinstance(info.value, OSError)
    assert "disk is full" in str(info.value) and "last commit is intact" in str(info.value)
    assert len(committed) >= 1
    n = 2000 * len(committed)
    # The last commit is intact: every committed vector, nothing of the failed chunk.
    with db.reader() as r:
        assert len(r) == n and n not in r
        for c in (0, len(committed) - 1):
            item = c * 2000 + 7
            np.testing.assert_array_equal(r.item_vector(item), committed[c][7])
            # Searches work (random 128-d vectors make a hard graph: the exact match is
            # checked through a filter, which scans exactly).
            assert len(r.by_vec(committed[c][7], n=10)) == 10
            assert r.by_vec(committed[c][7], n=1, candidates=[item, item + 1]) == [(item, 0.0)]
    db.close()
    # Space is freed (the mount grows): the same database takes the next chunks.
    subprocess.run(["mount", "-o", "remount,size=64m", str(tmpfs)], check=True)
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        for c in range(len(committed), len(committed) + 2):
            v = rng.normal(size=(2000, 128)).astype(np.float32)
            with db.writer(128, m=8, ef=32) as w:
                w.add_items(np.arange(c * 2000, (c + 1) * 2000), v)
            with db.reader() as r:
                assert len(r) == (c + 1) * 2000
                np.testing.assert_array_equal(r.item_vector(c * 2000 + 3), v[3])
                assert len(r.by_vec(v[3], n=10)) == 10
                assert r.by_vec(v[3], n=1, candidates=[c * 2000 + 3]) == [(c * 2000 + 3, 0.0)]
    assert hannoy.verify(path)["txn_id"] > 0


FILL_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import hannoy
    from hannoy import Metric

    path, first, chunks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    db = hannoy.Database(path, Metric.EUCLIDEAN)
    n = first
    out = {}
    try:
        for c in range(first // 2000, first // 2000 + chunks):
            v = np.random.default_rng(c).normal(size=(2000, 128)).astype(np.float32)
            with db.writer(128, m=8, ef=32) as w:
                w.add_items(np.arange(c * 2000, (c + 1) * 2000), v)
            n += 2000
    except hannoy.DiskFullError as e:
        out["error"] = str(e)
    out.update(n=n, write_map=db.stats()["write_map"])
    db.close()
    print(json.dumps(out))
""")


def test_disk_full_through_the_write_map(tmpfs: Path) -> None:
    """The same as above with HANNOY_WRITEMAP=1, as a file larger than a quarter of the memory
    budget is written: LMDB stores pages straight into the file's memory map, where a full disk
    would be a SIGBUS that kills the process. The child is not killed: it gets DiskFullError,
    the last commit is intact, and after space is freed the writing goes on."""
    path = tmpfs / "db"
    env = {**subprocess_env(), "HANNOY_WRITEMAP": "1"}

    def fill(first: int, chunks: int) -> Dict[str, object]:
        done = subprocess.run([sys.executable, "-c", FILL_CHILD, str(path), str(first), str(chunks)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, "child exit %d\n%s" % (done.returncode, done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    out = fill(0, 100)
    assert out["write_map"] is True
    assert "disk is full" in str(out.get("error")) and "last commit is intact" in str(out["error"])
    n = int(out["n"])  # type: ignore[call-overload]
    assert n >= 2000

    def check(n: int) -> None:
        with hannoy.Database(path, Metric.EUCLIDEAN) as db, db.reader() as r:
            assert len(r) == n and n not in r
            for c in (0, n // 2000 - 1):
                v = np.random.default_rng(c).normal(size=(2000, 128)).astype(np.float32)
                np.testing.assert_array_equal(r.item_vector(c * 2000 + 7), v[7])
                assert r.by_vec(v[7], n=1, candidates=[c * 2000 + 7]) == [(c * 2000 + 7, 0.0)]
        assert hannoy.verify(path)["txn_id"] > 0

    check(n)
    subprocess.run(["mount", "-o", "remount,size=64m", str(tmpfs)], check=True)
    out = fill(n, 2)
    assert "error" not in out and out["n"] == n + 4000
    check(n + 4000)

