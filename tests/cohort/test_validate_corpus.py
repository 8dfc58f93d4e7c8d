"""A corpus of malformed site inputs: each case breaks one thing of a valid site and names the exact problem.

Every case copies the small valid site of ``sitefactory`` (10 patients, NIfTI and DICOM scans, a label
map and a pericardium mask; built once per module), breaks one thing, runs ``validate_site`` and asserts
the problem by its file, row (data row ``k`` of a table, ``"header"``, a line of ``site.yaml`` or None),
column (or key) and a fragment of its text. The valid variants at the end (reordered columns, CRLF
line ends, a byte-order mark, ...) must pass without a single problem.
"""

from __future__ import annotations

import csv
import functools
import gzip
import os
import shutil
import zipfile

import numpy as np
import pytest
import yaml

import sitefactory as sf
from ctac_helpers.pipeline import site
from ctac_helpers.cohort.validate import ValidationError

CASES = {}
WRITTEN = "written"  # returned by the cases that write the tables themselves


def case(name, file, row, column, fragment, severity="error", other_files=False, absent=None):
    """Register a malformed input.

    ``row`` is the data row index (0-based) in ``file``, ``"header"``, a function of the site giving a
    line of ``site.yaml``, or None; ``absent``, a text no problem may contain.
    """
    def register(mutate):
        assert name not in CASES, name
        CASES[name] = (mutate, file, row, column, fragment, severity, other_files, absent)
        return mutate
    return register


def set_cell(rows, k, column, value):
    rows[k][column] = value


def rewrite(s, role, **fmt):
    """Write table ``role`` of ``s`` with the format ``fmt`` (delimiter, newline, quoting), the other as usual."""
    s.write()
    sf.write_table(s.paths[role], getattr(s, role), **fmt)
    return WRITTEN


def text_with(s, role, **fmt):
    """The text ``role`` would be written with, for cases that then damage its bytes."""
    s.write()
    comments, header = sf.template_lines(s.paths[role])
    return sf.table_text(comments, getattr(s, role), header, **fmt)


def add_column(s, role, name, value):
    """Write table ``role`` with one more column ``name`` holding ``value(row)``."""
    _, header = sf.template_lines(s.paths[role])
    for r in getattr(s, role):
        r[name] = value(r)
    sf.write_table(s.paths[role], getattr(s, role), header + [name])
    return WRITTEN


def rename_column(s, role, old, new):
    """Write table ``role`` with column ``old`` named ``new``."""
    _, header = sf.template_lines(s.paths[role])
    for r in getattr(s, role):
        r[new] = r.pop(old)
    sf.write_table(s.paths[role], getattr(s, role), [new if c == old else c for c in header])
    return WRITTEN


def set_stage_parameter(s, stage, name, value):
    cfg = yaml.safe_load(s.paths["config"].read_text())
    cfg.setdefault("stages", {}).setdefault(stage, {})[name] = value
    s.paths["config"].write_text(yaml.safe_dump(cfg, sort_keys=False))


def line_of(key):
    """The line of ``key:`` in the site's ``site.yaml`` (1-based)."""
    def find(s):
        lines = s.paths["config"].read_text().splitlines()
        return next(i for i, ln in enumerate(lines, start=1) if ln.strip().startswith(f"{key}:"))
    return find


# -- the cohort table -----------------------------------------------------------------------------
@case("missing_required_column", "cohort.csv", None, "age", "column missing")
def _(s):
    _, header = sf.template_lines(s.paths["cohort"])
    sf.write_table(s.paths["cohort"], s.cohort, [c for c in header if c != "age"])
    return WRITTEN


@case("unknown_column_warning", "cohort.csv", None, "height", "unknown column", severity="warning")
def _(s):
    return add_column(s, "cohort", "height", lambda r: 170)


@case("repeated_column_name", "cohort.csv", "header", "bmi", "a repeated column name")
def _(s):
    return add_column(s, "cohort", "bmi", lambda r: r["bmi"])


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


@case("cohort_path_is_a_folder", "cohort.csv", None, "site.cohort",
      "got a folder; expected a CSV file: the table itself, not the folder that holds it")
def _(s):
    s.write()
    s.paths["cohort"].unlink()
    s.paths["cohort"].mkdir()
    (s.paths["cohort"] / "cohort.csv").write_text("patient_id\n")
    return WRITTEN


@case("cohort_gzip_compressed", "cohort.csv", None, "(format)",
      "got a gzip-compressed file (.gz), not text; expected the table itself: decompress it (gunzip)")
def _(s):
    s.write()
    s.paths["cohort"].write_bytes(gzip.compress(s.paths["cohort"].read_bytes()))
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
    return add_column(s, "scans", "colour", lambda r: None)


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


@case("image_path_with_windows_separators", "scans.csv", 6, "image",
      "(a Windows path: separate folders with '/', which every system reads, not '\\')")
def _(s):
    assert s.scans[6]["image"].startswith("images/")
    set_cell(s.scans, 6, "image", s.scans[6]["image"].replace("/", "\\"))


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


# -- the CSV files themselves: dialect, encoding, spreadsheet exports --------------------------------
@case("semicolon_delimited_cohort", "cohort.csv", "header", "(delimiter)", "a semicolon-delimited file")
def _(s):
    return rewrite(s, "cohort", delimiter=";")


@case("tab_delimited_cohort", "cohort.csv", "header", "(delimiter)", "a tab-delimited file")
def _(s):
    return rewrite(s, "cohort", delimiter="\t")


@case("semicolon_delimited_scans", "scans.csv", "header", "(delimiter)", "save as 'CSV UTF-8 (Comma delimited)'")
def _(s):
    return rewrite(s, "scans", delimiter=";")


@case("excel_workbook_saved_as_csv", "cohort.csv", None, "(format)", "an Excel workbook (.xlsx)")
def _(s):
    s.write()
    with zipfile.ZipFile(s.paths["cohort"], "w") as z:  # a workbook renamed to .csv
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return WRITTEN


@case("excel_97_workbook_saved_as_csv", "cohort.csv", None, "(format)", "an Excel 97-2003 workbook (.xls)")
def _(s):
    s.write()
    s.paths["cohort"].write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504)
    return WRITTEN


@case("excel_unicode_text_utf16", "cohort.csv", None, "(encoding)", "UTF-16 text (a byte-order mark")
def _(s):
    s.paths["cohort"].write_bytes(text_with(s, "cohort", delimiter="\t").encode("utf-16"))
    return WRITTEN


@case("utf16_without_byte_order_mark", "scans.csv", None, "(encoding)", "UTF-16 text without a byte-order mark")
def _(s):
    s.paths["scans"].write_bytes(text_with(s, "scans").encode("utf-16-le"))
    return WRITTEN


# the row of a file whose bytes are not UTF-8 text is named from the raw lines; these cases say which
@case("excel_legacy_csv_windows_1252", "cohort.csv", 6, "(encoding)", "('é' in Windows-1252")
def _(s):
    set_cell(s.cohort, 6, "site", "Montréal")
    s.paths["cohort"].write_bytes(text_with(s, "cohort").encode("cp1252"))
    return WRITTEN


@case("nul_bytes_in_a_row", "cohort.csv", 3, "(encoding)", "NUL byte(s)")
def _(s):
    s.paths["cohort"].write_bytes(text_with(s, "cohort").encode().replace(b"P003", b"P0\x0003"))
    return WRITTEN


@case("cell_longer_than_the_csv_field_limit", "cohort.csv", 4, "(cell)", "a cell of more than 131072 characters")
def _(s):
    set_cell(s.cohort, 4, "race", "x" * 200_000)


@case("unmatched_double_quote", "cohort.csv", 2, "(row)", "taking in the rows below")
def _(s):
    s.write()
    lines = s.paths["cohort"].read_text().split("\n")
    k = s.row("cohort", 2) - 1
    lines[k] = lines[k].replace(f",{s.cohort[2]['age']},", f',"{s.cohort[2]["age"]},', 1)
    s.paths["cohort"].write_text("\n".join(lines))
    return WRITTEN


@case("empty_file", "cohort.csv", None, "site.cohort", "no header line")
def _(s):
    s.write()
    s.paths["cohort"].write_bytes(b"")
    return WRITTEN


@case("repeated_column_in_another_case", "cohort.csv", "header", "Age", "differ only in case or spaces")
def _(s):
    return add_column(s, "cohort", "Age", lambda r: r["age"])


@case("column_name_with_a_space", "cohort.csv", "header", " bmi", "'bmi' (column names are exact")
def _(s):
    return rename_column(s, "cohort", "bmi", " bmi")


@case("column_name_in_capitals", "scans.csv", "header", "Image", "'image' (column names are exact")
def _(s):
    return rename_column(s, "scans", "image", "Image")


@case("column_without_a_name_holding_values", "cohort.csv", "header", "(column 51)", "a column without a name")
def _(s):
    assert len(sf.template_lines(s.paths["cohort"])[1]) == 50
    return add_column(s, "cohort", "", lambda r: "note")


# -- ids: spaces, case, words for missing values, spreadsheet damage ---------------------------------
@case("patient_id_NA_is_an_id_not_missing", "cohort.csv", 7, "patient_id", "got 'NA'; expected a patient id; it is "
      "kept as this text", severity="warning")
def _(s):
    set_cell(s.cohort, 7, "patient_id", "NA")
    set_cell(s.scans, 7, "patient_id", "NA")


@case("patient_id_NULL_shown_as_written", "cohort.csv", 8, "patient_id", "got 'NULL'", severity="warning")
def _(s):
    set_cell(s.cohort, 8, "patient_id", "NULL")
    set_cell(s.scans, 8, "patient_id", "NULL")


@case("patient_id_pandas_NA_shown_as_written", "scans.csv", 9, "patient_id", "got '<NA>'", severity="warning")
def _(s):
    set_cell(s.cohort, 9, "patient_id", "<NA>")
    set_cell(s.scans, 9, "patient_id", "<NA>")


# -- cell values: words for missing values, units and marks in number cells, dates, codings ---------------------
@case("followup_given_in_days", "cohort.csv", 0, "followup_years", "look like days: give years")
def _(s):
    for r in s.cohort:
        r["followup_years"] = round(r["followup_years"] * 365.25)


@case("sex_coded_two_ways", "cohort.csv", 2, "sex", "an abbreviation of 'male'? write 'male'; the column also has "
      "full labels")
def _(s):
    set_cell(s.cohort, 2, "sex", "M")
    set_cell(s.cohort, 3, "sex", "F")


@case("category_with_a_trailing_space", "cohort.csv", 7, "stress_type", "(write 'pharmacological'")
def _(s):
    assert s.cohort[7]["stress_type"] == "pharmacological"
    set_cell(s.cohort, 7, "stress_type", "pharmacological ")


# -- one cell each: (name, table, data row, column, value written, fragment of the problem, options) -----
CELL_CASES = [
    # ids: spaces, case, spreadsheet damage (a changed cohort id leaves its scan without a patient: named too)
    ("patient_id_with_a_trailing_space", "cohort", 3, "patient_id", "P003 ",
     "without leading or trailing spaces", {"other_files": True}),
    ("scan_names_its_patient_in_another_case", "scans", 4, "patient_id", "p004",
     "(the cohort table has 'P004': ids must match exactly", {}),
    ("two_patient_ids_differ_only_in_case", "cohort", 5, "patient_id", "p002",
     "has 'P002', which differs only in case", {"other_files": True}),
    ("scan_id_with_a_leading_space", "scans", 6, "scan_id", " S006",
     "a scan id without leading or trailing spaces", {}),
    ("patient_id_in_scientific_notation", "cohort", 2, "patient_id", "1.23457E+11",
     "scientific notation", {"other_files": True}),
    ("patient_id_is_a_spreadsheet_error", "cohort", 1, "patient_id", "#N/A",
     "not a spreadsheet's error value", {"other_files": True}),
    # words for missing values, shown as written
    ("NULL_in_a_required_number", "cohort", 4, "peak_hr", "NULL",
     "got 'NULL'; expected a number (float) (this column needs a value in every row", {}),
    ("NA_in_an_optional_number", "cohort", 5, "rest_tpd", "NA",
     "got 'NA'; expected a number (float) (for a missing value leave the cell empty", {}),
    ("pandas_NA_in_an_optional_category", "cohort", 6, "race", "<NA>", "got '<NA>'; expected one of", {}),
    # numbers written the way a person or a spreadsheet writes them
    ("decimal_comma", "cohort", 2, "bmi", "27,5", "(a decimal comma: write 27.5)", {}),
    ("percent_sign_in_a_number", "cohort", 3, "stress_ef", "62%", "(write 62 without '%')", {}),
    ("number_with_its_unit", "cohort", 4, "age", "61 years", "(write 61 without the unit 'years'", {}),
    ("infinite_number", "cohort", 5, "bmi", "inf", "a finite number", {}),
    ("spreadsheet_error_in_a_number", "cohort", 6, "peak_sbp", "#DIV/0!", "a spreadsheet's error value", {}),
    ("followup_given_as_a_future_date", "cohort", 6, "followup_years", "2099-05-01",
     "(a date in the future; this column holds a number in years", {}),
    ("followup_given_as_a_date", "cohort", 5, "followup_years", "15/03/2019",
     "(a date; this column holds a number", {}),
    ("cac_with_a_decimal_comma", "scans", 2, "cac_score", "12,5", "(a decimal comma: write 12.5)", {}),
    ("cac_not_finite", "scans", 3, "cac_score", "-inf", "a finite number", {}),
    # labels and flags
    ("sex_in_capitals", "cohort", 4, "sex", "Male", "(write 'male': labels are exact", {}),
    ("sex_as_a_numeric_code", "cohort", 5, "sex", "1", "(a numeric code: write the label itself)", {}),
    ("flag_given_as_TRUE", "cohort", 8, "death", "TRUE", "(a flag: not yes/no or true/false)", {}),
]


def _set_one_cell(s, role, k, column, value):
    set_cell(getattr(s, role), k, column, value)


for _name, _role, _k, _column, _value, _fragment, _options in CELL_CASES:
    case(_name, f"{_role}.csv", _k, _column, _fragment, **_options)(
        functools.partial(_set_one_cell, role=_role, k=_k, column=_column, value=_value))


# -- paths: empty folders, shared images -----------------------------------------------------------
@case("image_is_an_empty_folder", "scans.csv", 5, "image", "(an empty folder)")
def _(s):
    (s.dir / "images" / "S005_dicom").mkdir()
    set_cell(s.scans, 5, "image", "images/S005_dicom")


@case("label_map_is_an_empty_folder", "scans.csv", 0, "label_map", "(an empty folder)")
def _(s):
    (s.dir / "images" / "S000_masks").mkdir()
    set_cell(s.scans, 0, "label_map", "images/S000_masks")


@case("image_folder_without_dicom_files", "scans.csv", 6, "image", "no DICOM series found in this folder")
def _(s):
    folder = s.dir / "images" / "S006_export"
    folder.mkdir()
    (folder / "readme.txt").write_text("exported from the PACS\n")
    set_cell(s.scans, 6, "image", "images/S006_export")


@case("two_scans_share_one_image", "scans.csv", 3, "image", "names the same image")
def _(s):
    set_cell(s.scans, 3, "image", s.scans[2]["image"])


@case("label_map_is_the_ct_itself", "scans.csv", 0, "label_map", "not the scan's CT")
def _(s):
    set_cell(s.scans, 0, "label_map", s.scans[0]["image"])


# -- CT voxels --------------------------------------------------------------------------------------
def _float_ct(**kwargs):
    return sf.ct_array(**kwargs).astype(np.float32)


@case("ct_with_slices_of_nan", "scans.csv", 2, "image", "768 NaN voxel(s) in 3 of 10 slices (slice 4-6")
def _(s):
    arr = _float_ct()
    arr[3:6] = np.nan
    sf.write_nifti(s.dir / "images" / "S002.nii.gz", arr)


@case("ct_all_nan", "scans.csv", 3, "image", "every voxel is NaN", absent="1024")
def _(s):
    sf.write_nifti(s.dir / "images" / "S003.nii.gz", np.full(sf.SHAPE, np.nan, np.float32))


@case("ct_with_infinite_voxels", "scans.csv", 4, "image", "infinite voxel(s)")
def _(s):
    arr = _float_ct()
    arr[5, 2, 2] = np.inf
    sf.write_nifti(s.dir / "images" / "S004.nii.gz", arr)


@case("ct_constant_volume", "scans.csv", 5, "image", "every voxel is 0 (a constant volume", absent="1024")
def _(s):
    sf.write_nifti(s.dir / "images" / "S005.nii.gz", np.zeros(sf.SHAPE, np.int16))


# -- label maps and masks ---------------------------------------------------------------------------
def _labels():
    arr = np.zeros(sf.SHAPE, np.int16)
    arr[3:6, 9:13, 5:10] = 51  # heart
    return arr


@case("label_values_outside_the_class_map", "scans.csv", 0, "label_map", "label values outside the class map (200)")
def _(s):
    arr = _labels()
    arr[0, 0, 0] = 200
    sf.write_nifti(s.dir / "images" / "S000_labels.nii.gz", arr)


@case("negative_label_values", "scans.csv", 0, "label_map", "negative label values (-1)")
def _(s):
    arr = _labels()
    arr[1, 1, 1] = -1
    sf.write_nifti(s.dir / "images" / "S000_labels.nii.gz", arr)


@case("empty_label_map", "scans.csv", 0, "label_map", "an empty label map (every voxel 0)")
def _(s):
    sf.write_nifti(s.dir / "images" / "S000_labels.nii.gz", np.zeros(sf.SHAPE, np.uint8))


@case("label_map_without_a_heart", "scans.csv", 0, "label_map", "no heart (class 51 'heart' has no voxel)",
      severity="warning")
def _(s):
    arr = _labels()
    arr[arr == 51] = 52  # aorta only
    sf.write_nifti(s.dir / "images" / "S000_labels.nii.gz", arr.astype(np.uint8))


@case("mask_folder_without_a_heart", "scans.csv", 0, "label_map", "a heart, to measure CAC and EAT on this scan",
      severity="warning")
def _(s):
    folder = s.dir / "images" / "S000_masks"
    sf.write_nifti(folder / "aorta.nii.gz", (_labels() > 0).astype(np.uint8))
    set_cell(s.scans, 0, "label_map", "images/S000_masks")


@case("empty_pericardium_mask", "scans.csv", 0, "pericardium", "an empty mask (every voxel 0)")
def _(s):
    sf.write_nifti(s.dir / "images" / "S000_pericardium.nii.gz", np.zeros(sf.SHAPE, np.uint8))


@case("negative_pericardium_mask", "scans.csv", 0, "pericardium", "negative label values (-1)")
def _(s):
    sf.write_nifti(s.dir / "images" / "S000_pericardium.nii.gz", -(_labels() > 0).astype(np.int16))


# -- stage parameters in site.yaml ------------------------------------------------------------------
@case("n_folds_three", "site.yaml", line_of("n_folds"), "stages.models.n_folds",
      "got 'three'; expected an integer, at least 2 (05_models.ipynb declares n_folds: int)")
def _(s):
    set_stage_parameter(s, "models", "n_folds", "three")


@case("n_resamples_many", "site.yaml", line_of("n_resamples"), "stages.survival.n_resamples",
      "got 'many'; expected an integer, at least 1 (07_survival_nri.ipynb declares n_resamples: int)")
def _(s):
    set_stage_parameter(s, "survival", "n_resamples", "many")


@case("n_folds_not_a_whole_number", "site.yaml", line_of("n_folds"), "stages.models.n_folds",
      "got 5.5; expected an integer")
def _(s):
    set_stage_parameter(s, "models", "n_folds", 5.5)


@case("confidence_level_in_percent", "site.yaml", line_of("level"), "stages.subgroups.level",
      "got 95; expected a number, more than 0 and less than 1")
def _(s):
    set_stage_parameter(s, "subgroups", "level", 95)


@case("unknown_choice", "site.yaml", line_of("features"), "stages.models.features",
      "got 'images'; expected one of 'synthetic', 'imaging'")
def _(s):
    set_stage_parameter(s, "models", "features", "images")


@case("list_of_the_wrong_length", "site.yaml", line_of("phantom_shape"), "stages.segmentation.phantom_shape",
      "expected a list of 3 integers, each at least 8")
def _(s):
    set_stage_parameter(s, "segmentation", "phantom_shape", [64, 192])


@case("flag_parameter_given_as_a_number", "site.yaml", line_of("compare_32"), "stages.models.compare_32",
      "got 1; expected true or false")
def _(s):
    set_stage_parameter(s, "models", "compare_32", 1)


@case("parameter_not_declared", "site.yaml", line_of("n_fold"), "stages.models.n_fold",
      "not declared in the parameters cell of 05_models.ipynb")
def _(s):
    set_stage_parameter(s, "models", "n_fold", 5)


# -- valid variants: each must pass without a single problem ---------------------------------------
VALID = {}


def valid(name):
    def register(mutate):
        assert name not in VALID, name
        VALID[name] = mutate
        return mutate
    return register


@valid("reordered_columns")
def _(s):
    for role in ("cohort", "scans"):
        _, header = sf.template_lines(s.paths[role])
        sf.write_table(s.paths[role], getattr(s, role), header[::-1])
    return WRITTEN


@valid("crlf_line_ends")
def _(s):
    s.write()
    for role in ("cohort", "scans"):
        sf.write_table(s.paths[role], getattr(s, role), newline="\r\n")
    return WRITTEN


@valid("byte_order_mark")
def _(s):
    s.write()
    for role in ("cohort", "scans"):
        s.paths[role].write_bytes(b"\xef\xbb\xbf" + s.paths[role].read_bytes())
    return WRITTEN


@valid("byte_order_mark_crlf_and_no_comment_lines")
def _(s):  # a spreadsheet's 'CSV UTF-8' export of the table without the template's '#' lines
    for role in ("cohort", "scans"):
        _, header = sf.template_lines(s.paths[role])
        text = sf.table_text([], getattr(s, role), header, newline="\r\n")
        s.paths[role].write_bytes(b"\xef\xbb\xbf" + text.encode())
    return WRITTEN


@valid("every_cell_quoted")
def _(s):
    s.write()
    sf.write_table(s.paths["cohort"], s.cohort, quoting=csv.QUOTE_ALL)
    return WRITTEN


@valid("trailing_empty_columns_and_rows")
def _(s):  # what a spreadsheet leaves after cells were cleared
    s.write()
    lines = s.paths["cohort"].read_text().splitlines()
    header_at = s.header_row("cohort") - 1
    lines = lines[:header_at] + [ln + ",,," for ln in lines[header_at:]] + [",,,,", ""]
    s.paths["cohort"].write_text("\n".join(lines) + "\n")
    return WRITTEN


@valid("blank_lines_between_rows")
def _(s):
    s.write()
    text = s.paths["scans"].read_text().replace("\nS003,", "\n\n\nS003,")
    s.paths["scans"].write_text(text)
    return WRITTEN


@valid("optional_columns_left_out")
def _(s):
    _, header = sf.template_lines(s.paths["cohort"])
    sf.write_table(s.paths["cohort"], s.cohort, [c for c in header if c not in ("race", "rest_tpd", "image_quality")])
    _, header = sf.template_lines(s.paths["scans"])
    sf.write_table(s.paths["scans"], s.scans, ["scan_id", "patient_id", "image"] + [
        c for c in header if c in ("label_map", "pericardium")])
    return WRITTEN


@valid("no_heart_but_the_site_gives_cac_and_eat")
def _(s):
    arr = np.zeros(sf.SHAPE, np.uint8)
    arr[3:6, 9:13, 5:10] = 52  # aorta only: nothing is measured on this scan
    sf.write_nifti(s.dir / "images" / "S000_labels.nii.gz", arr)
    s.scans[0].update(cac_score=12.5, eat_volume=80, eat_density=-85)


@valid("mask_folder_with_a_heart")
def _(s):
    labels = np.zeros(sf.SHAPE, np.uint8)
    labels[3:6, 9:13, 5:10] = 1
    sf.write_nifti(s.dir / "images" / "S000_masks" / "heart.nii.gz", labels)
    s.scans[0]["label_map"] = "images/S000_masks"


@valid("ids_with_leading_zeros_and_numbers_with_spaces")
def _(s):
    for k, (c, sc) in enumerate(zip(s.cohort, s.scans)):
        c["patient_id"] = sc["patient_id"] = f"00{k}"
    s.cohort[0]["age"] = f" {s.cohort[0]['age']} "


@valid("stage_parameters_of_the_right_types")
def _(s):
    set_stage_parameter(s, "models", "n_folds", 5)
    set_stage_parameter(s, "subgroups", "level", 0.9)
    set_stage_parameter(s, "survival", "horizon_years", 3)  # an integer where a number is declared
    set_stage_parameter(s, "segmentation", "phantom_shape", [32, 96, 96])


# -- the tests --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The valid site, built once: each case breaks a copy of it."""
    return sf.make_site(tmp_path_factory.mktemp("template"))


def _find(problems, s, file, row, column, fragment, severity):
    if row == "header":
        row = s.header_row(file.split(".")[0])
    elif callable(row):
        row = row(s)
    elif row is not None:
        row = s.row(file.split(".")[0], row)
    return [p for p in problems if os.path.basename(p.file) == file and p.row == row and p.column == column
            and p.severity == severity and fragment in str(p)]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len(VALID) >= 10


def test_a_clean_site_has_no_problems(template, tmp_path):
    s = sf.copy_site(template, tmp_path)
    assert s.validate() == []
    assert site.require_valid_site(s.config(), run_dir=s.run_dir) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_is_named(template, tmp_path, name):
    mutate, file, row, column, fragment, severity, other_files, absent = CASES[name]
    s = sf.copy_site(template, tmp_path)
    if mutate(s) != WRITTEN:
        s.write()
    problems = s.validate()
    found = _find(problems, s, file, row, column, fragment, severity)
    assert found, f"expected a {severity} {file} row {row} column {column!r} with {fragment!r}; got:\n" + \
        "\n".join(map(str, problems))
    assert "nan" not in found[0].value.split("'")[0], found[0]  # values as written, never pandas' nan
    if absent is not None:
        assert not [p for p in problems if absent in str(p)], "\n".join(map(str, problems))
    errors = [p for p in problems if p.severity == "error"]
    if not other_files:  # one broken thing: no error elsewhere
        assert {os.path.basename(p.file) for p in errors} <= {file}, "\n".join(map(str, errors))
    if severity == "error":
        with pytest.raises(ValidationError) as exc:
            site.require_valid_site(s.config(), run_dir=s.run_dir, config_file=s.paths["config"])
        assert fragment in str(exc.value)
    else:
        assert not errors, "\n".join(map(str, errors))


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_variant_passes(template, tmp_path, name):
    s = sf.copy_site(template, tmp_path)
    if VALID[name](s) != WRITTEN:
        s.write()
    problems = s.validate()
    assert problems == [], "\n".join(map(str, problems))
