"""_cdef.h (what cffi is told) matches libhannoy.h (what cgo generated from capi/).

The header is taken from, in order: the package directory (setup.py copies it there), next to
the library in HANNOY_LIBRARY (cgo writes it beside the .so), or a fresh
``go build -buildmode=c-shared`` of ./capi into a temporary directory when ``go`` is available.
Every ``extern`` function of the header must be declared in _cdef.h with the same return and
parameter types (after normalising cgo's Go* typedefs, ``const`` and spacing), and every
function of _cdef.h must exist in the header.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import hannoy
from helpers import REPO_DIR

pytestmark = pytest.mark.nolib

CDEF = Path(hannoy.__file__).resolve().parent / "_cdef.h"

# cgo's typedefs (amd64/arm64: GoInt and GoUint are 64-bit)
GO_TYPES = {
    "GoInt8": "int8_t",
    "GoUint8": "uint8_t",
    "GoInt16": "int16_t",
    "GoUint16": "uint16_t",
    "GoInt32": "int32_t",
    "GoUint32": "uint32_t",
    "GoInt64": "int64_t",
    "GoUint64": "uint64_t",
    "GoInt": "int64_t",
    "GoUint": "uint64_t",
    "GoUintptr": "uintptr_t",
    "GoFloat32": "float",
    "GoFloat64": "double",
    "GoUchar": "unsigned char",
    "GoBool": "_Bool",
}

Signature = Tuple[str, Tuple[str, ...]]


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def normalise_type(t: str) -> str:
    """'const uint32_t *' / 'GoUint32*' -> 'uint32_t*'."""
    t = re.sub(r"\bconst\b", " ", t)
    t = re.sub(r"\b(extern|__declspec\s*\(\s*dllexport\s*\))", " ", t)
    for go, c in GO_TYPES.items():
        t = re.sub(r"\b%s\b" % go, c, t)
    t = t.replace("*", " * ")
    t = " ".join(t.split())
    return t.replace(" *", "*")


def _split_param(p: str) -> str:
    """Drop the parameter name: 'const float *vectors' -> 'const float *'."""
    p = p.strip()
    if p in ("void", ""):
        return ""
    m = re.match(r"^(.*?)([A-Za-z_][A-Za-z0-9_]*)$", p)
    if m and m.group(1).strip():
        p = m.group(1)
    return normalise_type(p)


def parse_functions(text: str, extern_only: bool) -> Dict[str, Signature]:
    text = _strip_comments(text)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    out: Dict[str, Signature] = {}
    # declarations end with ';' (cgo: one per line; _cdef.h: may span lines)
    for decl in text.split(";"):
        decl = " ".join(decl.split())
        if "(" not in decl or "typedef" in decl:
            continue
        idx = decl.rfind("extern ")
        if idx >= 0:
            decl = decl[idx + len("extern ") :]
        elif extern_only:
            continue
        decl = decl.split("{")[-1].strip()
        m = re.match(r"^(.+?)\b([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", decl)
        if not m:
            continue
        ret, name, params = m.group(1), m.group(2), m.group(3)
        if not name.startswith("hannoy_"):
            continue
        ps = tuple(x for x in (_split_param(p) for p in params.split(",")) if x)
        out[name] = (normalise_type(ret), ps)
    return out


def _find_header(tmp_dir: Path) -> Optional[Path]:
    pkg_header = Path(hannoy.__file__).resolve().parent / "libhannoy.h"
    if pkg_header.exists():
        return pkg_header
    lib = os.environ.get("HANNOY_LIBRARY")
    if lib:
        cand = Path(lib).with_suffix(".h")
        if cand.exists():
            return cand
    go = shutil.which("go")
    if go and (REPO_DIR / "capi").is_dir():
        out = tmp_dir / "libhannoy.so"
        res = subprocess.run(
            [go, "build", "-buildmode=c-shared", "-buildvcs=false", "-o", str(out), "./capi"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if res.returncode != 0:
            pytest.fail("go build of ./capi failed:\n" + res.stderr[-4000:])
        header = tmp_dir / "libhannoy.h"
        if header.exists():
            return header
    return None


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _find_header(tmp_path_factory.mktemp("cgo"))
    if path is None:
        pytest.skip("no libhannoy.h and no go toolchain to generate it")
    return path


def test_normalise() -> None:
    assert normalise_type("const uint32_t *") == "uint32_t*"
    assert normalise_type("GoUint32*") == "uint32_t*"
    assert normalise_type("char  **") == "char**"
    assert _split_param("const float *vectors") == "float*"
    assert _split_param("char** err") == "char**"
    assert _split_param("GoInt64 n_candidates") == "int64_t"


def test_cdef_parses() -> None:
    fns = parse_functions(CDEF.read_text(encoding="utf-8"), extern_only=False)
    assert "hannoy_reader_search" in fns
    assert fns["hannoy_free"] == ("void", ("void*",))
    assert fns["hannoy_writer_cancel"] == ("int", ("uint64_t",))
    assert len(fns) == 30


def test_cdef_is_accepted_by_cffi() -> None:
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef(CDEF.read_text(encoding="utf-8"))


def test_header_matches_cdef(header: Path) -> None:
    cdef = parse_functions(CDEF.read_text(encoding="utf-8"), extern_only=False)
    cgo = parse_functions(header.read_text(encoding="utf-8"), extern_only=True)
    assert cgo, "no extern hannoy_* function found in %s" % header
    missing_in_cdef = sorted(set(cgo) - set(cdef))
    missing_in_header = sorted(set(cdef) - set(cgo))
    assert missing_in_cdef == [], "exported by the library but not declared in _cdef.h"
    assert missing_in_header == [], "declared in _cdef.h but not exported by the library"
    mismatched: List[str] = []
    for name in sorted(cdef):
        if cdef[name] != cgo[name]:
            mismatched.append("%s: _cdef.h %s vs libhannoy.h %s" % (name, cdef[name], cgo[name]))
    assert mismatched == []
