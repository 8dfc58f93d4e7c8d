"""Imaging: ingestion, segmentation backends, structure presence, calcium, fat, radiomics, the digital phantoms and their cache, and the per-scan tasks of the imaging stages."""

from ctac_helpers import lazy_exports

_MODULES = ["scans", "ingest", "segment", "presence", "calcium", "fat", "radiomics", "grid", "phantom", "phantom_cache"]
_NAMES = {"agatston": "calcium", "structure_frequency": "presence", "select_structures": "presence"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
