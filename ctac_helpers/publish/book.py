"""Compile the book from a run directory's executed notebooks with Jupyter Book 1.x.

Jupyter Book never executes anything here (``execute_notebooks: off``): papermill already did, into
``<run_dir>/executed/``. The build stages a source tree in ``<out>/_build/.source/``::

    _config.yml, _toc.yml, references.bib (if present)   from the repository
    book/                                                 from the repository (pages)
    book/scorecard.md, book/intervals.md, book/status.md  generated from <run_dir>/tables/ and run.json
    book/_generated/reproduced.md                         generated from <run_dir>/tables/ (the front page includes it)
    book/generator_fit.md                                 generated from data_manifest/generator.yaml
    book/architecture.md                                  generated from the code (pyproject.toml, notebooks/)
    book/tripod_ai.md                                     generated from data_manifest/tripod_ai.yaml
    notebooks/<name>.ipynb                                from <run_dir>/executed/ (not *.failed.ipynb)
    run/tables/, run/figures/                             from <run_dir>/ (for download links)

and runs ``jupyter-book build`` on it with warnings as errors, writing ``<out>/_build/html``.
"""

from __future__ import annotations

import logging
import os
import shutil
import json
import subprocess
import sys
from pathlib import Path

import yaml

from ctac_helpers.publish import architecture as architecture_mod
from ctac_helpers.publish import intervals as intervals_mod
from ctac_helpers.cohort import synth
from ctac_helpers.core import manifest
from ctac_helpers.publish import scorecard as scorecard_mod
from ctac_helpers.publish import checklist

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The text the front page includes (``book/intro.md``: what this run reproduces), relative to ``book/``.
FRONT_SUMMARY = "_generated/reproduced.md"
_TAIL_LINES = 60
#: Suffixes Jupyter Book resolves a suffix-less ``_toc.yml`` entry to.
_DOC_SUFFIXES = (".md", ".ipynb", ".rst")


def _toc_files(toc: object) -> list[str]:
    """Every ``root``/``file`` entry of a ``_toc.yml`` structure, in order."""
    found: list[str] = []
    if isinstance(toc, dict):
        for key, value in toc.items():
            if key in ("root", "file") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_toc_files(value))
    elif isinstance(toc, list):
        for item in toc:
            found.extend(_toc_files(item))
    return found


def _exists_as_doc(src: Path, entry: str) -> bool:
    path = src / entry
    if path.suffix in _DOC_SUFFIXES:
        return path.is_file()
    return any(path.with_name(path.name + s).is_file() for s in _DOC_SUFFIXES)


def _doc_name(entry: str) -> str:
    """A ``_toc.yml`` entry without its document suffix (``notebooks/05_models``)."""
    path = Path(entry)
    return (path.with_suffix("") if path.suffix in _DOC_SUFFIXES else path).as_posix()


def write_generated_pages(run_dir: str | os.PathLike, src: str | os.PathLike,
                          docs: list[str] | None = None) -> list[Path]:
    """Write the pages generated from the run directory into a staged source tree.

    ``book/scorecard.md`` (:func:`ctac_helpers.publish.scorecard.scorecard_page` of the run's tables),
    ``book/intervals.md`` (:func:`ctac_helpers.publish.intervals.intervals_page`: the run's confidence intervals
    beside the paper's), ``book/generator_fit.md`` (:func:`ctac_helpers.publish.scorecard.generator_fit_page` of
    ``data_manifest/generator.yaml``), ``book/status.md`` (:func:`ctac_helpers.publish.scorecard.status_page` of
    its ``run.json``) and :data:`FRONT_SUMMARY`, what the run reproduces, which the front page includes
    (:func:`ctac_helpers.publish.scorecard.front_summary`), and ``book/tripod_ai.md``
    (:func:`ctac_helpers.publish.checklist.checklist_page` of ``data_manifest/tripod_ai.yaml``). ``book/architecture.md``
    (:func:`ctac_helpers.publish.architecture.architecture_page`, from the code). Pages of the
    same name copied from the repository are replaced.

    Parameters
    ----------
    run_dir : path-like
        The run directory.
    src : path-like
        The staged source tree.
    docs : list of str, optional
        The book's documents (``_toc.yml`` entries); the scorecard links only chapters among them.

    Returns
    -------
    list of pathlib.Path
        The pages written.
    """
    run_dir, book_dir = Path(run_dir), Path(src) / "book"
    book_dir.mkdir(parents=True, exist_ok=True)
    run_json_path = run_dir / "run.json"
    run_json = json.loads(run_json_path.read_text(encoding="utf-8")) if run_json_path.is_file() else {}
    names = None if docs is None else {_doc_name(d) for d in docs}
    table = scorecard_mod.scorecard(run_dir)
    generator = manifest.generator_file()
    # the generator's fingerprint today, only where the fit recorded one to compare it with (a few seconds)
    fingerprint = synth.generator_fingerprint() if (generator.get("fit") or {}).get("fingerprint") else None
    pages = {
        "scorecard.md": scorecard_mod.scorecard_page(table, docs=names, page_dir="book"),
        "intervals.md": intervals_mod.intervals_page(intervals_mod.interval_widths(run_dir), docs=names,
                                                     page_dir="book"),
        "generator_fit.md": scorecard_mod.generator_fit_page(generator, table, fingerprint),
        "status.md": scorecard_mod.status_page(run_json),
        "architecture.md": architecture_mod.architecture_page(docs=names),
        "tripod_ai.md": checklist.checklist_page(checklist.load_checklist(), docs=names, page_dir="book"),
        # not a page: the front page (book/intro.md) includes it
        FRONT_SUMMARY: scorecard_mod.front_summary(table, docs=names, page_dir="book"),
    }
    written = []
    for name, text in pages.items():
        path = book_dir / name
        if path.exists():
            logger.warning("book/%s from the repository is replaced by the generated page", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    logger.info("generated pages: %s", ", ".join(str(p) for p in written))
    return written


def jupyter_book_command() -> list[str]:
    """The ``jupyter-book`` executable of this environment (next to the interpreter), or ``-m``."""
    exe = Path(sys.executable).parent / ("jupyter-book.exe" if os.name == "nt" else "jupyter-book")
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-m", "jupyter_book"]


def stage_source(run_dir: str | os.PathLike, repo_root: str | os.PathLike, src: str | os.PathLike) -> Path:
    """Assemble the book's source tree in ``src`` (removed and recreated).

    Copies the repository's configuration and pages, the run's executed notebooks, tables and
    figures, and writes the generated pages (:func:`write_generated_pages`) before checking that every
    document ``_toc.yml`` lists exists.

    Parameters
    ----------
    run_dir : path-like
        Run directory holding ``executed/``, ``tables/`` and ``figures/``.
    repo_root : path-like
        Repository holding ``_config.yml``, ``_toc.yml`` and ``book/``.
    src : path-like
        Where to stage the source tree.

    Returns
    -------
    pathlib.Path
        ``src``.

    Raises
    ------
    FileNotFoundError
        The run directory, a configuration file, or a document listed in ``_toc.yml`` is missing
        (for notebooks: no executed copy, i.e. ``ctac-book run`` has not completed that stage).
    """
    run_dir, repo_root, src = Path(run_dir).resolve(), Path(repo_root).resolve(), Path(src)
    executed = run_dir / "executed"
    if not executed.is_dir():
        raise FileNotFoundError(
            f"no executed notebooks in {run_dir}: run `ctac-book run` first (with the same --profile/--config)"
        )
    for name in ("_config.yml", "_toc.yml"):
        if not (repo_root / name).is_file():
            raise FileNotFoundError(f"{repo_root / name} not found: is {repo_root} the book's repository?")

    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        if (repo_root / name).is_file():
            shutil.copy2(repo_root / name, src / name)
    if (repo_root / "book").is_dir():
        shutil.copytree(repo_root / "book", src / "book")
    (src / "notebooks").mkdir()
    for nb in sorted(executed.glob("*.ipynb")):
        if nb.name.endswith(".failed.ipynb") or nb.name.startswith("."):
            continue
        shutil.copy2(nb, src / "notebooks" / nb.name)
    for sub in ("tables", "figures"):
        if (run_dir / sub).is_dir():
            shutil.copytree(run_dir / sub, src / "run" / sub)

    toc = yaml.safe_load((repo_root / "_toc.yml").read_text(encoding="utf-8"))
    entries = _toc_files(toc)
    # before the check of the toc's entries, which may list them
    write_generated_pages(run_dir, src, docs=entries)
    if "book/tripod_ai" in {_doc_name(e) for e in entries}:
        # the checklist links chapters' figures and tables: each must be on its (executed) chapter's page
        missing = checklist.missing_anchors(checklist.load_checklist(), src, {_doc_name(e) for e in entries})
        if missing:
            raise FileNotFoundError("the reporting checklist (data_manifest/tripod_ai.yaml) links figures or "
                                    "tables its chapters do not show: " + "; ".join(missing))
    for entry in entries:
        if _exists_as_doc(src, entry):
            continue
        if entry.startswith("notebooks/"):
            name = Path(entry).name.removesuffix(".ipynb") + ".ipynb"
            raise FileNotFoundError(
                f"_toc.yml lists {entry}, but {executed / name} does not exist: run `ctac-book run` "
                "first (with the same --profile/--config) so that every stage has an executed notebook"
            )
        raise FileNotFoundError(f"_toc.yml lists {entry}, but no such page exists under {repo_root}")
    return src


def build_book(
    run_dir: str | os.PathLike,
    repo_root: str | os.PathLike = REPO_ROOT,
    out_dir: str | os.PathLike | None = None,
) -> Path:
    """Build the HTML book from the executed notebooks of ``run_dir``.

    Parameters
    ----------
    run_dir : path-like
        The run directory (``runs/<name>``) that ``ctac-book run`` filled.
    repo_root : path-like
        Repository with ``_config.yml``, ``_toc.yml`` and ``book/``.
    out_dir : path-like, optional
        Output root; the site lands in ``<out_dir>/_build/html``. Defaults to ``repo_root``.

    Returns
    -------
    pathlib.Path
        ``<out_dir>/_build/html/index.html``. Sphinx's cache ``<out_dir>/_build/.doctrees``, which
        records the build folder's absolute path, is removed after a successful build.

    Raises
    ------
    FileNotFoundError
        See :func:`stage_source`.
    RuntimeError
        Jupyter Book failed (warnings count as errors); the message ends with its output's tail.
    """
    repo_root = Path(repo_root).resolve()
    out_dir = Path(out_dir).resolve() if out_dir is not None else repo_root
    src = stage_source(run_dir, repo_root, out_dir / "_build" / ".source")
    cmd = jupyter_book_command() + [
        "build", str(src), "--path-output", str(out_dir), "--warningiserror", "--keep-going",
        # the staged tree is new every time; rebuild all pages so no stale page survives
        "--all",
    ]
    logger.info("building the book: %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    logger.debug("jupyter-book output:\n%s", proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-_TAIL_LINES:])
        raise RuntimeError(f"jupyter-book build failed (exit code {proc.returncode}); last lines:\n{tail}")
    index = out_dir / "_build" / "html" / "index.html"
    if not index.is_file():
        raise RuntimeError(f"jupyter-book reported success but {index} does not exist")
    # Sphinx's pickled build environment: of no use to the next build (--all rebuilds every page), and
    # it records the absolute path of the folder the book was built in, which no file beside the
    # book should name (a site may share the whole _build folder)
    shutil.rmtree(out_dir / "_build" / ".doctrees", ignore_errors=True)
    logger.info("book written to %s", index)
    return index
