"""The book's *Architecture* page, generated from the code so that it cannot drift.

Three parts, each read from the source at build time:

- the layers, from the import contract in ``pyproject.toml`` (``[tool.importlinter]``);
- one paragraph per subpackage, from its ``__init__`` docstring and the first line of each of its
  modules' docstrings;
- a table from each of the paper's table and figure ids to the chapter that shows it and the helper
  functions that compute it, found by reading the chapters' code: the ``figures.show_table`` /
  ``figures.show_figure`` call that publishes the id, the variables it passes, and the calls into
  ``ctac_helpers`` that assigned them (followed back a few assignments).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: Sphinx (Jupyter Book) brings the same parser as tomli
    import tomli as tomllib

from ctac_helpers.core import manifest
from ctac_helpers.core.stages import STAGES
from ctac_helpers.publish.figures import pipe_table

__all__ = ["PAPER_ID", "architecture_page", "helper_calls", "id_table", "layers", "paper_ids"]

REPO_ROOT = Path(__file__).resolve().parents[2]

#: An id of the paper's tables and figures (``table1``, ``fig2a``, ``supp_table7``, ``supp_fig4``).
PAPER_ID = re.compile(r"^(supp_)?(table|fig)\d+[a-z]?$")

#: Keys of ``paper_values.yaml`` that are not a table or figure of the paper.
_NOT_IDS = {"paper", "methods", "cohort", "scorecard_tolerances", "generator_targets", "headline_findings",
            "scorecard_notes"}

#: Calls that read or locate data rather than compute a result (the run directory, the manifest), or
#: that only hold settings (the cross-validation's configuration objects).
_NOT_COMPUTING = ("ctac_helpers.core.", "ctac_helpers.models.cv.CVConfig", "ctac_helpers.models.cv.Execution")

_SHOW = {"ctac_helpers.publish.figures.show_table": "table", "ctac_helpers.publish.figures.show_figure": "figure"}

#: How many assignments back a published variable is followed to the calls that computed it.
DEPTH = 3


def layers(pyproject: str | Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The package's layers, top first, as the ``layers`` contract of ``pyproject.toml`` lists them."""
    config = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["type"] == "layers":
            return list(contract["layers"])
    raise ValueError(f"{pyproject}: no contract of type 'layers' in [tool.importlinter]")


def _code(notebook: Path) -> str:
    """The code cells of a notebook as one module (IPython magics and shell lines dropped)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            lines += [ln for ln in "".join(cell["source"]).splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted ``ctac_helpers`` module or function it was imported as."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ctac_helpers"):
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _resolve(func: ast.expr, names: Mapping[str, str]) -> str | None:
    """The dotted ``ctac_helpers`` name a call goes to (``module.function`` or an imported function)."""
    if isinstance(func, ast.Name) and func.id in names:
        return names[func.id]
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in names:
        return f"{names[func.value.id]}.{func.attr}"
    return None


def _public_name(dotted: str) -> str:
    """``ctac_helpers.publish.plots`` -> the module that defines it (a subpackage re-export resolved)."""
    module, _, attr = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return dotted
    home = getattr(obj, "__module__", None)
    return f"{home}.{attr}" if home and home.startswith("ctac_helpers") and home != module else dotted


def helper_calls(code: str) -> dict[str, dict]:
    """The ids a chapter publishes and the ``ctac_helpers`` functions that compute each.

    Parameters
    ----------
    code : str
        The chapter's code (all code cells).

    Returns
    -------
    dict
        ``{id: {"kind": "table" | "figure", "helpers": [dotted function names]}}``; the helpers are
        the calls in the published expressions and, followed back up to :data:`DEPTH` assignments,
        in the statements that assigned the variables they use (display helpers excluded).
    """
    tree = ast.parse(code)
    names = _imports(tree)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assigned: dict[str, list[tuple[int, int, bool, ast.AST]]] = {}  # name -> (line, column, augmented, value)

    def collect(statements):
        # the chapter's own statements; the bodies of its functions are read when they are called
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.Assign):
                pairs = [(t, False, node.value) for t in node.targets]
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                pairs = [(node.target, isinstance(node, ast.AugAssign), node.value)]
            elif isinstance(node, ast.For):
                pairs = [(node.target, False, node.iter)]
            else:
                pairs = []
            for target, augmented, value in pairs:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        assigned.setdefault(n.id, []).append((node.lineno, node.col_offset, augmented, value))
            for field in ("body", "orelse", "finalbody", "handlers"):
                collect(getattr(node, field, []))

    collect(tree.body)

    def sources(name: str, line: int) -> list[tuple[int, ast.AST]]:
        """The assignments a use of ``name`` on ``line`` may see: back to the last unconditional one."""
        out = []
        for lineno, column, augmented, value in sorted(assigned.get(name, []), key=lambda a: a[0], reverse=True):
            if lineno >= line:
                continue
            out.append((lineno, value))
            if not augmented and column == 0:
                break
        return out

    def calls(expr: ast.AST, line: int, depth: int) -> list[str]:
        out = []
        for n in ast.walk(expr):
            if isinstance(n, ast.Call):
                target = _resolve(n.func, names)
                if target and target not in _SHOW and not target.startswith(_NOT_COMPUTING):
                    out.append(_public_name(target))
                elif isinstance(n.func, ast.Name) and n.func.id in functions and depth > 0:
                    out += calls(functions[n.func.id], line, 0)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and depth > 0:
                for lineno, value in sources(n.id, line):
                    out += calls(value, lineno, depth - 1)
        return list(dict.fromkeys(out))

    found: dict[str, dict] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _resolve(node.func, names) not in _SHOW:
            continue
        kind = _SHOW[_resolve(node.func, names)]
        if len(node.args) < 2 or not isinstance(node.args[1], ast.Constant) or not isinstance(node.args[1].value, str):
            continue
        published = [*node.args[2:], *(k.value for k in node.keywords if k.arg in ("data", "view"))]
        helpers = [h for e in published for h in calls(e, node.lineno, DEPTH)]
        entry = found.setdefault(node.args[1].value, {"kind": kind, "helpers": []})
        if entry["kind"] not in (kind, "table and figure"):
            entry["kind"] = "table and figure"
        entry["helpers"] = list(dict.fromkeys(entry["helpers"] + helpers))
    return found


def paper_ids(values: Mapping | None = None, stages=STAGES) -> list[str]:
    """The paper's table and figure ids: the keys of ``paper_values.yaml`` and the stages' paper outputs."""
    values = manifest.paper_values() if values is None else values
    ids = {k for k in values if k not in _NOT_IDS}
    ids |= {t for s in stages for t in (*s.tables, *s.figures) if PAPER_ID.match(t)}
    return sorted(ids, key=lambda t: (t.startswith("supp_"), re.sub(r"\d+", lambda m: f"{int(m.group()):03d}", t)))


def id_table(notebooks_dir: str | Path = REPO_ROOT / "notebooks", stages=STAGES,
             values: Mapping | None = None) -> list[dict]:
    """One row per paper id: the chapter(s) that show it, as what, and the helpers that compute it.

    Parameters
    ----------
    notebooks_dir : path-like
        The chapters' folder.
    stages : sequence of Stage
        The book's stages (their notebooks, in order).
    values : mapping, optional
        The paper's values (``paper_values.yaml``); read from the manifest by default.

    Returns
    -------
    list of dict
        ``id, in_paper_values, notebooks, kind, helpers`` per id; ``notebooks`` is empty for an id
        that no chapter publishes under its own name.
    """
    values = manifest.paper_values() if values is None else values
    shown: dict[str, list] = {}
    for stage in stages:
        for tid, entry in helper_calls(_code(Path(notebooks_dir) / stage.notebook)).items():
            shown.setdefault(tid, []).append((stage.notebook, entry))
    rows = []
    for tid in paper_ids(values, stages):
        where = shown.get(tid, [])
        helpers = []
        for _, entry in where:
            helpers += [h for h in entry["helpers"] if h not in helpers]
        rows.append({"id": tid, "in_paper_values": tid in values, "notebooks": [nb for nb, _ in where],
                     "kind": ", ".join(sorted({e["kind"] for _, e in where})), "helpers": helpers})
    return rows


def _subpackage_paragraph(name: str) -> str:
    pkg = importlib.import_module(f"ctac_helpers.{name}")
    lines = [f"### `ctac_helpers.{name}`", "", " ".join((pkg.__doc__ or "").split()), ""]
    for module in getattr(pkg, "_MODULES", []):
        doc = importlib.import_module(f"ctac_helpers.{name}.{module}").__doc__ or ""
        first = doc.strip().split("\n\n")[0].replace("\n", " ")
        lines.append(f"- `{module}`: {first}")
    return "\n".join(lines)


def _link(notebook: str, docs: Iterable[str] | None) -> str:
    stem = Path(notebook).stem
    return f"[{stem}](../notebooks/{stem}.ipynb)" if docs is None or f"notebooks/{stem}" in docs else f"`{stem}`"


def architecture_page(notebooks_dir: str | Path = REPO_ROOT / "notebooks", docs: Sequence[str] | None = None,
                      pyproject: str | Path = REPO_ROOT / "pyproject.toml") -> str:
    """The Markdown of the *Architecture* page.

    Parameters
    ----------
    notebooks_dir : path-like
        The chapters' folder (read for the id table).
    docs : sequence of str, optional
        The book's documents (``_toc.yml`` entries, ``notebooks/05_models``...); only those are
        linked. Default: link every chapter.
    pyproject : path-like
        The file with the import contract.

    Returns
    -------
    str
        The page.
    """
    order = layers(pyproject)
    picture = []
    for i, layer in enumerate(order):
        picture.append(f"{layer:<12}" + ("  top: the command line and the runner" if i == 0 else
                                         "  bottom: imports nothing of the package" if i == len(order) - 1 else ""))
        if i < len(order) - 1:
            picture.append("   |  imports only what is below")
    picture = "\n".join(picture)
    out = [
        "# Architecture",
        "",
        "This page is written by `ctac-book build` from the code (`ctac_helpers.publish.architecture`):",
        "the layers from the import contract in `pyproject.toml`, the paragraphs from the subpackages'",
        "documentation, and the table from the chapters' calls. The tests check the contract",
        "(`lint-imports`), that no module imports another module's private name and that the modules",
        "form no import circle.",
        "",
        "## Layers",
        "",
        "`ctac_helpers` is split by job. A layer imports only the layers below it; `definitions` and",
        "`stats` import nothing else of the package, and no analysis module imports `publish`.",
        "",
        "```text",
        picture,
        "```",
        "",
        "## Subpackages",
        "",
        "### `ctac_helpers.definitions`",
        "",
        " ".join((importlib.import_module("ctac_helpers.definitions").__doc__ or "").split("\n\n")[0].split()),
        "",
    ]
    out += [_subpackage_paragraph(name) + "\n" for name in reversed(order) if name != "definitions"]
    out += [
        "## From a table or figure to its code",
        "",
        "Each id of the paper's tables and figures (the keys of `data_manifest/paper_values.yaml` and",
        "the scorecard's rows), the chapter that shows it and the `ctac_helpers` functions whose results",
        "it shows, read from the chapter's code. An id without a chapter is checked by the scorecard",
        "from another table (its numbers are in `paper_values.yaml`).",
        "",
    ]
    rows = []
    for row in id_table(notebooks_dir):
        chapters = ", ".join(_link(nb, docs) for nb in row["notebooks"]) or "-"
        helpers = ", ".join(f"`{h.removeprefix('ctac_helpers.')}`" for h in row["helpers"]) or "-"
        rows.append([f"`{row['id']}`", chapters, row["kind"] or "-", helpers])
    out.append(pipe_table(["Id", "Chapter", "Shown as", "Computed by"], rows))
    return "\n".join(out) + "\n"
