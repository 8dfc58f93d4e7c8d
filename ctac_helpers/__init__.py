"""ctac_helpers: the functions behind the ctac-book notebooks.

Notebooks orchestrate and show; the logic lives here as plain functions that take and return
DataFrames and arrays. The package logs through :mod:`logging` and never prints.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
