import pytest

from ctac_helpers.core.stages import STAGES, Stage, downstream_of, execution_order, get_stage, stage_names, upstream_of


def names(stages):
    return [s.name for s in stages]


def test_book_order_puts_data_before_cohort():
    order = names(execution_order(STAGES))
    assert order.index("data") < order.index("cohort")
    assert sorted(order) == sorted(stage_names(STAGES))


def test_order_is_topological_and_stable():
    # dependencies come first, in the order each stage lists them
    stages = (
        Stage("report", "r.ipynb", needs=("left", "right")),
        Stage("right", "c.ipynb", needs=("root",)),
        Stage("left", "b.ipynb", needs=("root",)),
        Stage("root", "a.ipynb"),
    )
    assert names(execution_order(stages)) == ["root", "left", "right", "report"]


def test_cycle_is_an_error():
    stages = (Stage("a", "a.ipynb", needs=("b",)), Stage("b", "b.ipynb", needs=("a",)))
    with pytest.raises(ValueError, match="cycle"):
        execution_order(stages)
    with pytest.raises(ValueError, match="cycle"):
        execution_order((Stage("self", "s.ipynb", needs=("self",)),))


def test_unknown_need_is_an_error():
    with pytest.raises(ValueError, match="stage 'a' needs unknown stage 'ghost'"):
        execution_order((Stage("a", "a.ipynb", needs=("ghost",)),))


def test_get_stage_lists_allowed_names():
    assert get_stage("cohort").notebook == "01_cohort.ipynb"
    with pytest.raises(ValueError, match=r"unknown stage 'nope'; allowed: data, cohort"):
        get_stage("nope")


def test_upstream_of():
    stages = (
        Stage("a", "a.ipynb"),
        Stage("b", "b.ipynb", needs=("a",)),
        Stage("c", "c.ipynb", needs=("b", "d")),
        Stage("d", "d.ipynb"),
    )
    assert upstream_of("c", stages) == {"a", "b", "d"}
    assert upstream_of("a", stages) == set()
    assert upstream_of("segmentation") == {"data"}
    assert upstream_of("cohort") == {"data", "segmentation", "cac_eat", "radiomics"}
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        upstream_of("nope", stages)


def test_downstream_of():
    stages = (
        Stage("a", "a.ipynb"),
        Stage("b", "b.ipynb", needs=("a",)),
        Stage("c", "c.ipynb", needs=("b",)),
        Stage("d", "d.ipynb"),
    )
    assert downstream_of("a", stages) == {"b", "c"}
    assert downstream_of("c", stages) == set()
    assert downstream_of("data") == {"cohort", "segmentation", "cac_eat", "radiomics", "models", "subgroups",
                                     "survival", "beyond"}
    assert downstream_of("segmentation") == {"cac_eat", "radiomics", "cohort", "models", "subgroups", "survival",
                                             "beyond"}
    assert downstream_of("models") == {"subgroups", "survival", "beyond"}
    assert downstream_of("survival") == {"beyond"}


def test_output_relpaths():
    s = Stage("x", "x.ipynb", artifacts=("cohort",), tables=("table1",), figures=("fig1",))
    assert s.output_relpaths() == ["artifacts/cohort.parquet", "tables/table1.csv", "figures/fig1.png"]


def test_every_registered_notebook_exists():
    from ctac_helpers.pipeline.runner import NOTEBOOKS_DIR

    for stage in STAGES:
        assert (NOTEBOOKS_DIR / stage.notebook).is_file(), stage.notebook
