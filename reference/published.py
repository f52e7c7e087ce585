"""The layout of the published study's EXACT exports (Marzahl et al. 2020, Asthma part) and its import plan."""

from pathlib import Path

from app.evaluation.importer import ImportFile, ImportRequest

ROUNDS = {"unaided": ("FirstRound", "First Round"), "aided": ("SecondRound", "Second Round")}
PARTICIPANTS = (3, 4, 5, 6, 7, 8, 9, 11, 12, 13)
REGISTER_FILES = {"changed": "class_changed", "deleted": "removed", "nms": "duplicate"}


def export_path(root: Path, participant: int, mode: str) -> Path:
    """One expert's export for one round (FirstRound = unaided, SecondRound = aided)."""
    folder, title = ROUNDS[mode]
    return (
        root / folder / "Participants" / f"export_[{title}] Asthma_LabelStudy_Participant_{participant}.txt"
    )


def read_file(path: Path) -> ImportFile:
    return ImportFile(str(path), path.read_text(encoding="utf-8-sig"))


def import_plan(
    root: Path, study: str, task: str, participants: tuple[int, ...] = PARTICIPANTS
) -> list[tuple[ImportRequest, list[ImportFile]]]:
    """What to import, in order: FirstRound GT as reference and register, the unchanged set as suggestions,
    then every participant's export per round."""
    truth = root / "FirstRound" / "GT"
    plan = [
        (ImportRequest(study, task, "classify", "ground-truth"), [read_file(truth / "ground truth.txt")]),
        (
            ImportRequest(study, task, "classify", "suggestions"),
            [read_file(root / "SecondRound" / "GT" / "unchanged submission_19.txt")],
        ),
    ]
    plan += [
        (
            ImportRequest(study, task, "classify", "injected", error_kind=kind),
            [read_file(truth / f"{name}.txt")],
        )
        for name, kind in REGISTER_FILES.items()
    ]
    plan += [
        (
            ImportRequest(study, task, "classify", "expert", mode=mode),
            [read_file(export_path(root, participant, mode)) for participant in participants],
        )
        for mode in ROUNDS
    ]
    return plan
