import pytest

from ctac_helpers.pipeline.config import deep_merge, list_profiles, load_config, stage_parameters
from ctac_helpers.core.stages import get_stage


def write(tmp_path, text, name="my.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_is_the_paper_profile():
    cfg = load_config()
    assert cfg["name"] == "paper" and cfg["profile"] == "paper"
    assert cfg["stages"]["data"]["n_patients"] == 10480
    assert cfg["stages"]["cohort"] == {}
    assert isinstance(cfg["seed"], int)


def test_profiles():
    assert {"paper", "quick"} <= set(list_profiles())
    quick = load_config("quick")
    assert quick["name"] == "quick" and quick["stages"]["data"]["n_patients"] == 1500


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown profile 'huge'; allowed: paper, quick"):
        load_config("huge")


def test_user_file_is_deep_merged(tmp_path):
    path = write(tmp_path, "name: mine\nstages:\n  data:\n    n_patients: 300\n")
    cfg = load_config("quick", path)
    assert cfg["name"] == "mine" and cfg["seed"] == load_config("quick")["seed"]
    assert cfg["stages"]["data"] == {"n_patients": 300}
    assert cfg["stages"]["cohort"] == {}


def test_user_file_chooses_its_profile_and_command_line_wins(tmp_path):
    path = write(tmp_path, "profile: quick\nseed: 5\n")
    cfg = load_config(None, path)
    assert cfg["profile"] == "quick" and cfg["name"] == "quick" and cfg["seed"] == 5
    cfg = load_config("paper", path)
    assert cfg["profile"] == "paper" and cfg["stages"]["data"]["n_patients"] == 10480 and cfg["seed"] == 5
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        load_config(None, write(tmp_path, "profile: nope\n", "p.yaml"))


def test_empty_user_file_is_the_profile(tmp_path):
    assert load_config("quick", write(tmp_path, "")) == load_config("quick")


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("name: 'bad name'\n", r"key 'name' must use only letters"),
        ("name: a/b\n", r"key 'name'"),
        ("seed: -1\n", r"key 'seed' must be a non-negative integer, got -1"),
        ("seed: true\n", r"key 'seed' must be a non-negative integer"),
        ("seed: '12'\n", r"key 'seed' must be a non-negative integer"),
        ("stages:\n  nosuch: {}\n", r"unknown stage 'stages.nosuch'; allowed: data, cohort"),
        ("stages:\n  data: 5\n", r"key 'stages.data' must be a mapping"),
        ("stages: [data]\n", r"key 'stages' must be a mapping"),
        ("sed: 1\n", r"unknown key 'sed'; allowed: name, seed, stages, profile"),
        ("stages:\n  data:\n    run_dir: /tmp/x\n", r"'stages.data.run_dir' cannot be set"),
        ("- a\n- b\n", r"must be a mapping"),
        ("name: [unclosed\n", r"not valid YAML"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=pattern) as info:
        load_config("quick", path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        # PyYAML keeps the last of two equal keys silently: the run would use n_folds 3, or lose `features`
        ("stages:\n  models:\n    n_folds: three\n    n_folds: 3\n",
         ", line 4, column 5: key 'n_folds' is given twice in one mapping (first on line 3); YAML would keep "
         "only the last: write it once"),
        ("stages:\n  models:\n    features: imaging\n  survival: {}\n  models:\n    n_folds: 4\n",
         ", line 5, column 3: key 'models' is given twice in one mapping (first on line 2)"),
        ("stages: {models: {n_folds: 3, n_folds: 4}}\n", ", line 1, column 31: key 'n_folds' is given twice"),
        # a tab where YAML wants spaces: one line, not PyYAML's four naming '<unicode string>'
        ("stages:\n  models:\n\tn_folds: 3\n",
         ", line 3, column 1: not valid YAML: found character '\\t' that cannot start any token; "
         "indent with spaces, not tabs"),
        ("name: [unclosed\n", ", line 2, column 1: not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ],
)
def test_a_duplicated_key_or_a_yaml_error_is_one_line_naming_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_config("quick", path)
    assert str(info.value).startswith(f"{path}{message}")
    assert "\n" not in str(info.value) and "<unicode string>" not in str(info.value)


def test_a_merge_key_may_be_overridden_and_a_configuration_not_in_utf8_is_named(tmp_path):
    path = write(tmp_path, "stages:\n  models: &m {n_folds: 3}\n  subgroups: {}\n  survival:\n    <<: {}\n")
    assert load_config("quick", path)["stages"]["models"] == {**load_config("quick")["stages"]["models"],
                                                               "n_folds": 3}
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"my\.yaml: not UTF-8 text \(byte 0xe9 at offset 9\); save the"):
        load_config("quick", path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="configuration file not found"):
        load_config("quick", tmp_path / "absent.yaml")


def test_stage_parameters():
    cfg = load_config("quick")
    assert stage_parameters(cfg, get_stage("data")) == {"seed": cfg["seed"], "n_patients": 1500}
    assert stage_parameters(cfg, "cohort") == {"seed": cfg["seed"]}
    assert "run_dir" not in stage_parameters(cfg, "data")


def test_deep_merge_does_not_modify_its_inputs():
    base = {"a": {"b": 1, "c": [1]}, "d": 1}
    over = {"a": {"b": 2}, "e": 3}
    assert deep_merge(base, over) == {"a": {"b": 2, "c": [1]}, "d": 1, "e": 3}
    assert base == {"a": {"b": 1, "c": [1]}, "d": 1} and over == {"a": {"b": 2}, "e": 3}
