"""The run directory: the one place a run writes to.

Layout (a contract that later stages, users and external checks rely on)::

    runs/<name>/
        artifacts/<name>.parquet    data passed between stages (cohort, features, predictions, ...)
        tables/<id>.csv             every table, under the paper's id (table1, supp_table2, ...)
        figures/<id>.png            every figure, under the paper's id (fig1, supp_fig1, ...)
        executed/<notebook>.ipynb   the executed notebooks
        work/<stage>/...            per-scan intermediate files of the imaging stages (NIfTI cache,
                                    one result file per scan) that make their batches resumable
        run.json                    parameters, package versions, stage records, input/output hashes

Every write is atomic (a temporary file in the same folder, then ``os.replace``) so a run killed at
any moment never leaves a half-written file that a later stage would read; the file then gets the mode
the user's umask gives a new file (``0644`` under the usual ``022``), not the temporary file's ``0600``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from ctac_helpers.core.paths import resolve as resolve_location

logger = logging.getLogger(__name__)

SUBDIRS = ("artifacts", "tables", "figures", "executed")
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def _check_id(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _ID_PATTERN.match(name):
        raise ValueError(
            f"{kind} id {name!r} is not allowed: use lower-case letters, digits, '_' or '-' "
            "(the paper's ids, e.g. 'table1', 'supp_fig7', 'fig2a')"
        )
    return name


#: ``errno`` values that mean "this folder cannot be written to", not "this input is wrong".
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                          errno.EEXIST, errno.EISDIR})


class RunDirNotWritable(OSError):
    """The run directory cannot be created or written to (permissions, read-only or full disk)."""


def current_umask() -> int:
    """The process's umask.

    Read from ``/proc/self/status`` where it is there (Linux): setting and restoring it with
    ``os.umask`` would change it for a moment for every thread of the process.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a new file gets under the user's umask (``tempfile`` creates files ``0600``)."""
    os.chmod(path, 0o666 & ~current_umask())


def write_error_text(exc: OSError) -> str:
    """The reason of a failed write in words (``"No space left on device"``), without the file's path."""
    return exc.strerror or (errno.errorcode.get(exc.errno, "") if exc.errno else "") or str(exc)


def require_writable(root: str | os.PathLike) -> Path:
    """Create ``root`` if needed and check that a file can be written and flushed there.

    Raises
    ------
    RunDirNotWritable
        The folder cannot be created, or a small file cannot be written and synced to disk in it
        (no permission, a read-only file system, a full disk or quota), named with the reason.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=root)
        try:
            os.write(fd, b"ctac-book\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        err = RunDirNotWritable(f"cannot write to the run directory {root}: {write_error_text(exc)}")
        err.errno = exc.errno
        raise err from None
    return root


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name is hidden (leading dot) and ends in ``.tmp`` followed by the target's own
    extensions (``.tmp.nii.gz``), because writers such as SimpleITK pick the format from the name. The
    file gets the mode of the user's umask before it takes the target's place.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes),
                                   dir=path.parent)
    except OSError as exc:
        exc.filename = exc.filename or str(path)  # a full disk's error names the file it could not write
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        apply_umask(tmp_path)
        # fsync so that a power cut after the rename cannot leave an empty file behind
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        exc.filename = exc.filename or str(path)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, ``\\n`` newlines)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as sorted, indented JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _float_text(value) -> str:
    """A float at full precision: the shortest text that reads back as the same value, ``.0`` dropped."""
    text = str(value)  # Python's and NumPy's shortest round-trip repr (``1e-05``, ``0.1``, ``1500.0``)
    return text[:-2] if text.endswith(".0") else text


def table_to_csv_text(df: pd.DataFrame) -> str:
    """Render a tidy table as CSV text, byte-identical for identical content.

    Floats are written at full precision (the shortest text that reads back as the same number, with
    an integral value written without ``.0``: ``1500``, ``0.123456789012``, ``5e-324``), so that the CSV
    holds the computed values rather than a rounding of them; rounding belongs to the page's view
    (:func:`ctac_helpers.publish.figures.show_table`). Missing values are empty fields.
    """
    return df.to_csv(index=False, float_format=_float_text, lineterminator="\n")


class RunDir:
    """Read and write the artifacts, tables and figures of one run.

    Parameters
    ----------
    root : path-like
        The run directory, e.g. ``runs/paper``. Created (with its sub-folders) when missing. The
        runner passes notebooks a label (``runs/<name>``), resolved here to where the run directory
        lies (:func:`ctac_helpers.core.paths.resolve`); ``root`` is absolute.

    Examples
    --------
    >>> rd = RunDir(tmp_path / "runs" / "demo")          # doctest: +SKIP
    >>> rd.write_table("table1", df)                      # doctest: +SKIP
    >>> rd.read_artifact("cohort")                        # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(resolve_location(root))
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.root.name

    def artifact_path(self, name: str) -> Path:
        return self.root / "artifacts" / f"{_check_id('artifact', name)}.parquet"

    def table_path(self, table_id: str) -> Path:
        return self.root / "tables" / f"{_check_id('table', table_id)}.csv"

    def figure_path(self, figure_id: str) -> Path:
        return self.root / "figures" / f"{_check_id('figure', figure_id)}.png"

    def work_dir(self, name: str) -> Path:
        """Folder ``work/<name>`` for a stage's per-scan intermediate files (created when missing)."""
        path = self.root / "work" / _check_id("work folder", name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def run_json_path(self) -> Path:
        return self.root / "run.json"

    # -- writers ---------------------------------------------------------------------------
    def write_artifact(self, name: str, df: pd.DataFrame) -> Path:
        """Write a DataFrame as ``artifacts/<name>.parquet`` (atomic, index dropped, ``attrs`` dropped).

        pandas stores a frame's ``attrs`` in the file's metadata; a table read from a site's file
        carries that file's path there (:func:`ctac_helpers.cohort.validate.read_table`), so they are not kept.
        """
        path = self.artifact_path(name)
        out = df.reset_index(drop=True)
        out.attrs = {}
        with atomic_path(path) as tmp:
            out.to_parquet(tmp, index=False)
        logger.info("wrote artifact %s (%d rows, %d columns)", path, len(df), df.shape[1])
        return path

    def write_table(self, table_id: str, df: pd.DataFrame) -> Path:
        """Write a tidy table as ``tables/<id>.csv`` (atomic, deterministic float format)."""
        path = self.table_path(table_id)
        atomic_write_text(path, table_to_csv_text(df))
        logger.info("wrote table %s (%d rows)", path, len(df))
        return path

    def write_figure(self, figure_id: str, fig, dpi: int = 150) -> Path:
        """Save a matplotlib figure as ``figures/<id>.png`` (atomic, no timestamp metadata).

        The PNG records the figure's smallest text (:func:`ctac_helpers.core.figtext.text_record`), which the
        browser check compares with the width the page shows the image at.
        """
        from ctac_helpers.core import figtext

        path = self.figure_path(figure_id)
        # Software/creation metadata would make identical figures differ byte-wise.
        metadata = {"Software": None}
        record = figtext.text_record(fig)
        if record is not None:
            metadata[figtext.KEY] = json.dumps(record, sort_keys=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata=metadata)
        logger.info("wrote figure %s", path)
        return path

    # -- readers ---------------------------------------------------------------------------
    def read_artifact(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read ``artifacts/<name>.parquet``; a clear error names the stage that should have made it."""
        path = self.artifact_path(name)
        if not path.exists():
            raise FileNotFoundError(
                f"artifact {name!r} not found at {path}: run the stage that produces it first "
                "(`ctac-book run` runs the stages in dependency order)"
            )
        return pd.read_parquet(path, columns=columns)

    def read_table(self, table_id: str) -> pd.DataFrame:
        path = self.table_path(table_id)
        if not path.exists():
            raise FileNotFoundError(f"table {table_id!r} not found at {path}")
        return pd.read_csv(path)

    def has_artifact(self, name: str) -> bool:
        return self.artifact_path(name).exists()

    def read_run_json(self) -> dict:
        if not self.run_json_path.exists():
            return {}
        return json.loads(self.run_json_path.read_text(encoding="utf-8"))

    def write_run_json(self, record: dict) -> Path:
        return atomic_write_json(self.run_json_path, record)
