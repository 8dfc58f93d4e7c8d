"""Statistics that know nothing of the paper: DeLong, bootstrap, NRI, survival estimators and their input checks."""

from ctac_helpers import lazy_exports

_MODULES = ["checks", "delong", "bootstrap", "nri", "survival", "calibration", "decision"]
_NAMES = {"auc": "delong", "auc_ci_delong": "delong", "delong_test": "delong", "bootstrap_auc": "bootstrap", "weighted_auc": "bootstrap", "kaplan_meier": "survival", "logrank": "survival"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
