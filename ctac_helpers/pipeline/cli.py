"""The ``ctac-book`` command line: run the stages, build the book, show what is up to date.

Examples
--------
::

    ctac-book run --profile quick           # execute the stages into runs/quick
    ctac-book run --force cohort            # re-run one stage (and whatever it changes)
    ctac-book status --profile quick        # which stages are up to date, and why not
    ctac-book build --profile quick         # compile runs/quick into _build/html
    ctac-book init-site mysite              # templates for a site's own data, and mysite/site.yaml
    ctac-book validate --config mysite/site.yaml   # every problem of the site's data, one per line
    ctac-book compare runs/a runs/b         # which recorded outputs differ between two runs
    ctac-book check-html --profile quick    # open every page of _build/html in headless Chromium
    ctac-book calibrate                     # fit the synthetic generator's constants (data_manifest/generator.yaml)

Exit codes: 0 success, 1 a stage or the book build failed (``validate``: the data has errors;
``compare``: an output differs), 2 bad input (configuration, stage name, missing file or run
directory, invalid site data for ``run``) or a run or output directory that cannot be written to
(permissions, a read-only or full disk).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from ctac_helpers import __version__
from ctac_helpers.core import manifest
from ctac_helpers.publish import book as book_mod
from ctac_helpers.publish import browser as browser_mod
from ctac_helpers.core import rundir as rundir_mod
from ctac_helpers.pipeline import runner
from ctac_helpers.pipeline import site as site_mod
from ctac_helpers.core import stages as stages_mod
from ctac_helpers.pipeline.config import list_profiles, load_config
from ctac_helpers.cohort.validate import ValidationError

logger = logging.getLogger(__name__)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", type=Path,
                        help="YAML file overriding the profile (may set 'profile: quick')")
    common.add_argument("--profile", metavar="NAME", default=None,
                        help=f"built-in profile: {' | '.join(list_profiles())} (default: the config "
                             "file's 'profile', else paper)")
    common.add_argument("--run-dir", metavar="DIR", type=Path,
                        help="run directory (default: ./runs/<config name>)")
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="debug logging, and tracebacks on errors")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands ``run``, ``build``, ``status``, ``init-site``, ``validate`` and
    ``compare``)."""
    parser = argparse.ArgumentParser(
        prog="ctac-book",
        description="Run the ctac-book stage notebooks and build the book.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common_options()

    p_run = sub.add_parser("run", parents=[common], help="execute the stages that are not up to date")
    p_run.add_argument("--force", metavar="STAGE", nargs="+", action="extend", default=[],
                       help="re-run these stages even when up to date")
    p_run.add_argument("--only", metavar="STAGE",
                       help="consider only this stage (the stages it needs must have run)")
    p_run.set_defaults(func=_cmd_run)

    p_build = sub.add_parser("build", parents=[common], help="build the HTML book from a run directory")
    p_build.add_argument("--out", metavar="DIR", type=Path,
                         help="output root; the site goes to DIR/_build/html (default: .)")
    p_build.set_defaults(func=_cmd_build)

    p_status = sub.add_parser("status", parents=[common], help="show which stages are up to date")
    p_status.set_defaults(func=_cmd_status)

    p_init = sub.add_parser("init-site", help="create a folder with templates for a site's own data",
                            description="Write DIR/site.yaml (a run configuration), DIR/cohort.csv and "
                                        "DIR/scans.csv (empty tables whose '#' lines describe every column) "
                                        "and DIR/secret.key (the key of the patient-id hash). Nothing is "
                                        "overwritten.")
    p_init.add_argument("directory", metavar="DIR", type=Path, help="folder to create")
    p_init.set_defaults(func=_cmd_init_site, verbose=False, quiet=False)

    p_example = sub.add_parser(
        "example-site", help="write a complete made-up site (cohort, DICOM scans, label maps) to try the site path",
        description="Write what `init-site` asks a site to fill in, already filled with made-up patients: a "
                    "cohort table, one DICOM series per patient (a digital CTAC phantom, with made-up names, "
                    "record numbers, birth dates and accession numbers in its headers), precomputed label maps, "
                    "a scan manifest, a secret key and site.yaml. Then: ctac-book validate / run / build "
                    "--config DIR/site.yaml.")
    p_example.add_argument("directory", metavar="DIR", type=Path, help="folder to create")
    p_example.add_argument("--patients", type=int, default=200, help="patients, one scan each (default 200, the least)")
    p_example.add_argument("--seed", type=int, default=20240101, help="seed of the made-up data (default 20240101)")
    p_example.set_defaults(func=_cmd_example_site, verbose=False, quiet=False)

    p_validate = sub.add_parser("validate", parents=[common],
                                help="check a site's data (tables, key and images); list every problem")
    p_validate.add_argument("--no-images", action="store_true",
                            help="check the tables and the key only; do not read the images")
    p_validate.set_defaults(func=_cmd_validate)

    p_compare = sub.add_parser("compare", help="compare the output hashes of two run directories",
                               description="Compare the SHA-256 of every output recorded in the run.json of "
                                           "two run directories; list the outputs that differ. Exit code 0 "
                                           "when all are identical, 1 otherwise.")
    p_compare.add_argument("run_a", metavar="RUN_DIR_A", type=Path, help="first run directory")
    p_compare.add_argument("run_b", metavar="RUN_DIR_B", type=Path, help="second run directory")
    p_compare.set_defaults(func=_cmd_compare, verbose=False, quiet=False)

    p_check = sub.add_parser("check-html", parents=[common],
                             help="open every page of the built book in headless Chromium; list what is broken",
                             description="Serve the built book on 127.0.0.1 and open every page in headless "
                                         "Chromium at 1280 px: JavaScript errors, console errors, failed requests, "
                                         "images that do not load, broken internal links and anchors, the figures "
                                         "of the replication scorecard, progress bars, warnings and log lines in "
                                         "outputs, tables wider than the page and figure text under 9 pt. Saves a "
                                         "screenshot of each page under <run dir>/screenshots/. Exit code 0 when "
                                         "nothing is broken, 1 otherwise.")
    p_check.add_argument("--html", metavar="DIR", type=Path,
                         help="the built book (default: ./_build/html, where `ctac-book build` writes it)")
    p_check.add_argument("--timeout", metavar="SECONDS", type=float, default=30.0,
                         help="seconds a page and its images may take to load (default: 30; more on a busy "
                              "machine)")
    p_check.set_defaults(func=_cmd_check_html)

    p_cal = sub.add_parser(
        "calibrate", help="fit the synthetic generator's structural constants to the paper's declared targets",
        description="Fit the death components' shifts and the reversible share of the stress deficit to the "
                    "results listed under generator_targets in data_manifest/paper_values.yaml (a fast proxy, "
                    "then the book's own XGBoost procedure), and write data_manifest/generator.yaml. With "
                    "--heldout-seeds N, run the book on N other seeds and record how often each held-out "
                    "scorecard row holds; with --spread-seeds N, record on N + 1 seeds what the structure gives "
                    "for the quantities that need none of the book's models. " + _fit_time_text())
    p_cal.add_argument("--no-confirm", action="store_true",
                       help="the proxy fit only (minutes), without the book's procedure")
    p_cal.add_argument("--heldout-seeds", metavar="N", type=int, default=0,
                       help="after the fit, run the book on the N seeds after the default one (default 0)")
    p_cal.add_argument("--heldout-only", action="store_true",
                       help="skip the fit: run the held-out check with the constants of generator.yaml")
    p_cal.add_argument("--heldout-fresh", action="store_true",
                       help="run every held-out seed again, forgetting the seeds that generator.yaml records for "
                            "the same generator (by default they are kept and only the others run)")
    p_cal.add_argument("--spread-seeds", metavar="N", type=int, default=0,
                       help="record what the structure gives on the default seed and the N seeds after it, for "
                            "the quantities that need none of the book's models (seconds a seed; default 0)")
    p_cal.add_argument("--no-fit", action="store_true",
                       help="skip the fit: keep the constants of generator.yaml (for --spread-seeds; "
                            "--heldout-only implies it)")
    p_cal.add_argument("--margins", action="store_true",
                       help="only refit the cohort's cell distributions to Tables 1-2 and write "
                            "data_manifest/margins.yaml (or --out FILE); the generator's data change with them")
    p_cal.add_argument("--runs", metavar="DIR", type=Path, default=Path("runs"),
                       help="where the held-out runs go (default ./runs)")
    p_cal.add_argument("--out", metavar="FILE", type=Path,
                       help="write here instead of data_manifest/generator.yaml")
    p_cal.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p_cal.set_defaults(func=_cmd_calibrate, quiet=False)
    return parser


def _fit_time_text() -> str:
    """How long the last fit took, as ``generator.yaml`` records it (``fit.seconds``), for ``calibrate --help``."""
    seconds = (manifest.generator_file().get("fit") or {}).get("seconds")
    held_out = "; each held-out seed is one run of the paper profile."
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "data_manifest/generator.yaml records no fit time yet" + held_out
    return (f"The last fit took {seconds / 60:.0f} minutes (fit.seconds in data_manifest/generator.yaml, on the "
            "machine that ran it)" + held_out)


def _config_and_run_dir(args: argparse.Namespace) -> tuple[dict, Path]:
    config = load_config(args.profile, args.config, stages=stages_mod.STAGES)
    run_dir = args.run_dir if args.run_dir is not None else Path.cwd() / "runs" / config["name"]
    return config, Path(run_dir)


def _cmd_run(args: argparse.Namespace) -> int:
    config, run_dir = _config_and_run_dir(args)
    if config.get("site"):
        # before anything is written into the run directory. The parameters, the tables and the key
        # only: reading every image of a large site takes long, `ctac-book validate` does it, and
        # ingestion checks each image again.
        site_mod.require_valid_site(config, run_dir=run_dir, check_images=False, config_file=args.config)
    else:
        problems = site_mod.parameter_problems(config, args.config, runner.NOTEBOOKS_DIR, stages_mod.STAGES)
        if problems:
            raise ValidationError(problems, what="the configuration's stage parameters")
    # before any stage: an unwritable or full run directory is told in one line, not met in a stage
    rundir_mod.require_writable(run_dir)
    logger.info("run %r (profile %s) in %s", config["name"], config["profile"], run_dir)
    results = runner.run_stages(
        config, run_dir, force=args.force, only=args.only,
        stages=stages_mod.STAGES, notebooks_dir=runner.NOTEBOOKS_DIR,
    )
    ran = sum(r.status == "ran" for r in results)
    logger.info("%d stage(s) run, %d up to date; results in %s", ran, len(results) - ran, run_dir)
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    _, run_dir = _config_and_run_dir(args)
    out = args.out if args.out is not None else Path.cwd()
    index = book_mod.build_book(run_dir, repo_root=book_mod.REPO_ROOT, out_dir=out)
    logger.info("open %s", index)
    return 0


def _cmd_init_site(args: argparse.Namespace) -> int:
    paths = site_mod.init_site(args.directory)
    roles = {"config": "run configuration", "cohort": "clinical table template, one row per patient",
             "scans": "scan manifest template, one row per CT scan",
             "secret": "key of the patient-id hash (mode 0600): keep it private, never commit or share it"}
    out = [f"wrote {paths[k]}  ({roles[k]})" for k in ("config", "cohort", "scans", "secret")]
    config = paths["config"]
    out += ["", "next:",
            f"  1. fill in {paths['cohort']} and {paths['scans']} (the '#' lines describe every column)",
            f"  2. ctac-book validate --config {config}",
            f"  3. ctac-book run --config {config}",
            f"  4. ctac-book build --config {config}"]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _cmd_example_site(args: argparse.Namespace) -> int:
    from ctac_helpers.pipeline import example_site  # imports the phantom generator: only for this command

    made = example_site.write_example_site(args.directory, n_patients=args.patients, seed=args.seed)
    config = made.paths["config"]
    sys.stdout.write("\n".join([
        f"wrote an example site of {len(made.identifiers)} made-up patients to {args.directory}",
        "next:",
        f"  1. ctac-book validate --config {config}",
        f"  2. ctac-book run --config {config}",
        f"  3. ctac-book build --config {config}",
    ]) + "\n")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.config is None:
        sys.stderr.write("ctac-book: error: validate needs --config FILE (a configuration with a 'site' "
                         "section; `ctac-book init-site DIR` writes one)\n")
        return 2
    config, run_dir = _config_and_run_dir(args)
    if not config.get("site"):
        sys.stderr.write(f"ctac-book: error: {args.config} has no 'site' section; expected site: "
                         "{cohort, scans, secret} (`ctac-book init-site DIR` writes one)\n")
        return 2
    problems = site_mod.validate_site(config, run_dir=run_dir, check_images=not args.no_images,
                                      config_file=args.config)
    n_errors = sum(p.severity == "error" for p in problems)
    lines = [str(p) for p in problems]
    what = "tables and key" if args.no_images else "tables, key and images"
    lines.append(f"{n_errors} error(s), {len(problems) - n_errors} warning(s) in the site's {what}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if n_errors else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    table = runner.compare_runs(args.run_a, args.run_b, stages=stages_mod.STAGES)
    recs = [runner.read_run_record(args.run_a), runner.read_run_record(args.run_b)]
    lines = []
    differ = table[~table["same"]]
    if len(differ):
        def short(sha):
            return sha[:12] if isinstance(sha, str) else "(none)"

        rows = [("stage", "path", "A", "B")] + [(r.stage, r.path, short(r.sha_a), short(r.sha_b))
                                                for r in differ.itertuples()]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
        missing = differ["sha_a"].isna() | differ["sha_b"].isna()
        lines.append(f"{len(differ)} of {len(table)} outputs differ"
                     + (" ((none): no successful record in that run)" if missing.any() else ""))
    elif len(table):
        lines.append(f"all {len(table)} recorded outputs are identical")
    else:
        lines.append("no recorded outputs to compare")
    # what else differs between the two records, to explain the outputs (or their agreement)
    for field, what in (("parameters", "configurations"), ("code_hash", "code of ctac_helpers/ and data_manifest/"),
                        ("packages", "package versions")):
        if recs[0].get(field) != recs[1].get(field):
            lines.append(f"note: the two runs' {what} differ")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if len(table) and not len(differ) else 1


def _cmd_check_html(args: argparse.Namespace) -> int:
    _, run_dir = _config_and_run_dir(args)
    html = args.html if args.html is not None else Path.cwd() / "_build" / "html"
    shots = run_dir / "screenshots"
    for old in shots.glob("*.png"):  # of an earlier check: one screenshot per page of this book
        old.unlink()
    pages = browser_mod.list_pages(html) if html.is_dir() else []
    # no page or download may name the folders of this machine: the repository, the run directory
    problems = browser_mod.check_pages(html, shots, scorecard=browser_mod.SCORECARD_PAGE, timeout=args.timeout,
                                       forbidden=[book_mod.REPO_ROOT, run_dir.resolve()])
    lines = [str(p) for p in problems]
    if problems:
        lines.append(f"{len(problems)} problem(s) on {len({p.page for p in problems})} of {len(pages)} pages "
                     f"of {html}; screenshots in {shots}")
    else:
        lines.append(f"all {len(pages)} pages of {html} load without errors; screenshots in {shots}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if problems else 0


def format_status(rows: list) -> str:
    """Render :func:`ctac_helpers.pipeline.runner.stage_status` rows as an aligned text table."""
    table = [("stage", "state", "reason")] + [(r[0], r[1], r[2]) for r in rows]
    w0 = max(len(r[0]) for r in table)
    w1 = max(len(r[1]) for r in table)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in table) + "\n"


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ctac_helpers.cohort import synth
    from ctac_helpers.pipeline import calibrate as generator_fit

    if args.margins:
        others = [flag for flag, on in (("--no-confirm", args.no_confirm), ("--heldout-seeds", args.heldout_seeds),
                                        ("--heldout-only", args.heldout_only), ("--heldout-fresh", args.heldout_fresh),
                                        ("--spread-seeds", args.spread_seeds), ("--no-fit", args.no_fit)) if on]
        if others:
            raise ValueError(f"--margins refits the cell distributions only; it does not combine with {', '.join(others)}")
        path = generator_fit.write_margins_file(synth.margins_record(), args.out)
        logger.info("cell distributions of %d variables written to %s", len(synth.CONTINUOUS), path)
        return 0
    if args.heldout_only and not args.heldout_seeds:
        raise ValueError("--heldout-only needs --heldout-seeds N (N >= 1)")
    if args.heldout_seeds < 0:
        raise ValueError(f"--heldout-seeds must be >= 0, got {args.heldout_seeds}")
    if args.spread_seeds < 0:
        raise ValueError(f"--spread-seeds must be >= 0, got {args.spread_seeds}")
    if args.no_fit and not (args.heldout_seeds or args.spread_seeds):
        raise ValueError("--no-fit needs --spread-seeds N or --heldout-seeds N (N >= 1)")
    content = dict(manifest.generator_file())
    if not (args.heldout_only or args.no_fit):
        content = generator_fit.calibrate(generator_fit.FitConfig(confirm=not args.no_confirm))
        # checks of earlier constants say nothing of these
        content.pop("heldout", None)
        content.pop("spread", None)
        path = generator_fit.write_generator_file(content, args.out)
        logger.info("fitted constants written to %s (%.0f s)", path, content["fit"]["seconds"])
    if not (args.spread_seeds or args.heldout_seeds):
        return 0
    # what the checks below are made with; recomputed even after a fit, as the code may have changed since
    constants = synth.generator_constants(content)
    fingerprint = synth.generator_fingerprint(constants)
    if args.spread_seeds:
        seeds = generator_fit.spread_seeds(args.spread_seeds)
        table = generator_fit.structure_spread(seeds, constants=constants)
        content["spread"] = generator_fit.spread_record(table, fingerprint)
        path = generator_fit.write_generator_file(content, args.out)
        logger.info("the structure's spread on seeds %s written to %s", seeds, path)
    if args.heldout_seeds:
        # an interrupted check of the same generator goes on: its recorded seeds are not run again
        previous = None if args.heldout_fresh else generator_fit.resumable_heldout(content, fingerprint)

        def record(done, holds, per_seed):  # after every seed, so that an interrupted check keeps what it did
            content["heldout"] = {"seeds": done, "fingerprint": fingerprint,
                                  "rows": holds.drop(columns=["item", "quantity"], errors="ignore").to_dict("records"),
                                  "per_seed": per_seed}
            path = generator_fit.write_generator_file(content, args.out)
            logger.info("held-out check on seeds %s written to %s", done, path)

        generator_fit.heldout_check(generator_fit.heldout_seeds(count=args.heldout_seeds), args.runs,
                                    on_seed=record, previous=previous)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    config, run_dir = _config_and_run_dir(args)
    rows = runner.stage_status(config, run_dir, stages=stages_mod.STAGES, notebooks_dir=runner.NOTEBOOKS_DIR)
    logger.info("run directory: %s", run_dir)
    sys.stdout.write(format_status(rows))
    return 0


def _report(exc: BaseException, verbose: bool, message: str | None = None) -> None:
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"ctac-book: error: {exc if message is None else message}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ctac-book``; returns the process exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 1 a stage or the book build failed, ``validate`` found errors or ``compare`` a
        difference, 2 bad input.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; report it as a code
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("ctac-book: error: a command is required (run, build, status, init-site, validate "
                         "or compare)\n")
        return 2

    # logging is configured here only, and undone on return so repeated calls (tests) do not stack
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if args.verbose else "%(message)s"))
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    old_level = root.level
    pm_logger = logging.getLogger("papermill")
    old_pm_level = pm_logger.level
    root.addHandler(handler)
    root.setLevel(level)
    if not args.verbose:
        # papermill logs every notebook path and kernel start at INFO; the runner's lines suffice
        pm_logger.setLevel(logging.WARNING)
    try:
        return args.func(args)
    except runner.StageFailed as exc:
        if exc.write_error:  # the disk filled up or became unwritable during the stage
            _report(exc, args.verbose, f"stage {exc.stage!r} could not write to the run directory: {exc.write_error}")
            return 2
        _report(exc, args.verbose)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        _report(exc, args.verbose)
        return 2
    except rundir_mod.RunDirNotWritable as exc:
        _report(exc, args.verbose)
        return 2
    except OSError as exc:
        if exc.errno not in rundir_mod.WRITE_ERRNOS:
            raise
        # a write that failed after the start (the disk filled up): its file and reason, on one line
        where = f" {exc.filename}" if exc.filename else ""
        _report(exc, args.verbose, f"cannot write{where}: {rundir_mod.write_error_text(exc)}")
        return 2
    except RuntimeError as exc:  # the book build failed
        _report(exc, args.verbose)
        return 1
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        pm_logger.setLevel(old_pm_level)
