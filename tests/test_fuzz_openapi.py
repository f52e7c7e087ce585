"""Property-based fuzzing of every API operation from the OpenAPI document (schemathesis + hypothesis).

For each operation, hypothesis draws a few requests that fit the schema and a few that break it (seeded
and derandomised, so CI sees the same requests every run). They are sent through the app as the admin
and as an expert of a seeded study, half of them with the path ids of objects that exist. Every
answer must be below 500 and match the document: status code, content type, headers and body schema.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from httpx import AsyncClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ClientFactory
from tests.factories import make_study

EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 4}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
BOX = {"label": "tumor", "x1": 5, "y1": 5, "x2": 25, "y2": 25}


@dataclass(frozen=True)
class Sent:
    role: str
    case: Any
    status: int
    failure: str


def _schema() -> Any:
    from app.main import create_app

    return schemathesis.openapi.from_dict(create_app().openapi())


def _operations() -> Iterator[Any]:
    for result in _schema().get_all_operations():
        yield result.ok()


def _draw(operation: Any, mode: GenerationMode, count: int) -> list[Any]:
    """The same `count` cases on every run: hypothesis derandomised, no example database."""
    cases: list[Any] = []

    @given(case=operation.as_strategy(generation_mode=mode), use_real_id=st.booleans())
    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def collect(case: Any, use_real_id: bool) -> None:
        cases.append((case, use_real_id))

    try:
        collect()
    except Unsatisfiable:  # nothing to break: an operation without parameters has no negative cases
        assert mode is GenerationMode.NEGATIVE
    return cases


async def _seed(app: object, client_for: ClientFactory) -> dict[str, int]:
    """A study with objects behind every kind of path id the API names."""
    setup = await make_study(app, experts=("alice", "bob"), modes=("unaided", "aided"))
    admin, alice = await client_for("admin"), await client_for("alice")
    image = setup.images[0].id
    annotation = (await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=BOX)).json()
    visit = (await alice.post(f"/api/v1/images/{image}/visits?mode=unaided")).json()
    assignment = (await alice.get("/api/v1/assignments")).json()[0]
    suggestions = {"name": "s", "suggestions": [{"image": "img0.png", **BOX, "score": 0.5}]}
    suggestion_set = (
        await admin.post(f"/api/v1/tasks/{setup.task.id}/suggestion-sets", json=suggestions)
    ).json()
    job = (await admin.post("/api/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}})).json()
    return {
        "study_id": setup.study.id,
        "task_id": setup.task.id,
        "image_id": image,
        "annotation_id": annotation["id"],
        "visit_id": visit["id"],
        "assignment_id": assignment["id"],
        "set_id": suggestion_set["id"],
        "job_id": job["id"],
    }


async def _send(client: AsyncClient, case: Any) -> Any:
    """Encoded as schemathesis' own transport would (requests), sent through the app with httpx."""
    kwargs = case.as_transport_kwargs(base_url="http://test")
    kwargs.pop("auth", None)
    prepared = requests.Request(**kwargs).prepare()
    headers = {
        name: value.decode() if isinstance(value, bytes) else value
        for name, value in prepared.headers.items()
    }
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    assert body is None or isinstance(body, bytes)
    return await client.request(prepared.method or "GET", prepared.url or "", headers=headers, content=body)


def _failure(case: Any, response: Any) -> str:
    try:
        case.validate_response(response, checks=CHECKS)
    except Exception as error:
        return str(error)[:600]
    return ""


async def _fuzz(client: AsyncClient, role: str, operation: Any, ids: dict[str, int]) -> list[Sent]:
    failures = []
    for mode, count in EXAMPLES.items():
        for case, use_real_id in _draw(operation, mode, count):
            if use_real_id and case.path_parameters:
                for name in case.path_parameters:
                    if name in ids:
                        case.path_parameters[name] = ids[name]
            response = await _send(client, case)
            failure = _failure(case, response)
            if failure:
                failures.append(Sent(role, case, response.status_code, failure))
    return failures


OPERATIONS = list(_operations())


@pytest.mark.slow
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
async def test_every_operation_answers_below_500_and_as_documented(
    app: object, client_for: ClientFactory, operation: Any
) -> None:
    ids = await _seed(app, client_for)
    failures = []
    for role, user in (("admin", "admin"), ("expert", "alice")):
        failures += await _fuzz(await client_for(user), role, operation, ids)
    report = "\n\n".join(
        f"as {sent.role}: {sent.case.method} {sent.case.formatted_path} -> {sent.status}\n{sent.failure}"
        for sent in failures
    )
    assert not failures, report
