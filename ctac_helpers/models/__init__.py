"""The mortality models: feature sets, the book's cross-validated XGBoost procedure, explanations, stability, and where the fits run."""

from ctac_helpers import lazy_exports

_MODULES = ["cv", "stability", "dispatch"]
_NAMES = {"cross_validate": "cv", "CVConfig": "cv", "Execution": "cv", "feature_matrix": "cv",
          "FEATURE_SETS": "cv"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
