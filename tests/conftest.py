import functools

import pytest

from ctac_helpers import synth


@functools.lru_cache(maxsize=None)
def _dataset(n: int, seed: int):
    return synth.synthetic_dataset(n, seed)


@pytest.fixture(scope="session")
def full_cohort():
    """The paper-size synthetic cohort (generated once per test session)."""
    return _dataset(synth.PAPER_N, 20240101).cohort


@pytest.fixture(scope="session")
def small_dataset():
    return _dataset(1500, 20240101)
