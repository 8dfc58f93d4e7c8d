"""The environment's files agree: every dependency is pinned, JupyterLab is in it, and the book has no dead buttons."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    """A requirement's normalised project name (``dask[distributed]>=2024.1`` -> ``dask``)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9_.\-]+)", requirement).group(1)).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions, not {line!r}"
            pins[_name(name)] = version
    return pins


def test_every_dependency_and_extra_is_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    missing = sorted({_name(r) for r in requirements} - set(_pins()))
    assert not missing, f"pyproject.toml names packages constraints.txt does not pin: {missing}"


def test_jupyterlab_is_in_the_environment():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(_name(r) == "jupyterlab" for r in project["optional-dependencies"]["lab"])
    assert "jupyterlab" in _pins()
    conda = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    assert any(isinstance(d, str) and _name(d) == "jupyterlab" for d in conda)
    makefile = (REPO / "Makefile").read_text()
    assert '-e ".[test,lab]"' in makefile  # `make venv` installs it
    lab = re.search(r"^lab: venv\n((?:\t.*\n)+)", makefile, re.M)
    assert lab, "no `lab` target that depends on the venv"
    recipe = lab.group(1)
    assert "$(BIN)/python -m ipykernel install --sys-prefix --name python3" in recipe  # the project's kernel
    assert "$(BIN)/jupyter lab" in recipe and "notebooks/" in recipe


def test_no_launch_button_without_a_service():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    buttons = config.get("launch_buttons") or {}
    urls = {k: v for k, v in buttons.items() if k.endswith("_url")}
    assert all(urls.values()), f"launch buttons without a service render empty: {urls}"
    assert not buttons.get("thebe")
