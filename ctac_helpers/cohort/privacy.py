"""Pseudonymisation of patient and scan identifiers with a keyed hash (HMAC-SHA256).

A site's identifiers never enter a run directory: the data stage replaces every ``patient_id`` (and the
segmentation stage every ``scan_id`` and ``patient_id`` of the scan manifest) by
``HMAC-SHA256(secret, id)``, truncated to 16 hexadecimal digits and prefixed (``P-`` for patients,
``S-`` for scans). The secret is a site key kept in a file outside the run directory (``ctac-book
init-site`` writes one), so that the pseudonyms are stable across runs of the same site -- and the
same patient links between the cohort table and the scan manifest -- while nobody without the key
can recompute them from a list of medical record numbers, as one could from a plain hash.

References
----------
.. [1] Krawczyk H, Bellare M, Canetti R. HMAC: keyed-hashing for message authentication. RFC 2104,
   1997.
.. [2] European Data Protection Board. Guidelines 01/2025 on pseudonymisation, 2025.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["MIN_SECRET_BYTES", "PREFIXES", "pseudonymise", "read_secret"]

#: Shortest accepted key (16 bytes = 128 bits); ``init-site`` writes 32 random bytes.
MIN_SECRET_BYTES = 16
#: Prefix of each kind of pseudonym, so that a pseudonymised id is recognisable as one.
PREFIXES = {"patient": "P-", "scan": "S-"}
_DIGITS = 16  # 64 bits: collisions are negligible below millions of ids (checked anyway)


def read_secret(path: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> bytes:
    """Read a site key for :func:`pseudonymise`.

    Parameters
    ----------
    path : path-like
        File holding the key (its text, stripped of surrounding whitespace).
    run_dir : path-like, optional
        The run directory; the key may not lie inside it (a run directory is meant to be shared).

    Returns
    -------
    bytes
        The key.

    Raises
    ------
    ValueError
        If the file does not exist, lies inside ``run_dir``, or holds fewer than
        :data:`MIN_SECRET_BYTES` bytes.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"secret file {p} does not exist; 'ctac-book init-site DIR' writes one "
                         "(keep it outside the run directory)")
    if run_dir is not None:
        root = Path(run_dir).resolve()
        if p.resolve() == root or root in p.resolve().parents:
            raise ValueError(f"secret file {p} lies inside the run directory {root}; move it outside, "
                             "since a run directory is meant to be shared")
    key = p.read_text(encoding="utf-8").strip().encode("utf-8")
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"secret file {p} holds {len(key)} byte(s); expected at least {MIN_SECRET_BYTES} "
                         "(e.g. 64 hexadecimal digits from 'python -c \"import secrets; "
                         "print(secrets.token_hex(32))\"')")
    return key


def pseudonymise(ids: pd.Series, secret: bytes, kind: str = "patient") -> pd.Series:
    """Replace identifiers by keyed-hash pseudonyms.

    Parameters
    ----------
    ids : Series
        Identifiers (converted to text; surrounding whitespace is ignored, so ``" 0042"`` and
        ``"0042"`` are the same patient while ``"42"`` is another).
    secret : bytes
        The site key (:func:`read_secret`).
    kind : {"patient", "scan"}
        Which prefix the pseudonyms get.

    Returns
    -------
    Series
        ``<prefix><16 hex digits>`` per row, same index; missing ids stay missing.

    Raises
    ------
    ValueError
        On an unknown ``kind``, a short key, or two different ids that map to the same pseudonym.
    """
    if kind not in PREFIXES:
        raise ValueError(f"kind must be one of {sorted(PREFIXES)}; got {kind!r}")
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes (see read_secret)")
    prefix = PREFIXES[kind]

    def one(v):
        if pd.isna(v):
            return v
        digest = hmac.new(secret, str(v).strip().encode("utf-8"), hashlib.sha256).hexdigest()
        return prefix + digest[:_DIGITS]

    out = ids.map(one)
    pairs = pd.DataFrame({"id": ids.astype("string").str.strip(), "p": out}).dropna().drop_duplicates()
    if pairs["p"].duplicated().any():  # 2^-64 per pair: a collision means a bug, not bad luck
        raise ValueError("two different identifiers received the same pseudonym; report this as a bug")
    return out
