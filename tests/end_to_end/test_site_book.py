"""The whole book on a site's own data: the example site, run and built as a new user would.

``ctac-book example-site`` writes 200 made-up patients whose cohort table, scan manifest and DICOM
headers carry hospital-like identifiers (record numbers, accession numbers, names, birth dates, the
institution, the referring physician, study dates). Here the site also names its scan folders and
label files after the patients and keeps free-text notes in both tables, and it lies in a folder
whose name a hospital share or a home folder might have. The book is validated, run and built from
it; then every file of the run directory and of the built book is searched for every identifier, and
for every part of that folder's absolute path. One scan's
label map has lost its heart, as a real site's can: the book must exclude that scan with its reason and
analyse the other patients.
"""

from __future__ import annotations

import gzip
import html as htmllib
import io
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
#: The folder the site, its run directory and the book are made in: no part of its path may be published.
SHARE = "Dr_Quintavalle_Zorblax_cardiology_share"
#: Parts of a temporary folder's path too common to mean anything when found (``/tmp``, macOS's ``/var/folders``).
_GENERIC_PARTS = {"tmp", "var", "folders", "private", "T", "home", "Users"}


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
def _read_site_table(path) -> tuple[list[str], pd.DataFrame]:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    comments = [ln for ln in lines if ln.startswith("#")]
    return comments, pd.read_csv(io.StringIO("".join(lines[len(comments):])), dtype=str, keep_default_na=False)


def _write_site_table(path, comments: list[str], df: pd.DataFrame) -> None:
    path.write_text("".join(comments) + df.to_csv(index=False, lineterminator="\n"), encoding="utf-8")


def _folder_name(who) -> str:
    return f"{who['patient_id']}_{who['name'].replace('^', '_')}_{who['study_date']}"


def add_identifiers_a_site_would(made) -> list[str]:
    """Name the scans' folders and label files after their patients; add free-text notes to both tables.

    Returns the new folder names (identifiers themselves).
    """
    site_dir = made.paths["config"].parent
    who = made.identifiers.set_index("scan_id")
    comments, scans = _read_site_table(made.paths["scans"])
    folders = []
    for i, row in scans.iterrows():
        folder = _folder_name(who.loc[row["scan_id"]])
        folders.append(folder)
        for column in ("image", "label_map", "pericardium"):
            if row[column]:
                new = re.sub(r"scan\d{4}", folder, row[column])
                (site_dir / row[column]).rename(site_dir / new)
                scans.at[i, column] = new
    scans["notes"] = [f"{w['name']} ({w['patient_id']}, born {w['birth_date']}) seen by {w['physician']} at "
                      f"{w['institution']} on {w['study_date']}" for _, w in who.loc[scans["scan_id"]].iterrows()]
    _write_site_table(made.paths["scans"], comments, scans)
    comments, cohort = _read_site_table(made.paths["cohort"])
    by_patient = made.identifiers.set_index("patient_id")
    cohort["comment"] = [f"referred by {by_patient.at[p, 'physician']}; DOB {by_patient.at[p, 'birth_date']}"
                         for p in cohort["patient_id"]]
    _write_site_table(made.paths["cohort"], comments, cohort)
    return folders


@pytest.fixture(scope="module")
def site_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("sitebook") / SHARE
    made = example_site.write_example_site(root / "mysite", shape=SHAPE, spacing=SPACING)
    made.identifiers["folder"] = add_identifiers_a_site_would(made)
    # shorter bootstraps and no 32-feature refit: the test is about the data path, not the statistics
    cfg = yaml.safe_load(made.paths["config"].read_text())
    cfg["stages"]["models"].update(n_resamples=50, compare_32=False)
    cfg["stages"]["survival"].update(n_resamples=50)
    made.paths["config"].write_text(yaml.safe_dump(cfg, sort_keys=False))
    config = str(made.paths["config"])
    run_dir, out = root / "runs" / "mysite", root / "book"
    assert cli.main(["validate", "--config", config, "--run-dir", str(run_dir)]) == 0
    _, scans = _read_site_table(made.paths["scans"])  # its label file is named after its patient now
    remove_heart(made.paths["config"].parent / scans.at[HEARTLESS, "label_map"])
    assert cli.main(["run", "-q", "--config", config, "--run-dir", str(run_dir)]) == 0
    assert cli.main(["build", "-q", "--config", config, "--run-dir", str(run_dir), "--out", str(out)]) == 0
    return made, run_dir, out


def test_example_site_identifiers_are_in_its_files(site_book):
    """The example site's own files do carry the identifiers (so their absence below means something)."""
    made, _, _ = site_book
    ids = made.identifiers
    cohort = made.paths["cohort"].read_text()
    assert all(mrn in cohort for mrn in ids["patient_id"])
    scans = made.paths["scans"].read_text()
    assert all(folder in scans for folder in ids["folder"]) and ids.at[0, "institution"] in scans
    assert (made.paths["images"] / ids.at[0, "folder"]).is_dir()
    first = sorted((made.paths["images"] / ids.at[0, "folder"]).glob("*.dcm"))[0]
    header = first.read_bytes()
    for value in (ids.at[0, "name"], ids.at[0, "patient_id"], ids.at[0, "scan_id"], ids.at[0, "birth_date"],
                  ids.at[0, "institution"]):
        assert value.encode() in header, value


def test_no_identifier_in_the_run_directory_or_the_book(site_book):
    made, run_dir, out = site_book
    needles = _needles(made.identifiers) + list(made.identifiers["folder"])
    assert len(needles) > 1000
    hits = find_identifiers([run_dir, out / "_build"], needles)
    assert hits == [], f"{len(hits)} identifier(s) found, e.g. {hits[:5]}"


def path_parts(folder) -> list[str]:
    """The absolute path of ``folder`` and each of its parts that could name someone or something.

    Parts shorter than 5 characters are left out: any compressed file holds such strings by chance.
    """
    return [str(folder)] + [p for p in folder.parts[1:] if p not in _GENERIC_PARTS and len(p) >= 5]


def find_parts(roots, parts: list[str]) -> list[tuple[str, str]]:
    """(file, part) for every part found, case-sensitively, in any file under ``roots``."""
    hits = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            text = "\n".join(_texts(path))
            hits += [(str(path), part) for part in parts if part in text]
    return hits


def test_the_path_search_finds_a_planted_path(tmp_path):
    folder = tmp_path / SHARE / "mysite"
    (tmp_path / "a").mkdir()
    pd.DataFrame({"x": [1]}).assign(p=str(folder / "cohort.csv")).to_parquet(tmp_path / "a" / "t.parquet")
    (tmp_path / "a" / "page.html").write_text(f"<p>see {SHARE}</p>")
    hits = find_parts([tmp_path / "a"], path_parts(folder))
    assert {(h[0].rsplit("/", 1)[1], h[1]) for h in hits} >= {("t.parquet", str(folder)), ("t.parquet", SHARE),
                                                                ("page.html", SHARE)}


def test_no_part_of_the_site_folders_path_in_the_run_directory_or_the_book(site_book):
    """Run directory and built HTML name the site's files by labels, never by the machine's folders."""
    made, run_dir, out = site_book
    share = made.paths["config"].parent.parent
    assert share.name == SHARE and run_dir.is_relative_to(share) and out.is_relative_to(share)
    # the share holds the site folder `mysite`, whose name the site chose: the run is published as runs/mysite
    parts = path_parts(share)
    assert SHARE in parts and len(parts) >= 3
    # the published HTML and everything beside it in _build (the build removes Sphinx's cache, .doctrees,
    # which records where it built)
    assert not (out / "_build" / ".doctrees").exists()
    hits = find_parts([run_dir, out / "_build"], parts)
    assert hits == [], f"{len(hits)} path part(s) found, e.g. {hits[:5]}"
    # the parameter cells show what the run used, by label
    data = json.loads((run_dir / "executed" / "00_data.ipynb").read_text(encoding="utf-8"))
    cell = next(c for c in data["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = "".join(cell["source"])
    assert 'run_dir: str = "runs/mysite"' in source and 'cohort_file: str = "cohort.csv"' in source
    assert 'site_labels: list = ["Example General"]' in source
    assert not [c for c in data["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["parameters"]["site"]["cohort"] == "cohort.csv"
    assert record["stages"]["segmentation"]["parameters"]["scan_manifest"] == "scans.csv"


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
    # the manifest's coded columns came through as codes; its free-text notes did not
    assert set(scans["manifest_site"]) == {example_site.EXAMPLE_LABEL}
    assert set(scans["manifest_protocol"]) <= {"low_dose_120kvp", "low_dose_100kvp", "ultra_low_dose_120kvp"}
    assert not [c for c in scans.columns if "notes" in c]
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
