"""Build of the hannoy Python package: compiles the Go engine into hannoy/libhannoy.so.

Static metadata lives in pyproject.toml. This file only adds what pyproject.toml cannot say:

* build_py runs ``go build -buildmode=c-shared -trimpath -o <build_lib>/hannoy/libhannoy.so
  ./capi`` from the repository root (for editable installs, into python/hannoy/ itself), so
  the library and the header cgo writes beside it (libhannoy.h) ship inside the package;
* the wheel is platform-specific (it holds a native library) but not tied to a Python
  version or ABI (the package loads the library with cffi in ABI mode): py3-none-<platform>.

Environment: ``GO`` overrides the go binary; the usual Go variables (GOFLAGS, GOCACHE,
GOPROXY ...) apply.
"""

import os
import shutil
import subprocess

from setuptools import setup
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
    cmd = [go, "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-o", out, "./capi"]
    env = dict(os.environ)
    env["CGO_ENABLED"] = "1"  # -buildmode=c-shared needs cgo
    print("hannoy: %s  (in %s)" % (" ".join(cmd), ROOT), flush=True)
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


class build_py(_build_py):
    """build_py that also compiles the Go library into the package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = os.path.join(ROOT, "python", PACKAGE)
        else:
            target = os.path.join(self.build_lib, PACKAGE)
        build_go_library(target)

    def get_outputs(self, include_bytecode=1):
        outputs = list(super().get_outputs(include_bytecode))
        for name in (LIBRARY, HEADER):
            path = os.path.join(self.build_lib, PACKAGE, name)
            if path not in outputs:
                outputs.append(path)
        return outputs


class BinaryDistribution(Distribution):
    """The package ships a native library: install it as platform-specific."""

    def has_ext_modules(self):
        return True


cmdclass = {"build_py": build_py}

if _bdist_wheel is not None:

    class bdist_wheel(_bdist_wheel):
        """Wheel tag py3-none-<platform>: native, but no Python ABI (cffi ABI mode)."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = bdist_wheel


def long_description():
    path = os.path.join(ROOT, "README.md")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    return "hannoy: approximate nearest-neighbour search (HNSW) on disk in LMDB, with a Go engine."


setup(
    cmdclass=cmdclass,
    distclass=BinaryDistribution,
    long_description=long_description(),
    long_description_content_type="text/markdown",
)
