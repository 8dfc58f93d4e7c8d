"""A site's own data: init_site, read_table, and the init-site / validate / run commands."""

from __future__ import annotations

import gzip
import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

import sitefactory as sf
from ctac_helpers.pipeline import cli
from ctac_helpers.pipeline import config
from ctac_helpers.imaging import ingest
from ctac_helpers.core import manifest
from ctac_helpers.pipeline import runner
from ctac_helpers.pipeline import site
from ctac_helpers.cohort.validate import ValidationError, read_table, validate_cohort


# -- init_site ------------------------------------------------------------------------------------
def test_init_site_writes_configuration_templates_and_a_private_key(tmp_path):
    paths = site.init_site(tmp_path / "my site")
    assert set(paths) == {"config", "cohort", "scans", "secret"}
    assert all(p.parent == tmp_path / "my site" for p in paths.values())
    key = paths["secret"].read_text().strip()
    assert len(key) == 64 and int(key, 16) >= 0
    assert stat.S_IMODE(paths["secret"].stat().st_mode) == 0o600
    assert site.init_site(tmp_path / "other")["secret"].read_text() != paths["secret"].read_text()
    cfg = config.load_config(None, paths["config"])
    assert cfg["profile"] == "paper" and cfg["name"] == "my_site"
    assert cfg["site"] == {"cohort": str(paths["cohort"]), "scans": str(paths["scans"]),
                           "secret": str(paths["secret"])}
    text = paths["config"].read_text()
    assert "keep it private, outside runs/" in text
    assert cfg["stages"]["models"]["features"] == "imaging"  # a site's CT features come from its scans
    assert (tmp_path / "my site" / ".gitignore").read_text() == "secret.key\n"


def test_init_site_appends_the_key_to_an_existing_gitignore(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".gitignore").write_text("*.nii.gz")
    site.init_site(tmp_path / "s")
    assert (tmp_path / "s" / ".gitignore").read_text() == "*.nii.gz\nsecret.key\n"


def test_init_site_refuses_to_overwrite(tmp_path):
    paths = site.init_site(tmp_path / "s")
    key = paths["secret"].read_bytes()
    paths["cohort"].write_text("patient_id\n1\n")
    with pytest.raises(ValueError, match=r"already holds .*cohort.csv.*nothing was overwritten"):
        site.init_site(tmp_path / "s")
    assert paths["secret"].read_bytes() == key and paths["cohort"].read_text() == "patient_id\n1\n"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        site.init_site(tmp_path / "afile")
    # a folder holding other files is fine
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ct.nii.gz").write_text("x")
    assert site.init_site(tmp_path / "images")["config"].exists()


@pytest.mark.parametrize("role, schema", [("cohort", manifest.cohort_schema),
                                          ("scans", manifest.scan_manifest_schema)])
def test_templates_describe_every_column_and_hold_no_rows(tmp_path, role, schema):
    path = site.init_site(tmp_path / "s")[role]
    comments, header = sf.template_lines(path)
    cols = schema()
    assert header == list(cols.index)
    for name, col in cols.iterrows():
        (line,) = [ln for ln in comments if ln.startswith(f"# {name}: ")]
        assert col["description"] in line
        assert ("required column" in line) == bool(col["required"]) or name in site.MEASURED_COLUMNS
    df = read_table(path)
    assert list(df.columns) == list(cols.index) and len(df) == 0


def test_cohort_template_states_types_units_ranges_and_categories(tmp_path):
    comments, _ = sf.template_lines(site.init_site(tmp_path / "s")["cohort"])
    line = {ln.split(":")[0][2:]: ln for ln in comments if ln.startswith("# ") and ":" in ln}
    assert "number; unit years; range 18 to 110 (typically 30 to 95); required column, no empty cells" \
        in line["age"]
    assert "category, one of: male, female; required column" in line["sex"]
    assert "0/1 flag" in line["death"]
    assert "optional column, empty cells allowed" in line["race"]
    assert "required column, empty cells allowed" in line["ecg_response"]
    assert "optional here: measured on the scans" in line["cac_score"]


# -- read_table -----------------------------------------------------------------------------------
def test_read_table_skips_leading_comments_only_and_numbers_spreadsheet_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("# a comment, with a comma\n#another\n\npatient_id,age,note\n007,61,a\n"
                    "\n#8,70,data not a comment\n009,55,\"two\nlines\"\n010,40,b\n,,\n")
    df = read_table(path)
    assert list(df["patient_id"]) == ["007", "#8", "009", "010"]  # ids as text; '#' after the header is data
    assert list(df["age"]) == ["61", "70", "55", "40"]  # every cell as written; validation reads the numbers
    assert df.attrs["rows"] == [5, 7, 8, 9]  # header row 4; a blank line is a row; a quoted line break is not
    assert df.attrs["file"] == str(path)
    df.loc[2, "age"] = 700
    (p,) = [p for p in validate_cohort(df, "t.csv") if p.column == "age" and p.row is not None]
    assert p.row == 8


def test_read_table_without_comments_numbers_rows_as_validate_does(tmp_path):
    path = tmp_path / "t.csv"
    # with a byte-order mark, as spreadsheets write 'CSV UTF-8'
    path.write_text("\ufeffpatient_id,bmi\n1,20\n2,95\n", encoding="utf-8")
    df = read_table(path)
    assert list(df.columns) == ["patient_id", "bmi"] and df.attrs["rows"] == [2, 3]
    (p,) = [p for p in validate_cohort(df, "t.csv") if p.column == "bmi"]
    assert p.row == 3 == [q for q in validate_cohort(df.copy(), "t.csv") if q.column == "bmi"][0].row


def test_read_table_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_table(tmp_path / "nope.csv")
    only = tmp_path / "only.csv"
    only.write_text("# nothing else\n\n")
    with pytest.raises(ValueError, match="only.csv: no header line"):
        read_table(only)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("# c\na,b\n1,2\n1,2,3\n4,5\n6,7,8,9\n")
    with pytest.raises(ValidationError) as exc:
        read_table(ragged)
    assert [(p.row, p.value) for p in exc.value.problems] == [(4, "3 cells"), (6, "4 cells")]
    assert "at most 2 cells" in str(exc.value)


def test_scan_manifest_reader_skips_the_template_comments(tmp_path):
    s = sf.make_site(tmp_path)
    df = ingest.read_scan_manifest(s.paths["scans"])
    assert list(df["scan_id"]) == [f"S{i:03d}" for i in range(sf.N_PATIENTS)]
    assert df.loc[0, "image"] == str(s.dir / "images" / "S000.nii.gz")
    assert df.attrs["rows"][0] == s.row("scans", 0)


def test_truncated_nifti_is_refused_and_multi_member_gzip_is_not(tmp_path):
    path = sf.write_nifti(tmp_path / "ct.nii.gz", sf.ct_array())
    raw = gzip.decompress(path.read_bytes())
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    a, _ = ingest.read_ct(path)
    b, _ = ingest.read_ct(tmp_path / "two.nii.gz")
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    (tmp_path / "cut.nii").write_bytes(raw[:-100])
    with pytest.raises(ingest.IngestError, match=r"cut.nii: truncated NIfTI file: \d+ bytes, its header"):
        ingest.read_ct(tmp_path / "cut.nii")


# -- validate_site --------------------------------------------------------------------------------
def test_validate_site_collects_problems_of_every_kind_at_once(tmp_path):
    s = sf.make_site(tmp_path)
    s.cohort[1]["sex"] = "M"
    s.scans[2]["cac_score"] = -1
    s.write()
    sf.write_nifti(s.dir / "images" / "S004.nii.gz", sf.ct_array(offset=1024))
    (s.dir / "images" / "S006.nii.gz").write_bytes(b"junk")
    s.paths["secret"].unlink()
    problems = s.validate()
    where = {(os.path.basename(p.file), p.row, p.column) for p in problems if p.severity == "error"}
    assert where == {("secret.key", None, "site.secret"), ("cohort.csv", s.row("cohort", 1), "sex"),
                     ("scans.csv", s.row("scans", 2), "cac_score"), ("scans.csv", s.row("scans", 4), "image"),
                     ("scans.csv", s.row("scans", 6), "image")}
    without_images = s.validate(check_images=False)
    assert {p.column for p in without_images} == {"site.secret", "sex", "cac_score"}


def test_measured_ct_columns_are_optional_for_a_site_but_checked_when_given(tmp_path):
    s = sf.make_site(tmp_path)
    assert all("cac_score" not in row for row in s.cohort)
    assert s.validate(check_images=False) == []
    s.cohort[0]["cac_score"] = -3
    s.write()
    (p,) = s.validate(check_images=False)
    assert (p.row, p.column) == (s.row("cohort", 0), "cac_score")


def test_validate_site_needs_a_site_section():
    with pytest.raises(ValueError, match="no 'site' section"):
        site.validate_site(config.load_config("quick"))


def test_label_map_read_by_header_only_when_it_matches(tmp_path, monkeypatch):
    s = sf.make_site(tmp_path)
    calls = []
    real = ingest.read_label_map
    monkeypatch.setattr(ingest, "read_label_map", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert s.validate() == []
    assert calls == []  # the label map and the mask share the CT's header: read as they are, not reoriented
    # a label map written in another orientation is read and compared on the LPS grid
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(s.dir / "images" / "S000_labels.nii.gz")))
    img = sf.write_nifti(s.dir / "images" / "S000_labels.nii.gz", arr[:, ::-1, :])
    flipped = sitk.ReadImage(str(img))
    flipped.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    flipped.SetOrigin((0.0, 15 * sf.SPACING[1], 0.0))
    sitk.WriteImage(flipped, str(img))
    assert s.validate() == []
    assert len(calls) == 1


# -- the command line -----------------------------------------------------------------------------
def test_cli_init_site(tmp_path, capsys):
    assert cli.main(["init-site", str(tmp_path / "mysite")]) == 0
    out = capsys.readouterr().out
    for name in ("site.yaml", "cohort.csv", "scans.csv", "secret.key"):
        assert f"wrote {tmp_path / 'mysite' / name}" in out
    assert f"ctac-book validate --config {tmp_path / 'mysite' / 'site.yaml'}" in out
    assert f"ctac-book run --config {tmp_path / 'mysite' / 'site.yaml'}" in out
    assert f"ctac-book build --config {tmp_path / 'mysite' / 'site.yaml'}" in out
    assert cli.main(["init-site", str(tmp_path / "mysite")]) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "Traceback" not in err


def test_cli_validate_clean_site(tmp_path, capsys):
    s = sf.make_site(tmp_path)
    assert cli.main(["validate", "--config", str(s.paths["config"]), "--run-dir", str(s.run_dir)]) == 0
    assert capsys.readouterr().out.strip() == "0 error(s), 0 warning(s) in the site's tables, key and images"


def test_cli_validate_prints_every_problem_one_per_line(tmp_path, capsys):
    s = sf.make_site(tmp_path)
    s.cohort[2]["bmi"] = 95
    s.scans[3]["patient_id"] = "P999"
    s.write()
    (s.dir / "images" / "S005.nii.gz").write_bytes(b"junk")
    args = ["validate", "--config", str(s.paths["config"]), "--run-dir", str(s.run_dir)]
    assert cli.main(args) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"error: {s.paths['cohort']}, row {s.row('cohort', 2)}, column 'bmi': got '95'; " \
           "expected a value in [12, 80] kg/m2" in lines
    scan_row = s.row("scans", 3)
    assert any(ln.startswith(f"error: {s.paths['scans']}, row {scan_row}, column 'patient_id': got 'P999'")
               for ln in lines)
    assert any(ln.startswith(f"error: {s.paths['scans']}, row {s.row('scans', 5)}, column 'image'") and
               "unreadable NIfTI" in ln for ln in lines)
    assert any(ln.startswith("warning: ") and "P003" in ln for ln in lines)  # P003 lost its scan
    assert lines[-1] == "3 error(s), 1 warning(s) in the site's tables, key and images"
    assert cli.main(args + ["--no-images"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 error(s), 1 warning(s) in the site's tables and key"


def test_cli_validate_warnings_only_exit_zero(tmp_path, capsys):
    s = sf.make_site(tmp_path)
    del s.scans[4]
    s.write()
    assert cli.main(["validate", "--config", str(s.paths["config"]), "--run-dir", str(s.run_dir)]) == 0
    assert "without a scan: P004" in capsys.readouterr().out


def test_cli_validate_unusable_configuration(tmp_path, capsys):
    assert cli.main(["validate"]) == 2
    assert "validate needs --config" in capsys.readouterr().err
    assert cli.main(["validate", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "configuration file not found" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    plain.write_text("profile: quick\n")
    assert cli.main(["validate", "--config", str(plain)]) == 2
    assert "has no 'site' section" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("site:\n  cohort: c.csv\n  scans: s.csv\n")
    assert cli.main(["validate", "--config", str(broken)]) == 2
    assert "site.secret" in capsys.readouterr().err
    twice = tmp_path / "twice.yaml"  # PyYAML alone would keep the second `stages` and drop the first's
    twice.write_text("site:\n  cohort: c.csv\n  scans: s.csv\n  secret: k\nstages:\n  models:\n    n_folds: 3\n"
                     "stages:\n  survival: {}\n")
    assert cli.main(["validate", "--config", str(twice)]) == 2
    assert capsys.readouterr().err == (f"ctac-book: error: {twice}, line 8, column 1: key 'stages' is given twice "
                                       "in one mapping (first on line 5); YAML would keep only the last: write it "
                                       "once\n")


def test_run_refuses_an_invalid_site_before_writing_anything(tmp_path, capsys, monkeypatch):
    s = sf.make_site(tmp_path)
    s.cohort[1]["age"] = 780
    s.write()
    s.paths["secret"].write_text("")
    called = []
    monkeypatch.setattr(runner, "run_stages", lambda *a, **k: called.append(a) or [])
    assert cli.main(["run", "--config", str(s.paths["config"]), "--run-dir", str(s.run_dir)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s) in the site's data" in err and "Traceback" not in err
    assert f"{s.paths['cohort']}, row {s.row('cohort', 1)}, column 'age': got '780'" in err
    assert "an empty file" in err
    assert not s.run_dir.exists() and called == []
    # the default run directory (./runs/<name>) is not created either
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--config", str(s.paths["config"])]) == 2
    assert not (tmp_path / "runs").exists()


def test_run_with_a_valid_site_reaches_the_runner(tmp_path, monkeypatch):
    s = sf.make_site(tmp_path)
    called = []
    monkeypatch.setattr(runner, "run_stages", lambda cfg, run_dir, **k: called.append((cfg, run_dir)) or [])
    args = ["run", "--config", str(s.paths["config"]), "--run-dir", str(s.run_dir)]
    assert cli.main(args) == 0
    ((cfg, run_dir),) = called
    assert cfg["site"]["secret"] == str(s.paths["secret"]) and run_dir == s.run_dir


# -- loading a site's data for a run ---------------------------------------------------------------
def test_load_cohort_pseudonymises_ids_with_the_key_and_adds_the_measured_columns(tmp_path):
    s = sf.make_site(tmp_path)
    cohort = site.load_cohort(s.paths["cohort"], s.paths["secret"], run_dir=s.run_dir)
    assert len(cohort) == sf.N_PATIENTS
    assert cohort["patient_id"].str.fullmatch(r"P-[0-9a-f]{16}").all() and cohort["patient_id"].is_unique
    assert not any(pid in set(cohort["patient_id"]) for pid in (r["patient_id"] for r in s.cohort))
    assert {"cac_score", "eat_volume", "eat_density"} <= set(cohort.columns)
    assert cohort["cac_score"].isna().all() and cohort["age"].dtype.kind == "f"
    # the same key gives the same pseudonyms; another key other ones
    again = site.load_cohort(s.paths["cohort"], s.paths["secret"], run_dir=s.run_dir)
    assert again["patient_id"].tolist() == cohort["patient_id"].tolist()
    other = tmp_path / "other.key"
    other.write_text("f" * 64)
    assert set(site.load_cohort(s.paths["cohort"], other)["patient_id"]).isdisjoint(cohort["patient_id"])


def test_load_cohort_raises_every_problem_and_accepts_declared_site_labels(tmp_path):
    s = sf.make_site(tmp_path)
    s.cohort[1]["age"] = 780
    s.cohort[2]["site"] = "MyHospital"
    s.write()
    with pytest.raises(ValidationError) as err:
        site.load_cohort(s.paths["cohort"], s.paths["secret"])
    msg = str(err.value)
    assert f"row {s.row('cohort', 1)}, column 'age': got '780'" in msg
    assert f"row {s.row('cohort', 2)}, column 'site': got 'MyHospital'" in msg
    s.cohort[1]["age"] = 78
    s.write()
    cohort = site.load_cohort(s.paths["cohort"], s.paths["secret"], site_labels=["MyHospital"])
    assert (cohort["site"] == "MyHospital").sum() == 1


def test_load_cohort_refuses_a_key_inside_the_run_directory(tmp_path):
    s = sf.make_site(tmp_path)
    inside = s.run_dir / "secret.key"
    inside.parent.mkdir(parents=True)
    inside.write_text("a" * 64)
    with pytest.raises(ValueError, match="inside the run directory"):
        site.load_cohort(s.paths["cohort"], inside, run_dir=s.run_dir)


def test_load_scans_uses_the_cohort_pseudonyms_and_checks_patients(tmp_path):
    s = sf.make_site(tmp_path)
    s.scans[2]["cac_score"] = 12.5
    s.write()
    cohort = site.load_cohort(s.paths["cohort"], s.paths["secret"])
    scans = site.load_scans(s.paths["scans"], s.paths["secret"], cohort_ids=cohort["patient_id"])
    assert scans["scan_id"].str.fullmatch(r"S-[0-9a-f]{16}").all()
    assert scans["cac_score"].dtype == float and scans["cac_score"].iloc[2] == 12.5  # read as text, checked, converted
    assert cohort["age"].dtype == float and cohort["death"].dtype.kind == "i"
    assert set(scans["patient_id"]) == set(cohort["patient_id"])
    assert scans["image"].map(lambda p: os.path.isabs(p)).all()  # resolved against the manifest's folder
    s.scans[3]["patient_id"] = "P999"
    s.write()
    with pytest.raises(ValidationError) as err:
        site.load_scans(s.paths["scans"], s.paths["secret"], cohort_ids=cohort["patient_id"])
    msg = str(err.value)
    assert f"row {s.row('scans', 3)}, column 'patient_id'" in msg and "this scan has no patient" in msg
    assert "P999" not in msg  # the message names the pseudonym, not the raw id


def test_site_labels_in_the_configuration(tmp_path):
    s = sf.make_site(tmp_path)
    s.cohort[0]["site"] = "MyHospital"
    s.write()
    assert any(p.column == "site" and p.severity == "error" for p in s.validate(check_images=False))
    text = s.paths["config"].read_text().replace("# labels: [MyHospital]", "labels: [MyHospital]")
    s.paths["config"].write_text(text)
    cfg = s.config()
    assert cfg["site"]["labels"] == ["MyHospital"]
    assert not [p for p in s.validate(check_images=False) if p.severity == "error"]
    assert config.stage_parameters(cfg, "data")["site_labels"] == ["MyHospital"]
    s.paths["config"].write_text(text.replace("labels: [MyHospital]", "labels: MyHospital"))
    with pytest.raises(ValueError, match="site.labels' must be a list of codes"):
        s.config()


def test_manifest_text_columns_hold_declared_codes_only(tmp_path):
    """Free text in `site` or `protocol` is refused, naming file, row, column, value and the allowed codes."""
    s = sf.make_site(tmp_path)
    s.scans[2]["site"] = "Saint Fictitia Heart Institute, Dr Winterbottom"
    s.scans[4]["protocol"] = "CT AC low dose 2019-03-04 MRN1234567"
    s.write()
    errors = {p.column: p for p in s.validate(check_images=False) if p.severity == "error"}
    assert set(errors) == {"site", "protocol"}
    for column, k, value, allowed, key in (
            ("site", 2, "Saint Fictitia Heart Institute, Dr Winterbottom", "'Calgary', 'Yale', 'Columbia', 'Ottawa'",
             "site.labels"),
            ("protocol", 4, "CT AC low dose 2019-03-04 MRN1234567",
             "'low_dose_120kvp', 'low_dose_100kvp', 'ultra_low_dose_120kvp'", "site.protocols")):
        p = errors[column]
        assert (p.file, p.row, p.value) == (str(s.paths["scans"]), s.row("scans", k), repr(value))
        assert allowed in p.expected and key in p.expected
    with pytest.raises(ValidationError, match="column 'site': got 'Saint Fictitia"):
        site.load_scans(s.paths["scans"], s.paths["secret"])

    # the site's own codes, declared in its configuration, pass in the manifest and in the cohort table
    s.scans[2]["site"] = s.cohort[2]["site"] = "MyHospital"
    s.scans[4]["protocol"] = s.cohort[4]["ct_protocol"] = "low_dose_140kvp"
    s.write()
    assert {p.column for p in s.validate(check_images=False) if p.severity == "error"} == {"site", "ct_protocol",
                                                                                           "protocol"}
    text = s.paths["config"].read_text()
    text = text.replace("# labels: [MyHospital]", "labels: [MyHospital]").replace(
        "# protocols: [low_dose_140kvp]", "protocols: [low_dose_140kvp]")
    s.paths["config"].write_text(text)
    cfg = s.config()
    assert not [p for p in s.validate(check_images=False) if p.severity == "error"]
    assert config.stage_parameters(cfg, "segmentation")["site_protocols"] == ["low_dose_140kvp"]
    cohort = site.load_cohort(s.paths["cohort"], s.paths["secret"], site_labels=["MyHospital"],
                              site_protocols=["low_dose_140kvp"])
    scans = site.load_scans(s.paths["scans"], s.paths["secret"], site_labels=["MyHospital"],
                            site_protocols=["low_dose_140kvp"])
    assert cohort.loc[4, "ct_protocol"] == scans.loc[4, "protocol"] == "low_dose_140kvp"
    s.paths["config"].write_text(text.replace("protocols: [low_dose_140kvp]", "protocols: low_dose_140kvp"))
    with pytest.raises(ValueError, match="site.protocols' must be a list of codes"):
        s.config()


def test_load_scans_drops_columns_outside_the_schema_and_names_the_file_by_its_label(tmp_path):
    s = sf.make_site(tmp_path)
    for i, scan in enumerate(s.scans):
        scan["notes"] = f"ZANDERVELT{i:04d}^BRUNO seen by Dr Winterbottom"
    s.scans[3]["cac_score"] = -5
    s.write()
    columns = sf.template_lines(s.paths["scans"])[1] + ["notes"]
    sf.write_table(s.paths["scans"], s.scans, columns)
    with pytest.raises(ValidationError) as err:
        site.load_scans(s.paths["scans"], s.paths["secret"], name="scans.csv")
    assert f"scans.csv, row {s.row('scans', 3)}, column 'cac_score'" in str(err.value)
    assert str(tmp_path) not in str(err.value)  # the label, not the path
    s.scans[3]["cac_score"] = None
    sf.write_table(s.paths["scans"], s.scans, columns)
    scans = site.load_scans(s.paths["scans"], s.paths["secret"])
    assert "notes" not in scans.columns and not scans.astype(str).apply(
        lambda c: c.str.contains("ZANDERVELT")).any().any()
