"""Benchmark: the book's early-stopping grid against the authors' GridSearchCV (AI CTAC model).

Both procedures run on the same synthetic cohort and the same outer stratified folds:

* the book's (:func:`ctac_helpers.models.cv.cross_validate`): per outer fold one stratified 80/20
  split of the 90%, one early-stopped fit per (colsample_bytree, max_depth, min_child_weight)
  combination (8 fits; ``n_estimators`` is the cap), best validation AUC kept;
* the authors' (:func:`ctac_helpers.models.cv.authors_gridsearch`): per outer fold
  ``GridSearchCV(cv=5, scoring='roc_auc')`` over the 16 combinations without early stopping, then
  a refit on the 90% (81 fits of 1,000-2,000 trees).

The book's procedure runs on all outer folds; the authors' on the first ``--folds`` only (it is
about two orders of magnitude slower), and its time for all folds is *extrapolated* linearly and
labelled so. Both use ``--n-jobs`` worker processes of one xgboost thread each (the book: folds in
parallel; the authors': GridSearchCV's fits in parallel). CPU time is the user + system time of this
process and its worker processes (psutil when installed, else this process only).

Run ``python benchmarks/bench_models.py`` (``--help`` for the options). It prints wall and CPU
seconds, the AUCs (the book's over all folds, and both procedures on the folds the authors' ran,
with DeLong's test of the difference), the speed ratio and what the time goes to. It asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from ctac_helpers.stats import delong
from ctac_helpers.models import cv as models
from ctac_helpers.cohort import synth

logger = logging.getLogger("bench_models")


def _fmt_s(s: float) -> str:
    return f"{s:8.1f} s" if s < 3600 else f"{s:8.1f} s ({s / 3600:.2f} h)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=synth.PAPER_N, help="synthetic patients (default: the paper's 10480)")
    ap.add_argument("--seed", type=int, default=models.DEFAULT_SEED, help="data and cross-validation seed")
    ap.add_argument("--n-folds", type=int, default=10, help="outer folds (default 10)")
    ap.add_argument("--folds", type=int, default=1, help="outer folds on which the authors' procedure runs (default 1)")
    ap.add_argument("--n-jobs", type=int, default=2, help="worker processes of both procedures (default 2)")
    ap.add_argument("--early-stopping-rounds", type=int, default=50)
    ap.add_argument("--stopping-metric", default="auc", choices=models.STOPPING_METRICS)
    ap.add_argument("--max-bin", type=int, default=models.BOOK_MAX_BIN,
                    help=f"xgboost histogram bins, both procedures (default {models.BOOK_MAX_BIN})")
    ap.add_argument("--radiomics-subset", default="subset15", choices=("subset15", "all"))
    ap.add_argument("--n-estimators", type=int, nargs="+", default=list(models.AUTHORS_GRID["n_estimators"]),
                    help="the grid's n_estimators (default the authors' 1000 2000; smaller for a smoke run)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log the procedures' progress")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if not 1 <= args.folds <= args.n_folds:
        ap.error(f"--folds must lie in 1..{args.n_folds}")

    t0 = time.perf_counter()
    data = synth.synthetic_dataset(args.n, args.seed)
    gen_s = time.perf_counter() - t0
    X, _ = models.feature_matrix(data.cohort, data.ct_features, "ai_ctac", args.radiomics_subset)
    device = "cuda" if models.gpu_available() else "cpu"
    grid = {**models.AUTHORS_GRID, "n_estimators": tuple(args.n_estimators)}
    print(f"synthetic cohort: {args.n} patients, {int(data.cohort['death'].sum())} deaths, generated in {gen_s:.1f} s")
    print(f"AI CTAC features: {X.shape[1]} ({args.radiomics_subset}); device {device}; "
          f"{args.n_jobs} worker process(es) x 1 xgboost thread; max_bin {args.max_bin}; "
          f"grid {grid}; early stopping on validation {args.stopping_metric}, {args.early_stopping_rounds} rounds")

    # -- the book's procedure: all folds
    c0 = models._process_tree_cpu()
    book = models.cross_validate(data.cohort, data.ct_features, models=("ai_ctac",), n_folds=args.n_folds,
                                 seed=args.seed, radiomics_subset=args.radiomics_subset, grid=grid,
                                 early_stopping_rounds=args.early_stopping_rounds, n_jobs=args.n_jobs,
                                 comparators=(), stopping_metric=args.stopping_metric, keep_boosters=None,
                                 max_bin=args.max_bin)
    book_cpu = models._cpu_delta(c0, models._process_tree_cpu())

    # -- the authors' procedure: the first --folds folds
    auth = models.authors_gridsearch(data.cohort, data.ct_features, model="ai_ctac", n_folds=args.n_folds,
                                     seed=args.seed, radiomics_subset=args.radiomics_subset, grid=grid,
                                     max_folds=args.folds, n_jobs=args.n_jobs, max_bin=args.max_bin)
    scale = args.n_folds / args.folds

    bt, at = book.timings, auth.timings
    print()
    print(f"book's procedure (early stopping, {args.n_folds} folds, measured)")
    print(f"  wall {_fmt_s(book.wall_s)}   CPU {_fmt_s(book_cpu)}")
    print(f"  fits per fold {int(bt['n_fits'].iloc[0])}; trees fitted per fold: mean {bt['trees'].mean():.0f} "
          f"(min {bt['trees'].min()}, max {bt['trees'].max()}); trees kept: "
          f"{', '.join(str(int(v)) for v in book.best_params['n_estimators'])}")
    print(f"  task CPU per 1000 trees fitted: {1000 * bt['cpu_s'].sum() / bt['trees'].sum():.1f} s")
    print(f"authors' procedure (GridSearchCV cv=5, {args.folds} fold(s) measured)")
    print(f"  wall {_fmt_s(auth.wall_s)}   CPU {_fmt_s(auth.cpu_s)}   (measured)")
    print(f"  wall {_fmt_s(auth.wall_s * scale)}   CPU {_fmt_s(auth.cpu_s * scale)}   "
          f"(EXTRAPOLATED to {args.n_folds} folds: x{scale:g})")
    print(f"  fits per fold {int(at['n_fits'].iloc[0])}; trees fitted per fold {at['trees'].mean():.0f}; "
          f"CPU per 1000 trees: {1000 * at['cpu_s'].sum() / at['trees'].sum():.1f} s")
    print(f"  chosen: {auth.best_params.drop(columns=['model', 'validation_logloss']).to_dict('records')}")

    # -- AUCs
    y_all = book.predictions["death"].to_numpy()
    print()
    print(f"AUC, book, all {args.n_folds} folds ({len(y_all)} patients): "
          f"{delong.auc(y_all, book.predictions['score'].to_numpy()):.4f}")
    common = book.predictions.merge(auth.predictions[["patient_id", "score"]], on="patient_id",
                                    suffixes=("_book", "_authors"))
    y = common["death"].to_numpy()
    test = delong.delong_test(y, common["score_book"].to_numpy(), common["score_authors"].to_numpy())
    print(f"AUC on the {args.folds} fold(s) both ran ({len(common)} patients, {int(y.sum())} deaths): "
          f"book {test.auc_a:.4f}, authors {test.auc_b:.4f}, difference {test.auc_a - test.auc_b:+.4f} "
          f"(95% CI {test.difference_ci[0]:+.4f} to {test.difference_ci[1]:+.4f}, DeLong p = {test.p_value:.3f}); "
          f"target |difference| <= 0.005: "
          f"{'met' if abs(test.auc_a - test.auc_b) <= 0.005 else 'MISSED'}")

    # -- ratio
    wall_ratio = auth.wall_s * scale / book.wall_s
    cpu_ratio = auth.cpu_s * scale / book_cpu
    print()
    print(f"speed-up (authors' EXTRAPOLATED / book's measured): wall x{wall_ratio:.1f}, CPU x{cpu_ratio:.1f}; "
          f"target >= 10x: {'met' if wall_ratio >= 10 else 'MISSED'}")
    trees_ratio = at["trees"].mean() / bt["trees"].mean()
    print(f"trees fitted per fold, authors / book: x{trees_ratio:.1f} (the time goes to growing trees: "
          f"the book fits {bt['n_fits'].iloc[0]} early-stopped models per fold, the authors "
          f"{at['n_fits'].iloc[0]} models of {min(args.n_estimators)}-{max(args.n_estimators)} trees)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
