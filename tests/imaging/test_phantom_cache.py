"""The phantom cache shared by run directories."""

import json

from ctac_helpers.core.rundir import file_sha256
from ctac_helpers.imaging import phantom, phantom_cache
from ctac_helpers.imaging import scans as imaging

GRID = dict(shape=(24, 96, 96), spacing=(4.0, 4.0, 8.0))
PARAMS = {"cac_score": 250.0, "hu_offset": 4.0, "noise_hu": 18.0}


def test_cache_off_values(monkeypatch, tmp_path):
    for value in ("off", "OFF", "0", ""):
        monkeypatch.setenv(phantom_cache.CACHE_ENV, value)
        assert phantom_cache.cache_root() is None
    monkeypatch.setenv(phantom_cache.CACHE_ENV, str(tmp_path))
    assert phantom_cache.cache_root() == tmp_path / "phantoms"
    monkeypatch.delenv(phantom_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert phantom_cache.cache_root() == tmp_path / "xdg" / "ctac-book" / "phantoms"


def test_key_follows_every_input():
    key = phantom_cache.phantom_key(PARAMS, 3, GRID["shape"], GRID["spacing"], version="v1")
    assert key == phantom_cache.phantom_key(dict(PARAMS), 3, list(GRID["shape"]), GRID["spacing"], version="v1")
    # defaults are filled in: naming a default value is the same phantom
    assert key == phantom_cache.phantom_key({**PARAMS, "age": phantom.DEFAULT_PARAMETERS["age"]}, 3,
                                            GRID["shape"], GRID["spacing"], version="v1")
    others = [phantom_cache.phantom_key({**PARAMS, "cac_score": 251.0}, 3, GRID["shape"], GRID["spacing"], version="v1"),
              phantom_cache.phantom_key(PARAMS, 4, GRID["shape"], GRID["spacing"], version="v1"),
              phantom_cache.phantom_key(PARAMS, 3, (24, 96, 97), GRID["spacing"], version="v1"),
              phantom_cache.phantom_key(PARAMS, 3, GRID["shape"], (4.0, 4.0, 7.0), version="v1"),
              phantom_cache.phantom_key(PARAMS, 3, GRID["shape"], GRID["spacing"], version="v2")]
    assert len({key, *others}) == 6


def test_code_version_covers_the_phantom_code_and_libraries():
    before = phantom_cache.code_version()
    assert before == phantom_cache.code_version()
    assert phantom_cache.code_version(phantom_cache.CODE_MODULES[1:]) != before  # phantom/build.py left out


def test_code_modules_cover_every_module_the_phantom_code_imports():
    # a module of the package that the cache draws and writes phantoms with, directly or through another,
    # can decide the files: leaving it out of the key would serve a stale phantom after it changes
    import importlib.util

    import grimp

    graph = grimp.build_graph("ctac_helpers", include_external_packages=False)
    imported = graph.find_upstream_modules("ctac_helpers.imaging.phantom_cache")
    # a subpackage's __init__ only lists its public names (lazy exports): it draws nothing
    needed = {m for m in imported if not importlib.util.find_spec(m).origin.endswith("__init__.py")}
    # the scan is not vacuous: the drawing, the writing and what they read are found
    assert {"ctac_helpers.imaging.phantom.build", "ctac_helpers.imaging.phantom.lesions",
            "ctac_helpers.imaging.phantom.files", "ctac_helpers.imaging.calcium",
            "ctac_helpers.core.manifest"} <= needed
    assert needed <= set(phantom_cache.CODE_MODULES)
    assert "ctac_helpers.imaging.phantom_cache" not in phantom_cache.CODE_MODULES
    # the phantom is a function of its parameters: the cohort generator and the glue that reads it are
    # not in the key (the parameters they make are)
    assert not any(m.startswith("ctac_helpers.cohort") for m in needed | set(phantom_cache.CODE_MODULES))
    assert "ctac_helpers.imaging.phantom.from_cohort" not in needed


def _manifest_copy(monkeypatch, tmp_path, names):
    """Point the data manifest at a copy of ``names`` only (the cached reads are forgotten now and after)."""
    import shutil

    from ctac_helpers.core import manifest

    copy = tmp_path / "data_manifest"
    copy.mkdir()
    for name in names:
        shutil.copy(manifest.MANIFEST_DIR / name, copy / name)
    manifest.clear_cache()
    monkeypatch.setattr(manifest, "MANIFEST_DIR", copy)
    return copy


def test_the_phantom_code_reads_only_the_data_files_in_its_key(monkeypatch, tmp_path):
    from ctac_helpers.core import manifest

    plain = phantom.write_phantom(phantom.ctac_phantom(PARAMS, seed=3, **GRID), tmp_path / "plain", "phantom")
    try:
        _manifest_copy(monkeypatch, tmp_path, phantom_cache.MANIFEST_FILES)
        # drawing, describing and writing a phantom with no other data file in place: a read of any other
        # would fail here, and the files are those drawn with every data file
        cached, reused = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"],
                                                            tmp_path / "run", "phantom", root=tmp_path / "cache")
        assert not reused
        assert _bytes(cached) == _bytes(plain)
    finally:
        monkeypatch.undo()
        manifest.clear_cache()


def test_only_the_data_files_the_phantoms_read_move_the_key(monkeypatch, tmp_path):
    from ctac_helpers.core import manifest

    names = sorted(p.name for p in manifest.MANIFEST_DIR.iterdir() if p.is_file())
    assert set(phantom_cache.MANIFEST_FILES) < set(names)
    try:
        copy = _manifest_copy(monkeypatch, tmp_path, names)
        before = phantom_cache.code_version()
        for name in ("paper_values.yaml", "generator.yaml"):  # a note edited, a fit recorded
            (copy / name).write_text((copy / name).read_text() + "\n# edited\n")
        assert phantom_cache.code_version() == before
        (copy / "structures.yaml").write_text((copy / "structures.yaml").read_text() + "\n# edited\n")
        assert phantom_cache.code_version() != before
    finally:
        monkeypatch.undo()
        manifest.clear_cache()


def _bytes(paths):
    return {k: open(p, "rb").read() for k, p in paths.items()}


def test_cached_phantom_is_the_built_phantom_and_is_reused_across_directories(tmp_path):
    root = tmp_path / "cache"
    plain = phantom.write_phantom(phantom.ctac_phantom(PARAMS, seed=3, **GRID), tmp_path / "plain", "phantom")
    first, reused = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"], tmp_path / "run1",
                                                       "phantom", root=root)
    assert not reused
    second, reused = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"], tmp_path / "run2",
                                                        "scan", root=root)
    assert reused
    assert _bytes(plain) == _bytes(first) == _bytes(second)
    assert all(p.parent == tmp_path / "run2" and p.name.startswith("scan_") for p in second.values())
    # one complete entry, its hashes recorded, no temporary left behind
    entries = [p for p in root.rglob("entry.json")]
    assert len(entries) == 1
    record = json.loads(entries[0].read_text())
    assert record["sha256"] == {k: file_sha256(p) for k, p in plain.items()}
    assert not [p for p in root.rglob(".*")]
    assert not [p for p in (tmp_path / "run2").iterdir() if p.name.startswith(".")]
    # another seed is another phantom
    _, reused = phantom_cache.write_phantom_cached(PARAMS, 4, GRID["shape"], GRID["spacing"], tmp_path / "run3",
                                                   "phantom", root=root)
    assert not reused


def test_damaged_entry_is_rebuilt_not_served(tmp_path):
    root = tmp_path / "cache"
    good, _ = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"], tmp_path / "run1",
                                                 "phantom", root=root)
    want = _bytes(good)
    entry = next(root.rglob("entry.json")).parent
    cached_ct = entry / "phantom_ct.nii.gz"
    # edited in place (the hard link in run1 sees the same bytes): the check catches it
    with open(cached_ct, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    again, reused = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"], tmp_path / "run2",
                                                       "phantom", root=root)
    assert not reused
    assert _bytes(again) == want
    # the damaged entry was set aside and a sound one stored in its place
    _, reused = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"], tmp_path / "run3",
                                                   "phantom", root=root)
    assert reused
    # an entry without its record is not used either
    (entry / "entry.json").unlink()
    _, reused = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"], tmp_path / "run4",
                                                   "phantom", root=root)
    assert not reused


def test_phantom_task_uses_the_cache_and_records_run_directory_paths(monkeypatch, tmp_path):
    monkeypatch.setenv(phantom_cache.CACHE_ENV, str(tmp_path / "cache"))
    item = {"scan_id": "phantom-a", "patient_id": "a", "seed": 3, "params": PARAMS}
    runs = [imaging.phantom_task(item, str(tmp_path / f"run{i}"), GRID["shape"], GRID["spacing"]) for i in (1, 2)]
    assert [r["from_cache"] for r in runs] == [False, True]
    for i, r in enumerate(runs, start=1):
        assert all(r[k].startswith(str(tmp_path / f"run{i}")) for k in phantom_cache.KINDS)
    assert open(runs[0]["ct"], "rb").read() == open(runs[1]["ct"], "rb").read()
    monkeypatch.setenv(phantom_cache.CACHE_ENV, "off")
    assert imaging.phantom_task(item, str(tmp_path / "run3"), GRID["shape"], GRID["spacing"])["from_cache"] is False


def test_a_cache_that_cannot_be_written_never_fails_the_phantom(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache's folder would go")
    paths, reused = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"], tmp_path / "run",
                                                       "phantom", root=blocked / "phantoms")
    assert not reused and all(p.is_file() for p in paths.values())
    plain = phantom.write_phantom(phantom.ctac_phantom(PARAMS, seed=3, **GRID), tmp_path / "plain", "phantom")
    assert _bytes(plain) == _bytes(paths)
    # the cache off: built, nothing stored anywhere
    paths, reused = phantom_cache.write_phantom_cached(PARAMS, 3, GRID["shape"], GRID["spacing"], tmp_path / "off",
                                                       "phantom", root=None)
    assert not reused and _bytes(paths) == _bytes(plain)


def test_a_phantom_batch_writes_no_path_of_the_cache_into_the_run_directory(monkeypatch, tmp_path):
    from ctac_helpers.pipeline import batch

    cache = tmp_path / "machine-cache"
    monkeypatch.setenv(phantom_cache.CACHE_ENV, str(cache))
    items = [{"scan_id": f"phantom-{i}", "patient_id": str(i), "seed": 3 + i, "params": PARAMS} for i in range(2)]
    for name in ("first", "second"):  # drawn, then taken from the cache
        run = tmp_path / name
        made = batch.run_batch(imaging.make_phantom_task(run / "work" / "phantoms", GRID["shape"], GRID["spacing"]),
                               items, run / "work" / "phantoms", key="phantom", root=run, n_workers=1, progress=False)
        assert [r["from_cache"] for r in made.results] == [name == "second"] * 2
        assert all(str(r["ct"]).startswith(str(run)) for r in made.results)
        for f in (p for p in run.rglob("*") if p.is_file()):
            data = f.read_bytes()
            assert str(cache).encode() not in data and b"machine-cache" not in data, f
    assert sum(1 for _ in cache.rglob("entry.json")) == 2


def test_the_chapter_page_says_where_its_phantoms_come_from():
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[2] / "notebooks" / "02_segmentation.ipynb")
                    .read_text(encoding="utf-8"))
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "**phantom cache**" in text and "CTAC_BOOK_CACHE=off" in text
    assert "taken from the phantom cache rather than drawn" in code and "from_cache" in code
    # the source notebook is committed without outputs
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
