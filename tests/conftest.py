import functools

import pytest

from ctac_helpers.pipeline import cli
from ctac_helpers.cohort import synth


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


@pytest.fixture(scope="session")
def dataset_400(small_dataset):
    """The first 400 patients of the small synthetic cohort and their CT features (model tests)."""
    cohort = small_dataset.cohort.iloc[:400].reset_index(drop=True)
    ct = small_dataset.ct_features
    ct = ct[ct["patient_id"].isin(cohort["patient_id"])].reset_index(drop=True)
    return synth.SyntheticDataset(cohort=cohort, ct_features=ct, latent=None)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The quick profile, run and built into a temporary directory: ``(root, run_dir)``, the book in
    ``root / "_build" / "html"`` (once per test session; end_to_end/test_end_to_end.py)."""
    root = tmp_path_factory.mktemp("e2e")
    run_dir = root / "runs" / "quick"
    assert cli.main(["run", "--profile", "quick", "--run-dir", str(run_dir)]) == 0
    assert cli.main(["build", "--profile", "quick", "--run-dir", str(run_dir), "--out", str(root)]) == 0
    return root, run_dir
