import errno
import os

import pytest

import fakebook
from ctac_helpers.pipeline import cli
from ctac_helpers.pipeline import config
from ctac_helpers.core import rundir
from ctac_helpers.pipeline import runner
from ctac_helpers.core import stages


@pytest.fixture
def fake_book(tmp_path, monkeypatch):
    """Point the CLI at the fake three-stage book, with a profile 'fake' for it."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "fake.yaml").write_text("name: fake\nseed: 7\nstages:\n  up: {n: 3}\n")
    monkeypatch.setattr(config, "PROFILES_DIR", profiles)
    monkeypatch.setattr(stages, "STAGES", fakebook.STAGES)
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", fakebook.write_notebooks(tmp_path / "notebooks"))
    monkeypatch.setattr(runner, "code_hash", lambda *a, **k: "test-code-hash")
    return tmp_path


def test_bad_profile(capsys):
    assert cli.main(["status", "--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'; allowed: paper, quick" in err
    assert "Traceback" not in err


def test_bad_stage_names(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["run", "--profile", "quick", "--run-dir", str(run_dir), "--force", "nosuch"]) == 2
    assert "unknown stage 'nosuch'; allowed: data, cohort" in capsys.readouterr().err
    assert cli.main(["run", "--profile", "quick", "--run-dir", str(run_dir), "--only", "cohorts"]) == 2
    assert "unknown stage 'cohorts'; allowed: data, cohort" in capsys.readouterr().err
    assert not (run_dir / "executed").exists() or not any((run_dir / "executed").iterdir())


def test_bad_config_file(tmp_path, capsys):
    assert cli.main(["status", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "configuration file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  data:\n    n_patients: 10\n  extra: {}\n")
    assert cli.main(["status", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "stages.extra" in err and "Traceback" not in err


def test_usage_errors_return_codes(capsys):
    assert cli.main([]) == 2
    assert "a command is required" in capsys.readouterr().err
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["run", "--no-such-option"]) == 2
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "run" in out and "build" in out and "status" in out


def test_calibrate_refuses_inconsistent_options(capsys):
    assert cli.main(["calibrate", "--heldout-only"]) == 2
    assert "--heldout-only needs --heldout-seeds" in capsys.readouterr().err
    assert cli.main(["calibrate", "--heldout-seeds", "-1"]) == 2
    assert "--heldout-seeds must be >= 0" in capsys.readouterr().err
    assert cli.main(["calibrate", "--spread-seeds", "-1"]) == 2
    assert "--spread-seeds must be >= 0" in capsys.readouterr().err
    assert cli.main(["calibrate", "--no-fit"]) == 2
    assert "--no-fit needs --spread-seeds N or --heldout-seeds N" in capsys.readouterr().err
    assert cli.main(["calibrate", "--margins", "--heldout-seeds", "2"]) == 2
    assert "--margins refits the cell distributions only; it does not combine with --heldout-seeds" in (
        capsys.readouterr().err)


def test_calibrate_margins_writes_the_cell_fits(monkeypatch, tmp_path):
    import yaml

    from ctac_helpers.cohort import synth

    record = {"version": 1, "variables": {"age": {"digest": "d" * 64, "params": [0.1 + 0.2, 1 / 3] + [0.0] * 10}}}
    monkeypatch.setattr(synth, "margins_record", lambda: record)
    out = tmp_path / "margins.yaml"
    assert cli.main(["calibrate", "--margins", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Cell distributions of the synthetic cohort's continuous variables")
    assert yaml.safe_load(text) == record  # floats read back exactly


def test_calibrate_help_reads_the_fit_time_from_the_record(capsys, monkeypatch):
    from ctac_helpers.core import manifest

    seconds = manifest.generator_file()["fit"]["seconds"]
    assert cli.main(["calibrate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"The last fit took {seconds / 60:.0f} minutes (fit.seconds in data_manifest/generator.yaml" in text
    monkeypatch.setattr(manifest, "generator_file", lambda: {"fit": {"seconds": 2598.6}})
    assert cli.main(["calibrate", "--help"]) == 0
    assert "The last fit took 43 minutes" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setattr(manifest, "generator_file", lambda: {"constants": {}})
    assert cli.main(["calibrate", "--help"]) == 0
    assert "records no fit time yet; each held-out seed is one run of the paper profile" in \
        " ".join(capsys.readouterr().out.split())


def test_status_of_a_new_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status", "--profile", "quick"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["stage", "state", "reason"]
    assert lines[1].startswith("data") and "never run" in lines[1]
    assert lines[2].startswith("segmentation") and "never run" in lines[2]  # execution order
    assert str(tmp_path / "runs" / "quick") in captured.err  # default run directory: ./runs/<name>
    assert not (tmp_path / "runs").exists()


def test_build_without_a_run(tmp_path, capsys):
    assert cli.main(["build", "--profile", "quick", "--run-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "run `ctac-book run` first" in capsys.readouterr().err


def test_an_unwritable_run_directory_is_one_line_and_exit_code_2(fake_book, capsys, monkeypatch):
    blocker = fake_book / "file"
    blocker.write_text("a file where the run directory should go")
    assert cli.main(["run", "-q", "--profile", "fake", "--run-dir", str(blocker / "run")]) == 2
    assert capsys.readouterr().err == (f"ctac-book: error: cannot write to the run directory {blocker / 'run'}: "
                                       "Not a directory\n")

    def refuse(*args, **kwargs):  # what a user without write permission meets (root may write anywhere)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(rundir.tempfile, "mkstemp", refuse)
    assert cli.main(["run", "-q", "--profile", "fake", "--run-dir", str(fake_book / "run")]) == 2
    assert capsys.readouterr().err == (f"ctac-book: error: cannot write to the run directory {fake_book / 'run'}: "
                                       "Permission denied\n")
    assert not (fake_book / "run" / "run.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only folder")
def test_a_read_only_run_directory_is_refused(fake_book, capsys):
    run_dir = fake_book / "ro"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        assert cli.main(["run", "-q", "--profile", "fake", "--run-dir", str(run_dir)]) == 2
    finally:
        run_dir.chmod(0o755)
    assert capsys.readouterr().err.endswith(f"{run_dir}: Permission denied\n")


def test_a_disk_that_fills_up_during_the_run_is_one_line_and_exit_code_2(fake_book, capsys, monkeypatch):
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # the check of the run directory passes; the next write finds the disk full
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(rundir.os, "fsync", fsync)
    run_dir = fake_book / "run"
    assert cli.main(["run", "-q", "--profile", "fake", "--run-dir", str(run_dir)]) == 2
    assert capsys.readouterr().err == f"ctac-book: error: cannot write {run_dir / 'run.json'}: No space left on device\n"


def test_a_stage_that_meets_a_full_disk_is_reported_as_such(fake_book, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise runner.StageFailed("stage 'down' failed in notebook down.ipynb, cell 3: OSError: ...\nexecuted ...",
                                 stage="down", notebook="down.ipynb", ename="OSError",
                                 evalue="[Errno 28] No space left on device: '/somewhere/artifacts/down.parquet'")

    monkeypatch.setattr(runner, "run_stages", full)
    assert cli.main(["run", "-q", "--profile", "fake", "--run-dir", str(fake_book / "run")]) == 2
    assert capsys.readouterr().err == ("ctac-book: error: stage 'down' could not write to the run directory: "
                                       "No space left on device\n")
    failed = runner.StageFailed("x", stage="down", notebook="down.ipynb", ename="ValueError", evalue="[Errno 28] no")
    assert failed.write_error is None  # only an OSError is the disk's


@pytest.mark.slow
def test_run_status_and_failure(fake_book, capsys):
    run_dir = fake_book / "run"
    assert cli.main(["run", "--profile", "fake", "--run-dir", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "[1/3] up: running up.ipynb" in err and "[3/3] report: done in" in err

    assert cli.main(["run", "-q", "--profile", "fake", "--run-dir", str(run_dir)]) == 0
    assert capsys.readouterr().err == ""

    assert cli.main(["status", "--profile", "fake", "--run-dir", str(run_dir)]) == 0
    rows = [line.split(None, 1) for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [["up", "up to date"], ["down", "up to date"], ["report", "up to date"]]

    cfg = fake_book / "failing.yaml"
    cfg.write_text("profile: fake\nstages:\n  down:\n    fail: true\n")
    assert cli.main(["run", "--config", str(cfg), "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "stage 'down' failed in notebook down.ipynb, cell 3" in err
    assert "ValueError: boom from down" in err and "Traceback" not in err
    assert "report: running" not in err

    assert cli.main(["status", "--config", str(cfg), "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "down    stale" in out and "last run failed: ValueError: boom from down" in out


def test_run_refuses_a_wrongly_typed_parameter_before_writing_anything(fake_book, capsys):
    run_dir = fake_book / "run"
    cfg = fake_book / "typed.yaml"
    cfg.write_text("profile: fake\nstages:\n  up:\n    n: many\n  down:\n    fail: 1\n")
    assert cli.main(["run", "--config", str(cfg), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s) in the configuration's stage parameters" in err and "Traceback" not in err
    assert f"{cfg}, line 4, key 'stages.up.n': got 'many'; expected an integer (up.ipynb declares n: int)" in err
    assert f"{cfg}, line 6, key 'stages.down.fail': got 1; expected true or false" in err
    assert not run_dir.exists()


def test_calibrate_heldout_resumes_the_recorded_seeds_unless_fresh(monkeypatch, tmp_path):
    import pandas as pd
    import yaml

    from ctac_helpers.cohort import synth
    from ctac_helpers.core import manifest
    from ctac_helpers.pipeline import calibrate as generator_fit

    content = {"constants": dict(manifest.generator_file()["constants"]), "fit": {"fingerprint": "f0"},
               "heldout": {"seeds": [20240102], "rows": []}}
    monkeypatch.setattr(manifest, "generator_file", lambda: content)
    monkeypatch.setattr(synth, "generator_fingerprint", lambda constants=None: "f0")
    calls = []

    def fake_check(seeds, runs, on_seed=None, previous=None):
        calls.append((list(seeds), previous))
        on_seed([20240102, 20240103], pd.DataFrame([{"key": "x/a", "group": "held_out", "item": "x", "quantity": "a",
                                                     "runs": 2, "comparable": 2, "holds": 1}]),
                [{"seed": 20240103, "held_out": [1, 1], "fitted": [0, 0]}])

    monkeypatch.setattr(generator_fit, "heldout_check", fake_check)
    out = tmp_path / "generator.yaml"
    assert cli.main(["calibrate", "--heldout-only", "--heldout-seeds", "2", "--out", str(out)]) == 0
    assert calls[-1][0] == [20240102, 20240103] and calls[-1][1]["seeds"] == [20240102]
    written = yaml.safe_load(out.read_text())["heldout"]
    assert written["seeds"] == [20240102, 20240103] and written["fingerprint"] == "f0"
    assert written["rows"] == [{"key": "x/a", "group": "held_out", "runs": 2, "comparable": 2, "holds": 1}]
    assert written["per_seed"] == [{"seed": 20240103, "held_out": [1, 1], "fitted": [0, 0]}]
    assert cli.main(["calibrate", "--heldout-only", "--heldout-seeds", "2", "--heldout-fresh", "--out", str(out)]) == 0
    assert calls[-1][1] is None


def test_calibrate_records_the_spread_and_a_new_fit_drops_it(monkeypatch, tmp_path):
    import pandas as pd
    import yaml

    from ctac_helpers.cohort import synth
    from ctac_helpers.core import manifest
    from ctac_helpers.pipeline import calibrate as generator_fit

    content = {"constants": dict(manifest.generator_file()["constants"]), "fit": {"fingerprint": "f0"},
               "heldout": {"seeds": [20240102], "fingerprint": "f0", "rows": []}}
    monkeypatch.setattr(manifest, "generator_file", lambda: content)
    monkeypatch.setattr(synth, "generator_fingerprint", lambda constants=None: "f0")
    seen = []

    def fake_spread(seeds, n_patients=synth.PAPER_N, constants=None, folds=5):
        seen.append(list(seeds))
        return pd.DataFrame([{"seed": s, "key": k, "value": 0.6}
                             for s in seeds for k in generator_fit.SPREAD_QUANTITIES])

    monkeypatch.setattr(generator_fit, "structure_spread", fake_spread)
    out = tmp_path / "generator.yaml"
    assert cli.main(["calibrate", "--no-fit", "--spread-seeds", "2", "--out", str(out)]) == 0
    first = generator_fit.spread_seeds(0)[0]
    assert seen == [[first, first + 1, first + 2]]
    written = yaml.safe_load(out.read_text())
    assert written["spread"]["seeds"] == seen[0] and written["spread"]["fingerprint"] == "f0"
    assert written["heldout"] == content["heldout"] and written["constants"] == content["constants"]
    # a new fit makes both records of the earlier constants obsolete
    # (what calibrate returns holds no such records; they are carried here to show that they are dropped)
    monkeypatch.setattr(generator_fit, "calibrate", lambda config: {**written, "fit": {"seconds": 1.0}})
    assert cli.main(["calibrate", "--no-confirm", "--out", str(out)]) == 0
    refit = yaml.safe_load(out.read_text())
    assert "spread" not in refit and "heldout" not in refit and refit["fit"]["seconds"] == 1.0
