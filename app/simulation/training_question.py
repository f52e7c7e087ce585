"""The paper's training question asked in advance: validation accuracy vs. experts per mode, on phantoms.

"How many unaided experts match one aided expert?" For each repeat r (seed s = seed + r): a phantom detect
region (`world.detect_fields`, 4 · region_scale fields) with the paper's injected suggestions, and a
population of simulated experts (the preset's detect population, seed s) who annotate every field unaided
and aided (`world.run`, evaluation-level: no HTTP). The first k experts of a mode label a training set
exactly as Concord labels a real one (`app.training.service.samples_of_arrays`): their boxes merged into
cells by NMS, each cell a positive with v = the distinct experts who marked it; detector candidates that
no chosen expert marked and background points are negatives; the held-out fields validate against the
phantom's ground truth. The training itself (ResNet-18, VotesLoss or BCE) lives in the worker
(`worker/training/question.py`); this module is numpy only, so the API can render results without torch.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.simulation import world
from app.simulation.model import population
from app.simulation.presets import preset
from app.simulation.schemas import TrainingQuestionParams
from app.training.service import Samples, samples_of_arrays, split_images

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Patches = npt.NDArray[np.uint8]
MODES = ("unaided", "aided")
WHITE = 255


@dataclass(frozen=True)
class Located:
    """Boxes (N, 4) in their field's pixels and the field index (N,) of each."""

    boxes: FloatArray
    images: IntArray

    @classmethod
    def of(cls, rows: list[tuple[int, tuple[float, float, float, float]]]) -> Located:
        boxes = np.array([box for _, box in rows], dtype=np.float64).reshape(-1, 4)
        return cls(boxes, np.array([image for image, _ in rows], dtype=np.int64))


@dataclass(frozen=True)
class Region:
    """One repeat's phantom region: pixels, field windows, and what the simulated experts marked."""

    image: Patches  # (H, W, 3) uint8, the whole region
    windows: list[world.Window]
    experts: dict[str, list[Located]]  # mode → expert (population order) → final boxes
    candidates: Located
    truth: Located
    sizes: IntArray  # (fields, 2): width, height
    held_out: BoolArray  # (fields,)


def region(params: TrainingQuestionParams, repeat: int) -> Region:
    """Render the repeat's phantom and let max(experts) simulated experts annotate it in both modes."""
    seed = params.seed + repeat
    fields = 4 * params.region_scale
    phantom, windows = world.detect_fields(seed, fields)
    task = world.sim_task("detect", seed, fields, world.detect_scenes(phantom, windows))
    experts = population(preset(params.preset)["detect"], max(params.experts), seed, task.task_key)
    result = world.run(task, experts, MODES)
    return Region(
        image=phantom.image,
        windows=windows,
        experts={
            mode: [_final_boxes(task, mode, work) for work in result.work[mode].values()] for mode in MODES
        },
        candidates=Located.of(
            [
                (c.image_id - 1, (c.box.x1, c.box.y1, c.box.x2, c.box.y2))
                for c in world.detector_candidates(task.scenes, seed)
            ]
        ),
        truth=Located.of([(i, obj.box) for i, scene in enumerate(task.scenes) for obj in scene.truth]),
        sizes=np.array([[scene.width, scene.height] for scene in task.scenes], dtype=np.int64),
        held_out=split_images(len(task.scenes), params.validation_images),
    )


def _final_boxes(task: world.SimTask, mode: str, work: list[Any]) -> Located:
    shown = task.shown if mode == "aided" else tuple(() for _ in task.scenes)
    return Located.of(
        [
            (image, box)
            for image, (done, items) in enumerate(zip(work, shown, strict=True))
            for box, _ in world.final_objects(done, items)
        ]
    )


def vote_samples(
    experts: list[Located],
    candidates: Located,
    truth: Located,
    sizes: IntArray,
    held_out: BoolArray,
    params: TrainingQuestionParams,
) -> tuple[Samples, Samples]:
    """Training samples labelled by these experts' votes, validation samples labelled by the truth."""
    boxes = np.concatenate([expert.boxes for expert in experts]).reshape(-1, 4)
    images = np.concatenate([expert.images for expert in experts]).astype(np.int64)
    group = np.concatenate([np.full(len(expert.images), index) for index, expert in enumerate(experts)])
    return samples_of_arrays(
        (boxes, images, group.astype(np.int64)),
        (candidates.boxes, candidates.images),
        (truth.boxes, truth.images),
        sizes,
        held_out,
        params,
    )


def region_samples(
    region: Region, mode: str, count: int, params: TrainingQuestionParams
) -> tuple[Samples, Samples]:
    """The first `count` experts of a mode as a training set of the region."""
    return vote_samples(
        region.experts[mode][:count], region.candidates, region.truth, region.sizes, region.held_out, params
    )


def patches(region: Region, samples: Samples, patch: int) -> Patches:
    """uint8 (N, patch, patch, 3) centred on the samples, cut from the region; outside it is white."""
    half = patch // 2
    padded = np.pad(region.image, ((patch, patch), (patch, patch), (0, 0)), constant_values=WHITE)
    out = np.empty((len(samples), patch, patch, 3), dtype=np.uint8)
    for row, ((cx, cy), field) in enumerate(zip(samples.centres, samples.image_index, strict=True)):
        left, top, _, _ = region.windows[int(field)]
        x = left + round(float(cx)) - half + patch
        y = top + round(float(cy)) - half + patch
        out[row] = padded[y : y + patch, x : x + patch]
    return out


def label_quality(region: Region, train: Samples) -> tuple[float, float]:
    """(precision, recall) of the training positives against the truth on the training fields: the share
    of positives whose centre lies in a true figure's box, and of true figures holding a positive's centre."""
    on_train = ~region.held_out[region.truth.images]
    boxes, images = region.truth.boxes[on_train], region.truth.images[on_train]
    centres, where = train.centres[train.positive], train.image_index[train.positive]
    inside = (
        (where[:, None] == images[None, :])
        & (centres[:, None, 0] >= boxes[None, :, 0])
        & (centres[:, None, 0] <= boxes[None, :, 2])
        & (centres[:, None, 1] >= boxes[None, :, 1])
        & (centres[:, None, 1] <= boxes[None, :, 3])
    )
    precision = float(inside.any(axis=1).mean()) if len(centres) else math.nan
    recall = float(inside.any(axis=0).mean()) if len(boxes) else math.nan
    return precision, recall


# ---------------------------------------------------------------- the answer


def summarise(params: TrainingQuestionParams, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The result: one row per loss × mode × experts (mean and sd over repeats), the answer per loss."""
    rows = []
    for loss in params.losses:
        for mode in MODES:
            for count in params.experts:
                chosen = [r for r in runs if (r["loss"], r["mode"], r["experts"]) == (loss, mode, count)]
                if chosen:
                    rows.append(_row(loss, mode, count, chosen))
    answers = {loss: answer(rows, loss) for loss in params.losses}
    return {
        "params": params.model_dump(mode="json"),
        "rows": rows,
        "answers": answers,
        "answer": answers[params.losses[0]]["text"],
        "runs": runs,
    }


def _row(loss: str, mode: str, count: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [float(r["accuracy"]) for r in runs]
    return {
        "loss": loss,
        "mode": mode,
        "experts": count,
        "accuracies": accuracies,
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_sd": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
        "label_precision": _mean(r["label_precision"] for r in runs),
        "label_recall": _mean(r["label_recall"] for r in runs),
        "train_samples": _mean(r["train_samples"] for r in runs),
    }


def _mean(values: Any) -> float:
    present = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(present)) if present else math.nan


def answer(rows: list[dict[str, Any]], loss: str) -> dict[str, Any]:
    """The smallest tested k whose mean unaided accuracy reaches one aided expert's, or None."""
    by = {(r["mode"], r["experts"]): r["accuracy_mean"] for r in rows if r["loss"] == loss}
    yardstick = by.get(("aided", 1))
    unaided = sorted((count, value) for (mode, count), value in by.items() if mode == "unaided")
    found = next((count for count, value in unaided if yardstick is not None and value >= yardstick), None)
    if yardstick is None or not unaided:
        text = f"{loss}: no aided single-expert result to compare with"
    elif found is None:
        most, value = unaided[-1]
        text = (
            f"{loss}: not within the tested range — {most} unaided experts reach validation accuracy "
            f"{value:.3f}, one aided expert {yardstick:.3f}"
        )
    else:
        value = by[("unaided", found)]
        experts = "1 unaided expert matches" if found == 1 else f"{found} unaided experts match"
        text = f"{loss}: {experts} one aided expert (validation accuracy {value:.3f} ≥ {yardstick:.3f})"
    return {"unaided_experts": found, "aided_one_accuracy": yardstick, "text": text}


def figure(result: dict[str, Any], fmt: str = "svg") -> bytes:
    """Mean validation accuracy (± sd over repeats) vs. experts, one line per mode (and loss)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 3.6), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    colours = {"unaided": "#1f77b4", "aided": "#d62728"}
    styles = {"votes": "-", "bce": "--"}
    losses = list(dict.fromkeys(row["loss"] for row in result["rows"]))
    for loss in losses:
        for mode in MODES:
            rows = [r for r in result["rows"] if (r["loss"], r["mode"]) == (loss, mode)]
            if not rows:
                continue
            axes.errorbar(
                [r["experts"] for r in rows],
                [r["accuracy_mean"] for r in rows],
                yerr=[r["accuracy_sd"] for r in rows],
                color=colours[mode],
                linestyle=styles.get(loss, "-"),
                marker="o",
                capsize=3,
                label=f"{mode} ({_loss_name(loss)})" if len(losses) > 1 else mode,
            )
    yardstick = result["answers"][losses[0]]["aided_one_accuracy"] if losses else None
    if yardstick is not None:
        which = f" ({_loss_name(losses[0])})" if len(losses) > 1 else ""
        axes.axhline(yardstick, color="#888888", linestyle=":", linewidth=1, label=f"one aided expert{which}")
    axes.set_xlabel("experts per mode whose votes label the training set")
    axes.set_ylabel("validation accuracy")
    axes.set_xticks(sorted({r["experts"] for r in result["rows"]}))
    repeats = result["params"]["repeats"]
    axes.set_title(
        f"Training on simulated experts' labels (phantoms, {repeats} repeat{'s' if repeats > 1 else ''})"
    )
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=110)
    return buffer.getvalue()


def _loss_name(loss: str) -> str:
    return "VotesLoss" if loss == "votes" else "BCE"


def describe(result: dict[str, Any]) -> str:
    """The result as a text table and the answers (what `concord plan --training-question` prints)."""
    params = result["params"]
    lines = [
        f"training question: preset {params['preset']}, phantom region scale {params['region_scale']}, "
        f"{params['repeats']} repeat(s) from seed {params['seed']}, patches {params['patch_size']} px, "
        f"{params['epochs_frozen']} + {params['epochs_unfrozen']} epochs",
        "loss   mode     experts  val accuracy (mean ± sd)  label precision  label recall  train samples",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['loss']:<6} {row['mode']:<8} {row['experts']:>7}  {row['accuracy_mean']:>10.3f} ± {row['accuracy_sd']:.3f}"
            f"  {row['label_precision']:>15.2f}  {row['label_recall']:>12.2f}  {row['train_samples']:>13.0f}"
        )
    lines.extend(answer["text"] for answer in result["answers"].values())
    return "\n".join(lines)
