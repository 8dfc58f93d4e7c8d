"""Run configurations: a built-in profile, optionally overridden by a user's YAML file.

A configuration is a small mapping::

    name: paper            # the run directory is runs/<name>
    seed: 20240101         # global seed, passed to every notebook that declares ``seed``
    stages:                # per-stage notebook parameters
      data: {n_patients: 10480}

Built-in profiles live in ``ctac_helpers/pipeline/profiles/<profile>.yaml``. A user file is deep-merged on top
of one of them; it may choose its base with ``profile: quick`` (an explicit ``--profile`` wins).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from ctac_helpers.core.stages import STAGES, Stage, stage_names

logger = logging.getLogger(__name__)

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
DEFAULT_PROFILE = "paper"
#: Top-level keys a configuration may hold; anything else is most likely a typo.
ALLOWED_KEYS = ("name", "seed", "stages", "profile", "site")
#: Keys of a configuration's ``site`` section (a site's own data, see ``ctac-book init-site``): the
#: cohort table, the scan manifest and the file holding the key of the patient-id hash. Relative
#: paths are resolved against the configuration file's folder.
SITE_KEYS = ("cohort", "scans", "secret")
#: Optional keys of the ``site`` section, the site's own codes besides the schema's: ``labels`` for the
#: ``site`` columns of the cohort table and the scan manifest (the schema lists the paper's four
#: sites), ``protocols`` for the cohort table's ``ct_protocol`` and the manifest's ``protocol``. Text
#: columns hold only such codes, never free text (see ``data_manifest/scan_manifest.yaml``).
SITE_OPTIONAL_KEYS = ("labels", "protocols")
#: The notebook parameter that receives each site path (and the site's codes).
SITE_PARAMETERS = {"cohort": "cohort_file", "scans": "scan_manifest", "secret": "secret_file",
                   "labels": "site_labels", "protocols": "site_protocols"}
#: Notebook parameters that only the runner sets.
RESERVED_PARAMETERS = ("run_dir",)
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


def list_profiles() -> list[str]:
    """Names of the built-in profiles (``quick``, ``paper``, ...), sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(profile: str) -> Path:
    """Path of the built-in profile ``profile``; a ``ValueError`` lists the allowed names."""
    allowed = list_profiles()
    if profile not in allowed:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(allowed)}")
    return PROFILES_DIR / f"{profile}.yaml"


class _DuplicateKey(yaml.constructor.ConstructorError):
    """A key given twice in one mapping of a YAML file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    PyYAML keeps the last of two equal keys without a word, so a configuration that sets
    ``n_folds`` twice, or holds two ``models:`` sections, would run with whichever comes last.
    """


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """Construct a mapping as PyYAML's safe loader does, raising on a key it already holds.

    The keys of a merge (``<<: *anchor``) are not counted: the mapping may override them.
    """
    first: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden key by key
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in first:
                raise _DuplicateKey(None, None, f"key {key!r} is given twice in one mapping (first on line "
                                    f"{first[key]}); YAML would keep only the last: write it once",
                                    key_node.start_mark)
            first[key] = key_node.start_mark.line + 1
        except TypeError:  # an unhashable key: construct_mapping names it
            continue
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """A YAML error in one line: the file, the line and column, what is wrong (tabs named)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    hint = "; indent with spaces, not tabs" if "'\\t'" in problem or "tab character" in problem else ""
    if isinstance(exc, _DuplicateKey):
        return f"{where}: {problem}"
    return f"{where}: not valid YAML: {problem}{hint}"


def _load_strict_yaml(path: str | os.PathLike) -> Any:
    """The content of a YAML file, read safely and strictly.

    Parameters
    ----------
    path : path-like
        The file (UTF-8).

    Returns
    -------
    object
        What the file holds (``None`` for an empty file).

    Raises
    ------
    ValueError
        The file is not valid YAML, or one mapping gives a key twice (PyYAML would keep the last
        silently); the one-line message names the file, the line and the column.
    UnicodeDecodeError
        The file is not UTF-8 text.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(_yaml_error(path, exc)) from None


def _read_yaml(path: Path) -> dict:
    try:
        data = _load_strict_yaml(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"configuration file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                         "save the configuration as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a configuration must be a mapping (key: value), got {type(data).__name__}")
    return data


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Return ``base`` updated by ``override``; nested mappings merge, everything else is replaced.

    Parameters
    ----------
    base, override : mapping
        Neither is modified.

    Returns
    -------
    dict
        The merged mapping.
    """
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validate(cfg: Mapping, source: str, stages: tuple[Stage, ...], complete: bool) -> None:
    """Check one configuration layer (``complete=False``) or the merged result (``complete=True``)."""
    unknown = [k for k in cfg if k not in ALLOWED_KEYS]
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; allowed: {', '.join(ALLOWED_KEYS)}")
    if complete:
        for key in ("name", "seed", "stages"):
            if key not in cfg:
                raise ValueError(f"{source}: missing key {key!r}")
    if "name" in cfg:
        name = cfg["name"]
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise ValueError(
                f"{source}: key 'name' must use only letters, digits, '_', '.' or '-' "
                f"(it names the run directory), got {name!r}"
            )
    if "seed" in cfg:
        seed = cfg["seed"]
        # bool is an int subclass; `seed: true` is a typo, not a seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{source}: key 'seed' must be a non-negative integer, got {seed!r}")
    if "site" in cfg:
        site = cfg["site"]
        if not isinstance(site, Mapping):
            raise ValueError(f"{source}: key 'site' must be a mapping with keys {', '.join(SITE_KEYS)}")
        for key in SITE_KEYS:
            if key not in site:
                raise ValueError(f"{source}: key 'site.{key}' is missing; 'site' needs {', '.join(SITE_KEYS)}")
        for key, value in site.items():
            if key in SITE_OPTIONAL_KEYS:
                if (not isinstance(value, list) or not value
                        or not all(isinstance(v, str) and v.strip() and v == v.strip() for v in value)):
                    example = "[MyHospital]" if key == "labels" else "[low_dose_140kvp]"
                    raise ValueError(f"{source}: key 'site.{key}' must be a list of codes (text without "
                                     f"surrounding spaces), e.g. {example}, got {value!r}")
                continue
            if key not in SITE_KEYS:
                raise ValueError(f"{source}: unknown key 'site.{key}'; allowed: "
                                 f"{', '.join(SITE_KEYS + SITE_OPTIONAL_KEYS)}")
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{source}: key 'site.{key}' must be a file path, got {value!r}")
    if "profile" in cfg and not isinstance(cfg["profile"], str):
        raise ValueError(f"{source}: key 'profile' must be a profile name, got {cfg['profile']!r}")
    if "stages" in cfg:
        stage_cfg = cfg["stages"]
        if stage_cfg is None and not complete:
            return
        if not isinstance(stage_cfg, Mapping):
            raise ValueError(f"{source}: key 'stages' must be a mapping of stage name to parameters")
        allowed = stage_names(stages)
        for name, params in stage_cfg.items():
            if name not in allowed:
                raise ValueError(f"{source}: unknown stage 'stages.{name}'; allowed: {', '.join(allowed)}")
            if not isinstance(params, Mapping):
                raise ValueError(
                    f"{source}: key 'stages.{name}' must be a mapping of parameter: value "
                    f"(use {{}} for none), got {params!r}"
                )
            for pname in params:
                if not isinstance(pname, str) or not pname.isidentifier():
                    raise ValueError(f"{source}: key 'stages.{name}.{pname}' is not a valid parameter name")
                if pname in RESERVED_PARAMETERS:
                    raise ValueError(
                        f"{source}: key 'stages.{name}.{pname}' cannot be set: the runner sets it "
                        "(choose the run directory with --run-dir)"
                    )


def validate_config(cfg: Mapping, source: str = "configuration", stages: tuple[Stage, ...] = STAGES) -> None:
    """Validate a complete configuration; a ``ValueError`` names ``source`` and the offending key."""
    _validate(cfg, source, stages, complete=True)


def load_config(
    profile: str | None = None,
    config_file: str | os.PathLike | None = None,
    stages: tuple[Stage, ...] = STAGES,
) -> dict:
    """Load a built-in profile and merge a user configuration file on top.

    Parameters
    ----------
    profile : str, optional
        Built-in profile (``quick`` or ``paper``). ``None`` means: the ``profile`` key of
        ``config_file`` if it has one, else ``paper``. An explicit value wins over the file's key.
    config_file : path-like, optional
        User YAML whose keys override the profile's (nested mappings are merged).
    stages : tuple of Stage
        The stage registry that ``stages:`` keys are checked against.

    Returns
    -------
    dict
        ``{"name", "seed", "stages", "profile"}``, with every registry stage present in ``stages``
        (an empty mapping when the configuration sets nothing for it).

    Raises
    ------
    ValueError
        Unknown profile, stage or key, or a value of the wrong type; the message names the file and key.
    FileNotFoundError
        ``config_file`` does not exist.
    """
    user: dict = {}
    user_source = None
    if config_file is not None:
        path = Path(config_file)
        user = _read_yaml(path)
        user_source = str(path)
        _validate(user, user_source, stages, complete=False)
        if "site" in user:
            base_dir = path.resolve().parent
            user["site"] = {k: (v if k in SITE_OPTIONAL_KEYS else str(base_dir / Path(v).expanduser()))
                            for k, v in user["site"].items()}
    chosen = profile if profile is not None else user.get("profile", DEFAULT_PROFILE)
    base_path = profile_path(chosen)
    base = _read_yaml(base_path)
    _validate(base, str(base_path), stages, complete=False)

    user = dict(user)
    user.pop("profile", None)
    if user.get("stages", {}) is None:
        user.pop("stages")
    merged = deep_merge(base, user)
    merged["profile"] = chosen
    source = str(base_path) if user_source is None else f"{user_source} (on profile {chosen!r})"
    validate_config(merged, source, stages)
    # every stage gets an explicit (possibly empty) entry so records are uniform
    merged["stages"] = {s.name: dict(merged["stages"].get(s.name) or {}) for s in stages}
    logger.debug("configuration %s from %s", merged["name"], source)
    return merged


def config_layers(profile: str | None = None,
                  config_file: str | os.PathLike | None = None) -> list[tuple[str, dict]]:
    """The files a configuration is merged from, lowest first, each with its content as read.

    The built-in profile (``profile``, else the file's ``profile`` key, else ``paper``) and then
    ``config_file`` when given. Used to name the file (and line) that sets a value in a message.
    """
    user = _read_yaml(Path(config_file)) if config_file is not None else {}
    chosen = profile if profile is not None else user.get("profile", DEFAULT_PROFILE)
    base = profile_path(chosen)
    layers = [(str(base), _read_yaml(base))]
    if config_file is not None:
        layers.append((str(config_file), user))
    return layers


def stage_parameters(config: Mapping[str, Any], stage: Stage | str) -> dict:
    """Notebook parameters of ``stage`` under ``config``: the global seed plus the stage's own.

    With a ``site`` section, the site's paths are added as ``cohort_file``, ``scan_manifest`` and
    ``secret_file`` (the runner passes each only to the notebooks that declare it). ``run_dir`` is
    not included; the runner adds it.
    """
    name = stage if isinstance(stage, str) else stage.name
    site = {SITE_PARAMETERS[k]: v for k, v in (config.get("site") or {}).items()}
    return {"seed": config["seed"], **site, **dict(config.get("stages", {}).get(name) or {})}
