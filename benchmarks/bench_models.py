"""Benchmark of the models chapter: the book's procedure, the pre-issue-18 reference and the authors' grid search.

Three procedures run on the same synthetic cohort and the same outer stratified folds, in one process:

* the book's (:func:`ctac_helpers.models.cv.cross_validate`, ``procedure='book'``): what chapter 5 runs, the
  five models' early-stopped grid search (per outer fold one stratified 80/20 split of the 90%, one
  early-stopped fit per (colsample_bytree, max_depth, min_child_weight), best validation AUC kept) and
  Supplementary Table 10 (the CT models refitted on 32 radiomics features with the chosen grid points
  and numbers of trees);
* the reference (``procedure='reference'``): the same work as the book did it before issue 18;
* the authors' (:func:`authors_grid.authors_gridsearch`, in ``benchmarks/authors_grid.py`` beside this
  script): ``GridSearchCV(cv=5, scoring='roc_auc')`` over the 16 combinations without early stopping, then a refit on the 90%, for the AI CTAC model on the
  first ``--authors-folds`` folds only (it is about two orders of magnitude slower); its time for all folds
  is *extrapolated* linearly and labelled so.

It prints, side by side: wall and CPU seconds and their ratios; every model's out-of-fold AUC under the
book's and the reference procedure and whether each fold chose the same grid point; a profile of where the
time goes (per model, in matrices and quantisation, in trees kept and trees fitted past the best
iteration, and one process of two threads against two processes of one thread); and a replay, on the
book's recorded per-round validation AUCs, of successive halving and racing over the grid: how many trees
they would save, how many fold choices they would change, and what that does to each model's AUC.

CPU time is the user + system time of this process and its worker processes (psutil). Timings depend on
what else the machine does: compare ratios from one run, not seconds across runs. It asserts nothing about
time.

Usage::

    .venv/bin/python benchmarks/bench_models.py                      # paper scale (make bench-models)
    .venv/bin/python benchmarks/bench_models.py --n 2000 --authors-folds 0 --n-estimators 300   # a quick look
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import pandas as pd

from ctac_helpers.cohort import synth
from ctac_helpers.models import cv as models
from ctac_helpers.stats import delong

from authors_grid import authors_gridsearch, cpu_delta, process_tree_cpu  # beside this script

logger = logging.getLogger("bench_models")
TABLE10_MODELS = ("all", "ai_ctac", "ai_hybrid")
XGB_MODELS = ("eat", "ai_ctac", "ai_spect", "ai_hybrid", "all")


def _fmt_s(s: float) -> str:
    return f"{s:8.1f} s" if s < 3600 else f"{s:8.1f} s ({s / 3600:.2f} h)"


def _timed(fn):
    c0, t0 = process_tree_cpu(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, cpu_delta(c0, process_tree_cpu())


def chapter_work(data, args, grid, procedure: str, traces: bool):
    """Chapter 5's model fitting: the grid search of the five models, then Supplementary Table 10."""
    config = models.CVConfig(models=XGB_MODELS, n_folds=args.n_folds, seed=args.seed, grid=grid,
                             early_stopping_rounds=args.early_stopping_rounds, max_bin=args.max_bin,
                             procedure=procedure, keep_boosters=None, record_traces=traces,
                             execution=models.Execution(n_jobs=args.n_jobs))
    cv, cv_wall, cv_cpu = _timed(lambda: models.cross_validate(data.cohort, data.ct_features, config))
    t10 = None, 0.0, 0.0
    if not args.no_table10:
        table10 = config.replace(models=TABLE10_MODELS, comparators=(), radiomics_subset="all", record_traces=False)
        t10 = _timed(lambda: models.cross_validate(data.cohort, data.ct_features, table10, chosen=cv.best_params,
                                                   chosen_trees=True))
    return {"cv": cv, "cv_wall": cv_wall, "cv_cpu": cv_cpu, "t10": t10[0], "t10_wall": t10[1], "t10_cpu": t10[2]}


# -- replay of other grid-search policies on recorded traces ----------------------------------------
def _choose(values, alive) -> int:
    """Best validation AUC among the points left; the first point wins a tie (as cross_validate)."""
    best, index = None, None
    for i, (v, a) in enumerate(zip(values, alive)):
        if a and (best is None or v > best):
            best, index = v, i
    return index


def halving(curves: list[np.ndarray], first_rung: int, margin: float):
    """Successive halving: at rounds first_rung, 2 first_rung, ... the lower half of the points still
    training (by best validation AUC so far) stops, unless within ``margin`` of the median point kept."""
    n, lengths = len(curves), [len(c) for c in curves]
    alive, rounds = [True] * n, list(lengths)
    rung = first_rung
    while rung < max(lengths):
        active = [i for i in range(n) if alive[i]]
        if len(active) <= 1:
            break
        at = {i: curves[i][min(rung, lengths[i]) - 1] for i in active}
        order = sorted(active, key=lambda i: -at[i])
        keep = max(1, int(np.ceil(len(active) / 2)))
        threshold = at[order[keep - 1]]
        for i in order[keep:]:
            if lengths[i] > rung and at[i] < threshold - margin:
                alive[i], rounds[i] = False, rung
        rung *= 2
    return rounds, alive


def racing(curves: list[np.ndarray], start: int, margin: float):
    """Racing in lockstep: from round ``start`` on, a point stops for good once its best validation AUC
    so far trails the leader's by more than ``margin``."""
    n, lengths = len(curves), [len(c) for c in curves]
    alive, rounds = [True] * n, list(lengths)
    for t in range(start, max(lengths)):
        now = [curves[i][min(t, lengths[i] - 1)] for i in range(n)]
        lead = max(now[i] for i in range(n) if alive[i])
        for i in range(n):
            if alive[i] and t < lengths[i] and now[i] < lead - margin:
                alive[i], rounds[i] = False, t + 1
    return rounds, alive


def replay(cv: models.CVResult, policy) -> dict:
    """Trees, choices and AUCs if ``policy`` had decided which grid points to train to the end.

    Exact for every point the policy lets finish: up to the round it stops, a point's fit is the one
    recorded (each fit is seeded on its own), so only which points finish changes.
    """
    fold_of = cv.folds["fold"].to_numpy()
    grid = cv.grid_results.set_index(["model", "fold", "grid_point"])
    full = kept = changed = 0
    scores = {m: {"book": np.zeros(len(fold_of)), "policy": np.zeros(len(fold_of))} for m in cv.traces["model"].unique()}
    for (m, k), g in cv.traces.groupby(["model", "fold"], sort=False):
        g = g.sort_values("grid_point")
        curves = [np.maximum.accumulate(c) for c in g["validation_auc_by_round"]]
        values = [grid.loc[(m, k, p), "validation_auc"] for p in g["grid_point"]]
        rounds, alive = policy(curves)
        ref, new = _choose(values, [True] * len(values)), _choose(values, alive)
        full += sum(len(c) for c in curves)
        kept += sum(rounds)
        changed += ref != new
        test = np.flatnonzero(fold_of == k)
        scores[m]["book"][test] = g["test_score"].iloc[ref]
        scores[m]["policy"][test] = g["test_score"].iloc[new]
    yv = cv.folds["death"].to_numpy()
    d_auc = {m: delong.auc(yv, s["policy"]) - delong.auc(yv, s["book"]) for m, s in scores.items()}
    return {"trees_ratio": full / kept, "changed": changed, "tasks": cv.traces.groupby(["model", "fold"]).ngroups,
            "d_auc": d_auc}


# -- threads against processes ------------------------------------------------------------------------
def threads_check(data, args, rounds: int = 30) -> list[tuple[str, float, float]]:
    """The same 2 x ``rounds`` trees of AI CTAC: two processes of one thread, one process of two threads."""
    import xgboost as xgb
    from joblib import Parallel, delayed

    X, y = models.feature_matrix(data.cohort, data.ct_features, "ai_ctac")
    arr, names, types = models.feature_arrays(X)
    yy = y.to_numpy()
    train, _ = models.inner_split(np.arange(len(yy)), yy, args.seed)
    params = {**models.AUTHORS_FIXED_PARAMS, "max_bin": args.max_bin, "seed": args.seed, "verbosity": 0,
              "colsample_bytree": 0.8, "max_depth": 8, "min_child_weight": 4}

    def fit(nthread: int, seed: int) -> int:
        d = xgb.QuantileDMatrix(arr[train], label=yy[train], feature_names=names, feature_types=types,
                                max_bin=args.max_bin, nthread=nthread)
        return xgb.train({**params, "nthread": nthread, "seed": seed}, d, rounds).num_boosted_rounds()

    out = []
    _, wall, cpu = _timed(lambda: Parallel(n_jobs=2, backend="loky")(delayed(fit)(1, s) for s in (1, 2)))
    out.append(("2 processes x 1 thread", wall, cpu))
    _, wall, cpu = _timed(lambda: [fit(2, s) for s in (1, 2)])
    out.append(("1 process x 2 threads", wall, cpu))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=synth.PAPER_N, help="synthetic patients (default: the paper's 10480)")
    ap.add_argument("--seed", type=int, default=models.DEFAULT_SEED, help="data and cross-validation seed")
    ap.add_argument("--n-folds", type=int, default=10, help="outer folds (default 10)")
    ap.add_argument("--authors-folds", type=int, default=1,
                    help="outer folds on which the authors' procedure runs (default 1; 0 skips it)")
    ap.add_argument("--n-jobs", type=int, default=2, help="worker processes of every procedure (default 2)")
    ap.add_argument("--early-stopping-rounds", type=int, default=50)
    ap.add_argument("--max-bin", type=int, default=models.BOOK_MAX_BIN,
                    help=f"xgboost histogram bins, every procedure (default {models.BOOK_MAX_BIN})")
    ap.add_argument("--n-estimators", type=int, nargs="+", default=list(models.AUTHORS_GRID["n_estimators"]),
                    help="the grid's n_estimators (default the authors' 1000 2000; smaller for a smoke run)")
    ap.add_argument("--no-table10", action="store_true", help="leave out Supplementary Table 10's refit")
    ap.add_argument("-v", "--verbose", action="store_true", help="log the procedures' progress")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if not 0 <= args.authors_folds <= args.n_folds:
        ap.error(f"--authors-folds must lie in 0..{args.n_folds}")

    t0 = time.perf_counter()
    data = synth.synthetic_dataset(args.n, args.seed)
    gen_s = time.perf_counter() - t0
    device = "cuda" if models.gpu_available() else "cpu"
    grid = {**models.AUTHORS_GRID, "n_estimators": tuple(args.n_estimators)}
    widths = {m: models.feature_matrix(data.cohort, data.ct_features, m)[0].shape[1] for m in XGB_MODELS}
    print(f"synthetic cohort: {args.n} patients, {int(data.cohort['death'].sum())} deaths, generated in {gen_s:.1f} s")
    print(f"features: " + ", ".join(f"{m} {w}" for m, w in widths.items()) + f"; device {device}; "
          f"{args.n_jobs} worker process(es) x 1 xgboost thread; max_bin {args.max_bin}; grid {grid}; "
          f"early stopping on validation AUC, {args.early_stopping_rounds} rounds")

    # Start the worker processes (and their imports) before any clock runs: every procedure then
    # finds them ready, as the chapter's second call does.
    from joblib import Parallel, delayed
    Parallel(n_jobs=args.n_jobs, backend="loky")(delayed(models.gpu_available)() for _ in range(args.n_jobs))

    # The book's run records per-round traces (one more test prediction per grid point: it can only
    # make the book's side slower).
    book = chapter_work(data, args, grid, "book", traces=True)
    ref = chapter_work(data, args, grid, "reference", traces=False)
    auth = None
    if args.authors_folds:
        auth, auth_wall, auth_cpu = _timed(lambda: authors_gridsearch(
            data.cohort, data.ct_features, model="ai_ctac", n_folds=args.n_folds, seed=args.seed, grid=grid,
            max_folds=args.authors_folds, n_jobs=args.n_jobs, max_bin=args.max_bin))
        scale = args.n_folds / args.authors_folds

    # -- side by side
    print()
    print("time, measured in this run (ratio: reference / book)")
    print(f"  {'':34s}{'book':>22s}{'reference':>22s}{'ratio':>9s}")
    rows = [("grid search, 5 models", "cv"), ("Supplementary Table 10 refit", "t10")]
    for label, key in rows:
        for unit in ("wall", "cpu"):
            b, r = book[f"{key}_{unit}"], ref[f"{key}_{unit}"]
            print(f"  {label + ', ' + unit:34s}{_fmt_s(b):>22s}{_fmt_s(r):>22s}{(r / b if b else float('nan')):>8.2f}x")
    for unit in ("wall", "cpu"):
        b = book[f"cv_{unit}"] + book[f"t10_{unit}"]
        r = ref[f"cv_{unit}"] + ref[f"t10_{unit}"]
        print(f"  {'models chapter fitting, ' + unit:34s}{_fmt_s(b):>22s}{_fmt_s(r):>22s}{r / b:>8.2f}x")
    if auth is not None:
        print(f"  authors' GridSearchCV (AI CTAC only): wall {_fmt_s(auth_wall)}, CPU {_fmt_s(auth_cpu)} on "
              f"{args.authors_folds} fold(s); EXTRAPOLATED to {args.n_folds} folds: wall {_fmt_s(auth_wall * scale)}, "
              f"CPU {_fmt_s(auth_cpu * scale)}")
        ai = book["cv"].timings[book["cv"].timings["model"] == "ai_ctac"]
        print(f"  authors (EXTRAPOLATED) / book, AI CTAC: CPU x{auth_cpu * scale / ai['cpu_s'].sum():.1f} "
              f"(the book's AI CTAC tasks: {ai['cpu_s'].sum():.1f} s CPU)")

    # -- equality of results
    print()
    print("results: book against reference, same cohort and folds")
    a = book["cv"].aucs().merge(ref["cv"].aucs(), on="model", suffixes=("_book", "_ref"))
    a["difference"] = a["auc_book"] - a["auc_ref"]
    keys = ["model", "fold", "colsample_bytree", "max_depth", "min_child_weight", "n_estimators"]
    same = (book["cv"].best_params[keys].reset_index(drop=True) == ref["cv"].best_params[keys].reset_index(drop=True)).all(axis=1)
    print(a[["model", "auc_book", "auc_ref", "difference"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"  largest |AUC difference| {a['difference'].abs().max():.4f} (allowed 0.002); folds with the same grid "
          f"point and number of trees: {int(same.sum())} of {len(same)}; identical predictions: "
          f"{book['cv'].predictions.equals(ref['cv'].predictions)}")
    if book["t10"] is not None:
        t = book["t10"].aucs().merge(ref["t10"].aucs(), on="model", suffixes=("_book", "_ref"))
        print("  Supplementary Table 10 (32 features): " + ", ".join(
            f"{r.model} {r.auc_book:.4f} / {r.auc_ref:.4f}" for r in t.itertuples())
              + f"; identical predictions: {book['t10'].predictions.equals(ref['t10'].predictions)}")

    # -- profile
    cv = book["cv"]
    print()
    print("profile of the book's run (where the time goes)")
    tm = cv.timings.groupby("model", sort=False)[["cpu_s", "data_cpu_s", "trees"]].sum()
    g = cv.grid_results.assign(past=lambda d: d["trees_fit"] - d["n_estimators"])
    past = g.groupby("model", sort=False)["past"].sum()
    total_cpu = tm["cpu_s"].sum()
    print(f"  {'model':10s}{'features':>9s}{'CPU s':>9s}{'share':>7s}{'matrices':>9s}{'trees fit':>10s}"
          f"{'past best':>10s}{'ms/tree':>9s}")
    for m, r in tm.iterrows():
        print(f"  {m:10s}{widths[m]:>9d}{r['cpu_s']:>9.1f}{r['cpu_s'] / total_cpu:>7.0%}{r['data_cpu_s'] / r['cpu_s']:>9.1%}"
              f"{int(r['trees']):>10d}{past[m] / r['trees']:>10.0%}{1000 * (r['cpu_s'] - r['data_cpu_s']) / r['trees']:>9.1f}")
    kept = cv.best_params["n_estimators"]
    print(f"  trees kept by the chosen grid points: median {kept.median():.0f} (range {kept.min()}-{kept.max()}); "
          f"every grid point fits its best iteration + {args.early_stopping_rounds} rounds, all 8 points per fold")
    if book["t10"] is not None:
        t10 = book["t10"].timings
        print(f"  Supplementary Table 10: {t10['cpu_s'].sum():.1f} s CPU, {t10['data_cpu_s'].sum() / t10['cpu_s'].sum():.0%} "
              f"in matrices, {int(t10['trees'].sum())} trees on ~{int(np.mean([len(v) for v in book['t10'].feature_names.values()]))} features")
    for label, wall, cpu in threads_check(data, args):
        print(f"  the same trees of AI CTAC, {label}: wall {wall:.1f} s, CPU {cpu:.1f} s")

    # -- other grid-search policies, replayed on the book's traces
    print()
    print("successive halving and racing over the grid, replayed on the recorded rounds (exact for the points")
    print("they let finish); trees: fitted by the book / by the policy; changed: folds choosing another point")
    policies = [(f"halving from round {r}, margin {d}", lambda c, r=r, d=d: halving(c, r, d))
                for r in (16, 32, 64) for d in (0.0, 0.005, 0.01)]
    policies += [(f"racing from round {s}, margin {d}", lambda c, s=s, d=d: racing(c, s, d))
                 for s in (25, 50, 100) for d in (0.005, 0.01, 0.02)]
    for label, policy in policies:
        r = replay(cv, policy)
        print(f"  {label:34s} trees x{r['trees_ratio']:.2f}, changed {r['changed']:2d}/{r['tasks']}, AUC change "
              + " ".join(f"{m} {d:+.4f}" for m, d in r["d_auc"].items())
              + ("  keeps the AUC" if max(abs(d) for d in r["d_auc"].values()) <= 0.002 else "  DOES NOT keep the AUC"))

    if auth is not None:
        common = cv.predictions[cv.predictions["model"] == "ai_ctac"].merge(
            auth.predictions[["patient_id", "score"]], on="patient_id", suffixes=("_book", "_authors"))
        y = common["death"].to_numpy()
        test = delong.delong_test(y, common["score_book"].to_numpy(), common["score_authors"].to_numpy())
        print()
        print(f"AI CTAC on the {args.authors_folds} fold(s) the authors' procedure ran ({len(common)} patients): "
              f"book {test.auc_a:.4f}, authors {test.auc_b:.4f}, difference {test.auc_a - test.auc_b:+.4f} "
              f"(DeLong p = {test.p_value:.3f}); authors' choice: "
              f"{auth.best_params.drop(columns=['model', 'validation_logloss']).to_dict('records')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
