"""Summaries of databases and indexes, for humans: the HTML of ``_repr_html_`` (Jupyter) and
the facts the ``hannoy`` command prints.

Everything here reads what the library already reports (``Database.stats()``,
``Reader.stats()``, ``library_info()``) plus the size of ``data.mdb``; nothing here raises for
a database that cannot be described: the problem becomes part of the summary.
"""

from __future__ import annotations

import html
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._errors import HannoyError

__all__ = [
    "index_summary",
    "file_bytes",
    "human_bytes",
    "database_html",
    "reader_html",
    "safe_html",
    "MAX_HTML_INDEXES",
    "MAX_ENTRY_POINTS",
]

#: Indexes described one by one in a Database's HTML (each costs a reader open); the rest are
#: listed by id only.
MAX_HTML_INDEXES = 16
#: Entry point ids shown in the HTML (the count is always shown).
MAX_ENTRY_POINTS = 8


def file_bytes(path: str) -> Optional[int]:
    """Size in bytes of the database file ``path/data.mdb``; None when it cannot be read."""
    try:
        return os.stat(os.path.join(path, "data.mdb")).st_size
    except OSError:
        return None


def human_bytes(n: Optional[int]) -> str:
    """``1536`` -> ``"1.5 KiB"``; None -> ``"?"``."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return "%d bytes" % n if unit == "bytes" else "%.1f %s" % (value, unit)
        value /= 1024
    return "%d bytes" % n  # pragma: no cover - the loop always returns


def from_reader_stats(stats: Dict[str, Any]) -> Dict[str, Any]:
    """The facts of one index from ``Reader.stats()``, under the names the summaries use."""
    max_level = int(stats.get("max_level", 0))
    return {
        "index": int(stats["index"]),
        "metric": str(stats.get("metric")),
        "dimensions": int(stats["dimensions"]),
        "items": int(stats["n_items"]),
        "entry_points": [int(e) for e in stats.get("entry_points", [])],
        "layers": max_level + 1,
        "max_level": max_level,
        "version": str(stats.get("version")),
    }


def index_summary(db: Any, index: int) -> Dict[str, Any]:
    """Describe one index of the :class:`~hannoy.Database` ``db``: see :func:`from_reader_stats`.

    The reader is opened in ``"disk"`` mode (no read-ahead, no scan into codes: describing a
    file larger than memory costs a few page reads) and closed at once. An index that cannot
    be opened is described by ``{"index", "error", "error_type"}`` instead (the metric differs
    from the database's, changes await a build, ...).
    """
    try:
        with db.reader(index, read_mode="disk") as r:
            return from_reader_stats(r.stats())
    except HannoyError as e:
        return {"index": index, "error": str(e), "error_type": type(e).__name__}


# -- HTML -------------------------------------------------------------------------------------

_STYLE = (
    "<style>"
    ".hannoy-repr table{border-collapse:collapse;margin:2px 0}"
    ".hannoy-repr th,.hannoy-repr td{text-align:left;padding:1px 8px;vertical-align:top}"
    ".hannoy-repr .hannoy-note{color:#a33}"
    "</style>"
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _entry_points(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:MAX_ENTRY_POINTS])
    more = ", &hellip; %d more" % (len(ids) - MAX_ENTRY_POINTS) if len(ids) > MAX_ENTRY_POINTS else ""
    return "%d: %s%s" % (len(ids), _e(shown), more)


def _rows(rows: List[Tuple[str, str]]) -> str:
    """A two-column table; values are HTML already escaped by the caller."""
    body = "".join("<tr><th>%s</th><td>%s</td></tr>" % (_e(k), v) for k, v in rows)
    return "<table>%s</table>" % body


def _box(title: str, body: str) -> str:
    return '<div class="hannoy-repr">%s<strong>%s</strong>%s</div>' % (_STYLE, _e(title), body)


def _note(text: str) -> str:
    return '<div class="hannoy-note">%s</div>' % _e(text)


def _library_format() -> Optional[str]:
    try:
        from . import _ffi

        return str(_ffi.version().get("format"))
    except Exception:  # the library could not be loaded: leave the row out
        return None


def database_html(db: Any) -> str:
    """The HTML of ``Database._repr_html_``."""
    title = "hannoy.Database"
    if db.closed:
        return _box(title, _rows([("path", _e(db.path))]) + _note("closed"))
    rows: List[Tuple[str, str]] = [("path", _e(db.path))]
    if db.name is not None:
        rows.append(("name", _e(db.name)))
    rows.append(("metric", _e(db.metric)))
    if db.read_only:
        rows.append(("read-only", "yes"))
    try:
        stats = db.stats()
    except HannoyError as e:
        return _box(title, _rows(rows) + _note("cannot list its indexes: %s" % e))
    path = str(stats.get("path") or db.path)
    rows.append(("file size", _e(human_bytes(file_bytes(path)))))
    fmt = _library_format()
    if fmt is not None:
        rows.append(("format version", _e(fmt)))
    ids = [int(i) for i in stats.get("indexes", [])]
    rows.append(("indexes", _e(len(ids))))
    body = _rows(rows)
    if not ids:
        return _box(title, body + _note("no built index yet"))
    head = "".join(
        "<th>%s</th>" % h
        for h in ("index", "metric", "dimensions", "items", "entry points", "layers", "format")
    )
    lines = []
    for i in ids[:MAX_HTML_INDEXES]:
        s = index_summary(db, i)
        if "error" in s:
            lines.append(
                '<tr><td>%d</td><td colspan="6" class="hannoy-note">%s: %s</td></tr>'
                % (i, _e(s["error_type"]), _e(s["error"]))
            )
            continue
        lines.append(
            "<tr><td>%d</td><td>%s</td><td>%d</td><td>%s</td><td>%s</td><td>%d</td><td>%s</td></tr>"
            % (
                s["index"],
                _e(s["metric"]),
                s["dimensions"],
                _e("{:,}".format(s["items"])),
                _entry_points(s["entry_points"]),
                s["layers"],
                _e(s["version"]),
            )
        )
    table = "<table><tr>%s</tr>%s</table>" % (head, "".join(lines))
    if len(ids) > MAX_HTML_INDEXES:
        rest = ids[MAX_HTML_INDEXES:]
        table += _note(
            "%d more indexes: %s" % (len(rest), ", ".join(str(i) for i in rest[:50]))
            + (", ..." if len(rest) > 50 else "")
        )
    return _box(title, body + table)


def reader_html(reader: Any) -> str:
    """The HTML of ``Reader._repr_html_``."""
    title = "hannoy.Reader"
    db = reader.database
    if reader.closed:
        return _box(
            title, _rows([("path", _e(db.path)), ("index", _e(reader.index))]) + _note("closed")
        )
    try:
        stats = reader.stats()
    except HannoyError as e:
        return _box(title, _rows([("path", _e(db.path))]) + _note(str(e)))
    s = from_reader_stats(stats)
    path = str(stats.get("path") or db.path)
    rows: List[Tuple[str, str]] = [("path", _e(db.path))]
    if stats.get("name") is not None:
        rows.append(("name", _e(stats["name"])))
    rows += [
        ("index", _e(s["index"])),
        ("metric", _e(s["metric"])),
        ("dimensions", _e(s["dimensions"])),
        ("items", _e("{:,}".format(s["items"]))),
        ("entry points", _entry_points(s["entry_points"])),
        ("layers", _e(s["layers"])),
        ("format version", _e(s["version"])),
        ("read mode", _e(stats.get("read_mode"))),
        (
            "file size",
            _e(
                "%s (%s used)"
                % (human_bytes(file_bytes(path)), human_bytes(stats.get("file_bytes")))
            ),
        ),
    ]
    return _box(title, _rows(rows))


def safe_html(render: Any, obj: Any) -> str:
    """``render(obj)``, or, should describing it fail for any reason, a short note: a
    ``_repr_html_`` that raises would hide the object in Jupyter."""
    try:
        return str(render(obj))
    except Exception as e:  # never raise from a repr
        try:
            text = repr(obj)
        except Exception:
            text = "<%s>" % type(obj).__name__
        return _box(text, _note("could not describe it: %s: %s" % (type(e).__name__, e)))
