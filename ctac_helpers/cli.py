"""The ``ctac-book`` command line: run the stages, build the book, show what is up to date.

Examples
--------
::

    ctac-book run --profile quick           # execute the stages into runs/quick
    ctac-book run --force cohort            # re-run one stage (and whatever it changes)
    ctac-book status --profile quick        # which stages are up to date, and why not
    ctac-book build --profile quick         # compile runs/quick into _build/html

Exit codes: 0 success, 1 a stage or the book build failed, 2 bad input (configuration, stage name,
missing file or run directory).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from . import __version__
from . import book as book_mod
from . import runner
from . import stages as stages_mod
from .config import list_profiles, load_config

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
    """The argument parser (sub-commands ``run``, ``build`` and ``status``)."""
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
    return parser


def _config_and_run_dir(args: argparse.Namespace) -> tuple[dict, Path]:
    config = load_config(args.profile, args.config, stages=stages_mod.STAGES)
    run_dir = args.run_dir if args.run_dir is not None else Path.cwd() / "runs" / config["name"]
    return config, Path(run_dir)


def _cmd_run(args: argparse.Namespace) -> int:
    config, run_dir = _config_and_run_dir(args)
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


def format_status(rows: list) -> str:
    """Render :func:`ctac_helpers.runner.stage_status` rows as an aligned text table."""
    table = [("stage", "state", "reason")] + [(r[0], r[1], r[2]) for r in rows]
    w0 = max(len(r[0]) for r in table)
    w1 = max(len(r[1]) for r in table)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in table) + "\n"


def _cmd_status(args: argparse.Namespace) -> int:
    config, run_dir = _config_and_run_dir(args)
    rows = runner.stage_status(config, run_dir, stages=stages_mod.STAGES, notebooks_dir=runner.NOTEBOOKS_DIR)
    logger.info("run directory: %s", run_dir)
    sys.stdout.write(format_status(rows))
    return 0


def _report(exc: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"ctac-book: error: {exc}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ctac-book``; returns the process exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 1 a stage or the book build failed, 2 bad input.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; report it as a code
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("ctac-book: error: a command is required (run, build or status)\n")
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
        _report(exc, args.verbose)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        _report(exc, args.verbose)
        return 2
    except RuntimeError as exc:  # the book build failed
        _report(exc, args.verbose)
        return 1
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        pm_logger.setLevel(old_pm_level)
