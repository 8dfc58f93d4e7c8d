"""ctac_helpers: the functions behind the ctac-book notebooks.

Notebooks orchestrate and show; the logic lives here as plain functions that take and return
DataFrames and arrays. The package logs through :mod:`logging` and never prints.

The code is organised by job, in layers (``ARCHITECTURE.md`` and the book's *Architecture* page):
``definitions`` and ``core`` at the bottom, then ``stats``, ``cohort``, ``imaging``, ``models``,
``results``, ``publish`` and ``pipeline`` at the top. A layer imports only the layers below it; the
contract is in ``pyproject.toml`` (``[tool.importlinter]``) and checked by the tests.
"""

import importlib
import logging
from collections.abc import Mapping

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def lazy_exports(package: str, modules: list[str], names: Mapping[str, str] | None = None):
    """Module-level ``__getattr__`` and ``__dir__`` for a subpackage's public names (PEP 562).

    A subpackage lists its public modules and a few public functions; each is imported on first
    use, so that importing one module of a subpackage does not load the others (the imaging and
    model modules pull in SimpleITK, PyTorch and xgboost).

    Parameters
    ----------
    package : str
        The subpackage's ``__name__``.
    modules : list of str
        Its public modules.
    names : mapping of str to str, optional
        Public function or class name -> the module (of ``modules``) that defines it.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__)`` for the subpackage's ``__init__``.
    """
    names = dict(names or {})

    def __getattr__(name: str):
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*modules, *names])

    return __getattr__, __dir__
