"""Build of the hannoy Python package: compiles the Go engine into hannoy/libhannoy.so.

Static metadata lives in pyproject.toml. This file only adds what pyproject.toml cannot say:

* build_py runs ``go build -buildmode=c-shared -trimpath -o <build_lib>/hannoy/libhannoy.so
  ./capi`` from the repository root (for editable installs, into python/hannoy/ itself), so
  the library and the header cgo writes beside it (libhannoy.h) ship inside the package;
* build_ext compiles python/hannoy/_fastconv.c, a small optional CPython extension that turns
  the lists and tuples of add_item and by_vec into float32 bytes (about 8x faster than
  struct.pack at 784 floats). It is optional: without a C compiler or the Python headers the
  build prints a warning, skips it, and the package uses its pure-Python path. It uses the
  full C API (PyList_GET_ITEM, PyFloat_AS_DOUBLE): the limited API (abi3) measured about 4x
  slower per element (4.5 us against 1.1 us at 784 floats), which is most of the gain;
* the wheel is platform-specific (it holds a native library). Without the extension it is not
  tied to a Python version or ABI (the package loads the library with cffi in ABI mode):
  py3-none-<platform>; with it, it is tagged for the Python that built it (cpXY-cpXY-<platform>).

Environment: ``GO`` overrides the go binary; the usual Go variables (GOFLAGS, GOCACHE,
GOPROXY ...) apply. ``HANNOY_NO_FASTCONV=1`` at build time skips the extension (at run time it
makes an installed package ignore it).
"""

import os
import shutil
import subprocess

from setuptools import Extension, setup
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


def fastconv_wanted():
    return os.environ.get("HANNOY_NO_FASTCONV", "") in ("", "0")


# optional=True: a compiler error (or no compiler) is a warning and the extension is skipped
EXTENSIONS = [
    Extension(
        PACKAGE + "._fastconv",
        sources=["python/%s/_fastconv.c" % PACKAGE],
        optional=True,
    )
] if fastconv_wanted() else []


def built_extensions(cmd):
    """The extension modules the build actually produced (an optional one may have failed)."""
    if not EXTENSIONS:
        return []
    build_ext = cmd.get_finalized_command("build_ext")
    return [p for p in build_ext.get_outputs() if os.path.exists(p)]


cmdclass = {"build_py": build_py}

if _bdist_wheel is not None:

    class bdist_wheel(_bdist_wheel):
        """Wheel tag py3-none-<platform> (native, but no Python ABI: cffi ABI mode), or the
        building Python's tag when the wheel holds the _fastconv extension."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            impl, abi, plat = super().get_tag()
            if built_extensions(self):
                return impl, abi, plat
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
