import pytest

import fakebook
from ctac_helpers import cli, config, runner, stages


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


def test_status_of_a_new_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status", "--profile", "quick"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["stage", "state", "reason"]
    assert lines[1].startswith("data") and "never run" in lines[1]
    assert lines[2].startswith("cohort") and "never run" in lines[2]
    assert str(tmp_path / "runs" / "quick") in captured.err  # default run directory: ./runs/<name>
    assert not (tmp_path / "runs").exists()


def test_build_without_a_run(tmp_path, capsys):
    assert cli.main(["build", "--profile", "quick", "--run-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "run `ctac-book run` first" in capsys.readouterr().err


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
