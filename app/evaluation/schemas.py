"""Request and response models of the import, the metrics and the exports.

Metric values that are undefined (no experts, no spread) are null in JSON, never NaN.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ImportRole = Literal["ground-truth", "suggestions", "expert", "injected"]
ErrorKind = Literal["class_changed", "removed", "duplicate", "false_positive", "grade_shifted"]
EvaluatedMode = Literal["unaided", "aided"]
ExportFormat = Literal["exact", "coco", "json", "csv"]


# ---------------------------------------------------------------- import


class SkippedLineOut(BaseModel):
    line: int
    reason: str
    text: str = ""


class ImportedFileOut(BaseModel):
    """What one file held and what became of it."""

    file: str
    role: ImportRole
    expert: str | None = None
    mode: EvaluatedMode | None = None
    objects: int = Field(description="object lines read")
    deleted: int = Field(description="object lines marked deleted")
    visits: int = Field(description="open/close lines read")
    empty_images: int = Field(description="'not in image' lines read")
    images: int = Field(description="distinct images named, template header excluded")
    stored: int = Field(description="rows stored: annotations, reference objects, suggestions or entries")
    size_disagreements: int = Field(
        default=0,
        description="object lines whose image size disagrees with the size kept (the task's, or the first "
        "file's for a new image); such files are imported, the size the task knows stays",
    )
    outside_image: int = Field(
        default=0,
        description="objects (not deleted) outside the kept image size or within 2 px of its border",
    )
    skipped: list[SkippedLineOut]


class ImportReport(BaseModel):
    study: str
    study_id: int
    task: str
    task_id: int
    created_study: bool
    created_task: bool
    new_labels: list[str]
    new_images: int
    new_experts: list[str]
    suggestion_set_id: int | None = None
    files: list[ImportedFileOut]


# ---------------------------------------------------------------- metrics


class SpreadOut(BaseModel):
    mean: float | None
    min: float | None
    max: float | None
    sd: float | None = Field(description="population standard deviation")


class ExpertMetricsOut(BaseModel):
    objects: int
    seconds_per_image: float | None
    concordance: float
    vote_weighted_concordance: float | None = Field(
        description="weighted F1 against the reference: votes of the other experts weight the reference "
        "objects, errors the other experts made too cost less (DESIGN.md)"
    )
    vote_weighted_precision: float | None = None
    vote_weighted_recall: float | None = None
    vote_weighted_note: str = Field(default="", description="says when no other expert voted (plain F1)")
    per_class: dict[str, float]


class ModeSummaryOut(BaseModel):
    concordance: SpreadOut
    seconds_per_image: SpreadOut


class ModeMetricsOut(BaseModel):
    experts: dict[str, ExpertMetricsOut]
    summary: ModeSummaryOut
    consensus: ConsensusOut | None = None


ConsensusMethod = Literal["radius", "nms"]


class ConsensusOut(BaseModel):
    """Consensus of the mode's experts (votes ≥ min_votes; clusters by centre radius in px or cells by NMS at an
    IoU) scored against the reference."""

    method: ConsensusMethod = "radius"
    radius: float | None
    nms_iou: float | None = None
    min_votes: int
    objects: int
    concordance: float
    votes: dict[int, int] = Field(
        default_factory=dict, description="number of consensus objects per vote count"
    )


class SuggestionsOut(BaseModel):
    suggestion_set_id: int | None
    concordance: float | None


class CountOut(BaseModel):
    """One expert's register entries of one kind: caught or missed by the per-kind rule of DESIGN.md.

    `matched` is the published analysis's raw count (an object with the entry's label matches the register
    box, greedy matching): caught for removed and relabelled cells, but kept (missed) for fakes and duplicates.
    """

    total: int
    caught: int = 0
    missed: int = 0
    caught_rate: float | None = None
    matched: int


class PooledOut(BaseModel):
    """Over all experts of the mode; `rate` = matched / total is the published analysis's raw figure."""

    total: int
    caught: int = 0
    missed: int = 0
    caught_rate: float | None = None
    matched: int
    rate: float | None


class InjectedModeOut(BaseModel):
    experts: dict[str, CountOut]
    pooled: PooledOut


class TestsOut(BaseModel):
    anova_F: float | None
    anova_df: list[int]
    anova_p: float | None
    paired_t: float | None
    paired_df: int
    paired_p: float | None
    note: str = ""
    mean_difference: float | None = Field(
        default=None, description="mean of aided − unaided over the experts in both modes"
    )
    effect_size_dz: float | None = Field(
        default=None, description="Cohen's d_z of the paired differences aided − unaided (mean / SD)"
    )
    paired_p_holm: float | None = Field(
        default=None, description="paired p, Holm-adjusted across the study's tasks (same measure)"
    )
    anova_p_holm: float | None = Field(
        default=None, description="ANOVA p, Holm-adjusted across the study's tasks (same measure)"
    )


# ---------------------------------------------------------------- statistics a reviewer asks for


class BlandAltmanOut(BaseModel):
    bias: float | None = Field(description="mean of expert − reference")
    lower: float | None = Field(description="bias − 1.96 SD")
    upper: float | None = Field(description="bias + 1.96 SD")
    pairs: int


class ThresholdOut(BaseModel):
    """Expert × image cases whose count is on the other side of the threshold than the reference's."""

    threshold: float
    cases: int
    over: int = Field(description="expert ≥ threshold > reference")
    under: int = Field(description="reference ≥ threshold > expert")


class ExpertAgreementOut(BaseModel):
    label_kappa: float | None = Field(description="Cohen's kappa of labels vs reference on matched cells")
    matched_cells: int
    images: int = Field(description="images seen, over which counts are compared")
    count_icc: float | None = Field(description="ICC(A,1) of counts per image vs reference")
    count_bland_altman: BlandAltmanOut
    threshold_over: int | None = None
    threshold_under: int | None = None


class ModeAgreementOut(BaseModel):
    experts: dict[str, ExpertAgreementOut]
    clusters: int = Field(description="centre-radius clusters of all experts' objects (units of agreement)")
    fleiss_kappa: float | None = Field(description="across experts, labels + 'not marked' on clusters")
    krippendorff_alpha: float | None = Field(
        description="across experts, labels on clusters, unmarked missing"
    )
    count_icc_experts: float | None = Field(description="ICC(A,1) of counts among experts, images all saw")
    count_bland_altman: BlandAltmanOut = Field(description="pooled over every expert × image")
    threshold: ThresholdOut | None = None


class AgreementOut(BaseModel):
    label_kappa_weights: Literal["none", "quadratic"]
    count_label: str | None = Field(description="label counted per image; null: every label")
    count_threshold: float | None = Field(description="clinical threshold (detection tasks)")
    consensus_radius: float
    modes: dict[str, ModeAgreementOut]


class IntervalOut(BaseModel):
    estimate: float | None
    low: float | None
    high: float | None


class UncertaintyOut(BaseModel):
    """Bootstrap percentile intervals: measure → mode (or aided_minus_unaided) → interval."""

    replicates: int
    seed: int
    level: float
    measures: dict[str, dict[str, IntervalOut]]


class TaskMetricsOut(BaseModel):
    modes: dict[str, ModeMetricsOut]
    suggestions: SuggestionsOut
    injected_errors: dict[str, dict[str, dict[str, InjectedModeOut]]]
    statistics: dict[str, TestsOut]
    agreement: AgreementOut | None = None
    uncertainty: UncertaintyOut | None = Field(
        default=None, description="bootstrap intervals, when asked for (bootstrap > 0)"
    )


class TimingOut(BaseModel):
    load_s: float
    compute_s: float


class StudyMetricsOut(BaseModel):
    study: str
    simulated: bool = Field(False, description="the study was run by simulated experts (concord simulate)")
    iou: float
    error_iou: float
    tasks: dict[str, TaskMetricsOut]
    timing: TimingOut
