"""Chapter summaries in words: sentences built from a run's numbers.

Every chapter ends with a *Summary* whose prose states the chapter's finding beside its table of numbers.
The prose depends on the run, so it is never typed: each function here takes the tables a chapter has
computed (DataFrames) and returns Markdown sentences whose every number comes from them. Where a chapter
reproduces rows of the replication scorecard, :func:`scorecard_text` says how many hold and lists the
ones that miss, from the same rows as the scorecard page (:func:`chapter_scorecard`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

import pandas as pd

from ctac_helpers.core import manifest
from ctac_helpers.publish import scorecard as scorecard_mod
from ctac_helpers.publish import fmt

logger = logging.getLogger(__name__)


def _names(structures: Sequence[str]) -> str:
    """``lung_upper_lobe_left`` -> ``lung upper lobe left``, joined with commas."""
    return ", ".join(str(s).replace("_", " ") for s in structures)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def chapter_scorecard(run_dir: str | os.PathLike, chapter: str) -> pd.DataFrame:
    """The replication scorecard's rows that a chapter reproduces.

    Parameters
    ----------
    run_dir : path-like
        The run directory (its tables are read by :func:`ctac_helpers.publish.scorecard.scorecard`).
    chapter : str
        The chapter's notebook stem (``05_models``).

    Returns
    -------
    pandas.DataFrame
        The rows whose ``where`` is ``notebooks/<chapter>``.
    """
    table = scorecard_mod.scorecard(run_dir)
    return table[table["where"] == f"notebooks/{chapter}"].reset_index(drop=True)


def scorecard_text(rows: pd.DataFrame, notes: Mapping[str, str] | None = None) -> str:
    """How many of a chapter's scorecard rows hold, and each row that misses with the recorded reason.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of a :func:`ctac_helpers.publish.scorecard.scorecard` table (:func:`chapter_scorecard`).
    notes : mapping, optional
        ``{key: reason}``; default ``scorecard_notes`` of ``paper_values.yaml``.

    Returns
    -------
    str
        Markdown: one sentence, then a list of the rows that miss (as on the scorecard page).
    """
    judged = [w for w in rows["within"] if w is not None and not (isinstance(w, float) and math.isnan(w))]
    if not judged:
        return "None of the paper's results this chapter reproduces can be judged on this run."
    held = sum(bool(w) for w in judged)
    text = (f"Of the {_plural(len(judged), 'result')} of the paper this chapter reproduces and the replication "
            f"scorecard judges, **{held} hold**")
    misses = scorecard_mod.miss_lines(rows, notes)
    if not misses:
        return text + "."
    return text + f"; {_plural(len(misses), 'does', 'do')} not:\n\n" + "\n".join(misses)


def cohort_text(table2: pd.DataFrame) -> str:
    """Chapter 1: the cohort's size and how many of Table 2's comparisons of deaths with survivors agree.

    Parameters
    ----------
    table2 : pandas.DataFrame
        The tidy Table 2 of chapter 1 (:func:`ctac_helpers.cohort.tables.baseline_table` by death).

    Returns
    -------
    str
        Sentences: the cohort's size and deaths, the median age of deaths and survivors beside the
        paper's, and the share of Table 2's variables whose difference between deaths and survivors
        is significant (p < 0.05) in this cohort exactly where it is in the paper.
    """
    paper = {(r["variable"], r.get("level", "") or ""): r.get("p")
             for r in manifest.paper_entry("table2")["rows"]}
    first = table2.drop_duplicates(["variable", "level"])
    same, compared, differ = 0, 0, []
    for r in first.itertuples(index=False):
        printed = paper.get((r.variable, r.level if isinstance(r.level, str) else ""))
        if printed is None or not math.isfinite(float(r.p_value)):
            continue
        sig_paper = scorecard_mod.significant(printed)
        if sig_paper is None:
            continue
        compared += 1
        if (r.p_value < 0.05) == sig_paper:
            same += 1
        else:
            differ.append(str(r.label))
    n = table2[(table2["variable"] == "n")].set_index("group")["n"]
    deaths, total = int(n.get("death", 0)), int(n.get("death", 0) + n.get("alive", 0))
    age = table2[table2["variable"] == "age"].set_index("group")
    paper_age = next(r for r in manifest.paper_entry("table2")["rows"] if r["variable"] == "age")
    text = (f"The cohort has {total:,} patients, of whom {deaths:,} ({100 * deaths / max(total, 1):.1f}%) died "
            f"during follow-up (the paper: {manifest.paper_entry('cohort')['values']['death_percent']:.1f}%). ")
    if {"death", "alive"} <= set(age.index):
        text += (f"Those who died were older, median {age.loc['death', 'median']:.0f} against "
                 f"{age.loc['alive', 'median']:.0f} years (the paper: {paper_age['death'][0]} against "
                 f"{paper_age['alive'][0]}). ")
    if compared:
        text += (f"Of the {compared} characteristics whose difference between deaths and survivors Table 2 tests, "
                 f"{same} are significant (p < 0.05) here exactly where they are in the paper")
        text += f"; the others: {', '.join(differ)}." if differ else "."
    return text


def selection_text(frequencies: Mapping[str, pd.DataFrame], threshold: float, paper_count: int,
                   modelled: Sequence[str] | None = None) -> str:
    """Chapter 2 (and 4): how many structures the frequency rule keeps in each source, and why they differ.

    Parameters
    ----------
    frequencies : mapping
        ``{label: frequency table}`` (:func:`ctac_helpers.imaging.presence.structure_frequency`: ``structure``,
        ``n_scans``, ``n_present``, ``n_truncated``, ``n_absent``, ``frequency``); the first is the
        reference (the synthetic cohort), the second the scans compared with it (the phantoms).
        With one source, only its count is stated.
    threshold : float
        The rule: structures present in more than this share of scans.
    paper_count : int
        The paper's number of selected structures.
    modelled : sequence of str, optional
        The structures the reference source models at all (``data_manifest/structures.yaml``); a
        structure the second source keeps outside this list is named as such.

    Returns
    -------
    str
        Sentences giving each count, the paper's, and every structure only one source keeps, with the
        reason the data show: not among the modelled structures, below the rule in the reference
        (with its frequency), absent from every scan, or cut by the field of view in some.
    """
    labels = list(frequencies)
    kept = {k: set(f.loc[f["frequency"] > threshold, "structure"]) for k, f in frequencies.items()}
    counts = "; ".join(f"{_plural(len(kept[k]), 'structure')} in the {k}" for k in labels)
    text = f"The > {threshold:.0%} rule keeps {counts}; the paper keeps {paper_count}."
    if len(labels) < 2:
        return text
    ref, other = labels[0], labels[1]
    f_ref, f_other = (frequencies[k].set_index("structure") for k in (ref, other))
    only_other = sorted(kept[other] - kept[ref], key=str)
    only_ref = sorted(kept[ref] - kept[other], key=str)
    if only_other:
        modelled_set = set(modelled) if modelled is not None else set(f_ref.index)
        outside = [s for s in only_other if s not in modelled_set]
        below = [s for s in only_other if s in modelled_set]
        reasons = []
        if outside:
            reasons.append(f"{_plural(len(outside), 'is', 'are')} not among the structures the {ref} models at all "
                           f"({_names(outside)})")
        if below:
            freq = [f"{s.replace('_', ' ')} {f_ref.loc[s, 'frequency']:.0%}" if s in f_ref.index
                    else s.replace("_", " ") for s in below]
            reasons.append(f"{_plural(len(below), 'is', 'are')} present in {threshold:.0%} or fewer of the "
                           f"{ref}'s patients ({', '.join(freq)})")
        text += f" The {other} keep {_plural(len(only_other), 'structure')} the {ref} does not: {'; '.join(reasons)}."
    if only_ref:
        never = [s for s in only_ref if s not in f_other.index or f_other.loc[s, "n_present"] + f_other.loc[
            s, "n_truncated"] == 0]
        cut = [s for s in only_ref if s not in never and f_other.loc[s, "n_truncated"] > 0]
        rest = [s for s in only_ref if s not in never and s not in cut]
        reasons = []
        if never:
            reasons.append(f"{_plural(len(never), 'is', 'are')} on none of them ({_names(never)})")
        if cut:
            reasons.append(f"{_plural(len(cut), 'is', 'are')} cut by the edge of the field of view on some ("
                           + ", ".join(f"{s.replace('_', ' ')} on {int(f_other.loc[s, 'n_truncated'])} of "
                                       f"{int(f_other.loc[s, 'n_scans'])}" for s in cut) + ")")
        if rest:
            reasons.append(f"{_plural(len(rest), 'is', 'are')} present on {threshold:.0%} or fewer of them "
                           f"({_names(rest)})")
        text += f" The {ref} keeps {_plural(len(only_ref), 'structure')} the {other} do not: {'; '.join(reasons)}."
    return text


def eat_density_text(truth: pd.DataFrame, shift_hu: float) -> str:
    """Chapter 3: why the phantoms' EAT density lies below their patients', with the numbers of this run.

    Parameters
    ----------
    truth : pandas.DataFrame
        One row per phantom: ``true_eat_density_hu`` (the phantom's noise-free EAT density),
        ``patient_eat_density_hu`` (its patient's EAT density in the synthetic cohort) and ``hu_offset``
        (the site's scanner offset added to the phantom), as :func:`ctac_helpers.imaging.scans.phantom_truth`
        returns them.
    shift_hu : float
        :data:`ctac_helpers.imaging.phantom.EAT_DENSITY_SHIFT_HU`.

    Returns
    -------
    str
        The ranges of both densities and of the difference, and what makes it.
    """
    if truth.empty:
        return "No phantom was measured, so their EAT density cannot be set beside their patients'."
    ph, pt, off = (truth[c].astype(float) for c in ("true_eat_density_hu", "patient_eat_density_hu", "hu_offset"))
    residual = (ph - pt - shift_hu - off).abs().max()
    return (f"The phantoms' true EAT density runs from {ph.min():.0f} to {ph.max():.0f} HU, their patients' "
            f"(the synthetic cohort's values, which the models read) from {pt.min():.0f} to {pt.max():.0f} HU. "
            f"The difference is by design: each phantom's fat is its patient's density shifted by "
            f"{shift_hu:+.0f} HU (`phantom.EAT_DENSITY_SHIFT_HU`) plus its site's scanner offset "
            f"({off.min():+.0f} to {off.max():+.0f} HU here); the texture of the fat moves the mean by at most "
            f"{residual:.1f} HU more. A patient's EAT density measured on CT is higher than that of pure fat "
            "because voxels only partly filled with fat, at the borders of the myocardium and the vessels, "
            "fall inside the [-190, -30] HU window; the phantom's fat is pure fat without such voxels. The "
            "shift keeps it far enough inside the window that scan noise moves the measured volume and density "
            "only slightly. The check of this chapter compares each phantom's measurement with its own truth, "
            "so the shift does not enter it.")


def cac_eat_text(cac_agreement: pd.DataFrame, eat_agreement: pd.DataFrame, category_match: pd.Series) -> str:
    """Chapter 3: how many phantoms' measurements meet the book's criteria.

    Parameters
    ----------
    cac_agreement, eat_agreement : pandas.DataFrame
        :func:`ctac_helpers.imaging.scans.cac_agreement` and :func:`~ctac_helpers.imaging.scans.eat_agreement`.
    category_match : pandas.Series of bool
        Per phantom, whether the measured CAC category is the true one.

    Returns
    -------
    str
    """
    n = len(cac_agreement)
    if not n:
        return "No phantom was measured on this run."
    worst_cac = float(cac_agreement["error"].abs().max())
    worst_density = float((eat_agreement["measured_density_hu"] - eat_agreement["true_density_hu"]).abs().max())
    return (f"On {_plural(n, 'phantom')}, the measured Agatston score is within the book's criterion on "
            f"{int(cac_agreement['within'].sum())} (largest error {worst_cac:.1f} units) and puts "
            f"{int(category_match.sum())} in their true CAC category; the EAT volume is within its criterion on "
            f"{int(eat_agreement['volume_within'].sum())} and the EAT density on "
            f"{int(eat_agreement['density_within'].sum())} (largest difference {worst_density:.1f} HU). The paper's "
            "CAC and EAT models were validated in earlier studies and it prints no agreement numbers, so these "
            "checks are the book's own.")


def radiomics_text(agreement: pd.DataFrame, n_selected: int, n_scans: int, n_features: int) -> str:
    """Chapter 4: equality with PyRadiomics and the size of the feature table.

    Parameters
    ----------
    agreement : pandas.DataFrame
        :func:`ctac_helpers.imaging.scans.pyradiomics_agreement` (``max_relative_difference`` per scan and
        structure).
    n_selected, n_scans, n_features : int
        Structures selected, scans measured, features per structure.

    Returns
    -------
    str
    """
    text = (f"The chapter measures {n_features} features on each of {_plural(n_selected, 'structure')} in "
            f"{_plural(n_scans, 'scan')}.")
    if len(agreement):
        worst = float(agreement["max_relative_difference"].max())
        text += (f" On the {_plural(len(agreement), 'structure')} checked, the book's one-pass computation equals "
                 f"PyRadiomics' own extractor to a relative difference of at most {worst:.1e}, rounding error "
                 "of floating-point arithmetic.")
    return text


def models_text(table3: pd.DataFrame) -> str:
    """Chapter 5: which model discriminates best, and the All model's AUC beside the paper's.

    Parameters
    ----------
    table3 : pandas.DataFrame
        Supplementary Table 3 of the run (``model``, ``label``, ``auc``, ``ci_low``, ``ci_high``,
        ``paper_auc``).

    Returns
    -------
    str
    """
    t = table3.set_index("model")
    best = t["auc"].astype(float).idxmax()
    r = t.loc[best]
    auc = fmt.interval(r["auc"], r["ci_low"], r["ci_high"], "auc")
    text = f"In all patients the best model is **{r['label']}**, AUC {auc}"
    paper_best = t["paper_auc"].astype(float).idxmax() if t["paper_auc"].notna().any() else None
    if paper_best is not None:
        p = t.loc[paper_best]
        text += (", as in the paper" if paper_best == best
                 else f"; in the paper it is {p['label']}") + f" (AUC {p['paper_auc']:.2f})"
    text += "."
    if "all" in t.index and best != "all":
        a = t.loc["all"]
        text += f" The All model's AUC is {fmt.interval(a['auc'], a['ci_low'], a['ci_high'], 'auc')}."
    ranked = t["auc"].astype(float).sort_values(ascending=False)
    text += " The models in order of AUC: " + ", ".join(f"{t.loc[m, 'label']} {fmt.auc(v)}"
                                                        for m, v in ranked.items()) + "."
    return text


def subgroups_text(fig3_table: pd.DataFrame, alpha: float = 0.05) -> str:
    """Chapter 6: the All model's AUC in each pair of subgroups, and whether the pair differs.

    Parameters
    ----------
    fig3_table : pandas.DataFrame
        Supplementary Fig. 3's table (``comparison``, ``subgroup``, ``auc``, ``p``, ``paper_p``).
    alpha : float
        Significance level.

    Returns
    -------
    str
    """
    parts = []
    for comparison, g in fig3_table.groupby("comparison", sort=False):
        if len(g) != 2:
            continue
        (a, b), p = g.itertuples(index=False), float(g["p"].iloc[0])
        sig = p < alpha
        paper_sig = scorecard_mod.significant(g["paper_p"].iloc[0], alpha)
        verdict = "differ significantly" if sig else "do not differ significantly"
        agree = "" if paper_sig is None else (", as in the paper" if paper_sig == sig else
                                              f", where the paper's {'do' if paper_sig else 'do not'}")
        parts.append(f"by {comparison}, {a.subgroup} {fmt.auc(a.auc)} and {b.subgroup} {fmt.auc(b.auc)} {verdict} "
                     f"(p = {p:.3f}{agree})")
    if not parts:
        return "No subgroup pair could be compared on this run."
    return "The All model's AUC " + "; ".join(parts) + "."


def survival_text(threshold: Mapping, table7: pd.DataFrame, nri_table: pd.DataFrame) -> str:
    """Chapter 7: the AI high-risk class, its hazard ratio across subgroups and the NRI.

    Parameters
    ----------
    threshold : mapping
        The matched threshold (``threshold``, ``share``, ``n_flagged``; a row of ``tables/ai_threshold``).
    table7 : pandas.DataFrame
        Supplementary Table 7 (``subgroup``, ``hr``).
    nri_table : pandas.DataFrame
        The NRI table (``component``, ``estimate_pct``, ``ci_low_pct``, ``ci_high_pct``).

    Returns
    -------
    str
    """
    text = (f"The AI high-risk class (score {float(threshold['threshold']):.3f} or above) holds "
            f"{int(threshold['n_flagged']):,} patients ({float(threshold['share']):.1%}), as many as have ischemia.")
    hr = table7.dropna(subset=["hr"])
    if len(hr):
        low = hr.loc[hr["hr"].astype(float).idxmin()]
        above = int((hr["hr"].astype(float) > manifest.paper_entry("supp_table7")["values"][
            "mean_adjusted_hr_all_subgroups_above"]).sum())
        bound = manifest.paper_entry("supp_table7")["values"]["mean_adjusted_hr_all_subgroups_above"]
        text += (f" Its adjusted hazard ratio exceeds {bound:g} in {above} of {_plural(len(hr), 'subgroup')} "
                 f"(the paper: in all), lowest {float(low['hr']):.2f} in {low['subgroup']}.")
    overall = nri_table[nri_table["component"] == "nri_overall"]
    if len(overall):
        o = overall.iloc[0]
        text += (f" Against ischemia it reclassifies patients with an overall NRI of {o['estimate_pct']:.1f}% "
                 f"({o['ci_low_pct']:.1f} to {o['ci_high_pct']:.1f}; the paper: "
                 f"{manifest.paper_entry('nri')['values']['overall'][0]:.1f}%).")
    return text
