"""Lazy loading of ``libhannoy.so`` through cffi (ABI mode) and the calling conventions.

Importing this module does **not** load the library: the Go runtime starts when the library is
loaded, and a Go runtime does not survive ``fork()``. The library is loaded on first use (the
first ``Database(...)``), from the package directory, or from the path in the environment
variable ``HANNOY_LIBRARY`` (for development).

Every call into the library goes through :func:`lib`, which checks that the process is the one
that loaded the library: in a child created by ``fork()`` after loading, calling into Go would
hang, so :class:`~hannoy.ForkedProcessError` is raised instead. The check is a flag that an
``os.register_at_fork`` hook sets in the child (no ``getpid`` system call per call: the
single-item and single-query paths make one library call of about a microsecond).

cffi releases the GIL around every C call (ABI mode has no per-function choice), so searches and
builds run in parallel with other Python threads; for the microsecond calls the release costs
about 0.1 µs, and Go needs the thread free anyway while another thread's call holds a writer.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional, Tuple

from ._errors import ForkedProcessError, LibraryNotFoundError, error_for_status

__all__ = [
    "LIBRARY_ENV",
    "LIBRARY_NAME",
    "is_loaded",
    "library_path",
    "lib",
    "ffi",
    "new_err",
    "check",
    "take_string",
    "call",
    "fork_safe",
]

#: Environment variable that overrides the library path.
LIBRARY_ENV = "HANNOY_LIBRARY"
#: File name of the library inside the package directory.
LIBRARY_NAME = "libhannoy.so"

_HERE = os.path.dirname(os.path.abspath(__file__))
_CDEF_PATH = os.path.join(_HERE, "_cdef.h")

_lock = threading.Lock()
_ffi: Any = None  # cffi.FFI, created on first use
_lib: Any = None  # the dlopen'ed library, None until loaded
_pid: Optional[int] = None  # the process that loaded the library
_path: Optional[str] = None  # where it was loaded from
# True in a child forked after the library was loaded (set by the at-fork hook below).
_forked = False

_FORK_MESSAGE = (
    "hannoy was used in this process's parent before fork(): the Go runtime inside "
    "libhannoy does not survive fork(), so this child process cannot call into it (it would "
    'hang). Use multiprocessing with the "spawn" or "forkserver" start method, e.g. '
    'multiprocessing.get_context("spawn").Pool(...), or create the processes before the '
    "first use of hannoy."
)


def _after_fork_in_child() -> None:
    global _forked
    if _lib is not None:
        _forked = True


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)


def is_loaded() -> bool:
    """True once the library has been loaded in this interpreter (by this or a parent process)."""
    return _lib is not None


def library_path() -> str:
    """The path the library is (or would be) loaded from."""
    if _path is not None:
        return _path
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return env
    return os.path.join(_HERE, LIBRARY_NAME)


def _read_cdef() -> str:
    with open(_CDEF_PATH, "r", encoding="utf-8") as f:
        return f.read()


def _load() -> Tuple[Any, Any]:
    global _ffi, _lib, _pid, _path
    with _lock:
        if _lib is not None:
            return _ffi, _lib
        import cffi  # imported lazily too: import hannoy stays cheap

        path = library_path()
        if not os.path.exists(path):
            where = (
                "the environment variable %s" % LIBRARY_ENV
                if os.environ.get(LIBRARY_ENV)
                else "the package directory"
            )
            raise LibraryNotFoundError(
                "expected the hannoy library at %r (from %s), but there is no such file. "
                "Install hannoy with `pip install .` on a machine with Go (it builds "
                "libhannoy.so), or set %s to a library built with "
                "`go build -buildmode=c-shared -o libhannoy.so ./capi`."
                % (path, where, LIBRARY_ENV)
            )
        ffi = cffi.FFI()
        ffi.cdef(_read_cdef())
        try:
            lib = ffi.dlopen(path)
        except OSError as e:
            raise LibraryNotFoundError(
                "expected a loadable shared library at %r, but loading it failed: %s" % (path, e)
            ) from e
        _ffi, _pid, _path = ffi, os.getpid(), path
        _lib = lib  # last: is_loaded() is True only when everything is set
        return ffi, lib


def ffi() -> Any:
    """The cffi ``FFI`` object (loads the library if needed)."""
    if _lib is None:
        _load()
    return _ffi


def lib() -> Any:
    """The loaded library; loads it on first use. Raises ForkedProcessError in a forked child."""
    if _lib is None:
        _load()
    elif _forked:
        raise ForkedProcessError(_FORK_MESSAGE)
    return _lib


def forked_error() -> ForkedProcessError:
    """The error of a call into the library from a forked child."""
    return ForkedProcessError(_FORK_MESSAGE)


def fork_safe() -> bool:
    """True when calling into the library is allowed (loaded by this very process)."""
    return _lib is not None and not _forked and _pid == os.getpid()


def new_err() -> Any:
    """A fresh ``char **`` for the ``err`` argument."""
    return _ffi.new("char **")


def take_string(p: Any) -> Optional[str]:
    """Decode and free a ``char *`` allocated by the library (NULL -> None)."""
    if p == _ffi.NULL:
        return None
    try:
        return _ffi.string(p).decode("utf-8", errors="replace")
    finally:
        _lib.hannoy_free(p)


def check(status: int, err: Any) -> None:
    """Raise the exception for a non-zero status, with the library's message (freed here)."""
    if status == 0:
        return
    message = take_string(err[0]) if err is not None else None
    raise error_for_status(status, message)


def call(name: str, *args: Any) -> None:
    """Call ``hannoy_<name>(*args, err)`` and raise on a non-zero status."""
    library = lib()
    err = _ffi.new("char **")
    check(getattr(library, name)(*args, err), err)


def call_json(name: str, *args: Any) -> dict:
    """Call ``hannoy_<name>(*args, char **json, char **err)`` and return the JSON as a dict."""
    import json

    library = lib()
    out = _ffi.new("char **")
    err = _ffi.new("char **")
    check(getattr(library, name)(*args, out, err), err)
    text = take_string(out[0])
    return json.loads(text) if text else {}


def version() -> dict:
    """The library's ``hannoy_version`` JSON as a dict (loads the library)."""
    return call_json("hannoy_version")


def verify(path: str) -> dict:
    """The library's ``hannoy_verify`` JSON report for the database directory ``path``."""
    return call_json("hannoy_verify", os.fsencode(path))
