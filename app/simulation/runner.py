"""Run a whole study with simulated experts through the HTTP API, as browsers would.

An admin starts the simulation (experts, tokens, assignments, the time scale = speedup) and reads each
task's scene. Then every simulated expert works concurrently with its own `SimulationClient`: per task,
unaided mode image by image (open a visit, one request per edit with its own idempotency key, then the
model's seconds as active time with heartbeats, close, mark done), finish the assignment. The admin
overrides the washout of every aided assignment (recorded with its reason), and the experts work aided
mode the same way, reviewing the suggestions they are shown.

Time: the server counts a simulated study's visit seconds × speedup. An expert sends its edits first,
pauses the visit's clock (an inactive heartbeat), then stays active for seconds / speedup of wall time on
absolute deadlines, so request latency neither adds up nor counts; what remains is about one round trip ×
speedup per image (see README).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.client import Annotation, SimulationClient
from app.simulation import model
from app.simulation.model import Decision, Expert, ImageWork, Scene, SceneObject, ShownObject
from app.simulation.presets import preset
from app.simulation.world import TASK_KEYS

HEARTBEAT_MODEL_S = 30.0  # half the idle limit (60 s) leaves room for late heartbeats
WASHOUT_REASON = "simulated study (concord simulate): the washout period is skipped"


@dataclass
class SimulationReport:
    study_id: int
    experts: list[str]
    edits: int = 0
    requests: int = 0
    retries: int = 0
    wall_s: float = 0.0
    model_seconds: dict[str, float] = field(default_factory=dict)  # mode → Σ seconds the model spent

    def as_json(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id,
            "experts": self.experts,
            "edits": self.edits,
            "requests": self.requests,
            "retries": self.retries,
            "wall_s": round(self.wall_s, 2),
            "model_seconds": {mode: round(value, 1) for mode, value in self.model_seconds.items()},
        }


@dataclass(frozen=True)
class TaskScene:
    task_id: int
    kind: str
    labels: list[str]
    images: list[tuple[int, Scene]]  # (image id, scene) in task order

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskScene:
        labels = [str(name) for name in data["labels"]]
        images = []
        for item in data["images"]:
            truth = tuple(_scene_object(obj, labels) for obj in item["truth"])
            looks = tuple(_scene_object(obj, labels) for obj in item["lookalikes"])
            scene = Scene(int(item["position"]), int(item["width"]), int(item["height"]), truth, looks)
            images.append((int(item["id"]), scene))
        return cls(int(data["task_id"]), str(data["kind"]), labels, images)


def _scene_object(data: dict[str, Any], labels: list[str]) -> SceneObject:
    box = (float(data["x1"]), float(data["y1"]), float(data["x2"]), float(data["y2"]))
    label = labels.index(data["label"]) if data["label"] is not None else -1
    return SceneObject(box, label, float(data["difficulty"]))


@dataclass
class ExpertRun:
    """One simulated expert: its client, its model per task kind, and the study's scenes."""

    client: SimulationClient
    people: dict[str, Expert]  # task kind → this expert's model
    scenes: dict[int, TaskScene]
    speedup: float
    report: SimulationReport

    async def work(self, mode: str) -> list[int]:
        """Work every task of the mode in task order; returns the assignments finished."""
        finished = []
        for assignment in sorted(await self.client.assignments(), key=lambda a: a.task_id):
            if assignment.mode != mode or assignment.task_id not in self.scenes:
                continue
            scene = self.scenes[assignment.task_id]
            for image_id, image_scene in scene.images:
                await self._image(scene, image_id, image_scene, mode)
            await self.client.finish(assignment.id)
            finished.append(assignment.id)
        return finished

    async def _image(self, task: TaskScene, image_id: int, scene: Scene, mode: str) -> None:
        expert = self.people[task.kind]
        labels = len(task.labels)
        opened = await self.client.open_image(image_id, mode)
        visit = await self.client.open_visit(image_id, mode)
        if mode == "aided":
            shown = _canonical(opened)
            work = model.aided(
                expert,
                scene,
                [_shown(item, task.labels) for item in shown],
                labels,
                TASK_KEYS.get(task.kind, 0),
            )
            await self._review(shown, work, task.labels)
        else:
            work = model.unaided(expert, scene, labels, TASK_KEYS.get(task.kind, 0))
        for created in work.created:
            await self.client.create(image_id, mode, created.box, task.labels[created.label])
        self.report.edits += work.edits
        self.report.model_seconds[mode] = self.report.model_seconds.get(mode, 0.0) + work.seconds
        await self._spend(visit, work.seconds)
        await self.client.mark_done(image_id, mode)

    async def _review(self, shown: Sequence[Annotation], work: ImageWork, labels: list[str]) -> None:
        for annotation, (decision, label, box) in zip(shown, work.decisions, strict=True):
            if decision == Decision.delete:
                await self.client.delete(annotation)
            elif decision == Decision.relabel:
                await self.client.update(annotation, label=labels[label])
            elif decision == Decision.move:
                await self.client.update(annotation, box=box)

    async def _spend(self, visit: int, seconds: float) -> None:
        """Stop the visit's clock, then stay active for the model's seconds (scaled) and close."""
        sent = time.monotonic()
        await self.client.pause(visit)
        start = time.monotonic()
        round_trip = start - sent
        end = start + max(seconds / self.speedup - round_trip, 0.0)
        beat = HEARTBEAT_MODEL_S / self.speedup
        next_beat = start + beat
        while next_beat < end:
            await asyncio.sleep(max(next_beat - time.monotonic(), 0.0))
            await self.client.heartbeat(visit)
            next_beat += beat
        await asyncio.sleep(max(end - time.monotonic(), 0.0))
        await self.client.close_visit(visit)


def _canonical(annotations: list[Annotation]) -> list[Annotation]:
    """The shown suggestions in an order of their content only (the server's order is seeded by ids)."""
    return sorted((a for a in annotations if not a.deleted), key=lambda a: (a.box, a.label))


def _shown(annotation: Annotation, labels: list[str]) -> ShownObject:
    return ShownObject(annotation.box, labels.index(annotation.label))


async def find_study(admin: SimulationClient, reference: str) -> dict[str, Any]:
    for study in await admin.studies():
        if study["name"] == reference or str(study["id"]) == reference:
            return study
    raise LookupError(f"no study {reference!r}")


async def simulate_study(
    base_url: str,
    admin_token: str,
    study: str,
    *,
    experts: int = 10,
    preset_name: str = "paper",
    speedup: float = 50.0,
    seed: int = 0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SimulationReport:
    """Unaided, washout (overridden), aided: the whole study, every expert concurrently."""
    started = time.monotonic()
    populations = preset(preset_name)
    admin = SimulationClient(base_url, admin_token, transport=transport)
    try:
        found = await find_study(admin, study)
        setup = await admin.start_simulation(
            int(found["id"]), experts=experts, preset=preset_name, seed=seed, speedup=speedup
        )
        scenes = {
            int(task["id"]): TaskScene.from_json(await admin.simulation_scene(int(task["id"])))
            for task in setup["tasks"]
        }
        report = SimulationReport(int(found["id"]), [str(e["name"]) for e in setup["experts"]])
        kinds = {scene.kind for scene in scenes.values()}
        people = {
            kind: model.population(populations[kind], experts, seed, TASK_KEYS.get(kind, 0)) for kind in kinds
        }
        clients = [SimulationClient(base_url, str(e["token"]), transport=transport) for e in setup["experts"]]
        try:
            runs = [
                ExpertRun(client, {kind: people[kind][index] for kind in kinds}, scenes, speedup, report)
                for index, client in enumerate(clients)
            ]
            await asyncio.gather(*(run.work("unaided") for run in runs))
            for row in await admin.assignment_rows():
                ours = row["expert"] in report.experts and row["mode"] == "aided"
                if ours and not row["is_open"]:
                    await admin.override_washout(int(row["id"]), WASHOUT_REASON)
            await asyncio.gather(*(run.work("aided") for run in runs))
        finally:
            for client in clients:
                report.requests += client.stats.requests
                report.retries += client.stats.retries
                await client.aclose()
    finally:
        await admin.aclose()
    report.wall_s = time.monotonic() - started
    return report
