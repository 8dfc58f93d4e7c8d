"""Imaging: ingestion, segmentation backends, calcium, fat, radiomics, the digital phantoms and their cache, and the per-scan tasks of the imaging stages."""

from ctac_helpers import lazy_exports

_MODULES = ["scans", "ingest", "segment", "calcium", "fat", "radiomics", "grid", "phantom", "phantom_cache"]
_NAMES = {"agatston": "calcium"}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
