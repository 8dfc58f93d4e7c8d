"""A corpus of malformed site inputs: each case breaks one thing of a valid site and names the exact problem.

Every case builds the small valid site of ``sitefactory`` (10 patients, NIfTI and DICOM scans, a label
map and a pericardium mask), breaks one thing, runs ``validate_site`` and asserts the problem by its
file, spreadsheet row (data row ``k`` of a table, or None), column and a fragment of its text.
"""

from __future__ import annotations

import gzip
import os
import shutil

import numpy as np
import pytest
import yaml

import sitefactory as sf
from ctac_helpers import site
from ctac_helpers.validate import ValidationError

CASES = {}
WRITTEN = "written"  # returned by the cases that write the tables themselves


def case(name, file, row, column, fragment, severity="error", other_files=False):
    """Register a malformed input: ``row`` is the data row index (0-based) in ``file``, or None."""
    def register(mutate):
        CASES[name] = (mutate, file, row, column, fragment, severity, other_files)
        return mutate
    return register


def set_cell(rows, k, column, value):
    rows[k][column] = value


# -- the cohort table -----------------------------------------------------------------------------
@case("missing_required_column", "cohort.csv", None, "age", "column missing")
def _(s):
    _, header = sf.template_lines(s.paths["cohort"])
    sf.write_table(s.paths["cohort"], s.cohort, [c for c in header if c != "age"])
    return WRITTEN


@case("unknown_column_warning", "cohort.csv", None, "height", "unknown column", severity="warning")
def _(s):
    _, header = sf.template_lines(s.paths["cohort"])
    for r in s.cohort:
        r["height"] = 170
    sf.write_table(s.paths["cohort"], s.cohort, header + ["height"])
    return WRITTEN


@case("repeated_column_name", "cohort.csv", "header", "bmi", "a repeated column name")
def _(s):
    _, header = sf.template_lines(s.paths["cohort"])
    sf.write_table(s.paths["cohort"], s.cohort, header + ["bmi"])
    return WRITTEN


@case("number_given_as_text", "cohort.csv", 2, "age", "a number (float)")
def _(s):
    set_cell(s.cohort, 2, "age", "sixty")


@case("age_in_months", "cohort.csv", 3, "age", "[18, 110] years (the values look like months")
def _(s):
    set_cell(s.cohort, 3, "age", 780)


@case("tpd_as_fraction", "cohort.csv", None, "stress_tpd", "another unit")
def _(s):
    for r in s.cohort:
        r["stress_tpd"] = round(r["stress_tpd"] / 100, 4)


@case("ejection_fraction_as_fraction", "cohort.csv", 4, "stress_ef", "look like fractions")
def _(s):
    set_cell(s.cohort, 4, "stress_ef", 0.62)


@case("cohort_eat_density_offset_1024", "cohort.csv", 5, "eat_density", "shifted by +1024")
def _(s):
    set_cell(s.cohort, 5, "eat_density", 934)


@case("value_out_of_range", "cohort.csv", 6, "bmi", "a value in [12, 80] kg/m2")
def _(s):
    set_cell(s.cohort, 6, "bmi", 95)


@case("unknown_category_label", "cohort.csv", 1, "sex", "one of ['male', 'female']")
def _(s):
    set_cell(s.cohort, 1, "sex", "M")


@case("flag_not_zero_or_one", "cohort.csv", 2, "diabetes", "0 or 1")
def _(s):
    set_cell(s.cohort, 2, "diabetes", 2)


@case("flag_given_as_yes", "cohort.csv", 3, "smoking", "0 or 1 (a flag")
def _(s):
    set_cell(s.cohort, 3, "smoking", "yes")


@case("duplicate_patient_id", "cohort.csv", 10, "patient_id", "a unique patient id")
def _(s):
    s.cohort.append(dict(s.cohort[0]))


@case("followup_zero", "cohort.csv", 7, "followup_years", "a follow-up time > 0")
def _(s):
    set_cell(s.cohort, 7, "followup_years", 0)


@case("followup_negative", "cohort.csv", 8, "followup_years", "a follow-up time > 0")
def _(s):
    set_cell(s.cohort, 8, "followup_years", -1.5)


@case("death_without_time", "cohort.csv", 3, "followup_years", "a time to death for every patient")
def _(s):
    assert s.cohort[3]["death"] == 1
    set_cell(s.cohort, 3, "followup_years", None)


@case("empty_required_cell", "cohort.csv", 9, "peak_hr", "may not be empty")
def _(s):
    set_cell(s.cohort, 9, "peak_hr", None)


@case("row_with_an_extra_cell", "cohort.csv", 5, "(row)", "one per header column")
def _(s):
    s.write()
    lines = s.paths["cohort"].read_text().splitlines()
    k = s.row("cohort", 5) - 1
    lines[k] += ",extra"
    s.paths["cohort"].write_text("\n".join(lines) + "\n")
    return WRITTEN


@case("cohort_not_utf8", "cohort.csv", 4, "(encoding)", "not UTF-8 text")
def _(s):
    s.write()
    s.paths["cohort"].write_bytes(s.paths["cohort"].read_bytes().replace(b"P004", "P\xe904".encode("latin-1")))
    return WRITTEN


@case("cohort_file_missing", "cohort.csv", None, "site.cohort", "no such file")
def _(s):
    s.write()
    s.paths["cohort"].unlink()
    return WRITTEN


@case("cohort_without_rows", "cohort.csv", None, "(rows)", "one row per patient", other_files=True)
def _(s):
    s.cohort = []


# -- the scan manifest ----------------------------------------------------------------------------
@case("scans_missing_required_column", "scans.csv", None, "image", "column missing")
def _(s):
    _, header = sf.template_lines(s.paths["scans"])
    sf.write_table(s.paths["scans"], s.scans, [c for c in header if c != "image"])
    return WRITTEN


@case("scans_unknown_column_warning", "scans.csv", None, "colour", "unknown column", severity="warning")
def _(s):
    _, header = sf.template_lines(s.paths["scans"])
    sf.write_table(s.paths["scans"], s.scans, header + ["colour"])
    return WRITTEN


@case("duplicate_scan_id", "scans.csv", 2, "scan_id", "a unique scan id")
def _(s):
    set_cell(s.scans, 2, "scan_id", "S003")


@case("empty_image_cell", "scans.csv", 4, "image", "may not be empty")
def _(s):
    set_cell(s.scans, 4, "image", None)


@case("negative_cac", "scans.csv", 3, "cac_score", "a value in [0, 20000]")
def _(s):
    set_cell(s.scans, 3, "cac_score", -5)


@case("cac_not_a_number", "scans.csv", 5, "cac_score", "a number")
def _(s):
    set_cell(s.scans, 5, "cac_score", "lots")


@case("eat_density_out_of_range", "scans.csv", 6, "eat_density", "a value in [-190, -30] HU")
def _(s):
    set_cell(s.scans, 6, "eat_density", -10)


@case("eat_density_offset_1024", "scans.csv", 7, "eat_density", "shifted by +1024")
def _(s):
    set_cell(s.scans, 7, "eat_density", 934)


@case("scan_without_patient", "scans.csv", 4, "patient_id", "this scan has no patient")
def _(s):
    set_cell(s.scans, 4, "patient_id", "P999")


@case("patient_without_scan_warning", "scans.csv", None, "patient_id", "without a scan: P005", severity="warning")
def _(s):
    del s.scans[5]


@case("missing_image_file", "scans.csv", 6, "image", "an existing DICOM series folder or NIfTI file")
def _(s):
    set_cell(s.scans, 6, "image", "images/nope.nii.gz")


@case("missing_label_map_file", "scans.csv", 0, "label_map", "an existing NIfTI file")
def _(s):
    set_cell(s.scans, 0, "label_map", "images/nope_labels.nii.gz")


@case("scans_without_rows", "scans.csv", None, "(rows)", "one row per CT scan")
def _(s):
    s.scans = []


# -- the images -----------------------------------------------------------------------------------
@case("corrupt_nifti", "scans.csv", 2, "image", "unreadable NIfTI file")
def _(s):
    (s.dir / "images" / "S002.nii.gz").write_bytes(b"this is not a NIfTI file")


@case("truncated_nifti", "scans.csv", 3, "image", "truncated NIfTI file")
def _(s):
    path = s.dir / "images" / "S003.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))


@case("hu_offset_1024", "scans.csv", 4, "image", "shifted by +1024")
def _(s):
    sf.write_nifti(s.dir / "images" / "S004.nii.gz", sf.ct_array(offset=1024))


@case("too_few_slices", "scans.csv", 5, "image", "4 slice(s); expected at least 8")
def _(s):
    sf.write_nifti(s.dir / "images" / "S005.nii.gz", sf.ct_array()[:4])


@case("two_dimensional_image", "scans.csv", 6, "image", "expected a 3D single-channel CT")
def _(s):
    sf.write_nifti(s.dir / "images" / "S006.nii.gz", sf.ct_array()[0], spacing=sf.SPACING[:2], origin=(0.0, 0.0))


@case("dicom_folder_with_two_series", "scans.csv", sf.DICOM_SCAN, "image", "2 DICOM series found")
def _(s):
    sf.write_dicom_series(s.dir / "images" / "S001", sf.ct_array()[:3], series_uid=sf.STUDY_UID + ".2", first=50)


@case("dicom_mixed_pixel_spacing", "scans.csv", sf.DICOM_SCAN, "image", "spacing [0.9, 0.9] differs")
def _(s):
    folder = s.dir / "images" / "S001"
    (folder / "slice004.dcm").unlink()
    sf.write_dicom_series(folder, sf.ct_array()[3:4], spacing=(0.9, 0.9, 2.5), first=3, z=[3 * 2.5])


@case("dicom_mixed_size", "scans.csv", sf.DICOM_SCAN, "image", "rows 20.0 differs")
def _(s):
    folder = s.dir / "images" / "S001"
    (folder / "slice005.dcm").unlink()
    sf.write_dicom_series(folder, sf.ct_array(shape=(1, 20, 16)), first=4, z=[4 * 2.5])


@case("dicom_mixed_orientation", "scans.csv", sf.DICOM_SCAN, "image", "orientation")
def _(s):
    folder = s.dir / "images" / "S001"
    (folder / "slice006.dcm").unlink()
    sf.write_dicom_series(folder, sf.ct_array()[5:6], first=5, z=[5 * 2.5], orientation="0\\1\\0\\1\\0\\0")


@case("dicom_uneven_slice_spacing", "scans.csv", sf.DICOM_SCAN, "image", "slice gap of 5.00 mm")
def _(s):
    (s.dir / "images" / "S001" / "slice005.dcm").unlink()


@case("label_map_on_another_grid", "scans.csv", 0, "label_map", "grid does not match the CT's (origin")
def _(s):
    arr = np.zeros(sf.SHAPE, np.uint8)
    sf.write_nifti(s.dir / "images" / "S000_labels.nii.gz", arr, origin=(5.0, 0.0, 0.0))


@case("pericardium_on_another_grid", "scans.csv", 0, "pericardium", "grid does not match the CT's (size")
def _(s):
    sf.write_nifti(s.dir / "images" / "S000_pericardium.nii.gz", np.zeros((12, 16, 16), np.uint8))


@case("unreadable_label_map", "scans.csv", 0, "label_map", "unreadable label map")
def _(s):
    (s.dir / "images" / "S000_labels.nii.gz").write_bytes(b"\x00" * 100)


@case("truncated_pericardium_mask", "scans.csv", 0, "pericardium", "truncated pericardium")
def _(s):
    path = s.dir / "images" / "S000_pericardium.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-200]))


@case("non_integer_label_map", "scans.csv", 0, "label_map", "label values must be integers")
def _(s):
    sf.write_nifti(s.dir / "images" / "S000_labels.nii.gz", np.full(sf.SHAPE, 0.5, np.float32))


# -- the secret key -------------------------------------------------------------------------------
@case("secret_missing", "secret.key", None, "site.secret", "no such file")
def _(s):
    s.paths["secret"].unlink()


@case("secret_empty", "secret.key", None, "site.secret", "an empty file")
def _(s):
    s.paths["secret"].write_text("\n")


@case("secret_too_short", "secret.key", None, "site.secret", "at least 16 bytes")
def _(s):
    s.paths["secret"].write_text("abc123\n")


@case("secret_inside_run_directory", "secret.key", None, "site.secret", "inside the run directory")
def _(s):
    s.run_dir.mkdir(parents=True)
    shutil.move(s.paths["secret"], s.run_dir / "secret.key")
    cfg = yaml.safe_load(s.paths["config"].read_text())
    cfg["site"]["secret"] = str(s.run_dir / "secret.key")
    s.paths["config"].write_text(yaml.safe_dump(cfg))


@case("secret_readable_by_others_warning", "secret.key", None, "site.secret", "chmod 600", severity="warning")
def _(s):
    os.chmod(s.paths["secret"], 0o644)


def _find(problems, s, file, row, column, fragment, severity):
    if row == "header":
        row = s.header_row(file.split(".")[0])
    elif row is not None:
        row = s.row(file.split(".")[0], row)
    return [p for p in problems if os.path.basename(p.file) == file and p.row == row and p.column == column
            and p.severity == severity and fragment in str(p)]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30


def test_a_clean_site_has_no_problems(tmp_path):
    s = sf.make_site(tmp_path)
    assert s.validate() == []
    assert site.require_valid_site(s.config(), run_dir=s.run_dir) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_is_named(tmp_path, name):
    mutate, file, row, column, fragment, severity, other_files = CASES[name]
    s = sf.make_site(tmp_path)
    if mutate(s) != WRITTEN:
        s.write()
    problems = s.validate()
    found = _find(problems, s, file, row, column, fragment, severity)
    assert found, f"expected a {severity} {file} row {row} column {column!r} with {fragment!r}; got:\n" + \
        "\n".join(map(str, problems))
    errors = [p for p in problems if p.severity == "error"]
    if not other_files:  # one broken thing: no error elsewhere
        assert {os.path.basename(p.file) for p in errors} <= {file}, "\n".join(map(str, errors))
    if severity == "error":
        with pytest.raises(ValidationError) as exc:
            site.require_valid_site(s.config(), run_dir=s.run_dir)
        assert fragment in str(exc.value)
    else:
        assert not errors, "\n".join(map(str, errors))

