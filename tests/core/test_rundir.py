import errno
import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from ctac_helpers.core import rundir
from ctac_helpers.core.rundir import (
    SUBDIRS, RunDir, RunDirNotWritable, atomic_path, atomic_write_json, atomic_write_text, current_umask, file_sha256,
    require_writable, table_to_csv_text,
)


def test_atomic_write_leaves_only_the_target(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert os.listdir(target.parent) == ["out.txt"]


def test_failed_block_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("half-way")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_failed_block_creates_nothing_when_target_absent(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "new.txt") as tmp:
            tmp.write_text("x")
            raise ValueError
    assert os.listdir(tmp_path) == []


def test_json_is_sorted_and_stable(tmp_path):
    p = atomic_write_json(tmp_path / "r.json", {"b": 1, "a": {"d": 2, "c": 3}})
    text = p.read_text()
    assert text.index('"a"') < text.index('"b"') and text.index('"c"') < text.index('"d"')
    sha = file_sha256(p)
    atomic_write_json(p, {"a": {"c": 3, "d": 2}, "b": 1})
    assert file_sha256(p) == sha
    assert json.loads(text) == {"a": {"c": 3, "d": 2}, "b": 1}


def test_csv_bytes_are_deterministic(tmp_path):
    df = pd.DataFrame({"variable": ["age", "bmi"], "median": [64.123456789, np.nan], "n": [10, 20]})
    text = table_to_csv_text(df)
    assert text == "variable,median,n\nage,64.123456789,10\nbmi,,20\n"
    rd = RunDir(tmp_path / "run")
    first = file_sha256(rd.write_table("table1", df))
    assert file_sha256(rd.write_table("table1", df.copy())) == first
    # the CSV holds the values, not a rounding of them: a change in the 12th digit shows
    changed = df.assign(median=df["median"] * (1 + 1e-12))
    assert file_sha256(rd.write_table("table1", changed)) != first


def test_csv_keeps_full_float_precision(tmp_path):
    values = [0.123456789012, 1 / 3, 2.0 ** -52, 5e-324, 1e300, -0.0, 0.0, 1500.0, 1234567.0, np.nan]
    df = pd.DataFrame({"x": values, "f32": np.float32(0.1), "label": "a"})
    text = table_to_csv_text(df)
    lines = text.splitlines()
    assert lines[1] == "0.123456789012,0.1,a"
    # integral floats without ".0" (as before), every other float to the last digit
    assert [line.split(",")[0] for line in lines[1:]] == [
        "0.123456789012", "0.3333333333333333", "2.220446049250313e-16", "5e-324", "1e+300", "-0", "0",
        "1500", "1234567", ""]
    rd = RunDir(tmp_path / "run")
    back = rd.read_table(rd.write_table("t", df).stem)
    assert back["x"].tolist()[:-1] == values[:-1] and np.isnan(back["x"].iloc[-1])
    assert (back["f32"].astype(np.float32) == np.float32(0.1)).all()


def test_rundir_creates_layout_and_round_trips(tmp_path):
    rd = RunDir(tmp_path / "runs" / "demo")
    assert rd.name == "demo"
    for sub in SUBDIRS:
        assert (rd.root / sub).is_dir()
    df = pd.DataFrame({"a": [1, 2, 3]})
    rd.write_artifact("cohort", df)
    assert rd.has_artifact("cohort")
    pd.testing.assert_frame_equal(rd.read_artifact("cohort"), df)
    assert rd.read_run_json() == {}
    rd.write_run_json({"x": 1})
    assert rd.read_run_json() == {"x": 1}


@pytest.mark.parametrize("bad", ["Table1", "../etc", "table 1", "", "_x", "a/b"])
def test_ids_are_validated(tmp_path, bad):
    rd = RunDir(tmp_path / "run")
    with pytest.raises(ValueError, match="id .* is not allowed"):
        rd.table_path(bad)
    with pytest.raises(ValueError, match="artifact id"):
        rd.artifact_path(bad)
    with pytest.raises(ValueError, match="figure id"):
        rd.figure_path(bad)


def test_missing_artifact_names_the_remedy(tmp_path):
    with pytest.raises(FileNotFoundError, match="artifact 'cohort' not found .*ctac-book run"):
        RunDir(tmp_path / "run").read_artifact("cohort")


@pytest.fixture
def umask():
    """Set the process's umask for one test (``umask(0o027)``), restoring it afterwards."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    rd = RunDir(tmp_path / "run")
    written = [atomic_write_text(tmp_path / "a.txt", "x"), atomic_write_json(tmp_path / "b.json", {}),
               rd.write_table("t", pd.DataFrame({"a": [1]})), rd.write_artifact("t", pd.DataFrame({"a": [1]}))]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path  # not tempfile's 0600
    assert stat.S_IMODE((rd.root / "tables").stat().st_mode) == 0o777 & ~mask


def test_require_writable_creates_the_folder_and_leaves_nothing(tmp_path):
    assert require_writable(tmp_path / "runs" / "new") == tmp_path / "runs" / "new"
    assert os.listdir(tmp_path / "runs" / "new") == []


def test_require_writable_names_the_folder_and_the_reason(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run directory should go")
    with pytest.raises(RunDirNotWritable, match=r"cannot write to the run directory .*file/run: Not a directory$"):
        require_writable(blocker / "run")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full)
    with pytest.raises(RunDirNotWritable, match="No space left on device") as info:
        require_writable(tmp_path / "run")
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path / "run") == []  # the probe is removed


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only folder")
def test_require_writable_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(RunDirNotWritable, match="Permission denied"):
            require_writable(ro / "run")
    finally:
        ro.chmod(0o755)


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_text(tmp_path / "out.txt", "x")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "out.txt")
    assert os.listdir(tmp_path) == []
