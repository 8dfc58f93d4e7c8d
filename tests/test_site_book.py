"""The whole book on a site's own data: the example site, run and built as a new user would.

``ctac-book example-site`` writes 200 made-up patients whose cohort table, scan manifest and DICOM
headers carry hospital-like identifiers (record numbers, accession numbers, names, birth dates, the
institution, the referring physician, study dates). The book is validated, run and built from them;
then every file of the run directory and of the built book is searched for every identifier. One scan's
label map has lost its heart, as a real site's can: the book must exclude that scan with its reason and
analyse the other patients.
"""

from __future__ import annotations

import gzip
import html as htmllib
import json
import re

import pandas as pd
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk
import yaml

from ctac_helpers.pipeline import cli
from ctac_helpers.pipeline import example_site
from ctac_helpers.core import manifest
from ctac_helpers.core.stages import STAGES

pytestmark = pytest.mark.slow

# A coarse grid (8 mm voxels) keeps 200 scans to a few minutes on two cores.
SHAPE = (32, 64, 64)
SPACING = (7.8, 7.8, 10.0)
# The scan whose label map loses its heart (index into the example site's scans; no Agatston score or
# pericardium mask of the site's own, so CAC and EAT both need the heart).
HEARTLESS = 1


def _texts(path) -> list[str]:
    """The text a file holds, in every form an identifier could hide in."""
    data = path.read_bytes()
    out = [data.decode("latin-1")]
    if path.name.endswith(".gz"):
        out.append(gzip.decompress(data).decode("latin-1"))
    if path.suffix == ".parquet":
        # pages may be compressed: read the values back, column names and metadata included
        table = pq.read_table(path)
        out.append(json.dumps(table.schema.to_string()))
        out.append(table.to_pandas().astype(str).to_csv())
    return out


# Characters that continue a token, base64's included: an identifier is found only as a whole token,
# so an 8-digit birth date does not "match" inside a float's digits or an embedded PNG's base64.
_TOKEN = "A-Za-z0-9.+/"


def find_identifiers(roots, needles: list[str]) -> list[tuple[str, str]]:
    """(file, identifier) for every identifier found, case-insensitively, under ``roots``.

    Single-token identifiers (record numbers, dates, surname tokens) must appear as a whole token;
    the others (names with ``^`` or spaces) anywhere.
    """
    simple = {n.lower(): n for n in needles if re.fullmatch(r"[A-Za-z0-9]+", n)}
    other = {n.lower(): n for n in needles if n.lower() not in simple}
    hits = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            text = "\n".join(_texts(path)).lower()
            tokens = {t.strip(".") for t in re.split(f"[^{_TOKEN}]+", text)}
            found = {simple[t] for t in tokens & simple.keys()} | {n for low, n in other.items() if low in text}
            hits += [(str(path), n) for n in sorted(found)]
    return hits


def _needles(ids: pd.DataFrame) -> list[str]:
    # full names and the unique surname token; a first name alone identifies no one
    names = [part for name in ids["name"] for part in (name, name.split("^")[0])]
    return sorted({*ids["patient_id"], *ids["scan_id"], *names, *ids["birth_date"], *ids["study_date"],
                   *ids["institution"], *ids["physician"], *ids["physician"].str.split("^").sum()})


def test_the_search_finds_planted_identifiers(tmp_path):
    """The privacy check can fail: an identifier in a compressed parquet, a gzip or plain text is found."""
    (tmp_path / "a").mkdir()
    pd.DataFrame({"patient_id": ["MRN1234567"] * 50, "x": range(50)}).to_parquet(
        tmp_path / "a" / "t.parquet", compression="zstd")
    (tmp_path / "a" / "img.nii.gz").write_bytes(gzip.compress(b"header ZANDERVELT0001^BRUNO"))
    (tmp_path / "a" / "page.html").write_text("<p>Saint Fictitia Heart Institute</p>")
    (tmp_path / "a" / "clean.txt").write_text("P-0123456789abcdef")
    hits = find_identifiers([tmp_path], ["MRN1234567", "zandervelt0001", "SAINT FICTITIA HEART INSTITUTE",
                                         "ACC99999999"])
    assert sorted(h[1] for h in hits) == ["MRN1234567", "SAINT FICTITIA HEART INSTITUTE", "zandervelt0001"]


def remove_heart(path) -> None:
    """Rewrite a label map without its heart (the voxels become background)."""
    labels = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(labels)
    assert (arr == manifest.structure_id("heart")).any()
    arr[arr == manifest.structure_id("heart")] = 0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(labels)
    sitk.WriteImage(out, str(path), True)


@pytest.fixture(scope="module")
def site_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("sitebook")
    made = example_site.write_example_site(root / "mysite", shape=SHAPE, spacing=SPACING)
    # shorter bootstraps and no 32-feature refit: the test is about the data path, not the statistics
    cfg = yaml.safe_load(made.paths["config"].read_text())
    cfg["stages"]["models"].update(n_resamples=50, compare_32=False)
    cfg["stages"]["survival"].update(n_resamples=50)
    made.paths["config"].write_text(yaml.safe_dump(cfg, sort_keys=False))
    config = str(made.paths["config"])
    run_dir, out = root / "runs" / "mysite", root / "book"
    assert cli.main(["validate", "--config", config, "--run-dir", str(run_dir)]) == 0
    remove_heart(made.paths["labels"] / f"scan{HEARTLESS + 1:04d}_labels.nii.gz")
    assert cli.main(["run", "-q", "--config", config, "--run-dir", str(run_dir)]) == 0
    assert cli.main(["build", "-q", "--config", config, "--run-dir", str(run_dir), "--out", str(out)]) == 0
    return made, run_dir, out


def test_example_site_identifiers_are_in_its_files(site_book):
    """The example site's own files do carry the identifiers (so their absence below means something)."""
    made, _, _ = site_book
    ids = made.identifiers
    cohort = made.paths["cohort"].read_text()
    assert all(mrn in cohort for mrn in ids["patient_id"])
    first = sorted((made.paths["images"] / "scan0001").glob("*.dcm"))[0]
    header = first.read_bytes()
    for value in (ids.at[0, "name"], ids.at[0, "patient_id"], ids.at[0, "scan_id"], ids.at[0, "birth_date"],
                  ids.at[0, "institution"]):
        assert value.encode() in header, value


def test_no_identifier_in_the_run_directory_or_the_book(site_book):
    made, run_dir, out = site_book
    needles = _needles(made.identifiers)
    assert len(needles) > 1000
    hits = find_identifiers([run_dir, out / "_build"], needles)
    assert hits == [], f"{len(hits)} identifier(s) found, e.g. {hits[:5]}"


def test_ids_are_pseudonymised_consistently(site_book):
    made, run_dir, _ = site_book
    cohort = pd.read_parquet(run_dir / "artifacts" / "cohort.parquet")
    scans = pd.read_parquet(run_dir / "artifacts" / "scans.parquet")
    preds = pd.read_parquet(run_dir / "artifacts" / "predictions.parquet")
    assert len(cohort) == len(made.identifiers) and cohort["patient_id"].str.fullmatch(r"P-[0-9a-f]{16}").all()
    assert scans["scan_id"].str.fullmatch(r"S-[0-9a-f]{16}").all()
    # the same key pseudonymises both tables: every scan finds its patient
    assert set(scans["patient_id"]) == set(cohort["patient_id"])
    heartless = set(scans.loc[scans["status__heart"] == "absent", "patient_id"])
    assert len(heartless) == 1 and set(preds["patient_id"]) == set(cohort["patient_id"]) - heartless


def test_every_stage_ran_on_the_site_data(site_book):
    made, run_dir, out = site_book
    record = json.loads((run_dir / "run.json").read_text())
    assert all(record["stages"][s.name]["status"] == "ok" for s in STAGES)
    assert record["parameters"]["stages"]["models"]["features"] == "imaging"
    scans = pd.read_parquet(run_dir / "artifacts" / "scans.parquet")
    assert len(scans) == len(made.identifiers) and set(scans["dataset"]) == {"site"}
    assert set(scans["segmentation_source"]) == {"precomputed"} and set(scans["status"]) == {"ok"}
    # mixed sources: every fourth scan's Agatston score came from the site's software; one scan has no heart
    cac = pd.read_parquet(run_dir / "artifacts" / "cac_eat.parquet")
    assert (cac["cac_source"] == "site").sum() == 50 and (cac["cac_source"] == "measured").sum() == 149
    feats = pd.read_parquet(run_dir / "artifacts" / "image_features.parquet")
    assert len(feats) == len(made.identifiers) - 1 and any(c.startswith("ct__heart__") for c in feats.columns)
    html = (out / "_build" / "html" / "notebooks" / "02_segmentation.html").read_text(encoding="utf-8")
    assert "site scans" in html and "pseudonymised" in html


def test_a_scan_without_a_heart_is_excluded_with_its_reason(site_book):
    """The heartless scan: excluded by chapter 3 with the reason no_heart, its patient counted out of the
    patient flow of chapter 1 and left out of the models; the book is built on the other 199."""
    made, run_dir, out = site_book
    cac = pd.read_parquet(run_dir / "artifacts" / "cac_eat.parquet")
    excluded = cac[cac["status"] == "excluded"]
    assert excluded[["status", "reason"]].to_dict("records") == [{"status": "excluded", "reason": "no_heart"}]
    assert excluded["cac_score"].isna().all() and (cac.loc[cac["status"] == "ok", "reason"] == "").all()
    patient = excluded["patient_id"].iloc[0]
    preds = pd.read_parquet(run_dir / "artifacts" / "predictions.parquet")
    assert patient not in set(preds["patient_id"]) and preds["score"].notna().all()
    flow = pd.read_csv(run_dir / "tables" / "supp_fig1.csv").set_index("step")
    assert flow.loc["remaining", "book"] == 200 and flow.loc["incomplete_ctac", "book"] == 1
    assert flow.loc["analysed", "book"] == 199 and flow.loc["incomplete_ctac", "note"] == "no_heart: 1"
    table1 = pd.read_csv(run_dir / "tables" / "table1.csv")
    assert table1.loc[(table1["variable"] == "n") & (table1["group"] == "all"), "n"].tolist() == [199]
    html = out / "_build" / "html" / "notebooks"

    def page(name):  # the page's text, as a reader sees it
        return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", "", (html / name).read_text(encoding="utf-8"))).split())

    assert "left out because none of their scans could be measured: 1 no_heart (no heart" in page("01_cohort.html")
    assert "199 scans measured, 1 excluded here" in page("03_cac_eat.html")
    assert "Excluded: 1 no_heart" in page("03_cac_eat.html")
    chapter5 = page("05_models.html")
    assert "199 patients" in chapter5 and "left out, without measured CT features: 1 no_heart" in chapter5
