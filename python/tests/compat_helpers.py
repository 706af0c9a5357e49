"""Helpers of test_compat_upstream.py: installing and driving upstream hannoy 0.1.3 in its own
process, reading raw LMDB key/values (py-lmdb), and decoding hannoy 0.1.3's format
(reference/hannoy-0.1.3.md §1-§2) independently of both implementations."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent.parent
DRIVER = TESTS_DIR / "upstream_driver.py"

UPSTREAM_VERSION = "0.1.3"
#: where upstream is installed (created once, reused); override with HANNOY_UPSTREAM_DIR
UPSTREAM_DIR = Path(
    os.environ.get("HANNOY_UPSTREAM_DIR", str(REPO_DIR / ".cache" / "upstream-hannoy"))
)

# key modes (§1.2)
MODE_META, MODE_UPDATED, MODE_LINKS, MODE_ITEM = 0, 1, 2, 3
VERSION_0_1_3 = bytes.fromhex("00000000" "00000001" "00000003")

DISTANCE_NAMES = {
    "COSINE": "cosine",
    "EUCLIDEAN": "euclidean",
    "MANHATTAN": "manhattan",
    "HAMMING": "hamming",
    "BQ_COSINE": "binary quantized cosine",
    "BQ_EUCLIDEAN": "binary quantized euclidean",
    "BQ_MANHATTAN": "binary quantized manhattan",
}
BINARY = {"HAMMING", "BQ_COSINE", "BQ_EUCLIDEAN", "BQ_MANHATTAN"}
HEADER_SIZE = {m: (8 if m == "HAMMING" else 4) for m in DISTANCE_NAMES}


# -- installing and running upstream ---------------------------------------------------------


class UpstreamUnavailable(Exception):
    """upstream hannoy could not be installed (no network, no wheel for this platform...)."""


def _installed_version(target: Path) -> Optional[str]:
    for d in target.glob("hannoy-*.dist-info"):
        return d.name[len("hannoy-"):-len(".dist-info")]
    return None


def ensure_upstream(target: Path = UPSTREAM_DIR) -> Path:
    """Install hannoy==0.1.3 from the package index into ``target`` (once; reused after)."""
    if _installed_version(target) == UPSTREAM_VERSION and (target / "hannoy").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".upstream-install-", dir=str(target.parent)))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", str(tmp), "hannoy==%s" % UPSTREAM_VERSION],
            capture_output=True, text=True, timeout=600, check=False,
        )
        if proc.returncode != 0:
            raise UpstreamUnavailable(
                "pip install --target %s hannoy==%s failed (exit %d): %s"
                % (target, UPSTREAM_VERSION, proc.returncode, (proc.stderr or proc.stdout)[-2000:])
            )
        if _installed_version(tmp) != UPSTREAM_VERSION:
            raise UpstreamUnavailable("pip installed %r, not hannoy %s"
                                      % (_installed_version(tmp), UPSTREAM_VERSION))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a half-finished install is never reused
    except (OSError, subprocess.SubprocessError) as exc:
        raise UpstreamUnavailable(
            "cannot install hannoy==%s: %s" % (UPSTREAM_VERSION, exc)) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass
class UpstreamRun:
    """The outcome of one driver process."""

    spec: Dict[str, Any]
    out: Dict[str, Any]
    workdir: Path
    stderr: str

    def result(self, i: int) -> Dict[str, Any]:
        return self.out["results"][i]

    def ok(self, i: int) -> Dict[str, Any]:
        """The result of op i, asserting that it succeeded."""
        assert "path" not in self.spec or self.out.get("open", {}).get("ok"), "upstream could not open %s: %s" % (
            self.spec.get("path"), self.out.get("open"))
        r = self.out["results"][i]
        assert r.get("ok"), "upstream op %d %r failed: %s: %s\n%s" % (
            i, self.spec["ops"][i], r.get("error_type"), r.get("error"), r.get("traceback"))
        return r

    def search(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        return (np.load(self.workdir / (name + "_ids.npy")),
                np.load(self.workdir / (name + "_dists.npy")))


class Upstream:
    """Runs upstream_driver.py under this interpreter with only upstream on the path."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
        env["PYTHONPATH"] = str(self.target)
        env["PYTHONNOUSERSITE"] = "1"
        env.setdefault("RAYON_NUM_THREADS", "2")  # CPU is shared; upstream builds with rayon
        return env

    def run(self, workdir: Path, spec: Dict[str, Any], timeout: float = 300) -> UpstreamRun:
        workdir.mkdir(parents=True, exist_ok=True)
        spec_path = workdir / "spec.json"
        result_path = workdir / "result.json"
        if result_path.exists():
            result_path.unlink()
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run(
            [sys.executable, str(DRIVER), str(spec_path), str(result_path)],
            capture_output=True, text=True, timeout=timeout, env=self.env(), cwd=str(workdir),
            check=False,
        )
        if proc.returncode != 0 or not result_path.exists():
            raise AssertionError(
                "upstream driver crashed (exit %d)\nstdout:\n%s\nstderr:\n%s"
                % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
        out = json.loads(result_path.read_text())
        if "import" in out:
            raise AssertionError("upstream hannoy import failed: %s" % out["import"])
        assert Path(out["hannoy_file"]).resolve().is_relative_to(self.target.resolve()), (
            "the driver imported %s, not upstream from %s" % (out["hannoy_file"], self.target))
        return UpstreamRun(spec, out, workdir, proc.stderr)


# -- raw LMDB --------------------------------------------------------------------------------


def read_raw(path: Path, name: Optional[str] = None) -> Dict[bytes, bytes]:
    """Every key/value of the (unnamed or named) LMDB database at ``path``, read with py-lmdb
    read-only and without locking, from a copy of the directory (so no process can be
    disturbed and no lock file is touched)."""
    import lmdb

    with tempfile.TemporaryDirectory(prefix="raw-") as tmp:
        copy = Path(tmp) / "env"
        copy.mkdir()
        shutil.copy2(Path(path) / "data.mdb", copy / "data.mdb")
        env = lmdb.open(str(copy), readonly=True, lock=False, max_dbs=8 if name else 0,
                        subdir=True, create=False)
        try:
            db = env.open_db(name.encode("utf-8"), create=False) if name else None
            with env.begin(db=db, buffers=False) as txn:
                return {bytes(k): bytes(v) for k, v in txn.cursor()}
        finally:
            env.close()


def key(index: int, mode: int, item: int = 0, layer: int = 0) -> bytes:
    return struct.pack(">HBIB", index, mode, item, layer)


def parse_key(k: bytes) -> Tuple[int, int, int, int]:
    assert len(k) == 8, "hannoy keys are 8 bytes, got %d: %s" % (len(k), k.hex())
    return struct.unpack(">HBIB", k)


def index_entries(raw: Dict[bytes, bytes], index: int) -> Dict[Tuple[int, int, int], bytes]:
    """{(mode, item, layer): value} of one index."""
    out = {}
    for k, v in raw.items():
        if len(k) == 8:
            i, mode, item, layer = parse_key(k)
            if i == index:
                out[(mode, item, layer)] = v
    return out


# -- roaring (portable format, §1.3) ---------------------------------------------------------


def parse_roaring(buf: bytes, offset: int = 0) -> Tuple[np.ndarray, int, bool]:
    """Decode a portable roaring bitmap; returns (sorted uint32 ids, bytes used, had_runs)."""
    cookie = struct.unpack_from("<I", buf, offset)[0]
    pos = offset + 4
    has_runs = (cookie & 0xFFFF) == 12347
    if has_runs:
        n = (cookie >> 16) + 1
        run_flags = buf[pos:pos + (n + 7) // 8]
        pos += (n + 7) // 8
    else:
        assert cookie == 12346, "bad roaring cookie %08x" % cookie
        n = struct.unpack_from("<I", buf, pos)[0]
        pos += 4
        run_flags = b""
    keys, cards = [], []
    for _ in range(n):
        k, c = struct.unpack_from("<HH", buf, pos)
        keys.append(k)
        cards.append(c + 1)
        pos += 4
    if not has_runs or n >= 4:
        pos += 4 * n  # offsets
    values: List[np.ndarray] = []
    for j in range(n):
        is_run = has_runs and (run_flags[j // 8] >> (j % 8)) & 1
        if is_run:
            nr = struct.unpack_from("<H", buf, pos)[0]
            pos += 2
            runs = np.frombuffer(buf, dtype="<u2", count=2 * nr, offset=pos).reshape(-1, 2)
            pos += 4 * nr
            low = np.concatenate([np.arange(s, s + l + 1) for s, l in runs]) if nr else np.empty(0)
        elif cards[j] <= 4096:
            low = np.frombuffer(buf, dtype="<u2", count=cards[j], offset=pos).astype(np.int64)
            pos += 2 * cards[j]
        else:
            words = np.frombuffer(buf, dtype="<u8", count=1024, offset=pos)
            pos += 8192
            bits = np.unpackbits(words.view(np.uint8), bitorder="little")
            low = np.nonzero(bits)[0]
            assert len(low) == cards[j]
        values.append((np.int64(keys[j]) << 16) | np.asarray(low, dtype=np.int64))
    ids = np.concatenate(values).astype(np.uint32) if values else np.empty(0, np.uint32)
    return ids, pos - offset, bool(has_runs)


# -- node values, metadata (§1.3-§1.4) -------------------------------------------------------


@dataclass
class Metadata:
    raw: bytes
    name: str
    dims: int
    items_bytes: bytes  # items_len (u32 BE) followed by the bitmap, as stored
    items: np.ndarray
    entry_points: List[int] = field(default_factory=list)
    max_level: int = 0
    trailing_partial: int = 0  # bytes that do not form a whole entry point (should be 0)
    items_had_runs: bool = False

    @property
    def fixed_part(self) -> bytes:
        """name NUL | dims | items_len | items: what must not depend on the graph."""
        return self.raw[: len(self.name.encode()) + 1 + 4 + len(self.items_bytes)]


def parse_metadata(v: bytes) -> Metadata:
    nul = v.index(0)
    name = v[:nul].decode("utf-8")
    pos = nul + 1
    dims, items_len = struct.unpack_from(">II", v, pos)
    pos += 8
    items, used, runs = parse_roaring(v, pos)
    assert used == items_len, "metadata items_len %d but the bitmap is %d bytes" % (items_len, used)
    items_bytes = v[pos - 4: pos + items_len]
    pos += items_len
    rest = v[pos:]
    md = Metadata(v, name, dims, items_bytes, items, items_had_runs=runs)
    if rest:
        body = rest[:-1]
        md.trailing_partial = len(body) % 4
        md.entry_points = list(struct.unpack("<%dI" % (len(body) // 4), body[: len(body) // 4 * 4]))
        md.max_level = rest[-1]
    return md


def decode_item(metric: str, value: bytes, dims: int) -> Tuple[bytes, np.ndarray]:
    """(header bytes, the decoded values truncated to dims) of an item value."""
    assert value[:1] == b"\x00", "item value tag %r" % value[:1]
    h = HEADER_SIZE[metric]
    header, body = value[1:1 + h], value[1 + h:]
    if metric in BINARY:
        assert len(body) % 8 == 0, "binary vector of %d bytes" % len(body)
        bits = np.unpackbits(np.frombuffer(body, dtype=np.uint8), bitorder="little")
        assert len(bits) == 64 * ((dims + 63) // 64), "%d bits stored for %d dims" % (len(bits), dims)
        assert not bits[dims:].any(), "padding bits are not zero"
        bits = bits[:dims].astype(np.float32)
        return header, (bits if metric == "HAMMING" else 2.0 * bits - 1.0)
    assert len(body) == 4 * dims, "f32 vector of %d bytes for %d dims" % (len(body), dims)
    return header, np.frombuffer(body, dtype="<f4").copy()


def expected_values(metric: str, vectors: np.ndarray) -> np.ndarray:
    """What upstream stores and returns for these inputs: the floats, or the 0/1 (hamming:
    strictly positive) or +-1 (binary quantized: sign bit clear) values."""
    v = np.asarray(vectors, dtype=np.float32)
    if metric == "HAMMING":
        bits = v.view(np.uint32)
        return ((bits > 0) & (bits < 0x80000000)).astype(np.float32)
    if metric in BINARY:
        return np.where(np.signbit(v), -1.0, 1.0).astype(np.float32)
    return v


def expected_body(metric: str, vector: np.ndarray) -> bytes:
    """The codec bytes of a vector (without tag and header), §2.1."""
    v = np.asarray(vector, dtype=np.float32)
    if metric in BINARY:
        vals = expected_values(metric, v[None, :])[0]
        bits = (vals > 0).astype(np.uint8)
        padded = np.zeros(64 * ((len(v) + 63) // 64), np.uint8)
        padded[: len(v)] = bits
        return np.packbits(padded, bitorder="little").tobytes()
    return v.astype("<f4").tobytes()


def expected_header(metric: str, vector: np.ndarray) -> bytes:
    """The header bytes (§2.2). The cosine norm is computed here in float64 and rounded, so it
    may differ from upstream's f32 SIMD sum in the last ulp: compare it with a tolerance."""
    if metric == "HAMMING":
        return b"\x00" * 8
    if metric == "COSINE":
        v = np.asarray(vector, dtype=np.float64)
        return struct.pack("<f", np.sqrt(v @ v))
    if metric == "BQ_COSINE":
        return struct.pack("<f", np.float32(np.sqrt(np.float32(64 * ((len(vector) + 63) // 64)))))
    return b"\x00" * 4


def check_index_validity(raw: Dict[bytes, bytes], index: int, metric: str) -> Metadata:
    """Reader::assert_validity on raw bytes (§1.7), plus format rules: returns the metadata."""
    e = index_entries(raw, index)
    assert (MODE_META, 0, 0) in e, "index %d has no metadata" % index
    md = parse_metadata(e[(MODE_META, 0, 0)])
    assert md.name == DISTANCE_NAMES[metric], (md.name, metric)
    assert md.trailing_partial == 0, "metadata entry points are not a whole number of u32"
    assert not md.items_had_runs, "metadata items bitmap has run containers (cookie 12347)"
    assert e.get((MODE_META, 1, 0)) == VERSION_0_1_3, "version key %r" % e.get((MODE_META, 1, 0))
    others = [k for k in e if k[0] == MODE_META and k[1] not in (0, 1)]
    assert not others, "unexpected metadata-mode keys %r" % others
    tomb = [k for k in e if k[0] == MODE_UPDATED]
    assert not tomb, "%d update tombstones left after a build, e.g. %r" % (len(tomb), tomb[:3])
    items = {int(i) for i in md.items}
    vec_ids = {k[1] for k in e if k[0] == MODE_ITEM}
    assert all(k[2] == 0 for k in e if k[0] == MODE_ITEM)
    assert vec_ids == items, "vectors without metadata item: %r; items without vector: %r" % (
        sorted(vec_ids - items)[:5], sorted(items - vec_ids)[:5])
    link_ids = set()
    levels: Dict[int, List[int]] = {}
    for (mode, item, layer), v in e.items():
        if mode != MODE_LINKS:
            continue
        assert v[:1] == b"\x01", "links value tag %r for %d/%d" % (v[:1], item, layer)
        ids, used, runs = parse_roaring(v, 1)
        assert used == len(v) - 1, "links value has %d trailing bytes" % (len(v) - 1 - used)
        assert not runs, "links of %d layer %d use run containers" % (item, layer)
        bad = {int(i) for i in ids} - items
        assert not bad, "links of %d layer %d point to non-items %r" % (item, layer, sorted(bad)[:5])
        link_ids.add(item)
        levels.setdefault(item, []).append(layer)
    assert link_ids == items, "items without links: %r; links of non-items: %r" % (
        sorted(items - link_ids)[:5], sorted(link_ids - items)[:5])
    for item, ls in levels.items():
        assert sorted(ls) == list(range(len(ls))), "item %d has links on layers %r" % (item, ls)
    for ep in md.entry_points:
        assert ep in items, "entry point %d is not an item" % ep
        assert max(levels[ep]) >= md.max_level, (
            "entry point %d has no links on max_level %d" % (ep, md.max_level))
    if items:
        assert md.entry_points, "a non-empty index without entry points"
    return md


# -- comparing searches ----------------------------------------------------------------------


@dataclass
class Agreement:
    strict: float  # mean |A ∩ B| / k
    tie_aware: float  # mean over queries of min(both directions) of the tie-aware overlap
    worst: float
    max_dist_diff: float  # over ids found by both: |d_A - d_B|
    max_rel_diff: float


def agreement(a_ids: np.ndarray, a_d: np.ndarray, b_ids: np.ndarray, b_d: np.ndarray,
              k: int = 10, rel: float = 1e-5) -> Agreement:
    """Agreement of two (queries, k) result sets. ``strict`` is the plain top-k overlap;
    ``tie_aware`` counts an id of A as agreed when it is in B or its distance is not worse than
    B's k-th distance (and vice versa, taking the smaller): with binary metrics, many items tie
    at the k-th distance and either side may legitimately return any of them."""
    strict, tie, diffs, rels = [], [], [0.0], [0.0]
    for ra, rda, rb, rdb in zip(a_ids, a_d, b_ids, b_d):
        qa, da = ra[:k], rda[:k]
        qb, db = rb[:k], rdb[:k]
        va, vb = qa != 0xFFFFFFFF, qb != 0xFFFFFFFF
        sa, sb = set(qa[va].tolist()), set(qb[vb].tolist())
        strict.append(len(sa & sb) / k)
        kth_a = da[va].max() if va.any() else np.inf
        kth_b = db[vb].max() if vb.any() else np.inf

        def ok(ids, ds, other, kth):
            return sum(1 for i, d in zip(ids, ds) if i in other or d <= kth * (1 + rel) + 1e-7)

        ab = ok(qa[va], da[va], sb, kth_b) / k
        ba = ok(qb[vb], db[vb], sa, kth_a) / k
        tie.append(min(ab, ba))
        da_map = dict(zip(qa[va].tolist(), da[va].tolist()))
        for i, d in zip(qb[vb].tolist(), db[vb].tolist()):
            if i in da_map:
                diffs.append(abs(da_map[i] - d))
                rels.append(abs(da_map[i] - d) / max(abs(d), 1e-12))
    return Agreement(float(np.mean(strict)), float(np.mean(tie)), float(np.min(tie)),
                     float(np.max(diffs)), float(np.max(rels)))


# -- upstream's f32 dot product, emulated (for the cosine norm header) -----------------------


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """f32 fused multiply-add: the product of two f32 is exact in f64; the f64 sum is then
    rounded to f32 (double rounding can differ from a true FMA in ~2**-29 of the cases)."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def upstream_dot_avx(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products in the order of upstream's x86-64 AVX+FMA kernel
    (hannoy v0.1.3 `src/spaces/simple_avx.rs::dot_similarity_avx`, used when dims >= 32 and the
    CPU has avx and fma): four 8-lane FMA accumulators over whole blocks of 32 floats; each
    accumulator reduced on its own by `hsum256_ps_avx` (high half + low half, then lanes
    0+2 / 1+3, then lane 0 + lane 1); the four sums added left to right
    ((h1 + h2) + h3) + h4; then the remaining n % 32 floats one by one as `res += a*b` (a
    rounded product, no FMA)."""
    a = np.atleast_2d(np.asarray(a, np.float32))
    b = np.atleast_2d(np.asarray(b, np.float32))
    n = a.shape[1]
    assert n >= 32, "upstream uses its SSE/scalar kernels below 32 dims"
    m = n - n % 32
    acc = [np.zeros((a.shape[0], 8), np.float32) for _ in range(4)]
    for c in range(0, m, 32):
        for j in range(4):
            acc[j] = _fma32(a[:, c + 8 * j: c + 8 * j + 8], b[:, c + 8 * j: c + 8 * j + 8], acc[j])
    def hsum(x: np.ndarray) -> np.ndarray:
        x128 = x[:, 4:] + x[:, :4]
        x64 = x128[:, :2] + x128[:, 2:]
        return x64[:, 0] + x64[:, 1]

    res = ((hsum(acc[0]) + hsum(acc[1])) + hsum(acc[2])) + hsum(acc[3])
    for i in range(m, n):
        res = res + a[:, i] * b[:, i]
    return res.astype(np.float32)


def upstream_cosine_norm(vectors: np.ndarray) -> np.ndarray:
    """The f32 norm upstream stores in a cosine item header: sqrt of its own dot product."""
    v = np.atleast_2d(np.asarray(vectors, np.float32))
    return np.sqrt(upstream_dot_avx(v, v)).astype(np.float32)
