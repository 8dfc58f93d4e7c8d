"""The run's foundations, used by every layer: the data manifest, the stage table, the run directory."""

from ctac_helpers import lazy_exports

_MODULES = ["manifest", "paths", "rundir", "stages", "figtext"]
_NAMES = {"RunDir": "rundir", "atomic_path": "rundir", "atomic_write_json": "rundir", "STAGES": "stages",
          "get_stage": "stages"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
