"""The cohort: the synthetic generator, its fit report, Tables 1 and 2, patient flow, validation of a site's tables, privacy."""

from ctac_helpers import lazy_exports

_MODULES = ["synth", "cellfit", "fit_report", "flow", "tables", "validate", "privacy"]
_NAMES = {"synthetic_dataset": "synth", "ValidationError": "validate", "mann_whitney_p": "tables",
          "ordinal": "tables"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
