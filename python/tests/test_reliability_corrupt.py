"""Reliability: corrupt files. hannoy's own values rewritten with damaged bytes (through normal
LMDB transactions of py-lmdb, so LMDB's page structure stays valid), and data.mdb / lock.mdb
truncated or with damaged meta pages. Opening, reading, searching and writing such a database
must raise Python exceptions or return results: the interpreter never dies of a signal or a Go
fatal error. Every trial runs in a child process (several trials per child, each announced, so a
crash names its trial and seed).

LMDB trusts its own B-tree pages: bytes damaged inside them (rather than inside hannoy's values)
can fault inside LMDB's C code. The engine checks at open what is cheap to check
(core/envcheck.go): both meta pages (magic, version, flags, page size) and that the file holds
every page the newest meta page names. ``hannoy.verify`` walks every page: bytes damaged
anywhere in data.mdb are either refused by it or harmless to open, read, search and write
(test_damaged_pages_are_refused_by_verify_or_harmless).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from helpers import subprocess_env

CHILD = str(Path(__file__).with_name("reliability_child.py"))
DIMS = 24
METRICS = [Metric.EUCLIDEAN, Metric.COSINE, Metric.HAMMING, Metric.BQ_EUCLIDEAN]
VALUE_TRIALS = int(os.environ.get("HANNOY_RELIABILITY_CORRUPT_TRIALS", "240"))
TRUNCATE_TRIALS = int(os.environ.get("HANNOY_RELIABILITY_TRUNCATE_TRIALS", "60"))
TRIALS_PER_CHILD = 30

lmdb = pytest.importorskip(
    "lmdb", reason="py-lmdb is needed to rewrite values (pip install lmdb; the Makefile's venv has it)"
)

MODE_META, MODE_UPDATED, MODE_LINKS, MODE_ITEM = 0, 1, 2, 3
# a links value: tag 1, then a portable roaring bitmap {1} (cookie 12346, one array container)
LINKS_TO_1 = b"\x01" + b"\x3a\x30\x00\x00" + b"\x01\x00\x00\x00" + b"\x00\x00\x00\x00" + (
    b"\x10\x00\x00\x00" + b"\x01\x00"
)


def key(index: int, mode: int, item: int, layer: int = 0) -> bytes:
    return index.to_bytes(2, "big") + bytes([mode]) + item.to_bytes(4, "big") + bytes([layer])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    return make_pristine(tmp_path_factory.mktemp("pristine"))


def make_pristine(base: Path) -> Dict[str, Path]:
    """One database per metric: index 0 built (300 items, m=4: several layers), index 1 built
    and then given pending changes (update markers for adds and deletes) committed unbuilt."""
    out = {}
    rng = np.random.default_rng(99)
    for metric in METRICS:
        path = base / str(metric).replace(" ", "_")
        db = hannoy.Database(path, metric)
        x = rng.standard_normal((300, DIMS)).astype(np.float32)
        with db.writer(DIMS, index=0, m=4, ef=16, seed=1, threads=1) as w:
            w.add_items(range(300), x)
        with db.writer(DIMS, index=1, m=4, ef=16, seed=2, threads=1) as w:
            w.add_items(range(100), x[:100])
        w = db.writer(DIMS, index=1)
        w.add_items(range(100, 105), x[100:105])
        for i in (1, 2, 3):
            w.del_item(i)
        w.commit()  # no build: update markers stay
        db.close()
        out[str(metric)] = path
    return out


def classify(k: bytes) -> str:
    if len(k) != 8:
        return "other"
    mode, item, layer = k[2], int.from_bytes(k[3:7], "big"), k[7]
    if mode == MODE_META:
        return "metadata" if item == 0 else "version"
    if mode == MODE_UPDATED:
        return "updated"
    if mode == MODE_LINKS:
        return "links0" if layer == 0 else "links-upper"
    if mode == MODE_ITEM:
        return "item"
    return "other"


def mutate(value: bytes, rng: np.random.Generator, head: int) -> Tuple[bytes, str]:
    """A damaged copy of value; head = size of the value's header (damaged more often)."""
    b = bytearray(value)
    op = rng.choice(["flip", "head", "truncate", "extend", "replace", "empty", "u32"])
    if op in ("flip", "head") and b:
        lim = min(len(b), head) if op == "head" and head else len(b)
        for _ in range(int(rng.integers(1, 5))):
            p = int(rng.integers(0, lim))
            b[p] ^= int(rng.integers(1, 256))
    elif op == "truncate" and b:
        b = b[: int(rng.integers(0, len(b)))]
    elif op == "extend":
        b += rng.bytes(int(rng.integers(1, 24)))
    elif op == "replace":
        b = bytearray(rng.bytes(int(rng.integers(0, 2 * len(b) + 8))))
    elif op == "empty":
        b = bytearray()
    elif op == "u32" and len(b) >= 4:
        p = int(rng.integers(0, len(b) - 3))
        big = [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x00010000, 0x0000FFFF, 0]
        b[p : p + 4] = int(rng.choice(big)).to_bytes(4, "big")
    else:
        b += b"\x00"
        op = "append0"
    return bytes(b), op


def header_size(cat: str, value: bytes) -> int:
    if cat == "item":
        return 1 + 8  # tag + header (4 or 8 bytes)
    if cat in ("links0", "links-upper"):
        n = int.from_bytes(value[5:9], "little") if len(value) >= 9 else 0
        return 1 + 8 + 8 * min(n, 64)  # tag, cookie, count, descriptors and offsets
    if cat == "metadata":
        return len(value)
    return len(value)


def corrupt_values(src: Path, dst: Path, rng: np.random.Generator) -> List[str]:
    """Copy src to dst and damage 1-3 of hannoy's values (or keys) there with py-lmdb."""
    shutil.copytree(src, dst)
    done = []
    env = lmdb.open(str(dst), map_size=1 << 30, max_dbs=0, subdir=True, lock=True)
    try:
        with env.begin(write=True) as txn:
            items = list(txn.cursor())
            by_cat: Dict[str, List[Tuple[bytes, bytes]]] = {}
            for k, v in items:
                by_cat.setdefault(classify(k), []).append((k, v))
            cats = [c for c in ["item", "links0", "links-upper", "metadata", "version",
                                "updated", "structure"] if c in by_cat or c == "structure"]  # fmt: skip
            for _ in range(int(rng.integers(1, 4))):
                cat = str(rng.choice(cats))
                if cat == "structure":
                    k, v = items[int(rng.integers(0, len(items)))]
                    what = str(rng.choice(["delete", "bogus-links", "bogus-item", "bad-key",
                                           "unknown-mode", "orphan-links"]))  # fmt: skip
                    index = int.from_bytes(k[:2], "big")
                    if what == "delete":
                        txn.delete(k)
                    elif what == "bogus-links":  # links of an item that does not exist
                        txn.put(key(index, MODE_LINKS, 900_000, 0), LINKS_TO_1)
                    elif what == "bogus-item":  # a vector the metadata does not list
                        txn.put(key(index, MODE_ITEM, 900_001), v)
                    elif what == "bad-key":  # a key of the wrong length inside the index
                        txn.put(k[:7], v)
                        txn.put(k + b"\x00", v)
                    elif what == "unknown-mode":
                        txn.put(k[:2] + b"\x09" + k[3:], v)
                    else:  # upper-layer links for a node on a layer it does not reach
                        txn.put(key(index, MODE_LINKS, int.from_bytes(k[3:7], "big"), 17), v)
                    done.append("structure:" + what)
                    continue
                k, v = by_cat[cat][int(rng.integers(0, len(by_cat[cat])))]
                nv, op = mutate(v, rng, header_size(cat, v))
                txn.put(k, nv)
                done.append("%s:%s" % (cat, op))
    finally:
        env.close()
    return done


def truncate_files(src: Path, dst: Path, rng: np.random.Generator) -> List[str]:
    """Copy src to dst and truncate data.mdb (or lock.mdb), or damage its meta pages' fields
    that the open-time check reads."""
    shutil.copytree(src, dst)
    data = dst / "data.mdb"
    size = data.stat().st_size
    page = 4096
    what = str(rng.choice(["random", "page", "one-short", "meta", "lock"]))
    if what == "random":
        n = int(rng.integers(0, size))
        os.truncate(data, n)
    elif what == "page":
        n = page * int(rng.integers(0, size // page))
        os.truncate(data, n)
    elif what == "one-short":
        n = size - int(rng.integers(1, 64))
        os.truncate(data, n)
    elif what == "meta":  # magic, version, flags, page size, last page, a root page
        with open(data, "r+b") as f:
            which = int(rng.integers(0, 2)) * page
            field = int(rng.choice([10, 16, 20, 40, 64, 112, 136, 144]))
            f.seek(which + field)
            f.write(rng.bytes(4))
        n = size
        what = "meta@%d+%d" % (which, field)
    else:
        lock = dst / "lock.mdb"
        n = int(rng.integers(0, max(1, lock.stat().st_size)))
        os.truncate(lock, n)
    return ["%s:%d/%d" % (what, n, size)]


def run_trials(trials: List[Dict[str, Any]], tmp: Path, label: str) -> Dict[str, Any]:
    """Run the trials in child processes (two at a time, TRIALS_PER_CHILD each); every child
    must exit 0 or 1. Returns totals."""
    groups = [trials[i : i + TRIALS_PER_CHILD] for i in range(0, len(trials), TRIALS_PER_CHILD)]
    procs = []
    totals: Dict[str, Any] = {
        "trials": 0, "ok": 0, "errors": {}, "other": [], "messages": {}, "refused": {}
    }  # fmt: skip

    def start(gi: int) -> Tuple[subprocess.Popen, List[Dict[str, Any]]]:
        spec = tmp / ("%s-spec-%d.json" % (label, gi))
        spec.write_text(json.dumps(groups[gi]))
        p = subprocess.Popen(
            [sys.executable, CHILD, "corrupt", str(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
        )  # fmt: skip
        return p, groups[gi]

    pending = list(range(len(groups)))
    while pending or procs:
        while pending and len(procs) < 2:
            procs.append(start(pending.pop(0)))
        p, group = procs.pop(0)
        try:
            out, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail("%s: a child hung; its output:\n%s" % (label, out[-2000:]))
        lines = out.splitlines()
        started = [int(x.split()[1]) for x in lines if x.startswith("TRIAL ")]
        last = group[started[-1]] if started else None
        assert p.returncode in (0, 1), (
            "%s: the interpreter died with status %d during trial %s (damage: %s)\n%s"
            % (label, p.returncode, last and last["seed"], last and last["damage"], err[-3000:])
        )
        assert p.returncode == 0, "%s: the child raised:\n%s" % (label, err[-3000:])
        current = None
        for x in lines:
            if x.startswith("TRIAL "):
                current = group[int(x.split()[1])]
            elif x.startswith("JSON "):
                r = json.loads(x[5:])
                totals["trials"] += 1
                totals["ok"] += r["ok"]
                for k, v in r["errors"].items():
                    totals["errors"][k] = totals["errors"].get(k, 0) + v
                totals["other"] += r["other"]
                if "refused" in r:
                    totals["refused"][r["refused"]] = totals["refused"].get(r["refused"], 0) + 1
                for m in r.get("messages", []):
                    seeds = totals["messages"].setdefault(m, [])
                    seeds.append((current["seed"], current["damage"]))
    assert totals["trials"] == len(trials)
    return totals


def make_trials(
    pristine: Dict[str, Path],
    tmp_path: Path,
    n: int,
    tag: int,
    damage_fn: Callable[[Path, Path, np.random.Generator], List[str]],
    **extra: Any,
) -> List[Dict[str, Any]]:
    """n trials: a copy of the pristine database of a metric (in turn) damaged by damage_fn
    with the seed [tag, trial]."""
    trials = []
    for seed in range(n):
        rng = np.random.default_rng([tag, seed])
        metric = METRICS[seed % len(METRICS)]
        dst = tmp_path / ("%d-%d" % (tag, seed))
        damage = damage_fn(pristine[str(metric)], dst, rng)
        trials.append({"path": str(dst), "metric": str(metric), "dims": DIMS, "seed": seed,
                       "damage": damage, **extra})  # fmt: skip
    return trials


@pytest.mark.slow
def test_corrupt_values_never_crash(pristine: Dict[str, Path], tmp_path: Path) -> None:
    """VALUE_TRIALS seeds: 1-3 of hannoy's values (item vectors and headers, links bitmaps on
    layer 0 and above, metadata, version, update markers) or keys damaged per trial."""
    trials = make_trials(pristine, tmp_path, VALUE_TRIALS, 7, corrupt_values)
    kinds: Dict[str, int] = {}
    for t in trials:
        for d in t["damage"]:
            kinds[d.split(":")[0]] = kinds.get(d.split(":")[0], 0) + 1
    totals = run_trials(trials, tmp_path, "values")
    print("corrupt values:", len(trials), "trials, damage", kinds, "results", totals["ok"],
          "ok calls, errors", totals["errors"], "other exceptions", len(totals["other"]))  # fmt: skip
    # every kind of value was damaged in some trials
    for cat in ("item", "links0", "links-upper", "metadata", "version", "updated", "structure"):
        assert kinds.get(cat, 0) >= 5, kinds
    # hannoy reports damage as its own errors (RuntimeError subclasses), not as stray
    # Python exceptions from the wrapper
    assert not totals["other"], totals["other"][:10]
    # nor as internal errors (a panic recovered at the C boundary): damage is named as such
    assert not totals["messages"], list(totals["messages"])[:10]
    assert totals["errors"].get("CorruptDatabaseError", 0) > 0


@pytest.mark.slow
def test_truncated_files_never_crash(pristine: Dict[str, Path], tmp_path: Path) -> None:
    """TRUNCATE_TRIALS seeds: data.mdb cut at random lengths (anywhere, on a page boundary,
    a few bytes short), meta page fields overwritten, lock.mdb cut."""
    trials = make_trials(pristine, tmp_path, TRUNCATE_TRIALS, 8, truncate_files)
    totals = run_trials(trials, tmp_path, "truncate")
    print("truncated files:", len(trials), "trials, results", totals["ok"], "ok calls, errors",
          totals["errors"], "other", len(totals["other"]))  # fmt: skip
    assert not totals["other"], totals["other"][:10]


def test_truncated_data_file_is_refused_at_open(pristine: Dict[str, Path], tmp_path: Path) -> None:
    """What the open-time check promises, directly: a data.mdb cut short is an OSError at
    Database(), before LMDB maps it; the file is left as it was."""
    src = pristine[str(Metric.EUCLIDEAN)]
    size = (src / "data.mdb").stat().st_size
    for n in (1, 100, 4096, 8191, 8192 + 1, size // 2, size - 4096, size - 1):
        dst = tmp_path / ("cut%d" % n)
        shutil.copytree(src, dst)
        os.truncate(dst / "data.mdb", n)
        with pytest.raises(OSError) as info:
            hannoy.Database(dst, Metric.EUCLIDEAN)
        assert isinstance(info.value, RuntimeError)
        assert "data.mdb" in str(info.value), str(info.value)
        assert (dst / "data.mdb").stat().st_size == n  # not "repaired" or overwritten


PAGE_TRIALS = int(os.environ.get("HANNOY_RELIABILITY_PAGE_TRIALS", "300"))


def damage_pages(src: Path, dst: Path, rng: np.random.Generator) -> List[str]:
    """Copy src to dst and overwrite 1-4 spans of 1-8 random bytes of data.mdb's B-tree pages:
    in a page's header and node pointers (LMDB's own structure) or anywhere in the page."""
    shutil.copytree(src, dst)
    data = dst / "data.mdb"
    page = 4096
    pages = data.stat().st_size // page
    done = []
    with open(data, "r+b") as f:
        for _ in range(int(rng.integers(1, 5))):
            p = int(rng.integers(2, pages))
            f.seek(p * page + 12)
            lower = int.from_bytes(f.read(2), "little")
            where = str(rng.choice(["header", "pointers", "anywhere"]))
            if where == "header":
                off = int(rng.integers(0, 16))
            elif where == "pointers":
                off = int(rng.integers(16, max(17, min(lower, page - 8))))
            else:
                off = int(rng.integers(0, page - 8))
            n = int(rng.integers(1, 9))
            f.seek(p * page + off)
            f.write(rng.bytes(n))
            done.append("%s:page %d+%d (%d bytes)" % (where, p, off, n))
    return done


@pytest.mark.slow
def test_damaged_pages_are_refused_by_verify_or_harmless(
    pristine: Dict[str, Path], tmp_path: Path
) -> None:
    """PAGE_TRIALS seeds: random bytes written into LMDB's own pages (headers, node pointers,
    nodes, values). A user who runs hannoy.verify before opening never sees the interpreter
    die: verify refuses the file with CorruptDatabaseError/HannoyIOError, or opening, reading,
    searching and writing it raise Python exceptions or return results."""
    trials = make_trials(pristine, tmp_path, PAGE_TRIALS, 9, damage_pages, verify=True)
    totals = run_trials(trials, tmp_path, "pages")
    refused = sum(totals["refused"].values())
    print("damaged pages:", len(trials), "trials,", refused, "refused by verify", totals["refused"],
          "; the others:", totals["ok"], "ok calls, errors", totals["errors"])  # fmt: skip
    assert not totals["other"], totals["other"][:10]
    assert set(totals["refused"]) <= {"CorruptDatabaseError", "HannoyIOError"}, totals["refused"]
    # the damage is real: verify refuses most files, and some pass (damage in free space or in
    # values) and are then used without harm
    assert refused >= len(trials) // 3, totals["refused"]
    assert refused < len(trials), "verify refused every file"
