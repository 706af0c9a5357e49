"""Lifetime of the library's handles.

A handle is the ``uint64_t`` the library returns for an open database, writer or reader. The
Python objects hold a small handle object (never the other way round), so that the object's
finalizer (``weakref.finalize``) can close the handle without keeping the object alive.

* :class:`SharedHandle` (databases, readers) may be used by many threads at once: every call
  brackets itself with :meth:`~SharedHandle.enter` / :meth:`~SharedHandle.exit`, and
  :meth:`~SharedHandle.close` waits until no call is in flight before closing, so a handle is
  never closed under a running search.
* :class:`WriterHandle` is used by one call at a time (the C contract): calls hold its
  re-entrant lock; closing first asks a running build to cancel, then takes the lock.

In a child process created by ``fork()``, handles are dropped without calling the library.
"""

from __future__ import annotations

import threading
from typing import Optional, Set

from . import _ffi
from ._errors import ClosedError, WriterBusyError

__all__ = ["SharedHandle", "WriterHandle"]


class _Base:
    __slots__ = ("kind", "value", "parent", "children", "state", "__weakref__")

    def __init__(self, kind: str, value: int, parent: Optional["SharedHandle"]) -> None:
        self.kind = kind
        self.value = value
        self.parent = parent
        self.children: Set[_Base] = set()
        self.state = "open"  # or "closed", "committed", "aborted"
        if parent is not None:
            parent.children.add(self)

    @property
    def is_open(self) -> bool:
        return self.value != 0

    def closed_error(self) -> ClosedError:
        if self.state in ("committed", "aborted"):
            return ClosedError(
                "expected an open %s, but this one was already %s; open a new one with "
                "db.writer(...)" % (self.kind, self.state)
            )
        return ClosedError("expected an open %s, but this one is closed" % self.kind)

    def _drop(self) -> bool:
        """In a forked child (or before loading): forget the handle without calling the library
        and without taking locks (a parent thread may have held them at fork time)."""
        for child in list(self.children):
            child._drop()
        was_open = bool(self.value)
        self.value = 0
        if was_open:
            self.state = "closed"
        return was_open

    def close(self, raise_errors: bool = False) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _detach(self) -> None:
        if self.parent is not None:
            self.parent.children.discard(self)

    def _close_children(self) -> None:
        # Writers first (abort), then readers: a database closes what belongs to it.
        kids = sorted(self.children, key=lambda h: 0 if h.kind == "writer" else 1)
        for child in kids:
            child.close()


class SharedHandle(_Base):
    """A handle many threads may use at once (database, reader)."""

    __slots__ = ("_lock", "_busy", "_idle", "_closer")

    def __init__(
        self, kind: str, value: int, closer: str, parent: Optional["SharedHandle"] = None
    ) -> None:
        super().__init__(kind, value, parent)
        self._lock = threading.Lock()
        self._busy = 0
        self._idle: Optional[threading.Event] = None  # set by close() while calls are in flight
        self._closer = closer  # name of the C function that closes it

    def enter(self) -> int:
        """Mark a call in flight; return the handle value or raise ClosedError."""
        with self._lock:
            value = self.value
            if not value:
                raise self.closed_error()
            self._busy += 1
            return value

    def exit(self) -> None:
        with self._lock:
            self._busy -= 1
            if self._busy == 0 and self._idle is not None:
                self._idle.set()

    def close(self, raise_errors: bool = False) -> bool:
        """Close children, wait for calls in flight, close the handle. False if already closed."""
        if not _ffi.fork_safe():
            return self._drop()
        self._close_children()
        with self._lock:
            value = self.value
            if not value:
                return False
            self.value = 0
            self.state = "closed"
            idle = None
            if self._busy:
                idle = self._idle = threading.Event()
        if idle is not None:
            idle.wait()
        self._detach()
        try:
            _ffi.call(self._closer, value)
        except Exception:
            if raise_errors:
                raise
        return True

    def finalize(self) -> None:
        """Finalizer: close quietly (never raises)."""
        try:
            self.close()
        except BaseException:  # pragma: no cover - finalizers must not raise
            pass


class WriterHandle(_Base):
    """A writer handle: one call at a time (re-entrant lock)."""

    __slots__ = ("lock", "building")

    def __init__(self, value: int, parent: Optional[SharedHandle]) -> None:
        super().__init__("writer", value, parent)
        self.lock = threading.RLock()
        self.building = False

    def live(self) -> int:
        """The handle value (caller holds ``lock``) or raise ClosedError."""
        if not self.value:
            raise self.closed_error()
        return self.value

    def end(self, how: str, raise_errors: bool = True) -> None:
        """Commit or abort (how = "commit" / "abort"); the handle is ended either way."""
        value = self.value
        if not value:
            if raise_errors:
                raise self.closed_error()
            return
        if not _ffi.fork_safe():
            self._drop()
            return
        if self.building:
            # another thread is inside hannoy_writer_build: ask it to stop first
            _ffi.lib().hannoy_writer_cancel(value)
        with self.lock:
            value = self.value
            if not value:
                if raise_errors:
                    raise self.closed_error()
                return
            self.value = 0
            self.state = "committed" if how == "commit" else "aborted"
            self._detach()
            try:
                _ffi.call("hannoy_writer_" + how, value)
            except Exception as e:
                if how == "commit" and isinstance(e, WriterBusyError):
                    # The library refused to commit a transaction that failed earlier (a full
                    # map, a failed build) and kept it: the writer stays open, to be aborted.
                    self.value = value
                    self.state = "open"
                    if self.parent is not None:
                        self.parent.children.add(self)
                elif how == "commit":
                    self.state = "closed by a failed commit"
                if raise_errors:
                    raise

    def close(self, raise_errors: bool = False) -> bool:
        if not self.value:
            return False
        self.end("abort", raise_errors=raise_errors)
        return True

    def finalize(self) -> None:
        try:
            self.close()
        except BaseException:  # pragma: no cover
            pass
