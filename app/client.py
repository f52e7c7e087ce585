"""Asynchronous client of Concord's JSON API, as a simulated expert or a script uses it.

Log in with a personal API token, then work as an expert does: list the assignments and their images,
open a visit and send heartbeats, create, move, relabel and delete objects, mark images done, finish.
Every edit carries an `Idempotency-Key` made once per edit; a network error, a timeout or a 5xx answer is
retried with the same key until the retry policy gives up, so that an edit is applied at most once and, when
the call returns, at least once. Other 4xx answers are the request's fault and are raised at once.

Only httpx, httptools and the standard library: simulated experts in other processes extend this class.
Without a `transport`, requests go through `app.lean_http` (plain http over asyncio's own transports, a
few times cheaper per request than httpx's client); with one (an ASGI app, a test's), through httpx.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.lean_http import LeanHttp

API_PREFIX = "/api/v1"
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts and by wall time per call."""

    attempts: int = 60
    first_delay_s: float = 0.05
    max_delay_s: float = 1.0
    deadline_s: float = 60.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class CallStats:
    """What the client saw, over all its calls: requests sent (retries included) and why it retried."""

    requests: int = 0
    retries: int = 0
    errors_5xx: int = 0
    network_errors: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        if status >= 500:
            self.errors_5xx += 1


class ApiError(Exception):
    """A final answer that is not 2xx (after retries, for 5xx), or a call whose retries ran out."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Annotation:
    id: int
    image_id: int
    mode: str
    label: str
    box: Box
    version: int
    deleted: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Annotation:
        box = (float(data["x1"]), float(data["y1"]), float(data["x2"]), float(data["y2"]))
        return cls(
            id=int(data["id"]),
            image_id=int(data["image_id"]),
            mode=str(data["mode"]),
            label=str(data["label"]),
            box=box,
            version=int(data["version"]),
            deleted=bool(data["deleted"]),
        )


@dataclass(frozen=True)
class Edit:
    """An acknowledged edit: its idempotency key, the HTTP status of the final answer and the object."""

    key: str
    status: int
    annotation: Annotation
    seconds: float


@dataclass(frozen=True)
class Assignment:
    id: int
    task_id: int
    mode: str
    status: str
    is_open: bool


@dataclass(frozen=True)
class ImageInfo:
    id: int
    name: str
    width: int
    height: int


def new_key() -> str:
    return uuid.uuid4().hex


class ConcordClient:
    """One user's session with the API: a token, a connection pool, a retry policy and call statistics."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.stats = CallStats()
        base = base_url.rstrip("/") + API_PREFIX
        authorization = {"Authorization": f"Bearer {token}"}
        self._lean: LeanHttp | None = None
        self._http: httpx.AsyncClient | None = None
        if transport is None and base.startswith("http://"):
            self._lean = LeanHttp(base, authorization, timeout_s)
        else:
            self._http = httpx.AsyncClient(
                base_url=base, headers=authorization, timeout=timeout_s, transport=transport
            )

    async def __aenter__(self) -> ConcordClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()
        if self._http is not None:
            await self._http.aclose()

    # ------------------------------------------------------------ transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        key: str | None = None,
    ) -> httpx.Response:
        """Send until a final answer: 2xx returns, 4xx raises, network errors and 5xx are retried."""
        headers = {"Idempotency-Key": key} if key else None
        started = time.monotonic()
        for attempt in range(1, self.retry.attempts + 1):
            response = await self._send_once(method, path, json, params, headers)
            if response is not None and response.status_code not in RETRYABLE_STATUS:
                return _checked(response)
            if attempt == self.retry.attempts or time.monotonic() - started > self.retry.deadline_s:
                break
            self.stats.retries += 1
            await asyncio.sleep(self.retry.delay(attempt))
        raise ApiError(None, f"{method} {path}: gave up after {attempt} attempts")

    async def _send_once(
        self,
        method: str,
        path: str,
        json: Any,
        params: Mapping[str, str | int] | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response | None:
        self.stats.requests += 1
        try:
            response = await self._send(method, path, json, params, headers)
        except httpx.TransportError:
            self.stats.network_errors += 1
            return None
        self.stats.count(response.status_code)
        return response

    async def _send(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        if self._lean is not None:
            body = None if json is None else _json_body(json)
            return await self._lean.request(
                method, path, body=body, params=params, headers=headers, timeout_s=timeout_s
            )
        assert self._http is not None
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
        return await self._http.request(
            method, path, json=json, params=params, headers=headers, timeout=timeout
        )

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()

    # ------------------------------------------------------------ reading

    async def health(self) -> bool:
        try:
            response = await self._send("GET", "/health", timeout_s=2.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def me(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._json("GET", "/me")
        return data

    async def assignments(self) -> list[Assignment]:
        return [
            Assignment(int(a["id"]), int(a["task_id"]), str(a["mode"]), str(a["status"]), bool(a["is_open"]))
            for a in await self._json("GET", "/assignments")
        ]

    async def images(self, task_id: int) -> list[ImageInfo]:
        return [
            ImageInfo(int(i["id"]), str(i["name"]), int(i["width"]), int(i["height"]))
            for i in await self._json("GET", f"/tasks/{task_id}/images")
        ]

    async def labels(self, task_id: int) -> list[str]:
        return [str(label["name"]) for label in await self._json("GET", f"/tasks/{task_id}/labels")]

    async def open_image(self, image_id: int, mode: str) -> list[Annotation]:
        """Open an image before working on it (in aided mode its first open copies the suggestions into
        the expert's objects); answers the objects. Opening again changes nothing, so a retry is safe."""
        found = await self._json("POST", f"/images/{image_id}/open", params={"mode": mode})
        return [Annotation.from_json(item) for item in found]

    async def annotations(self, image_id: int, mode: str) -> list[Annotation]:
        found = await self._json("GET", f"/images/{image_id}/annotations", params={"mode": mode})
        return [Annotation.from_json(item) for item in found]

    # ------------------------------------------------------------ visits and progress

    async def open_visit(self, image_id: int, mode: str) -> int:
        """A retried open may record a second visit; visits only add up active time, so that is harmless."""
        visit = await self._json("POST", f"/images/{image_id}/visits", params={"mode": mode})
        return int(visit["id"])

    async def heartbeat(self, visit_id: int) -> None:
        await self.request("POST", f"/visits/{visit_id}/heartbeat", json={"active": True})

    async def close_visit(self, visit_id: int) -> None:
        await self.request("POST", f"/visits/{visit_id}/close", json={"active": True})

    async def mark_done(self, image_id: int, mode: str) -> None:
        await self.request("POST", f"/images/{image_id}/done", params={"mode": mode})

    async def finish(self, assignment_id: int) -> None:
        await self.request("POST", f"/assignments/{assignment_id}/finish")

    # ------------------------------------------------------------ jobs (admin)

    async def submit_job(self, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Queue a job; not retried with a key, so a retry after a lost answer may queue a second one."""
        job: dict[str, Any] = await self._json("POST", "/jobs", json={"kind": kind, "params": dict(params)})
        return job

    async def job(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = await self._json("GET", f"/jobs/{job_id}")
        return job

    # ------------------------------------------------------------ edits (one idempotency key each)

    async def create(self, image_id: int, mode: str, box: Box, label: str, key: str | None = None) -> Edit:
        x1, y1, x2, y2 = box
        body = {"label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
        return await self._edit("POST", f"/images/{image_id}/annotations", body, {"mode": mode}, key)

    async def update(
        self,
        annotation: Annotation,
        *,
        box: Box | None = None,
        label: str | None = None,
        key: str | None = None,
    ) -> Edit:
        body: dict[str, Any] = {"version": annotation.version}
        if box is not None:
            body.update(zip(("x1", "y1", "x2", "y2"), box, strict=True))
        if label is not None:
            body["label"] = label
        return await self._edit("PATCH", f"/annotations/{annotation.id}", body, None, key)

    async def delete(self, annotation: Annotation, key: str | None = None) -> Edit:
        return await self._state_change(annotation, "delete", key)

    async def restore(self, annotation: Annotation, key: str | None = None) -> Edit:
        return await self._state_change(annotation, "restore", key)

    async def accept(self, annotation: Annotation, key: str | None = None) -> Edit:
        return await self._state_change(annotation, "accept", key)

    async def _state_change(self, annotation: Annotation, action: str, key: str | None) -> Edit:
        body = {"version": annotation.version}
        return await self._edit("POST", f"/annotations/{annotation.id}/{action}", body, None, key)

    async def _edit(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        params: Mapping[str, str | int] | None,
        key: str | None,
    ) -> Edit:
        key = key or new_key()
        started = time.perf_counter()
        response = await self.request(method, path, json=body, params=params, key=key)
        elapsed = time.perf_counter() - started
        return Edit(key, response.status_code, Annotation.from_json(response.json()), elapsed)


def _json_body(data: Any) -> bytes:
    """The body httpx makes of `json=data`."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        detail = str(response.json().get("detail", response.text))
    except ValueError:
        detail = response.text
    raise ApiError(response.status_code, detail)


class SimulationClient(ConcordClient):
    """The calls a simulated study needs beyond an expert's: an admin starts the simulation, reads the
    scene the expert model works from and overrides the washout; an expert pauses a visit's clock."""

    async def studies(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._json("GET", "/studies")
        return found

    async def start_simulation(
        self, study_id: int, *, experts: int, preset: str, seed: int, speedup: float
    ) -> dict[str, Any]:
        """Not keyed: a retry after a lost answer meets the started simulation and answers 409."""
        body = {"experts": experts, "preset": preset, "seed": seed, "speedup": speedup}
        setup: dict[str, Any] = await self._json("POST", f"/studies/{study_id}/simulation", json=body)
        return setup

    async def simulation_scene(self, task_id: int) -> dict[str, Any]:
        scene: dict[str, Any] = await self._json("GET", f"/tasks/{task_id}/simulation-scene")
        return scene

    async def assignment_rows(self) -> list[dict[str, Any]]:
        """The assignments as the API gives them (for an admin: everyone's, with the expert's name)."""
        rows: list[dict[str, Any]] = await self._json("GET", "/assignments")
        return rows

    async def override_washout(self, assignment_id: int, reason: str) -> None:
        await self.request("POST", f"/assignments/{assignment_id}/washout-override", json={"reason": reason})

    async def pause(self, visit_id: int) -> None:
        """A heartbeat that counts the time since the last one as inactive."""
        await self.request("POST", f"/visits/{visit_id}/heartbeat", json={"active": False})
