"""The ``hannoy`` command (also ``python -m hannoy``): inspect, check and search a database.

::

    hannoy info PATH [--name NAME] [--json]
    hannoy verify PATH [--json]
    hannoy search PATH (--item ID | --vector "0.1,0.2,...") [--index N] [-n 10] [--ef 200]
                  [--name NAME] [--no-verify] [--json]

The database's metric need not be given: each index is opened with the metric it is stored
with. Databases are opened read-only (nothing is created or written but LMDB's ``lock.mdb``)
and, before being opened, checked with :func:`hannoy.verify` (``search --no-verify`` skips
that), since LMDB can crash a process that opens a damaged file. Readers are opened in
``"disk"`` mode: one search needs a few pages, not a read-ahead of the file.

Exit status: 0 on success, 1 when the database cannot be used as asked (missing, not a hannoy
database, damaged, unknown index or item, wrong dimensions), 2 for bad arguments. Errors are one
line on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

__all__ = ["main", "CommandError"]

PROG = "hannoy"


class CommandError(Exception):
    """An error the command reports in one line on standard error before exiting with
    ``status`` (1: the database cannot be used as asked, 2: bad arguments)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the usage before the message; one line is enough for a user to fix a
        # typo, and `-h` has the rest.
        raise CommandError("%s (see %s -h)" % (message, self.prog), 2)


# -- opening ----------------------------------------------------------------------------------


def _check_path(path: str) -> None:
    """Clear messages for the usual mistakes, before the library sees the path."""
    if not os.path.exists(path):
        raise CommandError("%s: no such directory" % path)
    if not os.path.isdir(path):
        raise CommandError("%s: not a hannoy database (a database is a directory)" % path)
    data = os.path.join(path, "data.mdb")
    if not os.path.isfile(data):
        raise CommandError("%s: not a hannoy database (no data.mdb in it)" % path)
    if not os.access(data, os.R_OK):
        raise CommandError("%s: permission denied" % data)


def _verify(path: str) -> Dict[str, Any]:
    import hannoy

    _check_path(path)
    try:
        return hannoy.verify(path)
    except hannoy.CorruptDatabaseError as e:
        raise CommandError("%s: damaged: %s" % (path, e)) from None
    except hannoy.HannoyError as e:
        raise CommandError("%s: not a hannoy database: %s" % (path, e)) from None


def _metrics(first: Optional[Any]) -> List[Any]:
    from hannoy import Metric

    order = list(Metric)
    if first is not None:
        order.remove(first)
        order.insert(0, first)
    return order


class _Opened:
    """Databases of one path opened read-only, one per metric tried (they share one LMDB
    environment), closed together."""

    def __init__(self, path: str, name: Optional[str]) -> None:
        self.path = path
        self.name = name
        self.dbs: Dict[Any, Any] = {}
        self.last: Optional[Any] = None  # the metric that opened the last index

    def db(self, metric: Any) -> Any:
        import hannoy

        if metric not in self.dbs:
            self.dbs[metric] = hannoy.Database(self.path, metric, self.name, read_only=True)
        return self.dbs[metric]

    def indexes(self) -> List[int]:
        from hannoy import Metric

        return [int(i) for i in self.db(self.last or Metric.EUCLIDEAN).stats()["indexes"]]

    def reader(self, index: int) -> Any:
        """A reader of ``index`` opened with the metric it is stored with."""
        import hannoy

        for metric in _metrics(self.last):
            try:
                r = self.db(metric).reader(index, read_mode="disk")
            except hannoy.MetricMismatchError:
                continue
            self.last = metric
            return r
        raise CommandError("%s: index %d: stored with a metric this library does not know" % (self.path, index))

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()

    def __enter__(self) -> "_Opened":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _where(path: str, name: Optional[str]) -> str:
    return path if name is None else "%s (database %r)" % (path, name)


# -- info ---------------------------------------------------------------------------------------


def _info(args: argparse.Namespace) -> Dict[str, Any]:
    import hannoy
    from ._summary import file_bytes, from_reader_stats

    report = _verify(args.path)
    page = int(report["page_size"])
    named = [d["name"] for d in report.get("databases", []) if d.get("name")]
    if args.name is not None:
        if args.name not in named:
            raise CommandError(
                "%s: no database named %r (named databases: %s)"
                % (args.path, args.name, ", ".join(map(repr, named)) or "none")
            )
        names: List[Optional[str]] = [args.name]
    else:
        # The main database, unless it only holds the named ones (verify does not count the
        # records naming them among its entries).
        main_entries = int(report["databases"][0]["entries"]) if report.get("databases") else 0
        names = ([None] if main_entries > 0 or not named else []) + list(named)

    indexes: List[Dict[str, Any]] = []
    for name in names:
        with _Opened(args.path, name) as opened:
            try:
                ids = opened.indexes()
            except hannoy.HannoyError as e:
                raise CommandError("%s: cannot list its indexes: %s" % (_where(args.path, name), e)) from None
            for i in ids:
                try:
                    with opened.reader(i) as r:
                        s = from_reader_stats(r.stats())
                except hannoy.HannoyError as e:  # e.g. changes committed without a build
                    s = {"index": i, "error": str(e)}
                s["database"] = name
                indexes.append(s)
    return {
        "path": args.path,
        "file_bytes": file_bytes(args.path),
        "used_bytes": (int(report["last_page"]) + 1) * page,
        "page_size": page,
        "txn_id": report.get("txn_id"),
        "named_databases": named,
        "library": hannoy.library_info(),
        "indexes": indexes,
    }


def _print_info(info: Dict[str, Any]) -> None:
    from ._summary import human_bytes

    lib = info["library"]
    print("%s: hannoy database" % info["path"])
    print(
        "  file          %s (%s used, pages of %d bytes, transaction %s)"
        % (human_bytes(info["file_bytes"]), human_bytes(info["used_bytes"]), info["page_size"],
           info["txn_id"])
    )  # fmt: skip
    print("  library       %s, format %s" % (lib.get("version"), lib.get("format")))
    if info["named_databases"]:
        print("  named dbs     %s" % ", ".join(info["named_databases"]))
    print("  indexes       %d" % len(info["indexes"]))
    for s in info["indexes"]:
        where = "" if s["database"] is None else " (database %r)" % s["database"]
        print("index %d%s" % (s["index"], where))
        if "error" in s:
            print("  error         %s" % s["error"])
            continue
        eps = s["entry_points"]
        shown = ", ".join(str(e) for e in eps[:10]) + (", ..." if len(eps) > 10 else "")
        print("  metric        %s" % s["metric"])
        print("  dimensions    %d" % s["dimensions"])
        print("  items         {:,}".format(s["items"]))
        print("  entry points  %d: %s" % (len(eps), shown))
        print("  layers        %d" % s["layers"])
        print("  format        %s" % s["version"])


# -- verify ---------------------------------------------------------------------------------------


def _verify_cmd(args: argparse.Namespace) -> Dict[str, Any]:
    report = dict(_verify(args.path))
    report["path"] = args.path
    report["ok"] = True
    return report


def _print_verify(r: Dict[str, Any]) -> None:
    dbs = ", ".join(
        "%s: %d entries, depth %d" % (d["name"] or "main", d["entries"], d["depth"])
        for d in r.get("databases", [])
    )
    print("%s: ok" % r["path"])
    print(
        "  %d pages of %d bytes (transaction %s): %d branch, %d leaf, %d overflow, %d free"
        % (r["file_pages"], r["page_size"], r["txn_id"], r["branch_pages"], r["leaf_pages"],
           r["overflow_pages"], r["free_pages"])
    )  # fmt: skip
    print("  databases: %s" % (dbs or "none"))


# -- search ---------------------------------------------------------------------------------------


def parse_vector(text: str) -> List[float]:
    """``"0.1,0.2, 0.3"`` (commas and/or spaces, optionally in brackets) -> floats, all finite."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    parts = [p for p in body.replace(",", " ").split()]
    if not parts:
        raise CommandError("bad vector %r: expected numbers separated by commas" % text, 2)
    out = []
    for i, p in enumerate(parts):
        try:
            v = float(p)
        except ValueError:
            raise CommandError("bad vector: value %d is %r, not a number" % (i, p), 2) from None
        if not math.isfinite(v):
            raise CommandError("bad vector: value %d is %r, not a finite number" % (i, p), 2)
        out.append(v)
    return out


def _search(args: argparse.Namespace) -> Dict[str, Any]:
    import hannoy

    if args.no_verify:
        _check_path(args.path)
    else:
        _verify(args.path)
    vector = parse_vector(args.vector) if args.vector is not None else None
    where = _where(args.path, args.name)
    with _Opened(args.path, args.name) as opened:
        try:
            ids = opened.indexes()
        except hannoy.HannoyError as e:
            raise CommandError("%s: cannot list its indexes: %s" % (where, e)) from None
        if args.index not in ids:
            raise CommandError(
                "%s: no index %d (indexes: %s)"
                % (where, args.index, ", ".join(map(str, ids)) or "none built")
            )
        try:
            with opened.reader(args.index) as r:
                if vector is not None:
                    if len(vector) != r.dimensions:
                        raise CommandError(
                            "wrong dimensions: the vector has %d values, index %d has %d dimensions"
                            % (len(vector), args.index, r.dimensions)
                        )
                    found = r.by_vec(vector, n=args.n, ef_search=args.ef)
                    query: Dict[str, Any] = {"vector": vector}
                else:
                    res = r.by_item(args.item, n=args.n, ef_search=args.ef)
                    if res is None:
                        raise CommandError("%s: index %d has no item %d" % (where, args.index, args.item))
                    found = res
                    query = {"item": args.item}
                metric = str(r.metric)
        except hannoy.HannoyError as e:
            raise CommandError("%s: index %d: %s" % (where, args.index, e)) from None
    return {
        "path": args.path,
        "database": args.name,
        "index": args.index,
        "metric": metric,
        "query": query,
        "n": args.n,
        "ef_search": args.ef,
        "results": [{"id": i, "distance": d} for i, d in found],
    }


def _print_search(s: Dict[str, Any]) -> None:
    q = s["query"]
    what = "item %d" % q["item"] if "item" in q else "the vector"
    print(
        "# %d nearest to %s in index %d (%s, ef_search %d)"
        % (len(s["results"]), what, s["index"], s["metric"], s["ef_search"])
    )
    print("%4s  %10s  %s" % ("rank", "id", "distance"))
    for rank, hit in enumerate(s["results"], 1):
        print("%4d  %10d  %.6g" % (rank, hit["id"], hit["distance"]))


# -- main -----------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number, got %r" % text) from None
    if v < 1:
        raise argparse.ArgumentTypeError("expected at least 1, got %d" % v)
    return v


def _bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a whole number, got %r" % text) from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError("expected %d to %d, got %d" % (low, high, v))
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (``hannoy -h`` prints its help)."""
    p = _Parser(
        prog=PROG,
        description="Inspect, check and search hannoy databases (the directories that hold "
        "data.mdb). Exit status: 0 success, 1 the database cannot be used as asked, 2 bad "
        "arguments.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    info = sub.add_parser("info", help="every index: metric, dimensions, items, entry points, "
                          "layers, format; the file's size")  # fmt: skip
    info.add_argument("path", metavar="PATH", help="the database directory")
    info.add_argument("--name", help="only this named database (default: all of them)")
    info.add_argument("--json", action="store_true", help="print JSON")

    ver = sub.add_parser("verify", help="check every LMDB page before trusting a file "
                         "(hannoy.verify); exit status 1 if it is damaged")  # fmt: skip
    ver.add_argument("path", metavar="PATH", help="the database directory")
    ver.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("search", help="the nearest neighbours of an item or a vector",
                       description="Search one index. Negative first values need "
                       "--vector=-0.5,1 (with '=').")  # fmt: skip
    s.add_argument("path", metavar="PATH", help="the database directory")
    s.add_argument("--index", type=_bounded(0, 65535), default=0, metavar="N",
                   help="the index to search (default 0)")  # fmt: skip
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--item", type=_bounded(0, 2**32 - 1), metavar="ID",
                   help="neighbours of this item (itself excluded)")  # fmt: skip
    q.add_argument("--vector", metavar="V", help='neighbours of this vector: "0.1,0.2,..."')
    s.add_argument("-n", type=_positive, default=10, help="number of neighbours (default 10)")
    s.add_argument("--ef", type=_positive, default=200, help="ef_search (default 200)")
    s.add_argument("--name", help="a named database (default: the main one)")
    s.add_argument("--no-verify", action="store_true",
                   help="open without checking the file first (a trusted file)")  # fmt: skip
    s.add_argument("--json", action="store_true", help="print JSON")
    return p


_COMMANDS = {
    "info": (_info, _print_info),
    "verify": (_verify_cmd, _print_verify),
    "search": (_search, _print_search),
}


def _vector_values(argv: Sequence[str]) -> List[str]:
    """``--vector -0.5,1`` -> ``--vector=-0.5,1``: argparse takes a value that starts with
    ``-`` for an option (unless it is one plain negative number)."""
    out: List[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if arg == "--vector" and len(nxt) > 1 and nxt[0] == "-" and nxt[1] in "0123456789.":
            out.append("--vector=" + nxt)
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def _run(argv: Optional[Sequence[str]]) -> Tuple[int, Optional[str]]:
    import hannoy

    try:
        raw = sys.argv[1:] if argv is None else argv
        args = build_parser().parse_args(_vector_values(raw))
        compute, show = _COMMANDS[args.command]
        result = compute(args)
    except CommandError as e:
        return e.status, str(e)
    except hannoy.HannoyError as e:  # e.g. the library cannot be loaded
        return 1, "%s: %s" % (type(e).__name__, e)
    except OSError as e:
        return 1, str(e)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        show(result)
    return 0, None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Errors are printed as one line on standard error (``hannoy: error: ...``).

    Examples
    --------
    >>> from hannoy.cli import main
    >>> main(["info", "/tmp/hannoy-example", "--json"])   # prints JSON
    0
    """
    try:
        status, message = _run(argv)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of the output went away (| head): not an error of this command.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    if message is not None:
        print("%s: error: %s" % (PROG, message), file=sys.stderr)
    return status


def console_main() -> None:
    """The ``hannoy`` console script: :func:`main` with ``sys.exit``."""
    sys.exit(main())
