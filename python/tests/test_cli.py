"""The ``hannoy`` command, run the way a user runs it: the installed console script (the
interpreter's bin/hannoy) and ``python -m hannoy``, as subprocesses. Outputs, ``--json``
against the API's own values, and the exit status and one-line message of each error."""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from helpers import build_index, subprocess_env

SCRIPT = Path(sys.executable).parent / ("hannoy.exe" if os.name == "nt" else "hannoy")


def _script() -> List[str]:
    if not SCRIPT.exists():
        if os.environ.get("HANNOY_TEST_INSTALLED") == "1":
            pytest.fail("the console script %s is missing: was the package installed?" % SCRIPT)
        pytest.skip("the console script is installed with the package (HANNOY_TEST_INSTALLED=1)")
    return [str(SCRIPT)]


RUNNERS = {"script": _script, "module": lambda: [sys.executable, "-m", "hannoy"]}


def run(args: Sequence[Any], runner: str = "script") -> subprocess.CompletedProcess:
    """Run the command; runner "inprocess" calls hannoy.cli.main in this process (the same code
    without the cost of an interpreter start, for the many argument checks)."""
    if runner == "inprocess":
        from hannoy.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([str(a) for a in args])
        return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())
    cmd = RUNNERS[runner]() + [str(a) for a in args]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=subprocess_env(), timeout=60, stdin=subprocess.DEVNULL
    )


def ok_json(args: Sequence[Any], runner: str = "script") -> Any:
    p = run(list(args) + ["--json"], runner)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return json.loads(p.stdout)


def fails(args: Sequence[Any], status: int, *needles: str, runner: str = "script") -> str:
    """The command fails with ``status``: one line on stderr naming the problem, nothing on
    stdout, no traceback."""
    p = run(args, runner)
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("hannoy: error: "), p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# -- databases ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(12)
    out = {}
    # cosine: the command must find the metric by itself; two indexes of other dimensions
    out["main"] = root / "main"
    with hannoy.Database(out["main"], Metric.COSINE) as db:
        build_index(db, rng.standard_normal((600, 12)).astype(np.float32), seed=3)
        build_index(db, rng.standard_normal((40, 5)).astype(np.float32), index=7, seed=3)
        # index 9: changes committed without a build
        with db.writer(4, index=9) as w:
            w.add_items(range(5), rng.standard_normal((5, 4)).astype(np.float32))
        w = db.writer(4, index=9)
        w.add_item(5, [1.0, 2.0, 3.0, 4.0])
        w.commit()
    # a named database beside an index of the main one, each with its own metric
    out["named"] = root / "named"
    with hannoy.Database(out["named"], Metric.MANHATTAN, name="sub") as db:
        build_index(db, rng.standard_normal((30, 3)).astype(np.float32))
    with hannoy.Database(out["named"], Metric.EUCLIDEAN) as db:
        build_index(db, rng.standard_normal((20, 6)).astype(np.float32), index=2)
    out["empty"] = root / "empty"
    hannoy.Database(out["empty"], Metric.EUCLIDEAN).close()
    out["nodata"] = root / "nodata"
    out["nodata"].mkdir()
    out["garbage"] = root / "garbage"
    out["garbage"].mkdir()
    (out["garbage"] / "data.mdb").write_bytes(b"not an LMDB file, not even close" * 200)
    out["file"] = root / "a-file"
    out["file"].write_text("hello")
    out["damaged"] = _damaged(root)
    return out


def _damaged(root: Path) -> Path:
    """A database whose main B-tree root page points past its end (as in test_verify.py)."""
    path = root / "sound"
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        build_index(db, np.random.default_rng(1).standard_normal((2000, 8)).astype(np.float32))
    data = (path / "data.mdb").read_bytes()
    page = 4096
    newest = max((0, page), key=lambda m: int.from_bytes(data[m + 144 : m + 152], "little"))
    root_page = int.from_bytes(data[newest + 128 : newest + 136], "little")
    bad = bytearray(data)
    bad[root_page * page + 16 : root_page * page + 18] = (page - 2).to_bytes(2, "little")
    damaged = root / "damaged"
    shutil.copytree(path, damaged)
    (damaged / "data.mdb").write_bytes(bytes(bad))
    with pytest.raises(hannoy.CorruptDatabaseError):
        hannoy.verify(damaged)
    return damaged


def api_index(path: Path, index: int, metric: Metric = Metric.COSINE, name: Any = None) -> Dict:
    with hannoy.Database(path, metric, name, read_only=True) as db:
        with db.reader(index) as r:
            return r.stats()


# -- info -------------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["script", "module"])
def test_info_json_matches_the_api(dbs: Dict[str, Path], runner: str) -> None:
    path = dbs["main"]
    info = ok_json(["info", path], runner)
    report = hannoy.verify(path)
    assert info["path"] == str(path)
    assert info["file_bytes"] == os.path.getsize(path / "data.mdb")
    assert info["used_bytes"] == (report["last_page"] + 1) * report["page_size"]
    assert info["page_size"] == report["page_size"]
    assert info["txn_id"] == report["txn_id"]
    assert info["library"] == hannoy.library_info()
    assert info["named_databases"] == []
    by_index = {s["index"]: s for s in info["indexes"]}
    assert sorted(by_index) == [0, 7, 9]
    for i in (0, 7):
        s, api = by_index[i], api_index(path, i)
        assert s["database"] is None
        assert s["metric"] == "cosine" == api["metric"]
        assert s["dimensions"] == api["dimensions"]
        assert s["items"] == api["n_items"]
        assert s["entry_points"] == api["entry_points"] and s["entry_points"]
        assert s["max_level"] == api["max_level"]
        assert s["layers"] == api["max_level"] + 1
        assert s["version"] == api["version"] == "0.1.3"
    assert (by_index[0]["dimensions"], by_index[0]["items"]) == (12, 600)
    assert (by_index[7]["dimensions"], by_index[7]["items"]) == (5, 40)
    # index 9 awaits a build: described by its error, the command still succeeds
    assert "not been built" in by_index[9]["error"] and "items" not in by_index[9]


def test_info_text(dbs: Dict[str, Path]) -> None:
    p = run(["info", dbs["main"]])
    assert p.returncode == 0 and p.stderr == ""
    out = p.stdout
    api = api_index(dbs["main"], 0)
    assert out.startswith("%s: hannoy database" % dbs["main"])
    assert "indexes       3" in out
    block0 = out.split("\nindex 0\n")[1].split("\nindex 7\n")[0]
    assert "metric        cosine" in block0
    assert "dimensions    12" in block0
    assert "items         600" in block0
    eps = api["entry_points"]
    assert "entry points  %d: %s" % (len(eps), ", ".join(map(str, eps[:10]))) in block0
    assert "layers        %d" % (api["max_level"] + 1) in block0
    assert "format        0.1.3" in block0
    assert "dimensions    5" in out.split("\nindex 7\n")[1]
    assert "error" in out.split("\nindex 9\n")[1]


def test_info_named_and_empty(dbs: Dict[str, Path]) -> None:
    info = ok_json(["info", dbs["named"]])
    assert info["named_databases"] == ["sub"]
    main, s = info["indexes"]
    api = api_index(dbs["named"], 2, Metric.EUCLIDEAN)
    assert (main["database"], main["index"], main["metric"]) == (None, 2, "euclidean")
    assert (main["dimensions"], main["items"]) == (api["dimensions"], api["n_items"]) == (6, 20)
    api = api_index(dbs["named"], 0, Metric.MANHATTAN, "sub")
    assert (s["database"], s["index"], s["metric"]) == ("sub", 0, "manhattan")
    assert (s["dimensions"], s["items"]) == (api["dimensions"], api["n_items"]) == (3, 30)
    assert ok_json(["info", dbs["named"], "--name", "sub"])["indexes"] == [s]
    p = run(["info", dbs["named"]])
    assert "\nindex 2\n" in p.stdout and "\nindex 0 (database 'sub')\n" in p.stdout
    fails(["info", dbs["named"], "--name", "other"], 1, "no database named 'other'", "'sub'")

    empty = ok_json(["info", dbs["empty"]])
    assert empty["indexes"] == []
    p = run(["info", dbs["empty"]])
    assert p.returncode == 0 and "indexes       0" in p.stdout


# -- verify -----------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["script", "module"])
def test_verify(dbs: Dict[str, Path], runner: str) -> None:
    report = ok_json(["verify", dbs["main"]], runner)
    expected = hannoy.verify(dbs["main"])
    assert report == dict(expected, path=str(dbs["main"]), ok=True)
    p = run(["verify", dbs["main"]], runner)
    assert p.returncode == 0
    assert p.stdout.splitlines()[0] == "%s: ok" % dbs["main"]
    assert "%d pages of %d bytes" % (expected["file_pages"], expected["page_size"]) in p.stdout
    named = run(["verify", dbs["named"]], runner)
    main_db, sub = hannoy.verify(dbs["named"])["databases"]
    assert "databases: main: %d entries, depth %d, sub: %d entries, depth %d" % (
        main_db["entries"], main_db["depth"], sub["entries"], sub["depth"]
    ) in named.stdout


def test_damaged_database_is_refused_by_every_command(dbs: Dict[str, Path]) -> None:
    d = dbs["damaged"]
    fails(["verify", d], 1, str(d), "damaged", "data.mdb")
    fails(["verify", d, "--json"], 1, "damaged")
    fails(["info", d], 1, "damaged")
    fails(["search", d, "--item", 1], 1, "damaged")


# -- search -----------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["script", "module"])
def test_search_item_matches_the_api(dbs: Dict[str, Path], runner: str) -> None:
    path = dbs["main"]
    got = ok_json(["search", path, "--item", 17, "-n", 7, "--ef", 50], runner)
    with hannoy.Database(path, Metric.COSINE, read_only=True) as db, db.reader() as r:
        expected = r.by_item(17, n=7, ef_search=50)
    assert expected is not None and len(expected) == 7
    assert [(h["id"], h["distance"]) for h in got["results"]] == expected
    assert 17 not in [h["id"] for h in got["results"]]
    assert got["query"] == {"item": 17}
    assert (got["index"], got["metric"], got["n"], got["ef_search"]) == (0, "cosine", 7, 50)


def test_search_vector_matches_the_api(dbs: Dict[str, Path]) -> None:
    path = dbs["main"]
    q = [-0.5, 1.25, 0.0, 2.0, -1.0]  # a negative first value needs no "=" (the command handles it)
    text = ",".join(map(str, q))
    got = ok_json(["search", path, "--index", 7, "--vector", text, "-n", 4])
    with hannoy.Database(path, Metric.COSINE, read_only=True) as db, db.reader(7) as r:
        expected = r.by_vec(q, n=4, ef_search=200)
    assert [(h["id"], h["distance"]) for h in got["results"]] == expected
    assert got["query"] == {"vector": q} and got["ef_search"] == 200
    # the same with spaces, brackets and "=" spelling
    again = ok_json(["search", path, "--index=7", "--vector=[%s]" % " ".join(map(str, q)), "-n", 4])
    assert again["results"] == got["results"]


def test_search_text(dbs: Dict[str, Path]) -> None:
    p = run(["search", dbs["main"], "--item", 3, "-n", 5])
    assert p.returncode == 0 and p.stderr == ""
    with hannoy.Database(dbs["main"], Metric.COSINE, read_only=True) as db, db.reader() as r:
        expected = r.by_item(3, n=5)
    lines = p.stdout.splitlines()
    assert lines[0] == "# 5 nearest to item 3 in index 0 (cosine, ef_search 200)"
    rows = [line.split() for line in lines[2:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r[1]) for r in rows] == [i for i, _ in expected]
    assert [float(r[2]) for r in rows] == pytest.approx([d for _, d in expected], rel=1e-5)


def test_search_named_and_no_verify(dbs: Dict[str, Path]) -> None:
    got = ok_json(["search", dbs["named"], "--name", "sub", "--item", 0, "-n", 3, "--no-verify"])
    with hannoy.Database(dbs["named"], Metric.MANHATTAN, "sub", read_only=True) as db:
        expected = db.reader().by_item(0, n=3)
    assert [(h["id"], h["distance"]) for h in got["results"]] == expected
    assert got["database"] == "sub" and got["metric"] == "manhattan"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, runner", [("info", "script"), ("verify", "inprocess"), ("search", "inprocess")]
)
def test_path_errors(dbs: Dict[str, Path], tmp_path: Path, command: str, runner: str) -> None:
    extra = ["--item", "1"] if command == "search" else []
    missing = tmp_path / "missing"
    fails([command, missing] + extra, 1, str(missing), "no such directory", runner=runner)
    fails([command, dbs["file"]] + extra, 1, "not a hannoy database", "directory", runner=runner)
    fails([command, dbs["nodata"]] + extra, 1, "not a hannoy database", "no data.mdb", runner=runner)
    fails([command, dbs["garbage"]] + extra, 1, "not a hannoy database", "not an LMDB", runner=runner)
    assert not missing.exists()  # read-only: nothing created


def test_search_errors(dbs: Dict[str, Path]) -> None:
    main = dbs["main"]
    # the installed script: the database's errors (status 1), a bad vector (status 2)
    fails(["search", main, "--index", 3, "--item", 1], 1, "no index 3", "indexes: 0, 7, 9")
    fails(["search", dbs["empty"], "--item", 1], 1, "no index 0", "none built")
    fails(["search", main, "--item", 4000], 1, "index 0 has no item 4000")
    fails(["search", main, "--index", 9, "--item", 1], 1, "index 9", "not been built")
    fails(["search", main, "--vector", "1,2,3"], 1, "wrong dimensions", "3 values", "12 dimensions")
    fails(["search", main, "--vector", "1,x,3"], 2, "bad vector", "'x'")
    fails(["search", main], 2, "--item", "--vector", runner="module")  # one of them is required
    # the other argument checks, in this process
    inproc = {"runner": "inprocess"}
    fails(["search", main, "--vector", "1,nan,3"], 2, "bad vector", "finite", **inproc)
    fails(["search", main, "--vector", ""], 2, "bad vector", **inproc)
    fails(["search", main, "--item", 1, "--vector", "1"], 2, "not allowed with", **inproc)
    fails(["search", main, "--item", -1], 2, "--item", **inproc)
    fails(["search", main, "--item", "x"], 2, "--item", "whole number", **inproc)
    fails(["search", main, "--item", 1, "-n", 0], 2, "-n", "at least 1", **inproc)
    fails(["search", main, "--item", 1, "--ef", 0], 2, "--ef", "at least 1", **inproc)
    fails(["search", main, "--index", 70000, "--item", 1], 2, "--index", "0 to 65535", **inproc)
    fails([], 2, "COMMAND", **inproc)
    fails(["frobnicate", main], 2, "invalid choice", **inproc)


def test_main_in_process(dbs: Dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    from hannoy.cli import main

    assert main(["search", str(dbs["main"]), "--item", "2", "-n", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2
    assert main(["info", str(dbs["nodata"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hannoy: error: ") and "no data.mdb" in err


def test_help() -> None:
    p = run(["-h"], "module")
    assert p.returncode == 0
    for word in ("info", "verify", "search"):
        assert word in p.stdout
    p = run(["search", "-h"])
    assert p.returncode == 0 and "--vector" in p.stdout and "--ef" in p.stdout


def test_cli_stub_matches() -> None:
    import hannoy.cli as cli

    stub = ast.parse((Path(cli.__file__).with_suffix(".pyi")).read_text(encoding="utf-8"))
    funcs = {n.name: n for n in stub.body if isinstance(n, ast.FunctionDef)}
    classes = {n.name for n in stub.body if isinstance(n, ast.ClassDef)}
    runtime = {
        k
        for k, v in vars(cli).items()
        if not k.startswith("_") and getattr(v, "__module__", None) == "hannoy.cli"
    }
    assert set(funcs) | classes == runtime
    for name, node in funcs.items():
        params = [a.arg for a in node.args.args]
        assert params == list(inspect.signature(getattr(cli, name)).parameters), name


def test_unreadable_file(dbs: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # root reads every file: make this process see data.mdb as unreadable instead
    data = str(dbs["main"] / "data.mdb")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == data else real_access(p, mode))
    for command in (["info", dbs["main"]], ["search", dbs["main"], "--item", 1, "--no-verify"]):
        fails(command, 1, data, "permission denied", runner="inprocess")
