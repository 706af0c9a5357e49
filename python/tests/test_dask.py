"""hannoy.dask: sharded builds and fan-out searches on a dask.distributed LocalCluster.

One cluster for the whole module (2 worker processes, 1 thread each, as the issue asks), made
with ``distributed.scheduler.allowed-failures = 0``: a worker that dies under a task fails the
task at once (Dask's ``KilledWorker``) instead of retrying it on another worker, so the tests
of a dying worker see the error. The cluster is closed at the end even when tests fail, and the
module checks that no process of it is left.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from helpers import subprocess_env

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
import dask.array as da  # noqa: E402
import psutil  # noqa: E402  (a dependency of distributed)

import hannoy.dask as hd  # noqa: E402

DIMS = 24
PAD_ID = 0xFFFFFFFF


# -- fixtures -----------------------------------------------------------------------------------


def _children() -> Dict[int, str]:
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            out[p.pid] = " ".join(p.cmdline())
        except psutil.Error:
            pass
    return out


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Any]:
    before = set(_children())
    cluster = client = None
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = distributed.LocalCluster(
                processes=True,
                n_workers=2,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
        # not the default client: tests pass it, or make it current, explicitly
        client = distributed.Client(cluster, set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        # no process of the cluster is left (multiprocessing's resource tracker may stay)
        deadline = time.monotonic() + 30
        left: Dict[int, str] = {}
        while time.monotonic() < deadline:
            left = {
                pid: cmd
                for pid, cmd in _children().items()
                if pid not in before and "resource_tracker" not in cmd
            }
            if not left:
                break
            time.sleep(0.2)
        assert not left, "processes left after closing the cluster: %r" % left


def settle(client: Any) -> None:
    """Wait until both workers are up (a killed one is restarted by its nanny) and have no
    failpoint set."""
    deadline = time.monotonic() + 120
    while True:
        client.wait_for_workers(2, timeout=120)
        done = client.run(hd._clear_failpoints, on_error="return")
        if len(done) == 2 and not any(isinstance(v, BaseException) for v in done.values()):
            return
        assert time.monotonic() < deadline, done
        time.sleep(0.2)


@pytest.fixture
def client(cluster_client: Any) -> Iterator[Any]:
    """The module's client with both workers up and no failpoint set."""
    settle(cluster_client)
    yield cluster_client
    settle(cluster_client)


@pytest.fixture(scope="module")
def data() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors, queries): 2,000 items with scattered ids, 40 queries."""
    rng = np.random.default_rng(7)
    ids = (rng.permutation(2000).astype(np.uint32) * 3 + 11).astype(np.uint32)
    vectors = rng.standard_normal((2000, DIMS)).astype(np.float32)
    queries = rng.standard_normal((40, DIMS)).astype(np.float32)
    return ids, vectors, queries


# -- helpers ------------------------------------------------------------------------------------


def reference_search(
    paths: List[str], metric: Metric, queries: np.ndarray, n: int, ef: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Search each shard database directly and merge by (distance, id), row by row, in Python."""
    per_shard = []
    for p in paths:
        with hannoy.Database(p, metric) as db:
            r = db.reader()
            per_shard.append(r.by_array(queries, n=n, ef_search=ef))
            r.close()
    ids = np.full((len(queries), n), PAD_ID, dtype=np.uint32)
    dists = np.full((len(queries), n), np.inf, dtype=np.float32)
    for row in range(len(queries)):
        merged = sorted(
            (d, i) for shard in per_shard for (i, d) in shard[row]
        )[:n]  # fmt: skip
        for col, (d, i) in enumerate(merged):
            ids[row, col] = i
            dists[row, col] = d
    return ids, dists


def shard_contents(idx: hd.ShardedIndex) -> List[np.ndarray]:
    """The item ids of each shard, read with hannoy.Database directly."""
    out = []
    for p in idx.shard_paths:
        with hannoy.Database(p, idx.metric) as db:
            r = db.reader()
            out.append(r.item_ids())
            r.close()
    return out


def manifest(directory: Any) -> Dict[str, Any]:
    with open(os.path.join(str(directory), hd.MANIFEST)) as f:
        return json.load(f)


def check_shards_intact(directory: Path, shards: int) -> List[Any]:
    """Every shard directory verifies and opens; returns its item ids (None: never built)."""
    out: List[Any] = []
    for s in range(shards):
        path = directory / ("shard-%04d" % s)
        if not path.exists():
            out.append(None)
            continue
        hannoy.verify(path)
        with hannoy.Database(path, Metric.EUCLIDEAN) as db:
            try:
                r = db.reader()
            except hannoy.MissingMetadataError:
                out.append(None)
                continue
            out.append(r.item_ids())
            r.close()
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k
                          for f, t in zip(found, truth)]))  # fmt: skip


# -- no Dask needed -----------------------------------------------------------------------------


@pytest.mark.nolib
def test_import_hannoy_does_not_import_dask() -> None:
    code = (
        "import sys, hannoy\n"
        "assert hasattr(hannoy, 'Database')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "assert not bad, bad\n"
        "assert 'hannoy.dask' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.nolib
def test_shard_of_is_the_documented_function() -> None:
    ids = np.array([0, 1, 2, 3, 4, 5, 2**32 - 1, 123456789], dtype=np.uint32)
    for shards in (1, 2, 3, 4, 7, 4096):
        expect = [((int(i) * 2654435761) % 2**32) * shards // 2**32 for i in ids]
        assert hd.shard_of(ids, shards).tolist() == expect
    assert hd.shard_of([0, 1, 2, 3, 4, 5], 4).tolist() == [0, 2, 0, 3, 1, 0]
    # consecutive ids and ids with a common stride both spread evenly
    for stride in (1, 4, 1000):
        counts = np.bincount(hd.shard_of(np.arange(40_000) * stride, 4), minlength=4)
        assert counts.min() > 9_000, (stride, counts)
    with pytest.raises(hannoy.InvalidArgumentError):
        hd.shard_of([1], 0)
    with pytest.raises(hannoy.InvalidItemError):
        hd.shard_of([-1], 4)


@pytest.mark.nolib
def test_every_hannoy_error_crosses_from_a_worker() -> None:
    """Each of hannoy's exceptions arrives from a worker as itself: the same type, message and
    status (distributed pickles a task's exception with tblib's reducers)."""
    from distributed.core import error_message
    from distributed.protocol.pickle import loads

    classes = [c for c in vars(hannoy).values()
               if isinstance(c, type) and issubclass(c, hannoy.HannoyError)]  # fmt: skip
    classes.append(hd.WorkerLostError)
    assert hannoy.HannoyIOError in classes and hannoy.DiskFullError in classes
    for cls in classes:
        try:
            raise cls("boom: %s" % cls.__name__)
        except cls as e:
            sent = error_message(e)["exception"].data  # what a worker sends: pickled bytes
        assert isinstance(sent, bytes)
        got = loads(sent)
        assert type(got) is cls
        assert str(got) == "boom: %s" % cls.__name__
        assert got.status == cls.status


@pytest.mark.nolib
def test_stubs_match() -> None:
    """dask.pyi names what the module has, with the same parameters and defaults."""
    from test_stubs import _decorators, _runtime_params, _same, _stub_params

    tree = ast.parse((Path(hd.__file__).with_suffix(".pyi")).read_text(encoding="utf-8"))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    consts = {
        n.target.id for n in tree.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }  # fmt: skip
    assert set(hd.__all__) == (set(funcs) | set(classes) | consts) - {"__all__", "_PathLike"}
    for name, node in funcs.items():
        assert _same(_stub_params(node), _runtime_params(getattr(hd, name))), name
    assert [b.__name__ for b in hd.WorkerLostError.__bases__] == ["HannoyError"]
    stub = classes["ShardedIndex"]
    members = {n.name: n for n in stub.body if isinstance(n, ast.FunctionDef)}
    runtime = {k for k in vars(hd.ShardedIndex) if not k.startswith("_")} | {
        k for k in ("__init__", "__len__", "__enter__", "__exit__", "__repr__")
    }
    assert set(members) == runtime
    for name, node in members.items():
        static = inspect.getattr_static(hd.ShardedIndex, name)
        if "property" in _decorators(node):
            assert isinstance(static, property), name
            continue
        if "classmethod" in _decorators(node):
            assert isinstance(static, classmethod), name
            params = _stub_params(node)[1:]  # cls
        else:
            params = _stub_params(node)
        assert _same(params, _runtime_params(getattr(hd.ShardedIndex, name))), name


# -- on the cluster -----------------------------------------------------------------------------


def test_build_and_search_equal_the_merge_of_the_shards(
    client: Any, data: Any, tmp_path: Path
) -> None:
    ids, vectors, queries = data
    d = tmp_path / "idx"
    idx = hd.build(vectors, d, metric=Metric.EUCLIDEAN, shards=4, m=8, ef=40, ids=ids,
                   client=client, seed=3)  # fmt: skip
    assert (idx.shards, idx.metric, idx.dimensions, len(idx)) == (4, Metric.EUCLIDEAN, DIMS, 2000)
    assert idx.directory == str(d)

    # the manifest: small, complete, and the only file beside the shards (and the lock)
    m = manifest(d)
    assert m["format"] == hd.FORMAT == 1
    assert (m["metric"], m["dimensions"], m["shards"]) == ("euclidean", DIMS, 4)
    assert m["shard_function"]["multiplier"] == 2654435761
    assert m["build"] == {"m": 8, "ef": 40, "m0": 16, "seed": 3}
    assert sorted(os.listdir(d)) == [
        "hannoy-shards.json", "hannoy-shards.lock",
        "shard-0000", "shard-0001", "shard-0002", "shard-0003",
    ]  # fmt: skip

    # each shard is a plain hannoy database holding exactly the ids of its shard
    shard = hd.shard_of(ids, 4)
    contents = shard_contents(idx)
    for s in range(4):
        assert np.array_equal(contents[s], np.sort(ids[shard == s]))
    assert idx.shard_lengths() == [int((shard == s).sum()) for s in range(4)]
    with hannoy.Database(idx.shard_paths[1], Metric.EUCLIDEAN) as db:
        r = db.reader()
        some = int(contents[1][0])
        assert np.array_equal(r.item_vector(some), vectors[ids.tolist().index(some)])
        r.close()

    for n, ef in ((10, 20), (10, 200), (37, 50)):
        got_ids, got_d = idx.by_array(queries, n=n, ef_search=ef)
        exp_ids, exp_d = reference_search(idx.shard_paths, Metric.EUCLIDEAN, queries, n, ef)
        assert got_ids.dtype == np.uint32 and got_d.dtype == np.float32
        assert got_ids.shape == (len(queries), n)
        assert np.array_equal(got_ids, exp_ids), (n, ef)
        assert np.array_equal(got_d, exp_d), (n, ef)
    # a 1-D query gives 1-D rows; an item's own vector finds it first
    one_ids, one_d = idx.by_array(vectors[5], n=3)
    assert one_ids.shape == (3,) and one_ids[0] == ids[5] and one_d[0] == 0.0
    # no queries: empty results
    e_ids, e_d = idx.by_array(np.empty((0, DIMS), np.float32), n=4)
    assert e_ids.shape == (0, 4) and e_d.shape == (0, 4)


def test_padding_and_ties_like_one_index(client: Any, tmp_path: Path) -> None:
    # 6 items, 4 shards, n larger than the index: padded exactly like Reader.by_array pads;
    # equal distances come back by id, as one index orders them.
    vectors = np.array(
        [[1, 0], [0, 1], [-1, 0], [0, -1], [2, 0], [0, 2]], dtype=np.float32
    )  # fmt: skip
    ids = np.array([40, 7, 13, 2, 99, 5], dtype=np.uint32)
    idx = hd.build(vectors, tmp_path / "tiny", shards=4, ids=ids, client=client)
    queries = np.array([[0, 0], [1, 1], [3, 0]], dtype=np.float32)
    got = idx.by_array(queries, n=9, ef_search=50)
    with hannoy.Database(tmp_path / "one", Metric.EUCLIDEAN) as db:
        with db.writer(2) as w:
            w.add_items(ids, vectors)
        r = db.reader()
        exp = (np.empty((3, 9), np.uint32), np.empty((3, 9), np.float32))
        r.by_array(queries, n=9, ef_search=50, out=exp)
        r.close()
    assert np.array_equal(got[0], exp[0]) and np.array_equal(got[1], exp[1])
    assert got[0][0, :4].tolist() == [2, 7, 13, 40]  # four at distance 1: by id
    assert got[0][0, 6:].tolist() == [PAD_ID] * 3 and np.isinf(got[1][0, 6:]).all()


def test_recall_at_least_that_of_one_index(client: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    base = rng.standard_normal((4000, 32)).astype(np.float32)
    queries = rng.standard_normal((100, 32)).astype(np.float32)
    d2 = (queries**2).sum(1)[:, None] - 2 * queries @ base.T + (base**2).sum(1)[None, :]
    truth = np.argsort(d2, axis=1, kind="stable")[:, :10]
    params = dict(m=6, ef=24)
    ef_search = 12
    idx = hd.build(base, tmp_path / "sharded", shards=4, client=client, seed=5, **params)
    sharded, _ = idx.by_array(queries, n=10, ef_search=ef_search)
    with hannoy.Database(tmp_path / "one", Metric.EUCLIDEAN) as db:
        with db.writer(32, seed=5, **params) as w:
            w.add_items(np.arange(len(base)), base)
        r = db.reader()
        one = np.empty((100, 10), np.uint32)
        r.by_array(queries, n=10, ef_search=ef_search, out=(one, np.empty((100, 10), np.float32)))
        r.close()
    r_sharded, r_one = recall(sharded, truth), recall(one, truth)
    print("recall@10 at ef_search %d: 4 shards %.4f, one index %.4f"
          % (ef_search, r_sharded, r_one))  # fmt: skip
    assert r_sharded >= r_one - 0.01


def test_add_delete_and_reopen(client: Any, data: Any, tmp_path: Path) -> None:
    ids, vectors, queries = data
    d = tmp_path / "idx"
    idx = hd.build(vectors, d, shards=3, ids=ids, client=client, m=8, ef=40)
    before = idx.by_array(queries, n=10, ef_search=100)  # workers now hold readers open
    gens0 = manifest(d)["generations"]

    rng = np.random.default_rng(1)
    new_ids = np.array([1, 2, 4, 10_000_000, 4_294_967_295], dtype=np.uint32)
    new_vecs = rng.standard_normal((5, DIMS)).astype(np.float32)
    idx.add(new_ids, new_vecs)
    assert len(idx) == 2005
    touched = sorted(set(hd.shard_of(new_ids, 3).tolist()))
    gens1 = manifest(d)["generations"]
    assert [g1 - g0 for g0, g1 in zip(gens0, gens1)] == [int(s in touched) for s in range(3)]
    got_ids, got_d = idx.by_array(new_vecs, n=2)  # the workers see the new items at once
    assert got_ids[:, 0].tolist() == new_ids.tolist() and (got_d[:, 0] == 0).all()

    # overwrite an item with another vector
    idx.add([ids[0]], vectors[1:2] + 0.5)
    got_ids, _ = idx.by_array(vectors[1] + 0.5, n=1)
    assert got_ids.tolist() == [ids[0]]

    # delete: absent ids are ignored, the count says how many existed
    assert idx.delete([ids[3], ids[4], 10_000_000, 123]) == 3
    assert len(idx) == 2002
    got_ids, _ = idx.by_array(vectors[3:5], n=5)
    assert not set(got_ids.ravel().tolist()) & {int(ids[3]), int(ids[4]), 10_000_000}
    assert idx.delete([]) == 0
    idx.add([], np.empty((0, DIMS), np.float32))

    after = idx.by_array(queries, n=10, ef_search=100)
    exp = reference_search(idx.shard_paths, Metric.EUCLIDEAN, queries, 10, 100)
    assert np.array_equal(after[0], exp[0]) and np.array_equal(after[1], exp[1])
    assert not np.array_equal(before[0], after[0]) or not np.array_equal(before[1], after[1])
    idx.close()
    assert idx.closed
    with pytest.raises(hannoy.ClosedError):
        idx.by_array(queries)

    again = hd.ShardedIndex.open(d, client=client)
    assert (again.shards, again.dimensions, len(again)) == (3, DIMS, 2002)
    res = again.by_array(queries, n=10, ef_search=100)
    assert np.array_equal(res[0], after[0]) and np.array_equal(res[1], after[1])
    for path in again.shard_paths:
        hannoy.verify(path)
    again.close()


def test_dask_array_input(client: Any, data: Any, tmp_path: Path) -> None:
    ids, vectors, queries = data
    dv = da.from_array(vectors, chunks=(300, 10))  # column chunks too: rechunked
    di = da.from_array(ids, chunks=500)
    idx = hd.build(dv, tmp_path / "a", shards=4, ids=di, client=client, m=8, ef=40)
    ref = hd.build(vectors, tmp_path / "b", shards=4, ids=ids, client=client, m=8, ef=40)
    for a, b in zip(shard_contents(idx), shard_contents(ref)):
        assert np.array_equal(a, b)
    with hannoy.Database(idx.shard_paths[2], Metric.EUCLIDEAN) as db:
        r = db.reader()
        for i in r.item_ids()[:20].tolist():
            assert np.array_equal(r.item_vector(i), vectors[ids.tolist().index(i)])
        r.close()
    # default ids 0..n-1 from the chunks' offsets; adds from dask arrays
    idx2 = hd.build(dv[:1000], tmp_path / "c", shards=2, client=client)
    assert sorted(np.concatenate(shard_contents(idx2)).tolist()) == list(range(1000))
    idx2.add(da.arange(1000, 2000, chunks=400, dtype=np.uint32), dv[1000:])
    assert len(idx2) == 2000
    got, _ = idx2.by_array(vectors[1500], n=1)
    assert got.tolist() == [1500]
    # a NaN in a block is refused on the worker, with hannoy's type, before anything is written
    bad = vectors[:10].copy()
    bad[6, 1] = np.nan
    gens = manifest(tmp_path / "c")["generations"]
    with pytest.raises(hannoy.InvalidArgumentError, match="finite.*nothing was written") as e:
        idx2.add(da.arange(5000, 5010, chunks=5), da.from_array(bad, chunks=(5, DIMS)))
    assert e.value.status == 1
    assert manifest(tmp_path / "c")["generations"] == gens and len(idx2) == 2000


def test_threads_without_a_client_and_the_current_client(
    client: Any, data: Any, tmp_path: Path
) -> None:
    ids, vectors, queries = data
    assert hd._current_client() is None  # the module's client is not the default one
    d = tmp_path / "idx"
    idx = hd.build(vectors, d, shards=2, ids=ids, m=8, ef=40)  # threads, in this process
    local = idx.by_array(queries, n=10)
    assert {k for k in hd._CACHE if k[0] == str(d)} == {(str(d), 0), (str(d), 1)}
    idx.close()
    assert not [k for k in hd._CACHE if k[0] == str(d)]
    # a dask array without a cluster: computed block by block here
    idx_da = hd.build(da.from_array(vectors, chunks=(700, DIMS)), tmp_path / "da", shards=2,
                      ids=ids, m=8, ef=40)  # fmt: skip
    for a, b in zip(shard_contents(idx_da), shard_contents(hd.ShardedIndex.open(d))):
        assert np.array_equal(a, b)
    idx_da.close()
    unknown = da.from_array(vectors, chunks=500)
    unknown = unknown[unknown[:, 0] > 0]  # chunks of unknown sizes
    with pytest.raises(hannoy.InvalidArgumentError, match="compute_chunk_sizes"):
        hd.build(unknown, tmp_path / "unknown", shards=2)
    assert not (tmp_path / "unknown").exists()

    with client.as_current():  # client=None now means this client: searched on the workers
        remote = hd.ShardedIndex.open(d)
        res = remote.by_array(queries, n=10)
        assert not [k for k in hd._CACHE if k[0] == str(d)]
    assert np.array_equal(res[0], local[0]) and np.array_equal(res[1], local[1])
    explicit = hd.ShardedIndex.open(d, client=client).by_array(queries, n=10)
    assert np.array_equal(explicit[0], local[0])
    remote.close()


def test_errors_are_hannoy_types(client: Any, data: Any, tmp_path: Path) -> None:
    ids, vectors, queries = data
    d = tmp_path / "idx"
    idx = hd.build(vectors[:500], d, shards=3, ids=ids[:500], client=client, m=8, ef=40)
    gens = manifest(d)["generations"]

    # bad arguments: found before anything is written
    with pytest.raises(hannoy.DimensionError):
        idx.add([1], np.zeros((1, DIMS + 1), np.float32))
    with pytest.raises(hannoy.InvalidArgumentError, match="as many rows"):
        idx.add([1, 2], np.zeros((1, DIMS), np.float32))
    with pytest.raises(hannoy.InvalidItemError):
        idx.delete([-5])
    with pytest.raises(hannoy.DimensionError):
        idx.by_array(np.zeros(DIMS - 1, np.float32))
    with pytest.raises(hannoy.InvalidArgumentError):
        idx.by_array(queries, n=0)
    with pytest.raises(hannoy.ArgumentTypeError):
        hd.ShardedIndex.open(d, client="tcp://nowhere:1")
    assert manifest(d)["generations"] == gens
    # directories
    with pytest.raises(hannoy.HannoyIOError, match="does not exist"):
        hd.ShardedIndex.open(tmp_path / "missing", client=client)
    with pytest.raises(hannoy.HannoyIOError, match="hannoy-shards.json is missing"):
        hd.ShardedIndex.open(tmp_path, client=client)
    with pytest.raises(hannoy.InvalidArgumentError, match="already holds a sharded index"):
        hd.build(vectors, d, client=client)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(hannoy.InvalidArgumentError, match="not empty"):
        hd.build(vectors, tmp_path / "other", client=client)
    assert os.listdir(tmp_path / "other") == ["notes.txt"]

    # a shard that fails on its worker: shard 1 replaced by a cosine database
    other = tmp_path / "cosine"
    with hannoy.Database(other, Metric.COSINE) as db:
        with db.writer(DIMS) as w:
            w.add_item(0, vectors[0])
    old1 = d / "shard-0001"
    os.rename(old1, tmp_path / "kept")
    os.rename(other, old1)
    new_ids = np.arange(10**6, 10**6 + 30, dtype=np.uint32)
    with pytest.raises(hannoy.MetricMismatchError, match="shard 1 .*last commit") as e:
        idx.add(new_ids, np.ones((30, DIMS), np.float32))
    assert e.value.status == 7
    assert isinstance(e.value.__cause__, hannoy.MetricMismatchError)
    g = manifest(d)["generations"]
    assert g == [gens[0] + 1, gens[1], gens[2] + 1]  # the others committed their part
    with pytest.raises(hannoy.MetricMismatchError, match="search of shard 1"):
        idx.by_array(queries)
    # put shard 1 back and repeat the add: complete
    os.rename(old1, other)
    os.rename(tmp_path / "kept", old1)
    idx.add(new_ids, np.ones((30, DIMS), np.float32))
    assert len(idx) == 530
    # a damaged manifest
    (d / hd.MANIFEST).write_text("{not json")
    with pytest.raises(hannoy.CorruptDatabaseError):
        hd.ShardedIndex.open(d, client=client)
    (d / hd.MANIFEST).write_text(json.dumps({"format": 2}))
    with pytest.raises(hannoy.HannoyError, match="newer hannoy"):
        hd.ShardedIndex.open(d, client=client)


def test_worker_killed_during_a_build_or_an_add(client: Any, data: Any, tmp_path: Path) -> None:
    ids, vectors, queries = data
    d = tmp_path / "idx"
    # the worker building shard 1 dies before its commit
    client.run(hd._set_failpoint, "write", 1)
    lost = r"build of shards? (\d+, )*1\b.*repeat build"
    with pytest.raises(hd.WorkerLostError, match=lost) as e:
        hd.build(vectors, d, shards=4, ids=ids, client=client, m=8, ef=40)
    assert isinstance(e.value, hannoy.HannoyError)
    assert not (d / hd.MANIFEST).exists()  # no index: the manifest comes after every shard
    shard = hd.shard_of(ids, 4)
    for s, held in enumerate(check_shards_intact(d, 4)):
        assert held is None or np.array_equal(held, np.sort(ids[shard == s])), s
    assert check_shards_intact(d, 4)[1] is None  # shard 1 never committed
    settle(client)
    idx = hd.build(vectors, d, shards=4, ids=ids, client=client, m=8, ef=40)  # repeated: works
    assert len(idx) == 2000
    before = [c.copy() for c in shard_contents(idx)]

    # the worker adding to shard 2 dies before its commit
    client.run(hd._set_failpoint, "write", 2)
    new_ids = np.arange(10**6, 10**6 + 40, dtype=np.uint32)
    new_vecs = np.random.default_rng(3).standard_normal((40, DIMS)).astype(np.float32)
    with pytest.raises(hd.WorkerLostError, match=r"add of shards? (\d+, )*2\b"):
        idx.add(new_ids, new_vecs)
    held = check_shards_intact(d, 4)
    assert np.array_equal(held[2], before[2])  # shard 2 is at its last commit
    settle(client)
    idx.add(new_ids, new_vecs)  # repeated: complete
    assert len(idx) == 2040
    got, _ = idx.by_array(new_vecs, n=1)
    assert got[:, 0].tolist() == new_ids.tolist()


@pytest.mark.nolib
def test_every_shard_of_a_dead_worker_is_named() -> None:
    """A worker may run several shards' tasks; which one Dask reports first is a matter of
    timing, so the error names every shard whose worker died, then the others."""

    class KilledWorker(Exception):  # named like distributed's
        pass

    killed = [(2, KilledWorker("w1")), (0, KilledWorker("w1"))]
    e = hd._shard_error(sorted(killed), "add", "/d")
    assert isinstance(e, hd.WorkerLostError)
    assert "the Dask workers running the add of shards 0, 2 of /d died" in str(e)
    assert "failed too" not in str(e)
    e = hd._shard_error([(1, KilledWorker("w2")), (3, hannoy.DiskFullError("full"))], "build", "/d")
    assert "the Dask worker running the build of shard 1 of /d died" in str(e)
    assert "(shards 3 failed too)" in str(e)


def test_worker_killed_during_a_search(client: Any, data: Any, tmp_path: Path) -> None:
    ids, vectors, queries = data
    d = tmp_path / "idx"
    idx = hd.build(vectors, d, shards=4, ids=ids, client=client, m=8, ef=40)
    expect = idx.by_array(queries, n=10)
    client.run(hd._set_failpoint, "search", 0)
    with pytest.raises(hd.WorkerLostError, match=r"search of shards? (\d+, )*0\b"):
        idx.by_array(queries, n=10)
    settle(client)
    shard = hd.shard_of(ids, 4)
    for s, held in enumerate(check_shards_intact(d, 4)):
        assert np.array_equal(held, np.sort(ids[shard == s]))
    got = idx.by_array(queries, n=10)
    assert np.array_equal(got[0], expect[0]) and np.array_equal(got[1], expect[1])
