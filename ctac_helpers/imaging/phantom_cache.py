"""A content-addressed cache of written phantoms, shared by every run directory on a machine.

A phantom is a pure function of its parameters, its seed, its grid and the code that draws it, so
chapter 2 need not draw the same phantom twice: the paper and quick profiles, the test suite's
books and a re-run after ``ctac-book clean`` all ask for the same volumes. :func:`write_phantom_cached`
builds a phantom once, stores its files under a key and later links (or copies) them into any run
directory that asks for the same phantom.

Safety
------
* The key is the SHA-256 of the filled-in parameters, the seed, the grid, the source of the modules
  that draw, describe and write a phantom (:data:`CODE_MODULES`: the modules of ``imaging.phantom`` this
  module calls and every module of the package they import, directly or not), the files of
  ``data_manifest/`` that this code reads (:data:`MANIFEST_FILES`; a test draws and writes a phantom with
  only these files in place) and the versions of numpy, scipy and SimpleITK (the random streams, the
  filters and the NIfTI writer): any change to them is a new key, never a stale hit. The other data files
  (the paper's numbers and notes, the generator's constants and fit record, the schemas) do not decide a
  phantom's files, so recording a fit or editing a note does not draw the phantoms again. The glue that
  makes parameters from the synthetic cohort (``imaging.phantom.from_cohort``) and the generator are not
  among them: they decide the parameters, which are in the key themselves.
* An entry is written into a hidden temporary folder and renamed into place in one step, so a killed
  build leaves no half-written entry, and two processes building the same phantom both end with
  the same complete entry.
* Each entry records the SHA-256 of its files; they are checked before every reuse, and an entry that
  fails the check (a file edited in place, a damaged disk) is set aside and the phantom is rebuilt.
* Files reach the run directory through a temporary name and an atomic rename (a hard link when the
  cache is on the same file system, else a copy). No path of the cache is written into the run
  directory, and none is logged: the batch records the run directory's own paths, and a log line names
  an entry by the first characters of its key.

Location: ``$CTAC_BOOK_CACHE/phantoms`` when the environment variable ``CTAC_BOOK_CACHE`` names a
folder, else ``$XDG_CACHE_HOME/ctac-book/phantoms`` (``~/.cache/ctac-book/phantoms``).
``CTAC_BOOK_CACHE=off`` turns the cache off. Deleting the folder at any time is safe. Entries are
never evicted: a change to the phantom code starts new ones, and the old ones stay until the folder is
deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ctac_helpers.core import manifest
from ctac_helpers.core.rundir import atomic_path, file_sha256
from ctac_helpers.imaging.phantom.build import ctac_phantom
from ctac_helpers.imaging.phantom.files import write_phantom
from ctac_helpers.imaging.phantom.parameters import filled_parameters

logger = logging.getLogger(__name__)

CACHE_ENV = "CTAC_BOOK_CACHE"
OFF_VALUES = ("off", "0", "false", "no", "none")
# The files of one phantom, as write_phantom names them after its stem.
KINDS = ("ct", "labels", "pericardium", "truth")
_SUFFIX = {"ct": "_ct.nii.gz", "labels": "_labels.nii.gz", "pericardium": "_pericardium.nii.gz",
           "truth": "_truth.json"}
#: Modules whose code decides a phantom's voxels, truth or files: every module of the package this
#: module imports, directly or through another (a test keeps the list complete).
CODE_MODULES = ("ctac_helpers.imaging.phantom.build", "ctac_helpers.imaging.phantom.parameters",
                "ctac_helpers.imaging.phantom.canvas", "ctac_helpers.imaging.phantom.anatomy",
                "ctac_helpers.imaging.phantom.skeleton", "ctac_helpers.imaging.phantom.heart",
                "ctac_helpers.imaging.phantom.lesions", "ctac_helpers.imaging.phantom.noise",
                "ctac_helpers.imaging.phantom.truth", "ctac_helpers.imaging.phantom.files",
                "ctac_helpers.imaging.calcium", "ctac_helpers.imaging.fat", "ctac_helpers.imaging.presence",
                "ctac_helpers.imaging.grid", "ctac_helpers.core.manifest", "ctac_helpers.core.rundir",
                "ctac_helpers.core.paths", "ctac_helpers.core.figtext", "ctac_helpers.definitions")
#: Files of ``data_manifest/`` that the code of :data:`CODE_MODULES` reads while drawing, describing and
#: writing a phantom (the TotalSegmentator classes, the synthetic structures and tissues); a test draws
#: and writes a phantom with only these files in place.
MANIFEST_FILES = ("structures.yaml",)


def cache_root() -> Path | None:
    """The phantom cache folder.

    Returns
    -------
    pathlib.Path or None
        ``$CTAC_BOOK_CACHE/phantoms`` when the variable names a folder, else
        ``$XDG_CACHE_HOME/ctac-book/phantoms`` (``~/.cache/ctac-book/phantoms``); None when
        ``CTAC_BOOK_CACHE`` is empty or one of :data:`OFF_VALUES` (the cache is off).
    """
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in OFF_VALUES + ("",):
        return None
    if value:
        return Path(value).expanduser() / "phantoms"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ctac-book" / "phantoms"


def code_version(modules: Sequence[str] = CODE_MODULES) -> str:
    """SHA-256 of the code, data files and library versions that decide a phantom's files.

    Parameters
    ----------
    modules : sequence of str
        The modules whose source is hashed (default :data:`CODE_MODULES`).

    Returns
    -------
    str
        Hex digest over the modules' source, the files :data:`MANIFEST_FILES` of ``data_manifest/`` (by
        name) and the numpy, scipy and SimpleITK versions.
    """
    import numpy
    import scipy
    import SimpleITK

    h = hashlib.sha256()
    for name in modules:
        h.update(name.encode() + b"\0" + Path(importlib.util.find_spec(name).origin).read_bytes())
    manifest_dir = manifest.MANIFEST_DIR
    for name in MANIFEST_FILES:
        h.update(name.encode() + b"\0" + (manifest_dir / name).read_bytes())
    h.update(f"numpy {numpy.__version__} scipy {scipy.__version__} SimpleITK {SimpleITK.Version_VersionString()}"
             .encode())
    return h.hexdigest()


def phantom_key(params: Mapping, seed: int, shape: Sequence[int], spacing: Sequence[float],
                version: str | None = None) -> str:
    """The cache key of one phantom.

    Parameters
    ----------
    params, seed, shape, spacing
        As in :func:`ctac_helpers.imaging.phantom.ctac_phantom`; parameters left out and parameters given
        their default value are the same phantom.
    version : str, optional
        The code version (default :func:`code_version`).

    Returns
    -------
    str
        Hex SHA-256 of the code version and the filled-in parameters, seed and grid.
    """
    blob = json.dumps({"params": filled_parameters(params), "seed": int(seed),
                       "shape": [int(s) for s in shape], "spacing": [float(s) for s in spacing]},
                      sort_keys=True, default=str)
    return hashlib.sha256(f"{code_version() if version is None else version}\n{blob}".encode()).hexdigest()


def _entry(root: Path, key: str) -> Path:
    return root / key[:2] / key


def _read_entry(entry: Path, key: str) -> dict[str, Path] | None:
    """The files of a complete, intact entry, else None (a damaged entry is moved aside)."""
    try:
        record = json.loads((entry / "entry.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = {k: entry / f"phantom{_SUFFIX[k]}" for k in KINDS}
    try:
        intact = record.get("key") == key and all(file_sha256(files[k]) == record["sha256"][k] for k in KINDS)
    except (OSError, KeyError, TypeError):
        intact = False
    if intact:
        return files
    logger.warning("phantom cache: entry %s failed its check and is rebuilt", key[:12])
    aside = entry.with_name(f".damaged-{entry.name}-{os.getpid()}")
    with contextlib.suppress(OSError):
        os.replace(entry, aside)  # out of the way in one step, then removed
    shutil.rmtree(aside, ignore_errors=True)
    return None


def _store(root: Path, key: str, paths: Mapping[str, Path]) -> None:
    """Copy a written phantom into the cache as one entry, renamed into place atomically."""
    entry = _entry(root, key)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=entry.parent))
    try:
        sums = {}
        for k in KINDS:
            target = tmp / f"phantom{_SUFFIX[k]}"
            _link_or_copy(Path(paths[k]), target)
            sums[k] = file_sha256(target)
        (tmp / "entry.json").write_text(json.dumps({"key": key, "sha256": sums}, indent=1, sort_keys=True),
                                        encoding="utf-8")
        # Atomic. It fails when another process stored the same entry first: that entry is
        # checked like any other at its next use.
        with contextlib.suppress(OSError):
            os.rename(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dst)


def _place(files: Mapping[str, Path], directory: Path, stem: str) -> dict[str, Path]:
    """Link or copy an entry's files into ``directory`` under ``stem``, each atomically."""
    out = {}
    for k in KINDS:
        target = directory / f"{stem}{_SUFFIX[k]}"
        with atomic_path(target) as tmp:
            tmp.unlink()
            _link_or_copy(files[k], tmp)
        out[k] = target
    return out


def write_phantom_cached(params: Mapping, seed: int, shape: Sequence[int], spacing: Sequence[float],
                         directory, stem: str, root: Path | None | str = "default") -> tuple[dict[str, Path], bool]:
    """The files of a phantom in ``directory``: from the cache when it holds them, else built and stored.

    Parameters
    ----------
    params, seed, shape, spacing
        As in :func:`ctac_helpers.imaging.phantom.ctac_phantom`.
    directory : path-like
        Where the files go (the run directory's phantom folder).
    stem : str
        File name stem, as in :func:`ctac_helpers.imaging.phantom.write_phantom`.
    root : path-like, None or 'default'
        The cache folder; ``'default'`` is :func:`cache_root`, None builds without the cache.

    Returns
    -------
    paths : dict
        ``{'ct', 'labels', 'pericardium', 'truth'}`` -> path in ``directory``.
    reused : bool
        Whether the files came from the cache. They are byte-identical either way.
    """
    directory = Path(directory)
    root = cache_root() if root == "default" else (Path(root) if root is not None else None)
    key = phantom_key(params, seed, shape, spacing) if root is not None else None
    if root is not None:
        files = _read_entry(_entry(root, key), key)
        if files is not None:
            try:
                return _place(files, directory, stem), True
            except OSError as exc:  # the entry went away meanwhile (a concurrent clean-up): build it
                logger.warning("phantom cache: entry %s could not be used (%s); building the phantom",
                               key[:12], type(exc).__name__)
    ph = ctac_phantom(params, seed=int(seed), shape=tuple(shape), spacing=tuple(spacing))
    paths = write_phantom(ph, directory, stem)
    if root is not None:
        try:
            _store(root, key, paths)
        except OSError as exc:  # a full or read-only cache never fails the book
            logger.warning("phantom cache: could not store an entry (%s); the book goes on without it",
                           type(exc).__name__)
    return paths, False
