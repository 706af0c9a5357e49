"""Drive upstream hannoy 0.1.3 (the Rust package from PyPI) in its own process.

Run by ``test_compat_upstream.py`` as ``python upstream_driver.py SPEC.json RESULT.json`` with
``PYTHONPATH`` holding only the directory upstream was installed into (both packages import as
``hannoy``, and upstream keeps one process-global LMDB environment: the first path opened wins,
so every database gets a fresh driver process).

SPEC.json::

    {"path": "/tmp/.../db", "metric": "COSINE", "name": null, "env_size": null,
     "ops": [
        {"op": "write", "index": 0, "dims": 784, "m": 16, "ef": 96,
         "ids": "ids.npy", "vectors": "vectors.npy", "method": "add_items"},
        {"op": "search", "index": 0, "queries": "q.npy", "n": 10, "ef_search": 200,
         "out": "s0"},                       # writes s0_ids.npy and s0_dists.npy (by_array)
        {"op": "by_vec", "index": 0, "queries": "q.npy", "n": 10, "ef_search": 200},
        {"op": "by_item", "index": 0, "items": [1, 2], "n": 10, "ef_search": 200},
        {"op": "reader", "index": 0},       # only opens a reader
        {"op": "api"}                       # what the installed upstream offers
     ]}

Relative file names are resolved against the directory of SPEC.json. RESULT.json holds
``{"hannoy_file": ..., "version": ..., "open": {...}, "results": [...]}`` with one entry per op:
``{"ok": true, ...}`` or ``{"ok": false, "error_type": ..., "error": ...}``. The driver never
raises for an upstream error: it records it, and the test decides.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, Dict


def _err(exc: BaseException) -> Dict[str, Any]:
    return {
        "ok": False,
        "error_type": type(exc).__name__,
        "error": str(exc),
        "traceback": traceback.format_exc(limit=5),
    }


def _pairs(res: Any) -> Any:
    if res is None:
        return None
    return [[int(i), float(d)] for i, d in res]


def main(spec_path: str, result_path: str) -> int:
    import numpy as np

    with open(spec_path, "r", encoding="utf-8") as f:
        spec = json.load(f)
    base = os.path.dirname(os.path.abspath(spec_path))

    def p(name: str) -> str:
        return name if os.path.isabs(name) else os.path.join(base, name)

    out: Dict[str, Any] = {"results": []}
    try:
        import hannoy
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        out["import"] = _err(exc)
        _dump(out, result_path)
        return 0
    out["hannoy_file"] = hannoy.__file__
    try:
        from importlib import metadata

        dists = [
            d
            for d in metadata.distributions(path=[os.path.dirname(os.path.dirname(hannoy.__file__))])
            if (d.metadata["Name"] or "").lower() == "hannoy"
        ]
        out["version"] = dists[0].version if dists else None
    except Exception as exc:  # noqa: BLE001
        out["version"] = "unknown: %s" % exc

    metric = getattr(hannoy.Metric, spec.get("metric", "EUCLIDEAN"))
    db = None
    if spec.get("path"):
        os.makedirs(spec["path"], exist_ok=True)  # upstream needs an existing directory
        kwargs: Dict[str, Any] = {}
        if spec.get("name") is not None:
            kwargs["name"] = spec["name"]
        if spec.get("env_size") is not None:
            kwargs["env_size"] = int(spec["env_size"])
        try:
            db = hannoy.Database(spec["path"], metric, **kwargs)
            out["open"] = {"ok": True}
        except BaseException as exc:  # noqa: BLE001
            out["open"] = _err(exc)

    for op in spec.get("ops", []):
        kind = op["op"]
        t0 = time.perf_counter()
        try:
            if kind == "api":
                res: Dict[str, Any] = {
                    "ok": True,
                    "all": list(hannoy.__all__),
                    "metrics": [m for m in dir(hannoy.Metric) if not m.startswith("_")],
                    "metric_str": {
                        m: str(getattr(hannoy.Metric, m))
                        for m in dir(hannoy.Metric)
                        if not m.startswith("_")
                    },
                }
                for cls in ("Database", "Writer", "Reader"):
                    res[cls] = sorted(
                        a for a in dir(getattr(hannoy, cls)) if not a.startswith("_")
                    ) + sorted(
                        a for a in ("__enter__", "__exit__") if hasattr(getattr(hannoy, cls), a)
                    )
            elif db is None:
                raise RuntimeError("database not open: %s" % out.get("open"))
            elif kind == "write":
                ids = np.load(p(op["ids"]))
                vectors = np.ascontiguousarray(np.load(p(op["vectors"])), dtype=np.float32)
                with db.writer(op["dims"], index=op.get("index", 0), m=op.get("m", 16),
                               ef=op.get("ef", 96)) as w:
                    if op.get("method", "add_items") == "add_items":
                        w.add_items([int(i) for i in ids], vectors)
                    else:
                        for i, v in zip(ids, vectors):
                            w.add_item(int(i), [float(x) for x in v])
                res = {"ok": True, "n": len(ids)}
            elif kind == "reader":
                db.reader(op.get("index", 0))
                res = {"ok": True}
            elif kind == "search":
                queries = np.ascontiguousarray(np.load(p(op["queries"])), dtype=np.float32)
                n = op.get("n", 10)
                reader = db.reader(op.get("index", 0))
                ids_out = np.empty((queries.shape[0], n), dtype=np.uint32)
                dists_out = np.empty((queries.shape[0], n), dtype=np.float32)
                ret = reader.by_array(queries, n=n, ef_search=op.get("ef_search", 200),
                                      out=(ids_out, dists_out))
                np.save(p(op["out"] + "_ids.npy"), ids_out)
                np.save(p(op["out"] + "_dists.npy"), dists_out)
                res = {"ok": True, "returned": repr(ret)}
            elif kind == "by_vec":
                queries = np.load(p(op["queries"]))
                reader = db.reader(op.get("index", 0))
                res = {
                    "ok": True,
                    "results": [
                        _pairs(reader.by_vec([float(x) for x in q], n=op.get("n", 10),
                                             ef_search=op.get("ef_search", 200)))
                        for q in queries
                    ],
                }
            elif kind == "by_item":
                reader = db.reader(op.get("index", 0))
                res = {
                    "ok": True,
                    "results": [
                        _pairs(reader.by_item(int(i), n=op.get("n", 10),
                                              ef_search=op.get("ef_search", 200)))
                        for i in op["items"]
                    ],
                }
            else:
                raise ValueError("unknown op %r" % kind)
        except BaseException as exc:  # noqa: BLE001 - PanicException derives from BaseException
            res = _err(exc)
        res["op"] = kind
        res["seconds"] = time.perf_counter() - t0
        out["results"].append(res)
    _dump(out, result_path)
    return 0


def _dump(out: Dict[str, Any], path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
