"""examples/quickstart.ipynb runs from top to bottom in a fresh Jupyter kernel of this
interpreter (nbclient + ipykernel), and build progress uses tqdm's notebook widget there and a
text bar in a terminal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

import hannoy
from helpers import REPO_DIR, subprocess_env

NOTEBOOK = REPO_DIR / "examples" / "quickstart.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


def _tagged(nb: Any, tag: str) -> Any:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "expected one cell tagged %r" % tag
    return cells[0]


def _mime(cell: Any) -> Dict[str, List[Any]]:
    """Every output's data by MIME type (streams as text/plain)."""
    out: Dict[str, List[Any]] = {}
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.setdefault("stream:" + o["name"], []).append(o["text"])
        for mime, value in o.get("data", {}).items():
            out.setdefault(mime, []).append(value)
    return out


def test_committed_without_outputs() -> None:
    """The file holds code and text only: outputs (timings, widget ids, a PNG) would change at
    every run; CI executes it instead."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    pytest.importorskip("matplotlib")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    # A clean Jupyter setup in tmp_path: no user profile, configuration or kernel of the
    # machine is read, and a kernel spec of our own runs this very interpreter (the virtual
    # environment's, where hannoy is installed), not whatever "python3" means here.
    for var, sub in (
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("IPYTHONDIR", "ipython"),
        ("MPLCONFIGDIR", "mpl"),
    ):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    name = "hannoy-test-kernel"
    spec_dir = tmp_path / "kernels" / name
    spec_dir.mkdir(parents=True)
    child_env = {k: v for k, v in subprocess_env().items() if os.environ.get(k) != v}
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "hannoy tests",
                "language": "python",
                "env": child_env,  # the source tree and library when not testing the installed package
            }
        )
    )
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # One more cell, at the end: which interpreter and which hannoy the kernel ran.
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json, sys, hannoy\n"
            "print(json.dumps({'prefix': sys.prefix, 'hannoy': hannoy.__file__}))"
        )
    )
    work = tmp_path / "cwd"
    work.mkdir()
    client = nbclient.NotebookClient(
        nb, km=km, timeout=300, resources={"metadata": {"path": str(work)}}
    )
    try:
        client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)

    seen = json.loads(_mime(nb.cells[-1])["stream:stdout"][0])
    assert seen == {"prefix": sys.prefix, "hannoy": hannoy.__file__}

    build = _mime(_tagged(nb, "build"))
    assert WIDGET in build, "no progress widget in the build cell: %s" % list(build)
    assert any("built 10,000 vectors" in t for t in build["stream:stdout"])
    shown = _mime(_tagged(nb, "show-db"))["text/html"][0]
    assert "hannoy.Database" in shown and "10,000" in shown
    assert "hannoy.Reader" in _mime(_tagged(nb, "show-reader"))["text/html"][0]
    assert _mime(_tagged(nb, "plot")).get("image/png"), "the recall plot is missing"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors == []
    # The widgets' last state (nbclient stores it): every build's bar ended full, not red.
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
    assert len(bars) == 2, bars  # the build and the rebuild after deletes
    assert all(bar["bar_style"] == "success" for bar in bars), bars  # "danger": closed short
    # each ends at the count of the build's changes (10,000 insertions; the three deletes),
    # even when the build ends before the first poll
    assert sorted(bar["max"] for bar in bars) == [3, 10_000], bars
    for bar in bars:
        assert bar["value"] == bar["max"], bar


def test_progress_bar_in_a_terminal(make_db: Any, capsys: pytest.CaptureFixture) -> None:
    """Outside Jupyter, progress=True draws tqdm's text bar on stderr (no widget)."""
    pytest.importorskip("tqdm")
    db = make_db()
    x = np.random.default_rng(3).standard_normal((2000, 8)).astype(np.float32)
    with db.writer(8, progress=True) as w:
        w.add_items(range(2000), x)
    captured = capsys.readouterr()
    last = captured.err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("done: 100%") and "2000/2000" in last, captured.err
    assert captured.out == ""  # no widget (nor its text stand-in) on stdout
    assert len(db.reader()) == 2000
