"""Benchmark of the whole book: every stage of a profile, from an empty run directory.

Runs ``ctac-book run`` on a fresh, empty run directory (a temporary folder unless ``--run-dir`` names an
empty or missing one) as a child process, then prints each stage's time as ``run.json`` records it,
the cells that took longest (papermill's per-cell durations in the executed notebooks: where the time
goes), the total wall time and the CPU time of the child processes (user + system, as the operating
system reports it for the run and its kernels and workers). With ``--build`` it also times
``ctac-book build``.

The phantom cache (``ctac_helpers.imaging.phantom_cache``) is shared by run directories; by default the benchmark
points it at an empty temporary folder, so the phantoms are drawn as on a fresh clone
(``--warm-cache`` uses the machine's own cache instead).

Usage::

    .venv/bin/python benchmarks/bench_book.py                    # the paper profile (make bench)
    .venv/bin/python benchmarks/bench_book.py --profile quick    # the small profile
    .venv/bin/python benchmarks/bench_book.py --build --keep     # also build the HTML; keep the run directory
    .venv/bin/python benchmarks/bench_book.py --until segmentation   # chapters 0-2 only

Timings depend on what else the machine is doing: the load average at the start and at the end are
printed with them. The script asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _cli(*args: str) -> list[str]:
    code = "import sys; from ctac_helpers.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


def slowest_cells(run_dir: Path, n: int) -> list[tuple[float, str, int, str]]:
    """The ``n`` longest cells of the executed notebooks: (seconds, notebook, cell index, first line)."""
    cells = []
    for nb_path in sorted((run_dir / "executed").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb.get("cells", [])):
            duration = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
            if duration:
                source = "".join(cell.get("source", [])).strip().splitlines()
                cells.append((float(duration), nb_path.stem, i, source[0][:70] if source else ""))
    return sorted(cells, reverse=True)[:n]


def stages_until(name: str) -> list[str]:
    """``name`` and the stages it needs, in the order they run (``cohort``, chapter 1, runs after the
    imaging chapters, so ``--until segmentation`` runs ``data`` and ``segmentation`` only)."""
    from ctac_helpers.core.stages import execution_order, upstream_of

    wanted = upstream_of(name) | {name}
    return [st.name for st in execution_order() if st.name in wanted]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="paper", help="book profile (default: paper)")
    ap.add_argument("--config", help="a run configuration file (as `ctac-book run --config`)")
    ap.add_argument("--run-dir", type=Path, help="an empty or missing run directory (default: a temporary one)")
    ap.add_argument("--until", metavar="STAGE",
                    help="run this stage and the stages it needs only, in execution order (each with "
                         "`ctac-book run --only`)")
    ap.add_argument("--build", action="store_true", help="also time `ctac-book build`")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use the machine's phantom cache instead of an empty one")
    ap.add_argument("--cells", type=int, default=12, help="how many of the slowest cells to list (default 12)")
    args = ap.parse_args(argv)
    from ctac_helpers.core.stages import STAGES

    names = [st.name for st in STAGES]
    if args.until is not None and args.until not in names:
        ap.error(f"unknown stage {args.until!r}; allowed: {', '.join(names)}")
    if args.until is not None and args.build:
        ap.error("--build needs every stage: leave out --until")

    if args.run_dir is not None and args.run_dir.exists() and any(args.run_dir.iterdir()):
        ap.error(f"--run-dir {args.run_dir} is not empty: the benchmark starts from an empty run directory")
    tmp = Path(tempfile.mkdtemp(prefix="ctac-bench-"))
    run_dir = args.run_dir or tmp / "run"
    env = dict(os.environ)
    if not args.warm_cache:
        env["CTAC_BOOK_CACHE"] = str(tmp / "cache")
    common = (["--profile", args.profile, "--run-dir", str(run_dir.resolve())]
              + (["--config", str(Path(args.config).resolve())] if args.config else []))
    # The commands run in the temporary folder, so that the package they import is the environment's
    # (the venv's install, or PYTHONPATH), never a copy that happens to lie in the current folder.
    cwd = tmp

    print(f"ctac-book {args.profile} profile from an empty run directory; "
          f"phantom cache: {'the machine-wide one' if args.warm_cache else 'empty (as on a fresh clone)'}; "
          f"{os.cpu_count()} CPUs; load average at start {_load()}", flush=True)
    cpu0, t0 = _cpu_children(), time.perf_counter()
    if args.until is None:
        rc = subprocess.call(_cli("run", "-q", *common), cwd=cwd, env=env)
    else:
        for name in stages_until(args.until):
            rc = subprocess.call(_cli("run", "-q", *common, "--only", name), cwd=cwd, env=env)
            if rc != 0:
                break
    run_wall, run_cpu = time.perf_counter() - t0, _cpu_children() - cpu0
    if rc != 0:
        print(f"ctac-book run failed (exit code {rc}); run directory kept at {run_dir}", file=sys.stderr)
        return rc
    build_wall = build_cpu = None
    if args.build:
        cpu0, t0 = _cpu_children(), time.perf_counter()
        rc = subprocess.call(_cli("build", "-q", *common, "--out", str(tmp / "book")), cwd=cwd, env=env)
        build_wall, build_cpu = time.perf_counter() - t0, _cpu_children() - cpu0
        if rc != 0:
            print(f"ctac-book build failed (exit code {rc})", file=sys.stderr)
            return rc

    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    stages = record.get("stages", {})
    print()
    print(f"{'stage':<14}{'seconds':>10}  status")
    # in the book's order (run.json keeps its keys sorted)
    for name in [n for n in names if n in stages] + sorted(set(stages) - set(names)):
        rec = stages[name]
        print(f"{name:<14}{rec.get('duration_s') or 0:>10.1f}  {rec.get('status')}")
    stage_total = sum(rec.get("duration_s") or 0 for rec in stages.values())
    print(f"{'stages':<14}{stage_total:>10.1f}")
    print()
    print(f"ctac-book run: wall {run_wall:.1f} s, CPU {run_cpu:.1f} s (children: kernels and workers)")
    if build_wall is not None:
        print(f"ctac-book build: wall {build_wall:.1f} s, CPU {build_cpu:.1f} s")
    print(f"load average at end {_load()}")
    print()
    print(f"the {args.cells} slowest cells (where the time goes):")
    for seconds, notebook, index, first in slowest_cells(run_dir, args.cells):
        print(f"  {seconds:8.1f} s  {notebook} cell {index}: {first}")
    if args.keep or args.run_dir:
        print(f"\nrun directory: {run_dir}")
    if not args.keep:  # the temporary folder (and the run directory, when it lies there)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
