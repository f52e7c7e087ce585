"""The admin's study overview: per study its tasks, experts, progress per mode, washout dates and the
next steps, summarised from the same assignment descriptions the study page shows."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ImagePurpose, Mode, Study, User
from app.studies import repository, service
from app.studies.schemas import AssignmentOut


@dataclass(frozen=True)
class ModeProgress:
    mode: str
    assignments: int
    finished: int
    images_done: int
    images_total: int


@dataclass(frozen=True)
class NextStep:
    text: str
    url: str
    link_text: str


@dataclass(frozen=True)
class Washout:
    expert: str
    task_name: str
    opens_at: datetime | None


@dataclass
class StudyOverview:
    study: Study
    task_names: list[str]
    study_images: int
    practice_images: int
    experts: list[str]
    modes: list[ModeProgress]
    washouts: list[Washout]
    next_steps: list[NextStep] = field(default_factory=list)


def mode_progress(assignments: Sequence[AssignmentOut]) -> list[ModeProgress]:
    """Sums over the assignments of each mode that has any, in the study's order of modes."""
    progress = []
    for mode in Mode:
        of_mode = [item for item in assignments if item.mode == mode.value]
        if of_mode:
            progress.append(
                ModeProgress(
                    mode.value,
                    len(of_mode),
                    sum(item.status == "finished" for item in of_mode),
                    sum(item.images_done for item in of_mode),
                    sum(item.images_total for item in of_mode),
                )
            )
    return progress


def pending_washouts(assignments: Sequence[AssignmentOut]) -> list[Washout]:
    """Aided assignments that do not open yet, soonest first (waiting for the unaided round last)."""
    waiting = [item for item in assignments if not item.is_open and item.status != "finished"]
    waiting.sort(
        key=lambda item: (item.opens_at is None, item.opens_at.timestamp() if item.opens_at else 0.0)
    )
    return [Washout(item.expert, item.task_name, item.opens_at) for item in waiting]


def next_steps(
    study_id: int,
    task_images: dict[str, int],
    assignments: Sequence[AssignmentOut],
    experts_exist: bool,
) -> list[NextStep]:
    """What the admin should do next, in the order a study is set up and run."""
    page = f"/admin/studies/{study_id}"
    if not task_images:
        return [NextStep("The study has no task yet.", f"{page}#new-task-title", "Add a task")]
    steps = [
        NextStep(f"Task {name} has no study images.", page, "Upload images")
        for name, count in task_images.items()
        if count == 0
    ]
    if not experts_exist:
        steps.append(NextStep("There are no expert accounts yet.", f"{page}#expert-title", "Add an expert"))
    if not assignments:
        steps.append(NextStep("Nobody is assigned yet.", f"{page}#grid-title", "Assign experts"))
        return steps
    aided_without_set = sorted(
        {item.task_name for item in assignments if item.mode == Mode.aided and item.suggestion_set_id is None}
    )
    for name in aided_without_set:
        steps.append(
            NextStep(f"Aided assignments of {name} show no suggestions.", page, "Add a suggestion set")
        )
    working = [item for item in assignments if item.is_open and item.status != "finished"]
    if working:
        experts = sorted({item.expert for item in working})
        text = f"{len(working)} open assignment(s) in progress: {', '.join(experts)}."
        steps.append(NextStep(text, f"{page}#progress", "Follow progress"))
    if all(item.status == "finished" for item in assignments):
        url = f"/studies/{study_id}/evaluation"
        steps.append(NextStep("Every assignment is finished.", url, "Open the evaluation"))
    elif any(item.status == "finished" for item in assignments):
        url = f"/studies/{study_id}/evaluation"
        steps.append(NextStep("Some assignments are finished.", url, "See first results"))
    return steps


async def overview(session: AsyncSession, admin: User) -> list[StudyOverview]:
    """Every study, summarised for the admin's landing page."""
    everything = await service.describe_assignments(session, admin)
    experts_exist = bool(await service.experts(session))
    summaries = []
    for study in await repository.list_studies(session, None):
        tasks = await repository.tasks_of_study(session, study.id, None)
        task_ids = {task.id for task in tasks}
        images = await repository.image_counts(session, task_ids)
        practice = await repository.image_counts(session, task_ids, ImagePurpose.practice)
        assignments = [item for item in everything if item.study_id == study.id]
        summary = StudyOverview(
            study=study,
            task_names=[task.name for task in tasks],
            study_images=sum(images.values()),
            practice_images=sum(practice.values()),
            experts=sorted({item.expert for item in assignments}),
            modes=mode_progress(assignments),
            washouts=pending_washouts(assignments),
        )
        task_images = {task.name: images.get(task.id, 0) for task in tasks}
        summary.next_steps = next_steps(study.id, task_images, assignments, experts_exist)
        summaries.append(summary)
    return summaries
