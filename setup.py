"""Build of the hannoy Python package: compiles the Go engine into hannoy/libhannoy.so.

Static metadata lives in pyproject.toml; the version is capi/VERSION (pyproject reads it, Go
embeds it). This file only adds what pyproject.toml cannot say:

* build_py runs ``go build -buildmode=c-shared -trimpath -ldflags=-s -w -o
  <build_lib>/hannoy/libhannoy.so ./capi`` from the repository root (for editable installs,
  into python/hannoy/ itself), so the library and the header cgo writes beside it
  (libhannoy.h) ship inside the package, and writes hannoy/_version.py from capi/VERSION;
* build_ext compiles python/hannoy/_fastconv.c, a small optional CPython extension that turns
  the lists and tuples of add_item and by_vec into float32 bytes (about 8x faster than
  struct.pack at 784 floats), twice: against the full C API for the building Python
  (``_fastconv.cpython-311-x86_64-linux-gnu.so``: PyList_GET_ITEM, PyFloat_AS_DOUBLE) and
  against the limited API (``_fastconv.abi3.so``, from _fastconv_abi3.c: the same source with
  Py_LIMITED_API), which every CPython >= 3.9 can load but which measured about 4x slower per
  element (4.5 us against 1.1 us at 784 floats). Python's import system prefers the first
  (its own suffix comes first in importlib.machinery.EXTENSION_SUFFIXES), other CPython
  versions take the second, and an interpreter that loads neither (PyPy, a free-threaded
  build) uses the pure-Python path. Both are optional: without a C compiler or the Python
  headers the build prints a warning, skips them, and the package uses its pure-Python path;
* the wheel is tagged py3-none-<platform>: it holds native code, but no extension that any
  Python needs (the package loads the library with cffi in ABI mode), so one wheel per
  platform serves every Python 3.

Environment: ``GO`` overrides the go binary; the usual Go variables (GOARCH, GOFLAGS, GOCACHE,
GOPROXY ...) apply. ``HANNOY_CGO_CC`` is the C compiler for cgo alone (``make wheel`` sets it
to zig cc with an old glibc target; the extension keeps the usual CC). A GOARCH other than
this machine's cross-compiles the library, tags the wheel for that architecture and skips the
extension (it would need that architecture's Python headers). ``HANNOY_NO_FASTCONV=1`` at
build time skips the extension (at run time it makes an installed package ignore it).
"""

import importlib.machinery
import os
import platform
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py
from setuptools.dist import Distribution

try:
    from setuptools.errors import ExecError as _BuildError
except ImportError:  # setuptools < 59
    from distutils.errors import DistutilsExecError as _BuildError  # type: ignore

try:
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # setuptools < 70.1
    try:
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel  # type: ignore
    except ImportError:  # no wheel support at all: sdist / legacy installs only
        _bdist_wheel = None  # type: ignore

ROOT = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "hannoy"
LIBRARY = "libhannoy.so"
HEADER = "libhannoy.h"
VERSION_MODULE = "_version.py"
# Go's GOARCH -> the machine name of Linux wheel tags
GOARCH_MACHINES = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "386": "i686",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def read_version():
    """The package version: capi/VERSION, the file Go embeds and pyproject.toml reads."""
    with open(os.path.join(ROOT, "capi", "VERSION"), encoding="ascii") as f:
        return f.read().strip()


def target_machine():
    """The machine the library is built for (the wheel's), from GOARCH; None when it is this
    machine's."""
    goarch = os.environ.get("GOARCH", "")
    if not goarch:
        return None
    machine = GOARCH_MACHINES.get(goarch)
    if machine is None:
        raise _BuildError("hannoy: no wheel platform known for GOARCH=%s" % goarch)
    return None if machine == platform.machine() else machine


def build_go_library(out_dir):
    """Compile ./capi into out_dir/libhannoy.so (and out_dir/libhannoy.h)."""
    go = os.environ.get("GO") or shutil.which("go")
    if not go:
        raise _BuildError(
            "hannoy: building the package needs the Go toolchain (the version in go.mod, with "
            "a C compiler for cgo), but `go` was not found on PATH. Install Go from "
            "https://go.dev/dl/ (or set GO=/path/to/go) and retry `pip install .`."
        )
    if not os.path.isdir(os.path.join(ROOT, "capi")):
        raise _BuildError(
            "hannoy: expected the Go sources in %s/capi next to setup.py, but there is no "
            "such directory" % ROOT
        )
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, LIBRARY)
    # -s -w: no symbol table and DWARF (panics still print Go stack traces)
    cmd = [go, "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-ldflags=-s -w",
           "-o", out, "./capi"]
    env = dict(os.environ)
    env["CGO_ENABLED"] = "1"  # -buildmode=c-shared needs cgo
    if os.environ.get("HANNOY_CGO_CC"):
        env["CC"] = os.environ["HANNOY_CGO_CC"]
    print("hannoy: %s  (in %s%s)" % (" ".join(cmd), ROOT, "".join(
        ", %s=%s" % (k, env[k]) for k in ("GOARCH", "CC") if k in env)), flush=True)
    try:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    except OSError as e:
        raise _BuildError("hannoy: could not run %s: %s" % (go, e)) from e
    except subprocess.CalledProcessError as e:
        raise _BuildError(
            "hannoy: `%s` failed with exit status %d (see the Go errors above)"
            % (" ".join(cmd), e.returncode)
        ) from e
    return out


def write_version_module(out_dir):
    """Write out_dir/_version.py: hannoy.__version__, from capi/VERSION."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, VERSION_MODULE), "w", encoding="ascii") as f:
        f.write('"""Written by setup.py from capi/VERSION."""\n\n__version__ = %r\n' % read_version())


class build_py(_build_py):
    """build_py that also compiles the Go library into the package and writes _version.py."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = os.path.join(ROOT, "python", PACKAGE)
        else:
            target = os.path.join(self.build_lib, PACKAGE)
        write_version_module(target)
        build_go_library(target)

    def get_outputs(self, include_bytecode=1):
        outputs = list(super().get_outputs(include_bytecode))
        for name in (LIBRARY, HEADER, VERSION_MODULE):
            path = os.path.join(self.build_lib, PACKAGE, name)
            if path not in outputs:
                outputs.append(path)
        return outputs


class BinaryDistribution(Distribution):
    """The package ships a native library: install it as platform-specific."""

    def has_ext_modules(self):
        return True


def fastconv_wanted():
    if os.environ.get("HANNOY_NO_FASTCONV", "") not in ("", "0"):
        return False
    if target_machine() is not None:
        print("hannoy: cross-compiling for %s: the _fastconv extension is skipped (the package "
              "uses its pure-Python conversion)" % target_machine(), flush=True)
        return False
    return True


def abi3_suffix():
    """The file suffix of limited-API extensions here (.abi3.so), or None (PyPy...)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if ".abi3." in suffix:
            return suffix
    return None


FASTCONV = PACKAGE + "._fastconv"
# the limited-API build of the same module: its own name here (two Extensions cannot share
# one), written as _fastconv.abi3.so by build_ext.get_ext_filename
FASTCONV_ABI3 = PACKAGE + "._fastconv_abi3"

# The extension calls nothing of the C library that is not inlined, so the linker would leave
# libc.so.6 out of its dependencies; auditwheel needs it there to tell the wheel's C library.
LINK_ARGS = ["-Wl,--no-as-needed", "-lc"] if sys.platform.startswith("linux") else []

# optional=True: a compiler error (or no compiler) is a warning and the extension is skipped
EXTENSIONS = []
if fastconv_wanted():
    EXTENSIONS.append(Extension(
        FASTCONV, sources=["python/%s/_fastconv.c" % PACKAGE], optional=True,
        extra_link_args=LINK_ARGS,
    ))
    if abi3_suffix():
        EXTENSIONS.append(Extension(
            FASTCONV_ABI3, sources=["python/%s/_fastconv_abi3.c" % PACKAGE], optional=True,
            py_limited_api=True, extra_link_args=LINK_ARGS,
        ))


class build_ext(_build_ext):
    """build_ext that names the limited-API build _fastconv.abi3.so."""

    def get_ext_filename(self, fullname):
        parts = fullname.split(".")
        if parts[-1] == FASTCONV_ABI3.split(".")[-1]:
            return os.path.join(*(parts[:-1] + ["_fastconv"])) + abi3_suffix()
        return super().get_ext_filename(fullname)


cmdclass = {"build_py": build_py, "build_ext": build_ext}

if _bdist_wheel is not None:

    class bdist_wheel(_bdist_wheel):
        """Wheel tag py3-none-<platform>: native, but no Python ABI (cffi ABI mode; the
        extension is there for the building CPython and as abi3, and optional), the platform
        GOARCH's when cross-compiling."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            machine = target_machine()
            if machine is not None:
                if not plat.endswith("_" + platform.machine()):
                    raise _BuildError("hannoy: cannot retag platform %s for %s" % (plat, machine))
                plat = plat[: -len(platform.machine())] + machine
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = bdist_wheel


def long_description():
    path = os.path.join(ROOT, "README.md")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    return "hannoy: approximate nearest-neighbour search (HNSW) on disk in LMDB, with a Go engine."


setup(
    ext_modules=EXTENSIONS,
    cmdclass=cmdclass,
    distclass=BinaryDistribution,
    long_description=long_description(),
    long_description_content_type="text/markdown",
)
