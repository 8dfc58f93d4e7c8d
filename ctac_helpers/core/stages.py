"""The book's stages: which notebook, what it reads and what it must write.

This table is the single source of the execution order (``needs``), of the cache keys (a stage's
``inputs`` are hashed) and of the run-directory contract (a stage that finishes without writing
every declared output is a failed stage).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    """One notebook of the book.

    Attributes
    ----------
    name : str
        Stage name used on the command line (``--force cohort``) and in run configs.
    notebook : str
        Source notebook, relative to the repository's ``notebooks/`` folder.
    needs : tuple of str
        Upstream stages that must have run successfully first.
    inputs : tuple of str
        Artifacts (``artifacts/<name>.parquet``) the stage reads; their hashes enter its cache key.
    artifacts, tables, figures : tuple of str
        Outputs the stage must write (artifact names, table ids, figure ids).
    """

    name: str
    notebook: str
    needs: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    title: str = field(default="", compare=False)

    def output_relpaths(self) -> list[str]:
        """Declared outputs as paths relative to the run directory."""
        return (
            [f"artifacts/{a}.parquet" for a in self.artifacts]
            + [f"tables/{t}.csv" for t in self.tables]
            + [f"figures/{f}.png" for f in self.figures]
        )


STAGES: tuple[Stage, ...] = (
    Stage(
        name="data",
        notebook="00_data.ipynb",
        title="The data: schema and synthetic cohort",
        artifacts=("cohort", "ct_features", "latent"),
        tables=("calibration", "schema", "generator_loadings"),
        figures=("calibration",),
    ),
    Stage(
        name="cohort",
        notebook="01_cohort.ipynb",
        title="Cohort: patient flow and baseline characteristics",
        # cac_eat, image_features: on a site's data, the patients whose scans could not be measured leave
        # the analysed cohort (chapters 2-4 decide it), as the paper's incomplete CTAC scans do
        needs=("data", "radiomics"),
        inputs=("cohort", "cac_eat", "image_features"),
        tables=("table1", "table2", "supp_table2", "supp_fig1"),
        figures=("supp_fig1",),
    ),
    Stage(
        name="segmentation",
        notebook="02_segmentation.ipynb",
        title="Segmentation: every structure of the CTAC scan",
        needs=("data",),
        inputs=("cohort", "latent", "ct_features"),  # ct_features: the cohort's structure frequencies
        artifacts=("scans", "structure_presence"),
        tables=("supp_fig7", "scans", "segmentation_failures"),
        figures=("supp_fig7", "segmentation_overlay"),
    ),
    Stage(
        name="cac_eat",
        notebook="03_cac_eat.ipynb",
        title="Coronary calcium and epicardial fat",
        needs=("segmentation",),
        inputs=("scans", "cohort"),  # cohort: the phantoms' patients' EAT density, beside the phantoms'
        artifacts=("cac_eat",),
        tables=("cac_agreement", "eat_agreement", "cac_eat_samples"),
        figures=("cac_bland_altman", "eat_bland_altman"),
    ),
    Stage(
        name="radiomics",
        notebook="04_radiomics.ipynb",
        title="Radiomics of every selected structure",
        needs=("segmentation", "cac_eat"),
        inputs=("scans", "structure_presence", "cac_eat", "ct_features"),  # ct_features: the summary's reference
        artifacts=("image_features",),
        tables=("radiomics_summary", "pyradiomics_agreement", "radiomics_settings"),
        figures=("radiomics_distributions",),
    ),
    Stage(
        name="models",
        notebook="05_models.ipynb",
        title="Mortality models",
        # radiomics: with features='imaging' the models read the image-derived features; scans (written by
        # segmentation, upstream of radiomics): the patient explorer shows the imaged patients' CT.
        # cac_eat: why a site's patients without image features were left out
        needs=("data", "radiomics"),
        inputs=("cohort", "ct_features", "image_features", "scans", "cac_eat"),
        artifacts=("predictions", "shap_structures"),
        tables=("model_selection", "supp_table3", "supp_table3_delong", "supp_table4", "supp_table4_delong",
                "supp_table5", "supp_table5_delong", "fig2", "supp_fig2", "fig4", "supp_table10"),
        figures=("fig1", "fig2a", "fig2b", "fig2c", "supp_fig2", "fig4", "patient_examples"),
    ),
    Stage(
        name="subgroups",
        notebook="06_subgroups.ipynb",
        title="Subgroups, sites and protocols",
        # cac_eat, image_features: the analysed cohort (imaging.analysed_cohort), as in chapter 1
        needs=("data", "models"),
        inputs=("cohort", "predictions", "cac_eat", "image_features"),
        tables=("supp_fig3", "supp_table6"),
        figures=("supp_fig3",),
    ),
    Stage(
        name="survival",
        notebook="07_survival_nri.ipynb",
        title="Survival, hazard ratios and reclassification",
        # cac_eat: a site's cohort table may lack CAC, measured on its scans by chapter 3
        needs=("data", "cac_eat", "models"),
        inputs=("cohort", "cac_eat", "predictions", "image_features"),
        tables=("ai_threshold", "fig3", "fig3_logrank", "cox_univariate", "supp_fig4", "supp_table7", "nri"),
        figures=("fig3", "supp_fig4", "supp_table7"),
    ),
    Stage(
        name="beyond",
        notebook="08_beyond.ipynb",
        title="Beyond the paper: calibration, clinical usefulness and stability",
        # models: its predictions, per-fold choices (tables/model_selection.csv) and parameters; survival: the AI
        # threshold (tables/ai_threshold.csv); the repeats refit the models on chapter 5's inputs
        needs=("data", "radiomics", "models", "survival"),
        inputs=("cohort", "ct_features", "image_features", "predictions"),
        tables=("calibration_metrics", "recalibration", "calibration_curves", "decision_curves", "decision_summary",
                "stability_choice", "stability_auc", "stability_differences", "stability", "learning_curve"),
        figures=("calibration_curves", "decision_curves", "stability", "learning_curve"),
    ),
)


def stage_names(stages: tuple[Stage, ...] = STAGES) -> list[str]:
    return [s.name for s in stages]


def get_stage(name: str, stages: tuple[Stage, ...] = STAGES) -> Stage:
    """Return the stage called ``name``; a ``ValueError`` lists the allowed names."""
    for stage in stages:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; allowed: {', '.join(stage_names(stages))}")


def execution_order(stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """Stages in dependency order (a stable topological sort; raises on cycles or unknown needs)."""
    by_name = {s.name: s for s in stages}
    for s in stages:
        for dep in s.needs:
            if dep not in by_name:
                raise ValueError(f"stage {s.name!r} needs unknown stage {dep!r}")
    ordered: list[Stage] = []
    state: dict[str, int] = {}

    def visit(s: Stage) -> None:
        mark = state.get(s.name, 0)
        if mark == 2:
            return
        if mark == 1:
            raise ValueError(f"stage dependency cycle through {s.name!r}")
        state[s.name] = 1
        for dep in s.needs:
            visit(by_name[dep])
        state[s.name] = 2
        ordered.append(s)

    for s in stages:
        visit(s)
    return ordered


def upstream_of(name: str, stages: tuple[Stage, ...] = STAGES) -> set[str]:
    """Names of all stages that ``name`` needs, directly or not (``name`` itself excluded)."""
    by_name = {s.name: s for s in stages}
    get_stage(name, stages)
    out: set[str] = set()
    frontier = set(by_name[name].needs)
    while frontier:
        out |= frontier
        frontier = {dep for n in frontier for dep in by_name[n].needs} - out
    return out


def downstream_of(name: str, stages: tuple[Stage, ...] = STAGES) -> set[str]:
    """Names of all stages that depend, directly or not, on ``name``."""
    out: set[str] = set()
    frontier = {name}
    while frontier:
        nxt = {s.name for s in stages if set(s.needs) & frontier} - out
        out |= nxt
        frontier = nxt
    return out
