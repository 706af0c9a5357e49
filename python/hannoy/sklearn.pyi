# Type stubs for hannoy.sklearn (kept in sync with the code by tests/test_sklearn.py).

import os
from typing import Any, Dict, List, Literal, Optional, Tuple, Union, overload

import numpy as np
import numpy.typing as npt
from sklearn.base import (  # type: ignore[import-untyped]  # scikit-learn has no type hints
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)

__all__: List[str]

_PathLike = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]
_Mode = Literal["distance", "connectivity"]
_MetricName = Literal["euclidean", "l2", "cosine", "manhattan", "cityblock", "l1", "hamming"]

class HannoyTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    n_neighbors: int
    mode: _Mode
    metric: _MetricName
    n_jobs: Optional[int]
    m: int
    ef_construction: int
    ef_search: int
    path: Optional[_PathLike]
    random_state: Union[None, int, np.random.RandomState]
    n_features_in_: int
    feature_names_in_: npt.NDArray[np.object_]
    n_samples_fit_: int
    effective_metric_: str
    index_path_: str
    def __init__(
        self,
        *,
        n_neighbors: int = 5,
        mode: _Mode = "distance",
        metric: _MetricName = "euclidean",
        n_jobs: Optional[int] = None,
        m: int = 16,
        ef_construction: int = 96,
        ef_search: int = 200,
        path: Optional[_PathLike] = None,
        random_state: Union[None, int, np.random.RandomState] = None,
    ) -> None: ...
    def fit(self, X: Any, y: Any = None) -> HannoyTransformer: ...
    # The graphs are scipy.sparse csr_matrix (or csr_array): Any, as scipy has no stubs.
    def transform(self, X: Any) -> Any: ...
    def fit_transform(self, X: Any, y: Any = None) -> Any: ...
    @overload
    def kneighbors(
        self,
        X: Any = None,
        n_neighbors: Optional[int] = None,
        return_distance: Literal[True] = True,
    ) -> Tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]: ...
    @overload
    def kneighbors(
        self, X: Any, n_neighbors: Optional[int], return_distance: Literal[False]
    ) -> npt.NDArray[np.intp]: ...
    @overload
    def kneighbors(
        self,
        X: Any = None,
        n_neighbors: Optional[int] = None,
        *,
        return_distance: Literal[False],
    ) -> npt.NDArray[np.intp]: ...
    def kneighbors_graph(
        self, X: Any = None, n_neighbors: Optional[int] = None, mode: _Mode = "connectivity"
    ) -> Any: ...
    def close(self) -> None: ...
    def __enter__(self) -> HannoyTransformer: ...
    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None: ...
    def __sklearn_is_fitted__(self) -> bool: ...
    def __sklearn_tags__(self) -> Any: ...
    def __getstate__(self) -> Dict[str, Any]: ...
    def __setstate__(self, state: Dict[str, Any]) -> None: ...
