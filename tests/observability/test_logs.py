"""One JSON log line per request and per job step, carrying the request id or the job id."""

import json
import logging
import logging.config
import sys

import pytest
from httpx import AsyncClient

from app.config import Settings
from app.observability.logs import JsonFormatter, job_context, logging_config, request_id_var


def _lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(record)) for record in caplog.records if record.name == logger]


async def test_each_request_writes_one_line_with_its_id_route_status_and_duration(
    anonymous: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="concord.request"):
        response = await anonymous.get("/api/v1/health")
    [line] = _lines(caplog, "concord.request")
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["method"], line["route"], line["status"]) == ("GET", "/api/v1/health", 200)
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    assert line["level"] == "info"
    assert line["message"] == "GET /api/v1/health 200"


async def test_a_request_id_offered_by_the_client_is_kept_and_a_bad_one_replaced(
    anonymous: AsyncClient,
) -> None:
    kept = await anonymous.get("/healthz", headers={"X-Request-ID": "edge-7f3a.1"})
    assert kept.headers["X-Request-ID"] == "edge-7f3a.1"
    replaced = await anonymous.get("/healthz", headers={"X-Request-ID": "no spaces or <tags> here"})
    assert replaced.headers["X-Request-ID"] not in ("", "no spaces or <tags> here")
    first, second = await anonymous.get("/healthz"), await anonymous.get("/healthz")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_lines_carry_the_job_id_and_extra_fields_inside_a_job_step() -> None:
    record = logging.LogRecord("worker", logging.INFO, __file__, 1, "job %d: %s", (7, "succeeded"), None)
    record.step, record.duration_s = "finish", 1.5
    with job_context(7):
        line = json.loads(JsonFormatter().format(record))
    assert line["job_id"] == 7
    assert "request_id" not in line
    assert (line["message"], line["step"], line["duration_s"]) == ("job 7: succeeded", "finish", 1.5)
    assert "job_id" not in json.loads(JsonFormatter().format(record))


def test_an_exception_is_one_line_with_its_traceback() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.LogRecord("worker", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    token = request_id_var.set("r1")
    try:
        text = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    assert "\n" not in text
    line = json.loads(text)
    assert line["request_id"] == "r1"
    assert "ValueError: broken" in str(line["exception"])


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_logging_config_is_accepted_by_dictconfig(log_format: str) -> None:
    config = logging_config(Settings(log_format=log_format, log_level="WARNING"))
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logging.config.dictConfig(config)
        assert root.level == logging.WARNING
        [handler] = [item for item in root.handlers if isinstance(item, logging.StreamHandler)]
        expected = JsonFormatter if log_format == "json" else logging.Formatter
        assert isinstance(handler.formatter, expected)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
