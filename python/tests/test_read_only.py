"""Database(..., read_only=True): an existing database searched without being written."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from helpers import build_index, data_digest, subprocess_env

VECTORS = np.random.default_rng(21).standard_normal((500, 12)).astype(np.float32)
QUERIES = VECTORS[:5] + 0.01


digest = data_digest


@pytest.fixture
def built(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    with hannoy.Database(path, Metric.COSINE) as db:
        build_index(db, VECTORS)
    return path


def test_reads_and_refuses_writes(built: Path) -> None:
    with hannoy.Database(built, Metric.COSINE) as db:
        expected = db.reader().by_array(QUERIES, n=5)
    before = digest(built)
    db = hannoy.Database(built, Metric.COSINE, read_only=True)
    assert db.read_only and "read-only" in repr(db)
    r = db.reader()
    assert len(r) == 500 and r.by_array(QUERIES, n=5) == expected
    assert np.array_equal(r.item_vector(7), VECTORS[7])
    with pytest.raises(hannoy.InvalidArgumentError, match="read-only") as info:
        db.writer(12)
    assert isinstance(info.value, ValueError)
    again = pickle.loads(pickle.dumps(db))  # reopens read-only
    assert again.read_only and len(again.reader()) == 500
    again.close()
    db.close()
    assert digest(built) == before


def test_missing_path_or_database(tmp_path: Path, built: Path) -> None:
    with pytest.raises(hannoy.HannoyIOError) as info:
        hannoy.Database(tmp_path / "missing" / "db", read_only=True)
    assert isinstance(info.value, OSError)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(hannoy.MissingMetadataError, match="no database named"):
        hannoy.Database(built, Metric.COSINE, name="other", read_only=True)
    with pytest.raises(TypeError):
        hannoy.Database(built, read_only="yes")  # type: ignore[arg-type]


def test_read_only_beside_read_write_in_one_process(built: Path) -> None:
    rw = hannoy.Database(built, Metric.COSINE)
    ro = hannoy.Database(built, Metric.COSINE, read_only=True)  # shares the writable environment
    with rw.writer(12) as w:
        w.add_item(1000, VECTORS[0])
    assert len(ro.reader()) == 501  # a new reader sees the commit
    with pytest.raises(hannoy.InvalidArgumentError):
        ro.writer(12)
    rw.close()
    ro.close()
    ro = hannoy.Database(built, Metric.COSINE, read_only=True)
    with pytest.raises(hannoy.WriterBusyError, match="read-only"):
        hannoy.Database(built, Metric.COSINE)  # the environment is read-only in this process
    ro.close()
    with hannoy.Database(built, Metric.COSINE) as rw:
        with rw.writer(12) as w:
            w.add_item(1001, VECTORS[1])


# The child drops root's privileges (when it has them) before loading the library, then opens a
# database whose directory and data file it may not write.
CHILD = r"""
import json, os, subprocess, sys
import cffi
import numpy as np
import hannoy
from hannoy import _ffi
# Import now what loading the library imports later: the interpreter's own files may not be
# readable once privileges are dropped (/root is 0o700). The library itself loads after.
cffi.FFI().cdef(_ffi._read_cdef())
if os.geteuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
path, queries = sys.argv[1], np.array(json.loads(sys.argv[2]), dtype=np.float32)
out = {"uid": os.geteuid()}
try:
    open(os.path.join(path, "probe"), "x").close()
    out["writable"] = True
except OSError:
    out["writable"] = False
try:
    hannoy.Database(path, hannoy.Metric.COSINE)
    out["read_write"] = "opened"
except hannoy.HannoyError as e:
    out["read_write"] = [type(e).__name__, isinstance(e, OSError)]
with hannoy.Database(path, hannoy.Metric.COSINE, read_only=True) as db:
    out["results"] = db.reader().by_array(queries, n=5)
print("JSON " + json.dumps(out))
"""



@pytest.mark.slow
def test_files_the_user_cannot_write(shared_dir: Path, built: Path) -> None:
    path = shared_dir / "db"
    shutil.copytree(built, path)
    with hannoy.Database(path, Metric.COSINE) as db:
        expected = db.reader().by_array(QUERIES, n=5)
    (path / "data.mdb").chmod(0o444)
    (path / "lock.mdb").chmod(0o666)  # LMDB's reader table: every reader writes it
    path.chmod(0o555)
    before = digest(path)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(QUERIES.tolist())],
        cwd=str(shared_dir), env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("JSON ")][-1][5:])
    if out["writable"]:
        pytest.skip("permissions are not enforced for the child (uid %d)" % out["uid"])
    assert out["read_write"] == ["HannoyIOError", True]  # plain opening needs to write
    assert [[tuple(p) for p in row] for row in out["results"]] == expected
    assert digest(path) == before
