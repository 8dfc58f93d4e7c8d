"""Readers for the machine-readable files in ``data_manifest/``.

* ``cohort_schema.yaml``: the cohort table's columns (type, unit, range, categories, ...).
* ``paper_values.yaml``: the paper's published numbers, keyed by table / figure id.
* ``structures.yaml``: TotalSegmentator v2 class ids and the synthetic CT model's structures.
* ``radiomics_features.yaml``: the 32 PyRadiomics features and the 15-feature subset.
* ``scan_manifest.yaml``: the scan manifest's columns and the image checks applied at ingestion.
* ``generator.yaml``: the synthetic generator's structural constants and the record of their fit.
* ``margins.yaml``: the synthetic cohort's cell distributions, fitted to the printed margins.

CT feature columns follow one naming scheme, shared by the synthetic generator and the imaging
stages: ``ct__<structure>__<feature>`` with TotalSegmentator v2 structure names and PyRadiomics
feature names (``ct__heart__Mean``), plus ``ct__<structure>__status`` (present, absent, truncated).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import yaml

MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data_manifest"
CT_PREFIX = "ct__"
STRUCTURE_STATUSES = ("present", "absent", "truncated")


@functools.lru_cache(maxsize=None)
def _load_yaml(name: str) -> dict:
    path = MANIFEST_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"data manifest file {path} is missing")
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def clear_cache() -> None:
    """Forget the files read so far (after ``ctac-book calibrate`` rewrites ``generator.yaml``)."""
    _load_yaml.cache_clear()


def generator_file() -> dict:
    """``generator.yaml``: the synthetic generator's constants, their design notes and fit record."""
    return _load_yaml("generator.yaml")


def margins_file() -> dict:
    """``margins.yaml``: the fitted cell distributions of the synthetic cohort's continuous variables."""
    return _load_yaml("margins.yaml")


# -- schema ---------------------------------------------------------------------------------------
def cohort_schema() -> pd.DataFrame:
    """The cohort table's columns as a DataFrame (one row per column, in schema order)."""
    cols = _load_yaml("cohort_schema.yaml")["columns"]
    df = pd.DataFrame(cols)
    for key in ("range", "plausible", "categories", "label", "decimals"):
        if key not in df:
            df[key] = None
    return df.set_index("name", drop=False)


def scan_manifest_schema() -> pd.DataFrame:
    """The scan manifest's columns as a DataFrame (one row per column, in schema order)."""
    df = pd.DataFrame(_load_yaml("scan_manifest.yaml")["columns"])
    for key in ("range", "unit", "codes"):
        if key not in df:
            df[key] = None
    return df.set_index("name", drop=False)


#: The configuration key (under ``site:``) where a site declares its own codes for a coded cohort column.
DECLARED_CODES = {"site": "labels", "ct_protocol": "protocols"}


def scan_manifest_codes(declared: Mapping[str, Iterable[str]] | None = None) -> dict[str, list[str]]:
    """The values allowed in each coded column (``type: code``) of the scan manifest.

    A coded column takes the categories of the cohort column it names (``codes``) plus the codes the
    site declares in its configuration for that cohort column (:data:`DECLARED_CODES`: ``site.labels``
    for ``site``, ``site.protocols`` for ``ct_protocol``).

    Parameters
    ----------
    declared : mapping, optional
        The site's declared codes by configuration key, e.g. ``{"labels": ["MyHospital"]}``.

    Returns
    -------
    dict of str to list of str
        Scan manifest column to its allowed codes, the schema's first.
    """
    declared = {k: list(v or []) for k, v in (declared or {}).items()}
    cohort = cohort_schema()
    out = {}
    for name, col in scan_manifest_schema().iterrows():
        if col["type"] != "code":
            continue
        base = list(cohort.loc[col["codes"], "categories"])
        extra = declared.get(DECLARED_CODES.get(col["codes"], ""), [])
        out[name] = base + [c for c in extra if c not in base]
    return out


def image_checks() -> dict:
    """Thresholds of the geometry and intensity checks applied to every CT at ingestion."""
    return dict(_load_yaml("scan_manifest.yaml")["checks"])


def schema_column(name: str) -> dict:
    """One column's schema entry; ``ValueError`` for an unknown column names the allowed ones."""
    schema = cohort_schema()
    if name not in schema.index:
        raise ValueError(f"unknown cohort column {name!r}; allowed: {', '.join(schema.index)}")
    return {k: v for k, v in schema.loc[name].items() if not _is_missing(v)}


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def spect_variables() -> list[str]:
    """The 22 SPECT stress quantitative variables (AI SPECT model), in schema order."""
    schema = cohort_schema()
    return list(schema.index[schema["group"] == "spect"])


def variable_label(name: str) -> str:
    """The label the paper's tables print for a cohort column (falls back to the column name)."""
    entry = schema_column(name) if name in cohort_schema().index else {}
    return entry.get("label") or name


# -- paper values ---------------------------------------------------------------------------------
def paper_values() -> dict:
    """The whole ``paper_values.yaml`` mapping, keyed by table / figure id."""
    return _load_yaml("paper_values.yaml")


def paper_entry(key: str) -> dict:
    """One table's or figure's published values; ``ValueError`` lists the known ids."""
    values = paper_values()
    if key not in values:
        raise ValueError(f"no published values for {key!r}; known ids: {', '.join(values)}")
    return values[key]


def paper_table(key: str) -> pd.DataFrame:
    """A published baseline table in tidy form.

    Returns one row per (variable, level, group, statistic) with columns ``table, variable, level,
    group, statistic, value, p_value, note``. Statistics are ``median, q1, q3`` for continuous rows
    and ``n, percent`` for count rows. Where the paper is internally inconsistent the entry's ``use``
    values replace the printed ones and ``note`` explains why.
    """
    entry = paper_entry(key)
    groups = list(entry.get("groups", {"all": "All"}))
    records = []
    for row in entry["rows"]:
        kind = row["kind"]
        stats = ("median", "q1", "q3") if kind == "continuous" else ("n", "percent")
        use = row.get("use", {})
        for group in groups:
            vals = use.get(group, row.get(group))
            if vals is None:
                continue
            for stat, val in zip(stats, vals):
                records.append(
                    {
                        "table": key,
                        "variable": row["variable"],
                        "level": str(row.get("level", "")),
                        "group": group,
                        "statistic": stat,
                        "value": float(val),
                        "p_value": row.get("p", ""),
                        "note": row.get("note", ""),
                    }
                )
    return pd.DataFrame.from_records(records)


# -- structures and features ----------------------------------------------------------------------
def class_map() -> dict[int, str]:
    """TotalSegmentator v2 ``total`` class ids -> structure names."""
    return {int(k): v for k, v in _load_yaml("structures.yaml")["class_map"].items()}


def structure_id(name: str) -> int:
    for k, v in class_map().items():
        if v == name:
            return k
    raise ValueError(f"unknown TotalSegmentator v2 structure {name!r}")


def fov_crossing_structures() -> tuple[str, ...]:
    """Structures that cross every chest field of view axially (their axial cut is not truncation)."""
    return tuple(_load_yaml("structures.yaml").get("fov_crossing", ()))


def synthetic_structures() -> pd.DataFrame:
    """Structures of the synthetic CT model with their parameters (index: structure name)."""
    d = _load_yaml("structures.yaml")["synthetic"]
    df = pd.DataFrame.from_dict(d, orient="index")
    df.index.name = "structure"
    return df


def tissue_models() -> dict:
    return _load_yaml("structures.yaml")["tissues"]


def radiomics_features(subset: str = "all") -> list[str]:
    """PyRadiomics feature names: ``subset='all'`` (32) or ``'subset15'`` (the book's 15).

    Returned as ``<class>_<Feature>`` pairs' feature part only, first-order then shape.
    """
    d = _load_yaml("radiomics_features.yaml")
    if subset == "all":
        return list(d["firstorder"]) + list(d["shape"])
    if subset == "subset15":
        return list(d["subset15"]["firstorder"]) + list(d["subset15"]["shape"])
    raise ValueError(f"unknown radiomics subset {subset!r}; allowed: 'all', 'subset15'")


def radiomics_settings() -> dict:
    return dict(_load_yaml("radiomics_features.yaml")["settings"])


def feature_column(structure: str, feature: str) -> str:
    """Column name of one CT feature: ``ct__<structure>__<feature>``."""
    return f"{CT_PREFIX}{structure}__{feature}"


def parse_feature_column(column: str) -> tuple[str, str]:
    """Inverse of :func:`feature_column`; ``ValueError`` for names outside the scheme."""
    parts = column.split("__")
    if len(parts) != 3 or parts[0] + "__" != CT_PREFIX:
        raise ValueError(f"{column!r} is not a CT feature column (expected ct__<structure>__<feature>)")
    return parts[1], parts[2]


def ct_feature_columns(structures, features) -> list[str]:
    return [feature_column(s, f) for s in structures for f in features]
