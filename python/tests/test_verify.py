"""hannoy.verify: what it reports for sound databases, and the errors for what is not one.
(Damaged files: test_reliability_corrupt.py; the engine's own tests: core/verify_test.go.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from helpers import build_index


def test_verify_reports_every_database(tmp_path: Path, fashion_small) -> None:
    base, _ = fashion_small
    path = tmp_path / "db"
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        build_index(db, base[:500])  # 784-d vectors: values on overflow pages
        before = hannoy.verify(path)  # while the database is open in this process
    with hannoy.Database(path, Metric.COSINE, name="second") as db:
        build_index(db, base[500:800, :16], index=4)
        with db.writer(16, index=4) as w:  # deletes and a rebuild free pages
            for i in range(50):
                w.del_item(i)
    report = hannoy.verify(str(path).encode())  # bytes paths too
    assert report["page_size"] >= 512
    assert report["last_page"] < report["file_pages"]
    assert report["txn_id"] > before["txn_id"]
    assert report["overflow_pages"] >= 500  # a 3 KiB vector each
    assert report["free_pages"] > 0
    names = [d["name"] for d in report["databases"]]
    assert names == ["", "second"]
    # the unnamed database's keys (items, links per layer, metadata, version) are unchanged;
    # the record naming "second" is not one of them
    assert report["databases"][0]["entries"] == before["databases"][0]["entries"] > 1000
    assert report["databases"][1]["entries"] > 250
    assert all(d["depth"] >= 1 for d in report["databases"])
    # verify changed nothing and the database still works
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        assert len(db.reader()) == 500


def test_verify_refuses_damage(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        build_index(db, np.random.default_rng(1).standard_normal((2000, 8)).astype(np.float32))
    hannoy.verify(path)
    data = (path / "data.mdb").read_bytes()
    # the root page of the main database (from the newest meta page) gets a pointer past it
    page = 4096
    newest = max((0, page), key=lambda m: int.from_bytes(data[m + 16 + 128 : m + 16 + 136], "little"))
    root = int.from_bytes(data[newest + 16 + 24 + 48 + 40 : newest + 16 + 24 + 48 + 48], "little")
    bad = bytearray(data)
    bad[root * page + 16 : root * page + 18] = (page - 2).to_bytes(2, "little")
    damaged = tmp_path / "damaged"
    shutil.copytree(path, damaged)
    (damaged / "data.mdb").write_bytes(bytes(bad))
    with pytest.raises(hannoy.CorruptDatabaseError) as info:
        hannoy.verify(damaged)
    assert isinstance(info.value, RuntimeError)
    assert "data.mdb" in str(info.value) and "page %d" % root in str(info.value), str(info.value)
    assert (damaged / "data.mdb").read_bytes() == bytes(bad)  # verify only reads


def test_verify_errors(tmp_path: Path) -> None:
    with pytest.raises(hannoy.HannoyIOError):
        hannoy.verify(tmp_path / "missing")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "data.mdb").write_text("not an LMDB file, not even close" * 10)
    with pytest.raises(OSError):
        hannoy.verify(tmp_path / "text")
    with pytest.raises(TypeError):
        hannoy.verify(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hannoy.verify("")
