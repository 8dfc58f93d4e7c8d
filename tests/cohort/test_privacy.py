"""Keyed-hash pseudonymisation of identifiers."""

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest

from ctac_helpers.cohort import privacy

KEY = b"0123456789abcdef0123456789abcdef"


def test_pseudonyms_are_the_keyed_hash_and_stable():
    ids = pd.Series(["MRN-0042", " MRN-0042 ", "42", None], index=[5, 6, 7, 8])
    out = privacy.pseudonymise(ids, KEY)
    expected = "P-" + hmac.new(KEY, b"MRN-0042", hashlib.sha256).hexdigest()[:16]
    assert out[5] == expected and out[6] == expected  # whitespace does not make another patient
    assert out[7] != expected and out[7].startswith("P-") and len(out[7]) == 18
    assert pd.isna(out[8]) and list(out.index) == [5, 6, 7, 8]
    assert privacy.pseudonymise(ids, KEY).equals(out)  # deterministic
    assert privacy.pseudonymise(ids, KEY, kind="scan")[5].startswith("S-")


def test_another_key_gives_other_pseudonyms_and_a_plain_hash_does_not_recover_them():
    ids = pd.Series([f"MRN{i:05d}" for i in range(1000)])
    a = privacy.pseudonymise(ids, KEY)
    b = privacy.pseudonymise(ids, KEY[::-1])
    assert a.is_unique and not (a == b).any()
    plain = {"P-" + hashlib.sha256(i.encode()).hexdigest()[:16] for i in ids}
    assert not plain & set(a)


def test_pseudonymise_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        privacy.pseudonymise(pd.Series(["a"]), KEY, kind="visit")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        privacy.pseudonymise(pd.Series(["a"]), b"short")


def test_read_secret(tmp_path):
    key = tmp_path / "site.key"
    key.write_text("  " + KEY.decode() + "\n")
    assert privacy.read_secret(key) == KEY
    assert privacy.read_secret(key, run_dir=tmp_path / "runs" / "site") == KEY
    with pytest.raises(ValueError, match="does not exist; 'ctac-book init-site DIR' writes one"):
        privacy.read_secret(tmp_path / "missing.key")
    inside = tmp_path / "runs" / "site" / "secret.key"
    inside.parent.mkdir(parents=True)
    inside.write_text(KEY.decode())
    with pytest.raises(ValueError, match="inside the run directory"):
        privacy.read_secret(inside, run_dir=tmp_path / "runs" / "site")
    short = tmp_path / "short.key"
    short.write_text("abc")
    with pytest.raises(ValueError, match="holds 3 byte"):
        privacy.read_secret(short)


def test_numeric_ids_are_hashed_as_text():
    out = privacy.pseudonymise(pd.Series(np.array([7, 8])), KEY)
    assert out[0] == privacy.pseudonymise(pd.Series(["7"]), KEY)[0]
