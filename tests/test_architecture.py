"""The package's architecture holds: the layers of pyproject.toml, no import circles, no private imports.

The import contract (``[tool.importlinter]`` in ``pyproject.toml``) is checked with import-linter; the
circles and the private names are checked here from the source (imports inside functions count too).
"""

import ast
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter import api as importlinter_api

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ctac_helpers"
SUBPACKAGES = ("core", "stats", "cohort", "imaging", "models", "results", "publish", "pipeline")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imported_names(tree: ast.AST, module: str, modules: dict[str, Path]):
    """(line, imported module, name) for every ``from X import name`` and ``mod.name`` of the package."""
    aliases = {}  # local name -> package module it refers to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = module.split(".")
                pkg = parts if modules[module].name == "__init__.py" else parts[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            if not base.startswith("ctac_helpers"):
                continue
            for a in node.names:
                target = f"{base}.{a.name}"
                if target in modules:
                    aliases[a.asname or a.name] = target
                else:
                    yield node.lineno, base, a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ctac_helpers") and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield node.lineno, aliases[node.value.id], node.attr


def private_imports() -> list[str]:
    """Every place where a module of the package uses another module's private (``_name``) name."""
    modules = _modules()
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, source, name in _imported_names(tree, module, modules):
            if source != module and name.startswith("_") and not name.startswith("__"):
                found.append(f"{path.relative_to(ROOT)}:{line}: {source}.{name}")
    return found


def test_no_module_imports_another_modules_private_name():
    assert private_imports() == []


def test_the_private_name_scan_finds_one():
    # the scan is not vacuous: a module that reaches into another's private helper is reported
    src = "from ctac_helpers.stats.delong import auc, _hidden\nfrom ctac_helpers.stats import checks\nchecks._x\n"
    tree = ast.parse(src)
    modules = {"ctac_helpers.stats.nri": PACKAGE / "stats" / "nri.py",
               "ctac_helpers.stats.checks": PACKAGE / "stats" / "checks.py"}
    hits = [(s, n) for _, s, n in _imported_names(tree, "ctac_helpers.stats.nri", modules) if n.startswith("_")]
    assert hits == [("ctac_helpers.stats.delong", "_hidden"), ("ctac_helpers.stats.checks", "_x")]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. the import circles."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if not w.startswith("ctac_helpers"):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph.modules):
        if m.startswith("ctac_helpers") and m not in index:
            visit(m)
    return out


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("ctac_helpers", include_external_packages=False)


def test_no_import_circles(graph):
    # imports inside functions count: a lazy import still ties the two modules together
    assert _cycles(graph) == []


def test_the_circle_check_finds_one():
    g = grimp.ImportGraph()
    for m in ("ctac_helpers.a", "ctac_helpers.b", "ctac_helpers.c"):
        g.add_module(m)
    g.add_import(importer="ctac_helpers.a", imported="ctac_helpers.b")
    g.add_import(importer="ctac_helpers.b", imported="ctac_helpers.c")
    assert _cycles(g) == []
    g.add_import(importer="ctac_helpers.c", imported="ctac_helpers.a")
    assert _cycles(g) == [["ctac_helpers.a", "ctac_helpers.b", "ctac_helpers.c"]]


def test_import_contracts_hold():
    # the layers of pyproject.toml ([tool.importlinter]), checked as `lint-imports` does; in a process of
    # its own, since import-linter's command line sets up logging for the process that runs it
    config = str(ROOT / "pyproject.toml")
    assert importlinter_api.read_configuration(config)["contracts_options"]  # the contracts are there
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={config!r}, no_cache=True))")
    # UTF-8 whatever the locale (its report draws ticks and crosses; CI may run under the C locale)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", done.stdout), done.stdout


def _subpackages() -> list[str]:
    """Every package below ``ctac_helpers`` (nested ones too), as ``"imaging.phantom"``."""
    return [".".join(p.parent.relative_to(PACKAGE).parts) for p in sorted(PACKAGE.rglob("__init__.py"))
            if p.parent != PACKAGE]


def test_every_subpackage_lists_its_public_names():
    subs = _subpackages()
    assert set(SUBPACKAGES) < set(subs) and "imaging.phantom" in subs  # nested packages are found
    for sub in subs:
        pkg = importlib.import_module(f"ctac_helpers.{sub}")
        modules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
        assert set(pkg._MODULES) == modules, sub  # every module is public or deliberately listed
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None, (sub, name)


# Tests that run the whole book rather than one module; everything else mirrors the package.
WHOLE_BOOK_TESTS = "end_to_end"


def _layout_problems(tests: Path, package: Path) -> list[str]:
    """Test files under ``tests/<subpackage>/`` that name no module of that subpackage.

    ``tests/cohort/test_validate.py`` and ``tests/cohort/test_validate_corpus.py`` both belong to
    ``cohort/validate.py``: the name is the module's, optionally followed by ``_`` and a topic.
    """
    problems = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        if len(rel.parts) == 1 or rel.parts[0] == WHOLE_BOOK_TESTS:
            continue
        folder = package.joinpath(*rel.parts[:-1])
        name = rel.stem.removeprefix("test_")
        modules = [m.stem for m in folder.glob("*.py")] if folder.is_dir() else []
        if not any(name == m or name.startswith(m + "_") for m in modules):
            problems.append(f"{rel.as_posix()}: no module {folder.relative_to(package.parent).as_posix()}/{name}.py")
    return problems




def test_the_tests_mirror_the_package():
    # tests/stats/test_delong.py tests ctac_helpers/stats/delong.py: a newcomer finds a module's tests by its path.
    assert _layout_problems(ROOT / "tests", PACKAGE) == []


def test_the_layout_check_finds_a_misplaced_test(tmp_path):
    (tmp_path / "pkg" / "stats").mkdir(parents=True)
    (tmp_path / "pkg" / "stats" / "delong.py").write_text("")
    (tmp_path / "tests" / "stats").mkdir(parents=True)
    (tmp_path / "tests" / "stats" / "test_delong.py").write_text("")
    (tmp_path / "tests" / "stats" / "test_tables.py").write_text("")
    assert _layout_problems(tmp_path / "tests", tmp_path / "pkg") == [
        "stats/test_tables.py: no module pkg/stats/tables.py"]


def test_only_from_cohort_brings_the_cohort_to_the_phantoms():
    # the contract lists every module of imaging.phantom but the one that reads the cohort (and the cache,
    # whose key is the parameters): a new drawing module is under the contract from the start
    contracts = importlinter_api.read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"]
    (contract,) = [c for c in contracts if c["id"] == "phantom-through-data"]
    assert contract["forbidden_modules"] == ["ctac_helpers.cohort"]
    phantom_pkg = importlib.import_module("ctac_helpers.imaging.phantom")
    drawing = {f"ctac_helpers.imaging.phantom.{m.name}" for m in pkgutil.iter_modules(phantom_pkg.__path__)}
    assert "ctac_helpers.imaging.phantom.from_cohort" in drawing
    assert set(contract["source_modules"]) == drawing - {"ctac_helpers.imaging.phantom.from_cohort"} | {
        "ctac_helpers.imaging.phantom_cache"}


_NB_IMPORT = re.compile(r"^\s*(from\s+(ctac_helpers\S*)\s+import\s+(.+)|import\s+(ctac_helpers\S*))", re.M)


def test_notebooks_import_only_public_names_of_subpackages():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            for m in _NB_IMPORT.finditer("".join(cell["source"])):
                assert m.group(4) is None, f"{nb.name}: {m.group(0).strip()}"
                package, names = m.group(2), [n.split(" as ")[0].strip() for n in m.group(3).split(",")]
                pkg = importlib.import_module(package)
                assert package == "ctac_helpers.definitions" or hasattr(pkg, "_MODULES"), \
                    f"{nb.name}: imports from {package}, not from a subpackage"
                public = getattr(pkg, "__all__", [])
                assert all(n in public for n in names), f"{nb.name}: {m.group(0).strip()} (public: {public})"


# -- the generated Architecture page ----------------------------------------------------------------

from ctac_helpers.core.stages import STAGES  # noqa: E402
from ctac_helpers.publish import architecture  # noqa: E402

_CHAPTER = '''
from ctac_helpers.publish import figures, plots
from ctac_helpers.results import discrimination as disc
from ctac_helpers.models import cv as models
from ctac_helpers.core import RunDir
rd = RunDir("run")
config = models.CVConfig(n_folds=3, execution=models.Execution(n_jobs=2))
cv = models.cross_validate(cohort, None, config)
table = disc.auc_table(y, cv.scores())
if extra:
    table = disc.subset_comparison_table(y, table)
figures.show_table(rd, "supp_table3", table, "caption")
def panel(name):
    return plots.roc_panels([disc.roc_curves(y, name)], "t")
fig = panel("all")
figures.show_figure(rd, "fig1", fig, "caption")
fig = plots.forest(table, estimate="hr", label="x", xlabel="x", title="t")
figures.show_figure(rd, "fig3", fig, "caption")
'''


def test_helper_calls_follow_the_published_variables_back():
    found = architecture.helper_calls(_CHAPTER)
    assert found["supp_table3"] == {"kind": "table", "helpers": [
        "ctac_helpers.results.discrimination.subset_comparison_table", "ctac_helpers.results.discrimination.auc_table",
        "ctac_helpers.models.cv.cross_validate"]}  # not its settings (CVConfig, Execution)
    # a chapter's own function is read; a later assignment of the same name is not
    assert found["fig1"]["helpers"] == ["ctac_helpers.publish.plots.roc_panels",
                                        "ctac_helpers.results.discrimination.roc_curves"]
    assert found["fig3"]["helpers"][0] == "ctac_helpers.publish.plots.forest"
    assert "ctac_helpers.publish.plots.roc_panels" not in found["fig3"]["helpers"]
    assert not any(h.startswith("ctac_helpers.core.") for e in found.values() for h in e["helpers"])


def test_the_id_table_covers_every_paper_id_the_book_shows():
    rows = {r["id"]: r for r in architecture.id_table()}
    shown = {t for s in STAGES for t in (*s.tables, *s.figures) if architecture.PAPER_ID.match(t)}
    assert shown <= set(rows)
    for tid in shown:
        assert rows[tid]["notebooks"], tid  # a chapter publishes it under its own id
        assert rows[tid]["helpers"], tid  # and the functions that compute it are found
        for helper in rows[tid]["helpers"]:
            module, _, name = helper.rpartition(".")
            assert hasattr(importlib.import_module(module), name), helper
    assert rows["table1"]["notebooks"] == ["01_cohort.ipynb"]
    assert "ctac_helpers.cohort.tables.baseline_table" in rows["table1"]["helpers"]
    assert "ctac_helpers.stats.nri.bootstrap_nri" in rows["nri"]["helpers"]


def test_architecture_page_is_read_from_the_code():
    page = architecture.architecture_page(docs=["notebooks/01_cohort"])
    order = architecture.layers()
    assert order[0] == "pipeline" and order[-1] == "definitions"
    assert page.index(order[0]) < page.index(order[-1] + " ")  # the picture draws them top to bottom
    for sub in SUBPACKAGES:
        assert f"### `ctac_helpers.{sub}`" in page
    assert "| `table1` | [01_cohort](../notebooks/01_cohort.ipynb) | table |" in page
    assert "| `supp_table3` | `05_models` |" in page  # not in the given docs: named, not linked
    assert str(ROOT) not in page
