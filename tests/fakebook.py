"""A tiny three-stage book (notebooks written with nbformat) for runner and CLI tests.

``up`` writes the artifact ``up`` (``n`` rows); ``down`` reads it and writes the artifact and table
``down`` (optionally raising, or skipping its table); ``report`` reads ``down`` and writes a table.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ctac_helpers.core.stages import Stage

STAGES = (
    Stage(name="up", notebook="up.ipynb", artifacts=("up",)),
    Stage(name="down", notebook="down.ipynb", needs=("up",), inputs=("up",), artifacts=("down",),
          tables=("down",)),
    Stage(name="report", notebook="report.ipynb", needs=("down",), inputs=("down",), tables=("report",)),
)

NOTEBOOKS = {
    "up.ipynb": (
        'run_dir: str = "runs/x"  # run directory\nseed: int = 1  # global seed\nn: int = 3  # rows',
        "import pandas as pd\nfrom ctac_helpers.core.rundir import RunDir\n\nrd = RunDir(run_dir)\n"
        'rd.write_artifact("up", pd.DataFrame({"x": range(n), "seed": seed}));',
    ),
    "down.ipynb": (
        'run_dir: str = "runs/x"  # run directory\nscale: int = 1  # multiplier\n'
        "fail: bool = False  # raise on purpose\nskip_table: bool = False  # forget an output",
        "from ctac_helpers.core.rundir import RunDir\n\nrd = RunDir(run_dir)\ndf = rd.read_artifact(\"up\")\n"
        "df[\"y\"] = df[\"x\"] * scale\nrd.write_artifact(\"down\", df)\n"
        "if fail:\n    raise ValueError(f\"boom from down in {rd.root.resolve()}\")\nif not skip_table:\n    rd.write_table(\"down\", df)",
    ),
    "report.ipynb": (
        'run_dir: str = "runs/x"  # run directory',
        "from ctac_helpers.core.rundir import RunDir\n\nrd = RunDir(run_dir)\n"
        'rd.write_table("report", rd.read_artifact("down").describe().reset_index());',
    ),
}


def write_notebooks(folder: Path) -> Path:
    """Write the three notebooks into ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (params, body) in NOTEBOOKS.items():
        nb = new_notebook(cells=[
            new_markdown_cell(f"# {name}"),
            new_code_cell(params, metadata={"tags": ["parameters"]}),
            new_code_cell(body),
        ])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / name)
    return folder


def config(**stage_params) -> dict:
    """A configuration for the fake book; ``down={"scale": 2}`` sets a stage's parameters."""
    stages = {"up": {"n": 3}, "down": {}, "report": {}}
    for name, params in stage_params.items():
        stages[name] = {**stages[name], **params}
    return {"name": "fake", "seed": 7, "stages": stages}


REPO = Path(__file__).resolve().parent.parent


def copy_book_config(root: Path) -> list[Path]:
    """Copy the repository's ``_config.yml`` into ``root`` with the files it names (bibliography, favicon,
    the folders of static files such as the style sheet).

    A test book built with the real configuration needs them: Sphinx warns, and warnings fail the build,
    about a missing bibliography, favicon or static folder.
    """
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    bib = config.get("bibtex_bibfiles") or []
    names = ["_config.yml", *([bib] if isinstance(bib, str) else bib)]
    if (config.get("html") or {}).get("favicon"):
        names.append(config["html"]["favicon"])
    copied = []
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        copied.append(Path(shutil.copy(REPO / name, root / name)))
    for folder in ((config.get("sphinx") or {}).get("config") or {}).get("html_static_path") or []:
        copied.append(Path(shutil.copytree(REPO / folder, root / folder, dirs_exist_ok=True)))
    return copied
