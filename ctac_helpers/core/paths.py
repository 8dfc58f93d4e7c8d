"""Paths in what a run publishes: names chosen by the site, never the building machine's folders.

A folder's absolute path often names a person, a hospital share or a study, and a run directory,
its executed notebooks and the book built from them are meant to be shared. So the runner never
writes an absolute path into them. It gives every notebook *labels* instead:

* ``run_dir`` is ``runs/<name>``, the run folder's own name under ``runs/`` (the default layout,
  ``./runs/<name>`` of the project root);
* a site's files (``cohort_file``, ``scan_manifest``, ``secret_file``) are named by their path
  relative to the site folder, the folder of the cohort table (``cohort.csv``, ``scans.csv``,
  ``secret.key`` in the layout ``ctac-book init-site`` writes), or by their file name alone when they
  lie outside it.

While a notebook runs, the runner puts the real location of every label into the environment
variable :data:`LOCATIONS_ENV`; the notebook turns a parameter into a path with :func:`resolve`,
which reads that variable and otherwise takes the value as a path relative to the current folder
(:class:`ctac_helpers.core.rundir.RunDir` resolves its ``run_dir`` so, the site's files are resolved in
chapters 0 and 2).
So an executed notebook downloaded from the book re-runs with papermill from the project root,
where ``runs/<name>`` lies::

    papermill runs/quick/executed/05_models.ipynb out.ipynb

:func:`tidy_executed_notebook` then makes the executed notebook show what the run used: its
``parameters`` cell holds the values passed (instead of the defaults followed by papermill's
injected cell), and papermill's record of the input and output files names them relative to the
project root and to the run directory.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["LOCATIONS_ENV", "RUNS_FOLDER", "run_label", "site_folder", "file_label", "publish_parameters",
           "public_config", "locations_env", "resolve", "tidy_executed_notebook", "parameter_cell_source",
           "redact_folders"]

#: Environment variable holding ``{label: absolute path}`` while the runner executes a notebook.
LOCATIONS_ENV = "CTAC_BOOK_LOCATIONS"
#: Folder of the project root that holds run directories (``runs/<name>``).
RUNS_FOLDER = "runs"


def run_label(run_dir: str | os.PathLike) -> str:
    """The published name of a run directory: ``runs/<its folder name>``."""
    return f"{RUNS_FOLDER}/{Path(run_dir).resolve().name}"


def site_folder(site: Mapping) -> Path | None:
    """The site folder of a configuration's ``site`` section: the folder of its cohort table."""
    cohort = (site or {}).get("cohort")
    return Path(cohort).expanduser().resolve().parent if cohort else None


def file_label(path: str | os.PathLike, folder: str | os.PathLike | None) -> str:
    """``path`` relative to ``folder`` when it lies inside it, else its file name alone."""
    p = Path(path).expanduser().resolve()
    if folder is not None:
        base = Path(folder).resolve()
        if p.is_relative_to(base) and p != base:
            return p.relative_to(base).as_posix()
    return p.name


def publish_parameters(params: Mapping, file_parameters, run_dir: str | os.PathLike | None,
                       folder: str | os.PathLike | None) -> tuple[dict, dict]:
    """Replace a stage's path parameters by their labels.

    Parameters
    ----------
    params : mapping
        The stage's parameters, paths absolute.
    file_parameters : iterable of str
        Names of the parameters that hold a site's file paths (empty values are left as they are).
    run_dir : path-like, optional
        The run directory; when given, ``run_dir`` is added as :func:`run_label`.
    folder : path-like, optional
        The site folder (:func:`site_folder`).

    Returns
    -------
    published : dict
        ``params`` with labels instead of paths (and ``run_dir`` when given).
    locations : dict
        ``{label: absolute path}`` for :func:`locations_env`.

    Raises
    ------
    ValueError
        Two different files would get the same label (two files of the same name outside the site
        folder): a notebook could not tell them apart.
    """
    published, locations = dict(params), {}

    def add(name: str, label: str, path: Path) -> None:
        if locations.get(label, str(path)) != str(path):
            raise ValueError(f"parameter {name!r}: two files would both be named {label!r} (files of the same name "
                             "outside the site folder, the folder of the cohort table); expected distinct file "
                             "names: rename one, or move it into the site folder")
        published[name], locations[label] = label, str(path)

    for name in file_parameters:
        value = params.get(name)
        if isinstance(value, str) and value.strip():
            add(name, file_label(value, folder), Path(value).expanduser().resolve())
    if run_dir is not None:
        add("run_dir", run_label(run_dir), Path(run_dir).resolve())
    return published, locations


def public_config(config: Mapping, file_keys=("cohort", "scans", "secret")) -> dict:
    """A configuration as ``run.json`` records it: the ``site`` section's paths as labels."""
    out = dict(config)
    site = config.get("site")
    if site:
        folder = site_folder(site)
        out["site"] = {k: (file_label(v, folder) if k in file_keys and isinstance(v, str) and v.strip() else v)
                       for k, v in site.items()}
    return out


@contextlib.contextmanager
def locations_env(locations: Mapping[str, str]) -> Iterator[None]:
    """Set :data:`LOCATIONS_ENV` for the notebooks (kernels) started inside the block, then restore it."""
    old = os.environ.get(LOCATIONS_ENV)
    os.environ[LOCATIONS_ENV] = json.dumps(dict(locations), sort_keys=True)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(LOCATIONS_ENV, None)
        else:
            os.environ[LOCATIONS_ENV] = old


def resolve(value: str | os.PathLike) -> str:
    """The absolute path a notebook's path parameter stands for.

    Parameters
    ----------
    value : str or path-like
        A label given by the runner (``runs/quick``, ``cohort.csv``), or any path.

    Returns
    -------
    str
        The location the runner recorded for the label in :data:`LOCATIONS_ENV`; otherwise
        ``value`` as an absolute path (a relative one is taken from the current folder: re-run a
        downloaded notebook from the project root). An empty value stays empty.
    """
    text = str(value)
    if not text.strip():
        return text
    raw = os.environ.get(LOCATIONS_ENV)
    if raw:
        try:
            locations = json.loads(raw)
        except ValueError:
            locations = {}
        if isinstance(locations, dict) and text in locations:
            return str(locations[text])
    return str(Path(text).expanduser().resolve())


# -- the executed notebook ----------------------------------------------------------------------------
def parameter_cell_source(source: str, values: Mapping) -> str:
    """The source of a ``parameters`` cell with each assigned value replaced by ``values[name]``.

    Only the value of an assignment is replaced (``name: type = <value>  # comment``), so the type
    annotations and the comments explaining each parameter stay. Names absent from ``values`` keep
    their default.

    Raises
    ------
    ValueError
        ``source`` is not valid Python, or ``values`` holds a name the cell does not assign (the
        rewritten cell would not show what ran).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"the parameters cell is not valid Python: {exc}") from None
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    # (start, end, name) of every assigned value, in the cell's character offsets (ast gives UTF-8
    # byte columns: converted per line)
    spans = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            name, value = node.targets[0].id, node.value
        else:
            continue
        if name not in values:
            continue

        def char(lineno, col):
            line = lines[lineno - 1].encode("utf-8")[:col].decode("utf-8")
            return offsets[lineno - 1] + len(line)

        spans.append((char(value.lineno, value.col_offset), char(value.end_lineno, value.end_col_offset), name))
    missing = sorted(set(values) - {s[2] for s in spans})
    if missing:
        raise ValueError(f"the parameters cell assigns no {', '.join(missing)}; expected every parameter the run "
                         "passed to be declared there")
    out = source
    for start, end, name in sorted(spans, reverse=True):
        out = out[:start] + _literal(values[name]) + out[end:]
    return out


def _literal(value) -> str:
    """A Python literal of a parameter value, strings in double quotes as the notebooks write them."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are Python's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def tidy_executed_notebook(path: str | os.PathLike, notebook: str, used: Mapping) -> None:
    """Make an executed notebook show what its run used, naming no folder of the building machine.

    The ``parameters`` cell gets the values the run passed (:func:`parameter_cell_source`) and
    papermill's ``injected-parameters`` cell, which repeated them after the defaults, is removed;
    ``metadata.papermill`` records the input as ``notebooks/<notebook>`` and the output as
    ``executed/<notebook>`` (the project root's and the run directory's own layouts). The file is
    rewritten in place (the runner calls it on its temporary copy, before moving it into place).

    Parameters
    ----------
    path : path-like
        The executed notebook.
    notebook : str
        The stage notebook's file name (``00_data.ipynb``).
    used : mapping
        The parameters passed to papermill.
    """
    import nbformat  # deferred: only the runner needs it

    nb = nbformat.read(str(path), as_version=4)
    cells = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            continue
        if "parameters" in tags and cell.cell_type == "code":
            cell.source = parameter_cell_source(cell.source, used)
        cells.append(cell)
    nb.cells = cells
    meta = nb.metadata.get("papermill")
    if meta is not None:
        meta["input_path"] = f"notebooks/{notebook}"
        meta["output_path"] = f"executed/{notebook}"
        meta["parameters"] = dict(used)
    nbformat.write(nb, str(path))


def redact_folders(text: str, folders: Mapping[str | os.PathLike, str]) -> str:
    """``text`` with each absolute folder of ``folders`` replaced by its published name.

    For what the runner records of a failure (an exception's message, a traceback in the failed
    notebook): they name the files of the machine, which ``run.json`` must not publish.

    Parameters
    ----------
    text : str
        Any text.
    folders : mapping
        ``{absolute folder: name}``, e.g. the run directory -> ``runs/<name>``, the project root -> ``.``;
        the longest folder is replaced first, so that a folder inside another keeps its own name.

    Examples
    --------
    >>> redact_folders("No such file: /home/ann/study/runs/paper/x.csv", {"/home/ann/study/runs/paper": "runs/paper"})
    'No such file: runs/paper/x.csv'
    """
    for folder, name in sorted(((str(f), n) for f, n in folders.items() if str(f) not in ("", "/")),
                               key=lambda item: len(item[0]), reverse=True):
        text = text.replace(folder, name)
    return text
