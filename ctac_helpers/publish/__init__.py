"""Publishing: numbered figures and tables, plots, the scorecard, chapter summaries, the patient explorer, the book build and its browser check."""

from ctac_helpers import lazy_exports

_MODULES = ["figures", "plots", "scorecard", "summaries", "intervals", "explorer", "book", "browser", "sphinx_fixes",
            "architecture", "beyond_plots", "checklist", "fmt"]
_NAMES = {"show_figure": "figures", "show_table": "figures"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
