"""The analysed cohort: patient flow and the headline numbers the Results section quotes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctac_helpers.core import manifest
from ctac_helpers.cohort.tables import add_derived_columns


def patient_flow(n_analysed: int, exclusions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Supplementary Fig. 1 as a table: the paper's flow beside this cohort's.

    Parameters
    ----------
    n_analysed : int
        Patients in this book's analysed cohort.
    exclusions : DataFrame, optional
        On a site's own data, the patients left out because none of their scans could be measured,
        counted by reason (``reason``, ``n``: :func:`ctac_helpers.imaging.scans.exclusion_counts`). The
        book's column then also holds the participants before that step (the site's cohort table)
        and the exclusion, whose ``note`` gives the count of each reason.

    Without ``exclusions`` only the analysed cohort has a book value: the synthetic generator produces
    the analysed cohort, so the upstream steps (enrolment, EAT-model training set, incomplete scans)
    carry the paper's numbers alone.

    Returns
    -------
    DataFrame with columns ``step, label, kind, paper, book, note``.
    """
    v = manifest.paper_entry("supp_fig1")["values"]
    steps = [
        ("enrolled", "Enrolled in REFINE SPECT (4 sites)", "main", v["enrolled"]),
        ("eat_training", "Used to train and validate the EAT model", "exclusion", v["eat_training"]),
        ("remaining", "Remaining participants", "main", v["remaining"]),
        ("incomplete_ctac", "Excluded: incomplete CTAC scan", "exclusion", v["incomplete_ctac"]),
        ("analysed", "Analysed cohort", "main", v["analysed"]),
    ]
    df = pd.DataFrame(steps, columns=["step", "label", "kind", "paper"])
    df["book"] = np.nan
    df["note"] = ""
    df.loc[df["step"] == "analysed", "book"] = n_analysed
    if exclusions is not None:
        n_excluded = int(exclusions["n"].sum())
        df.loc[df["step"] == "remaining", "book"] = n_analysed + n_excluded
        df.loc[df["step"] == "incomplete_ctac", "book"] = n_excluded
        df.loc[df["step"] == "incomplete_ctac", "note"] = ", ".join(
            f"{r.reason}: {r.n:,}" for r in exclusions.itertuples() if r.n)
    return df


def headline_numbers(cohort: pd.DataFrame) -> pd.DataFrame:
    """The cohort numbers quoted in the Results text, paper beside book.

    Returns columns ``quantity, unit, paper, book``.
    """
    df = add_derived_columns(cohort)
    v = manifest.paper_entry("cohort")["values"]
    normal = df["perfusion"] == "normal"
    fu = np.percentile(df["followup_years"], [25, 50, 75])
    rows = [
        ("Patients analysed", "n", v["n"], len(df)),
        ("Male", "%", v["male_percent"], 100 * (df["sex"] == "male").mean()),
        ("Deaths during follow-up", "%", v["death_percent"], 100 * df["death"].mean()),
        ("Follow-up, median", "years", v["followup_median_years"], fu[1]),
        ("Follow-up, Q1", "years", v["followup_q1_years"], fu[0]),
        ("Follow-up, Q3", "years", v["followup_q3_years"], fu[2]),
        ("Normal perfusion (stress TPD < 5%)", "%", v["normal_perfusion_percent"], 100 * normal.mean()),
        ("Deaths among normal perfusion", "%", v["normal_perfusion_death_percent"], 100 * df.loc[normal, "death"].mean()),
    ]
    return pd.DataFrame(rows, columns=["quantity", "unit", "paper", "book"])


def preview(patients: pd.DataFrame, n: int = 5, missing: str = "missing") -> pd.DataFrame:
    """The first ``n`` patients as a reader would want them shown: one row per column, one column per patient.

    Columns are named by their schema label with the unit (``Age [years]``); flags read ``yes``/``no``,
    numbers as recorded (``25.8``, ``74``: no trailing zeros), missing values ``missing``. Columns outside
    the schema keep their name.

    Parameters
    ----------
    patients : DataFrame
        The cohort table (schema columns, ``patient_id`` first).
    n : int
        How many patients.
    missing : str
        Text of a missing value.

    Returns
    -------
    DataFrame
        ``column`` and one text column per patient, headed by the patient's id.
    """
    schema = manifest.cohort_schema()
    head = patients.head(n)
    ids = ([str(i) for i in head["patient_id"]] if "patient_id" in head
           else [f"patient {i + 1}" for i in range(len(head))])

    def text(value, kind: str) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return missing
        if kind == "binary":
            return "yes" if int(value) == 1 else "no"
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.3f}".rstrip("0").rstrip(".")
        return str(value)

    rows = []
    for column in head.columns:
        if column == "patient_id":
            continue
        entry = schema.loc[column] if column in schema.index else None
        kind = str(entry["type"]) if entry is not None else ""
        name = column
        if entry is not None:
            label = entry["label"] if isinstance(entry["label"], str) and entry["label"] else column.replace("_", " ")
            unit = entry["unit"] if isinstance(entry["unit"], str) else ""
            name = label if not unit or "[" in label else f"{label} [{unit}]"
        rows.append([name] + [text(v, kind) for v in head[column].tolist()])
    return pd.DataFrame(rows, columns=["column", *ids])
