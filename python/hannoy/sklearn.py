"""scikit-learn integration: :class:`HannoyTransformer`, an approximate ``KNeighborsTransformer``.

``from hannoy.sklearn import HannoyTransformer`` gives a drop-in for
:class:`sklearn.neighbors.KNeighborsTransformer` that finds the neighbours with a hannoy (HNSW)
index instead of an exact search: the same sparse graphs (CSR, ``n_neighbors + 1`` entries per
row in ``"distance"`` mode, each training sample its own first neighbour in ``fit_transform``),
with distances in scikit-learn's convention, for estimators that take
``metric="precomputed"`` (``Isomap``, ``TSNE``, ``KNeighborsClassifier``, ``DBSCAN`` ...) or
``affinity="precomputed_nearest_neighbors"`` (``SpectralClustering``).

This module needs scikit-learn (``pip install 'hannoy[sklearn]'``); ``import hannoy`` never
imports it.

Examples
--------
>>> from sklearn.datasets import load_digits
>>> from sklearn.manifold import Isomap
>>> from sklearn.pipeline import make_pipeline
>>> from hannoy.sklearn import HannoyTransformer
>>> X, _ = load_digits(return_X_y=True)
>>> pipe = make_pipeline(HannoyTransformer(n_neighbors=10, random_state=0),
...                      Isomap(n_neighbors=10, metric="precomputed"))
>>> pipe.fit_transform(X).shape
(1797, 2)
"""

from __future__ import annotations

import numbers
import os
import shutil
import tempfile
import weakref
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

try:
    from sklearn import get_config  # first: without scikit-learn, fail before importing scipy
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data

    import scipy.sparse as sp  # scikit-learn's dependencies
    from joblib import effective_n_jobs
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "hannoy.sklearn needs scikit-learn >= 1.6 (%s): pip install 'hannoy[sklearn]'" % exc
    ) from exc

from ._database import Database
from ._errors import (
    ArgumentTypeError,
    HannoyError,
    HannoyIOError,
    InternalError,
    InvalidArgumentError,
)
from ._metric import Metric

__all__ = ["HannoyTransformer"]

# scikit-learn's metric names (and their aliases) -> hannoy's metric.
_METRICS: Dict[str, Tuple[str, Metric]] = {
    "euclidean": ("euclidean", Metric.EUCLIDEAN),
    "l2": ("euclidean", Metric.EUCLIDEAN),
    "cosine": ("cosine", Metric.COSINE),
    "manhattan": ("manhattan", Metric.MANHATTAN),
    "cityblock": ("manhattan", Metric.MANHATTAN),
    "l1": ("manhattan", Metric.MANHATTAN),
    "hamming": ("hamming", Metric.HAMMING),
}
_MODES = ("distance", "connectivity")
_NO_ID = 0xFFFFFFFF  # by_array's padding id
_BLOCK_FLOATS = 1 << 22  # rows converted to float32 at a time: 16 MiB of vectors
_ITEM_BLOCK = 1 << 15  # training items searched per by_items call
_INPUT_ATTRIBUTES = ("n_features_in_", "feature_names_in_")
_FITTED_ATTRIBUTES = _INPUT_ATTRIBUTES + (
    "n_samples_fit_", "effective_metric_", "index_path_", "_n_features_out", "_index",
)  # fmt: skip


# -- the fitted index --------------------------------------------------------------------------


def _release(db: Database, reader: Any, directory: Optional[str], pid: int) -> None:
    """Close the index and remove its temporary directory (a weakref.finalize callback)."""
    if os.getpid() != pid:
        # A forked child holds a copy of the parent's estimator: the files are the parent's.
        return
    try:
        reader.close()
        db.close()
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _env_size(n_samples: int, n_features: int, m: int) -> int:
    """Map size for a temporary index: far above what it stores, far below the 1 TiB default
    (address space each open environment reserves, so many fitted estimators can be alive).

    Per item: its vector (LMDB stores one beyond half a page in overflow pages: up to a page
    more), its links (<= 2m ids in layer 0, fewer above) and keys, all times 4. Measured
    (m=16): 4,262 bytes an item at 784 dimensions against a bound of 33,024, 219 at 16
    against 20,736. Only address space: the file grows with use.
    """
    per_item = 4 * n_features + 4096 + 64 * m
    return (1 << 30) + 4 * n_samples * per_item


class _Index:
    """A fitted index: its database, a reader and, unless ``path`` was given, the temporary
    directory holding them (removed by :meth:`close` or when this object is collected)."""

    def __init__(self, db: Database, directory: str, temporary: bool) -> None:
        self.db = db
        self.directory = directory
        self.temporary = temporary
        try:
            self.reader = db.reader()
        except BaseException:
            _release(db, _Closed(), directory if temporary else None, os.getpid())
            raise
        self._finalizer = weakref.finalize(
            self, _release, db, self.reader, directory if temporary else None, os.getpid()
        )

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def close(self) -> None:
        self._finalizer()

    def export(self) -> Dict[str, Any]:
        """What a pickle carries: the used part of the file (temporary) or the path."""
        if not self.temporary:
            return {"path": self.directory}
        used = int(self.reader.stats()["file_bytes"])
        with open(os.path.join(self.directory, "data.mdb"), "rb") as f:
            data = f.read(used)
        if len(data) != used:  # pragma: no cover - the file is ours and committed
            raise InternalError("index file %s is shorter than its used part" % self.directory)
        return {"data": data}


class _Closed:
    """Stands for a reader that was never opened."""

    def close(self) -> None:
        pass


def _open_copy(data: bytes, metric: Metric) -> _Index:
    """A pickled index: its file, written into a new temporary directory and checked."""
    from . import verify

    directory = tempfile.mkdtemp(prefix="hannoy-sklearn-")
    try:
        with open(os.path.join(directory, "data.mdb"), "wb") as f:
            f.write(data)
        verify(directory)  # a damaged file must give an error, never a crash
        env_size = 2 * len(data) + (1 << 26)
        db = Database(directory, metric, env_size=env_size)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return _Index(db, directory, True)


# -- the estimator -----------------------------------------------------------------------------


class HannoyTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Transform X into a graph of its approximate k nearest neighbours, found with hannoy.

    A drop-in for :class:`sklearn.neighbors.KNeighborsTransformer`: ``fit`` builds a hannoy
    HNSW index of the training samples, ``transform`` searches it. The graphs have the same
    layout (CSR, float64, sorted by distance within each row), the same conventions
    (``n_neighbors + 1`` entries per row in ``"distance"`` mode, each training sample its own
    first neighbour, at distance 0, in ``fit_transform``) and distances in scikit-learn's
    convention.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours per sample (``"distance"`` mode adds one, as scikit-learn does).
    mode : {"distance", "connectivity"}, default="distance"
        ``"distance"``: the distances; ``"connectivity"``: ones.
    metric : {"euclidean", "cosine", "manhattan", "hamming"}, default="euclidean"
        The distance, as scikit-learn computes it (aliases: ``"l2"``, ``"l1"``,
        ``"cityblock"``):

        - ``"euclidean"``: the L2 distance (hannoy's squared L2, square-rooted);
        - ``"cosine"``: ``1 - cos`` (twice hannoy's); all-zero samples are refused, as
          their cosine distance is undefined;
        - ``"manhattan"``: the L1 distance;
        - ``"hamming"``: the fraction of features that differ, for binary features only
          (0/1 or bool; other values are refused): hannoy's HAMMING index stores one bit per
          feature.

        Vectors are stored as float32, so distances carry float32's precision (about 1e-7
        relative).
    n_jobs : int, default=None
        Threads of the build and of the searches: ``None`` means 1 (unless in a
        :func:`joblib.parallel_config` context), ``-1`` every core, as in scikit-learn.
    m : int, default=16
        Links per node of the HNSW graph (``2 * m`` in the lowest layer).
    ef_construction : int, default=96
        Size of the candidate list while building (hannoy's ``ef``).
    ef_search : int, default=200
        Size of the candidate list while searching: larger is slower and more accurate.
    path : str or os.PathLike, default=None
        Where the index is stored. ``None``: a new temporary directory per fit, removed by
        :meth:`close` or when the estimator is garbage collected (``TMPDIR`` chooses where).
        A directory: ``fit`` writes index 0 of the hannoy database there (replacing what it
        held; a database already there must have the same metric and number of features),
        which stays after ``close`` and can be opened with :class:`hannoy.Database`. Estimators
        that share a path (clones in a grid search) overwrite each other's index: leave
        ``path=None`` there.
    random_state : int, RandomState instance or None, default=None
        The build's seed: an int is hannoy's ``seed`` itself, a RandomState (or None, the
        global one) draws it. With ``n_jobs=1`` builds are then reproducible.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen during :term:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`, when ``X`` has string feature names.
    n_samples_fit_ : int
        Number of samples in the fitted data (item ``i`` of the index is sample ``i``).
    effective_metric_ : str
        The metric used (aliases resolved).
    index_path_ : str
        The directory of the index.

    Notes
    -----
    Pickling (also ``copy.deepcopy`` and joblib): with ``path=None`` the pickle carries the
    index file itself (the used part of hannoy's ``data.mdb``, about the size of the vectors
    plus the links), and loading writes it into a new temporary directory, so the loaded
    estimator gives the same results without a rebuild. With ``path`` set, the pickle
    carries the path and loading reopens the index there (as hannoy's own objects pickle): it
    must still exist, as fitted, where the pickle is loaded.

    Examples
    --------
    >>> import numpy as np
    >>> from hannoy.sklearn import HannoyTransformer
    >>> X = np.random.default_rng(0).random((100, 8))
    >>> graph = HannoyTransformer(n_neighbors=5).fit_transform(X)
    >>> graph.shape, graph.nnz
    ((100, 100), 600)
    """

    def __init__(
        self,
        *,
        n_neighbors: int = 5,
        mode: str = "distance",
        metric: str = "euclidean",
        n_jobs: Optional[int] = None,
        m: int = 16,
        ef_construction: int = 96,
        ef_search: int = 200,
        path: Any = None,
        random_state: Any = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.mode = mode
        self.metric = metric
        self.n_jobs = n_jobs
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.path = path
        self.random_state = random_state

    # -- parameters ----------------------------------------------------------------------------

    @staticmethod
    def _int(value: Any, what: str, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ArgumentTypeError(
                "%s must be an int >= %d, got %s %r" % (what, low, type(value).__name__, value)
            )
        if value < low:
            raise InvalidArgumentError("%s must be an int >= %d, got %r" % (what, low, value))
        return int(value)

    def _k(self) -> int:
        return self._int(self.n_neighbors, "n_neighbors", 1)

    def _mode(self, mode: Any = None, what: str = "mode") -> str:
        mode = self.mode if mode is None else mode
        if not isinstance(mode, str) or mode not in _MODES:
            raise InvalidArgumentError(
                "%s must be 'distance' or 'connectivity', got %r" % (what, mode)
            )
        return mode

    def _ef(self) -> int:
        return self._int(self.ef_search, "ef_search", 1)

    def _threads(self) -> int:
        n_jobs = self.n_jobs
        if n_jobs is not None:
            if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral):
                raise ArgumentTypeError(
                    "n_jobs must be None or a non-zero int, got %s %r"
                    % (type(n_jobs).__name__, n_jobs)
                )
            if n_jobs == 0:
                raise InvalidArgumentError("n_jobs must be None or a non-zero int, got 0")
        return max(1, int(effective_n_jobs(n_jobs)))

    def _metric(self) -> Tuple[str, Metric]:
        if not isinstance(self.metric, str) or self.metric.lower() not in _METRICS:
            raise InvalidArgumentError(
                "metric must be one of %s, got %r"
                % (", ".join(repr(k) for k in _METRICS), self.metric)
            )
        return _METRICS[self.metric.lower()]

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            seed = int(rs)
            if not 0 <= seed < 2**64:
                raise InvalidArgumentError("random_state must be in 0..2**64-1, got %r" % rs)
            return seed
        try:
            rng = check_random_state(rs)
        except ValueError as exc:
            raise ArgumentTypeError(
                "random_state must be None, an int or a numpy RandomState, got %s %r"
                % (type(rs).__name__, rs)
            ) from exc
        return int(rng.randint(0, np.iinfo(np.int32).max))

    # -- input ---------------------------------------------------------------------------------

    def _validate(self, X: Any, reset: bool) -> Any:
        return validate_data(
            self, X, accept_sparse="csr", dtype=[np.float64, np.float32], reset=reset
        )

    def _blocks(self, X: Any, metric: str) -> Iterator[Tuple[int, np.ndarray]]:
        """(first row, float32 C-contiguous rows) of X, checked for what hannoy's metric needs."""
        n, d = X.shape
        rows = max(1, _BLOCK_FLOATS // max(d, 1))
        for start in range(0, n, rows):
            part = X[start : start + rows]
            if sp.issparse(part):
                part = part.toarray()
            with np.errstate(over="ignore"):
                block = np.ascontiguousarray(part, dtype=np.float32)
            if not np.isfinite(block).all():
                bad = start + int(np.argwhere(~np.isfinite(block))[0][0])
                raise InvalidArgumentError(
                    "X[%d] has a value beyond float32's range (about 3.4e38): hannoy stores "
                    "float32 vectors" % bad
                )
            if metric == "hamming":
                binary = (block == 0) | (block == 1)
                if not binary.all():
                    row = start + int(np.argwhere(~binary)[0][0])
                    raise InvalidArgumentError(
                        "metric='hamming' needs binary features (0/1 or bool), but X[%d] has "
                        "other values: hannoy's hamming index stores one bit per feature" % row
                    )
            elif metric == "cosine":
                zero = ~block.any(axis=1)
                if zero.any():
                    rows_ = (start + np.flatnonzero(zero)[:5]).tolist()
                    raise InvalidArgumentError(
                        "metric='cosine' is undefined for all-zero samples: X%s %s zero"
                        % (rows_, "is" if len(rows_) == 1 else "are")
                    )
            yield start, block

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> "HannoyTransformer":
        """Build the index of the training samples.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data (sparse rows are densified a block at a time).
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : HannoyTransformer
            The fitted transformer.

        Raises
        ------
        ValueError
            Bad parameters or data (:class:`hannoy.InvalidArgumentError` and scikit-learn's
            own checks); a failed fit leaves a previous fit as it was.
        """
        name, metric = self._metric()
        self._k()
        self._mode()
        self._ef()
        m = self._int(self.m, "m", 2)
        ef_construction = self._int(self.ef_construction, "ef_construction", 1)
        if self.path is not None and not isinstance(self.path, (str, bytes, os.PathLike)):
            raise ArgumentTypeError(
                "path must be None or a path, got %s %r" % (type(self.path).__name__, self.path)
            )
        seed = self._seed()
        threads = self._threads()

        # validate_data sets n_features_in_ (and feature_names_in_): a failed fit restores them
        saved = {k: v for k, v in self.__dict__.items() if k in _INPUT_ATTRIBUTES}
        try:
            X = self._validate(X, reset=True)
            n, d = X.shape
            if n > _NO_ID:
                raise InvalidArgumentError("hannoy indexes at most 4294967295 samples, got %d" % n)
            index = self._build(X, name, metric, m, ef_construction, seed, threads)
        except BaseException:
            for k in _INPUT_ATTRIBUTES:
                self.__dict__.pop(k, None)
            self.__dict__.update(saved)
            raise
        old = self.__dict__.get("_index")
        self._index = index
        self.n_samples_fit_ = n
        self.effective_metric_ = name
        self.index_path_ = index.directory
        self._n_features_out = n
        if old is not None:
            old.close()
        return self

    def _build(
        self,
        X: Any,
        name: str,
        metric: Metric,
        m: int,
        ef_construction: int,
        seed: int,
        threads: int,
    ) -> _Index:
        n, d = X.shape
        if self.path is None:
            directory = tempfile.mkdtemp(prefix="hannoy-sklearn-")
            temporary, env_size = True, _env_size(n, d, m)
        else:
            directory = os.path.abspath(os.fsdecode(os.fspath(self.path)))
            temporary, env_size = False, None
        db = None
        try:
            db = Database(directory, metric, env_size=env_size)
            with db.writer(d, m=m, ef=ef_construction, seed=seed, threads=threads) as writer:
                if not temporary:
                    writer.clear()
                for start, block in self._blocks(X, name):
                    ids = np.arange(start, start + block.shape[0], dtype=np.uint32)
                    writer.add_items(ids, block)
        except BaseException:
            if db is not None:
                db.close()
            if temporary:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        return _Index(db, directory, temporary)

    # -- searching -----------------------------------------------------------------------------

    def _distances(self, raw: np.ndarray) -> np.ndarray:
        """hannoy's distances -> scikit-learn's (float64)."""
        raw = np.asarray(raw, dtype=np.float64)
        name = self.effective_metric_
        if name == "euclidean":  # squared L2
            return np.sqrt(np.maximum(raw, 0.0))
        if name == "cosine":  # (1 - cos) / 2
            return np.clip(2.0 * raw, 0.0, 2.0)
        if name == "hamming":  # differing bits / features rounded up to 64
            d = self.n_features_in_
            return np.rint(raw * (64 * -(-d // 64))) / d
        return raw  # manhattan: L1

    def _query(self, X: Any, k: int, ef: int, threads: int) -> Tuple[np.ndarray, np.ndarray]:
        """The k nearest training samples of each row of X (validated): (distances, indices)."""
        reader = self._index.reader
        n = X.shape[0]
        ids = np.empty((n, k), dtype=np.uint32)
        raw = np.empty((n, k), dtype=np.float32)
        for start, block in self._blocks(X, self.effective_metric_):
            stop = start + block.shape[0]
            reader.by_array(block, k, ef, out=(ids[start:stop], raw[start:stop]), threads=threads)
        if (ids == _NO_ID).any():  # pragma: no cover - k <= n_samples_fit_, ef >= k
            raise InternalError("the index returned fewer than %d neighbours" % k)
        return self._distances(raw), ids.astype(np.intp)

    def _train(
        self, k: int, include_self: bool, ef: int, threads: int
    ) -> Tuple[np.ndarray, np.ndarray]:
        """The k nearest neighbours of each training sample: itself first if include_self,
        then the nearest others (a search by item, which never returns the item itself)."""
        n = self.n_samples_fit_
        ind = np.empty((n, k), dtype=np.intp)
        dist = np.zeros((n, k), dtype=np.float64)
        first = 1 if include_self else 0
        if include_self:
            ind[:, 0] = np.arange(n)
        others = k - first
        if others:
            reader = self._index.reader
            for start in range(0, n, _ITEM_BLOCK):
                stop = min(n, start + _ITEM_BLOCK)
                items = np.arange(start, stop, dtype=np.uint32)
                found = reader.by_items(items, others, ef, threads=threads)
                if any(r is None or len(r) != others for r in found):  # pragma: no cover
                    raise InternalError("the index returned fewer than %d neighbours" % others)
                pairs = np.asarray(found, dtype=np.float64).reshape(stop - start, others, 2)
                ind[start:stop, first:] = pairs[:, :, 0]
                dist[start:stop, first:] = self._distances(pairs[:, :, 1])
        return dist, ind

    def _graph(self, dist: np.ndarray, ind: np.ndarray, mode: str) -> Any:
        n_queries, k = ind.shape
        data = np.ones(n_queries * k) if mode == "connectivity" else dist.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        sparray = get_config().get("sparse_interface", "spmatrix") == "sparray"
        cls = sp.csr_array if sparray else sp.csr_matrix
        return cls((data, ind.ravel(), indptr), shape=(n_queries, self.n_samples_fit_))

    def kneighbors(
        self, X: Any = None, n_neighbors: Optional[int] = None, return_distance: bool = True
    ) -> Any:
        """The approximate k nearest training samples of each query, as scikit-learn's.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_queries, n_features), default=None
            The queries. ``None``: the training samples, each without itself (but with its
            duplicates), as in scikit-learn.
        n_neighbors : int, default=None
            Neighbours per query (default: the ``n_neighbors`` parameter).
        return_distance : bool, default=True
            Whether to return the distances.

        Returns
        -------
        neigh_dist : ndarray of shape (n_queries, n_neighbors)
            The distances, ascending in each row (only with ``return_distance=True``).
        neigh_ind : ndarray of shape (n_queries, n_neighbors)
            The indices of the neighbours in the training data.
        """
        check_is_fitted(self)
        k = self._k() if n_neighbors is None else self._int(n_neighbors, "n_neighbors", 1)
        ef, threads = self._ef(), self._threads()
        n_fit = self.n_samples_fit_
        if X is None:
            if k >= n_fit:
                raise InvalidArgumentError(
                    "Expected n_neighbors < n_samples_fit, but n_neighbors = %d, "
                    "n_samples_fit = %d, n_samples = %d" % (k, n_fit, n_fit)
                )
            dist, ind = self._train(k, False, ef, threads)
        else:
            X = self._validate(X, reset=False)
            if k > n_fit:
                raise InvalidArgumentError(
                    "Expected n_neighbors <= n_samples_fit, but n_neighbors = %d, "
                    "n_samples_fit = %d, n_samples = %d" % (k, n_fit, X.shape[0])
                )
            dist, ind = self._query(X, k, ef, threads)
        return (dist, ind) if return_distance else ind

    def kneighbors_graph(
        self, X: Any = None, n_neighbors: Optional[int] = None, mode: str = "connectivity"
    ) -> Any:
        """The graph of the approximate k nearest neighbours of each query, as scikit-learn's.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_queries, n_features), default=None
            The queries (``None``: the training samples, each without itself).
        n_neighbors : int, default=None
            Neighbours per query (default: the ``n_neighbors`` parameter).
        mode : {"connectivity", "distance"}, default="connectivity"
            Ones, or the distances.

        Returns
        -------
        A : sparse matrix of shape (n_queries, n_samples_fit)
            CSR, ``n_neighbors`` entries per row sorted by distance (a ``csr_array`` when
            scikit-learn's ``sparse_interface`` is ``"sparray"``).
        """
        mode = self._mode(mode, "mode")
        dist, ind = self.kneighbors(X, n_neighbors, return_distance=True)
        return self._graph(dist, ind, mode)

    def transform(self, X: Any) -> Any:
        """The graph of the approximate nearest neighbours of each sample of X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_queries, n_features)
            The queries (``None``, as in scikit-learn: the training samples, each without
            itself).

        Returns
        -------
        Xt : sparse matrix of shape (n_queries, n_samples_fit)
            CSR, float64: ``Xt[i, j]`` is the distance from sample ``i`` to training sample
            ``j`` (``"distance"``, ``n_neighbors + 1`` entries per row) or 1
            (``"connectivity"``, ``n_neighbors`` entries); rows sorted by distance.
        """
        check_is_fitted(self)
        mode = self._mode()
        return self.kneighbors_graph(X, self._k() + (mode == "distance"), mode)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit, then the graph of the training samples: each one's first neighbour is itself.

        The same as ``fit(X).transform(X)`` with the sample itself certain to come first (at
        distance 0) rather than found by the search.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        Xt : sparse matrix of shape (n_samples, n_samples)
            As :meth:`transform`.
        """
        self.fit(X)
        mode = self._mode()
        k = self._k() + (mode == "distance")
        n_fit = self.n_samples_fit_
        if k > n_fit:
            raise InvalidArgumentError(
                "Expected n_neighbors <= n_samples_fit, but n_neighbors = %d, "
                "n_samples_fit = %d, n_samples = %d" % (k, n_fit, n_fit)
            )
        dist, ind = self._train(k, True, self._ef(), self._threads())
        return self._graph(dist, ind, mode)

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the index and remove its temporary directory (not a ``path`` given).

        The estimator is then unfitted: :meth:`fit` it again to use it. Idempotent; also done
        when the estimator is garbage collected.
        """
        index = self.__dict__.get("_index")
        for k in _FITTED_ATTRIBUTES:
            self.__dict__.pop(k, None)
        if index is not None:
            index.close()

    def __enter__(self) -> "HannoyTransformer":
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.close()

    def __sklearn_is_fitted__(self) -> bool:
        index = self.__dict__.get("_index")
        return index is not None and index.alive

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(super().__getstate__())
        index = state.pop("_index", None)
        if index is not None and index.alive:
            state["_index_pickle"] = index.export()
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        payload = state.pop("_index_pickle", None)
        super().__setstate__(state)
        if payload is not None:
            self._index = self._reopen(payload)
            self.index_path_ = self._index.directory

    def _reopen(self, payload: Dict[str, Any]) -> _Index:
        metric = _METRICS[self.effective_metric_][1]
        if "data" in payload:
            return _open_copy(payload["data"], metric)
        path = payload["path"]
        if not os.path.isfile(os.path.join(path, "data.mdb")):
            raise HannoyIOError(
                "no hannoy index at %s: an estimator fitted with path= reopens its index "
                "there when it is unpickled" % path
            )
        index = _Index(Database(path, metric), path, False)
        n, d = len(index.reader), index.reader.dimensions
        if (n, d) != (self.n_samples_fit_, self.n_features_in_):
            index.close()
            raise HannoyError(
                "the index at %s holds %d samples of %d features, not the %d of %d this "
                "estimator was fitted on: it was written again since"
                % (path, n, d, self.n_samples_fit_, self.n_features_in_)
            )
        return index
