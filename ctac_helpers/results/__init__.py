"""The paper's results from the models' scores: discrimination tables, subgroups, outcome tables."""

from ctac_helpers import lazy_exports

_MODULES = ["discrimination", "subgroups", "outcomes", "beyond"]
_NAMES = {"paper_comparisons": "discrimination"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
