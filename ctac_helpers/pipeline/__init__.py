"""Running the book: configuration and profiles, the stage runner, per-scan batches, a site's data, the generator's calibration, the command line."""

from ctac_helpers import lazy_exports

_MODULES = ["config", "runner", "batch", "site", "example_site", "calibrate", "cli"]
_NAMES = {"load_config": "config", "run_stages": "runner", "main": "cli"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
