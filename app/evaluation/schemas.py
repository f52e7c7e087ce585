"""Request and response models of the import, the metrics and the exports.

Metric values that are undefined (no experts, no spread) are null in JSON, never NaN.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ImportRole = Literal["ground-truth", "suggestions", "expert", "injected"]
ErrorKind = Literal["class_changed", "removed", "duplicate", "false_positive", "grade_shifted"]
EvaluatedMode = Literal["unaided", "aided"]
TaskKindName = Literal["classify", "grade", "detect"]
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


class TaskMetricsOut(BaseModel):
    modes: dict[str, ModeMetricsOut]
    suggestions: SuggestionsOut
    injected_errors: dict[str, dict[str, dict[str, InjectedModeOut]]]
    statistics: dict[str, TestsOut]


class TimingOut(BaseModel):
    load_s: float
    compute_s: float


class StudyMetricsOut(BaseModel):
    study: str
    iou: float
    error_iou: float
    tasks: dict[str, TaskMetricsOut]
    timing: TimingOut
