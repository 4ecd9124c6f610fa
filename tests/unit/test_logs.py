"""Process logs (api.logs): JSON lines with the request and job ids, text on a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.logs import REQUEST_ID, configure_logging, job_context, resolve_format
from tests.auth import AUTH
from tests.unit.test_api_http import USER, settings
from uml.redis_server import free_port


@pytest.fixture
def root_logger() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert resolve_format("auto", Terminal()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="UML_LOG_FORMAT"):
        resolve_format("yaml", io.StringIO())


@pytest.mark.usefixtures("root_logger")
def test_json_lines_carry_the_ids_in_context() -> None:
    buf = io.StringIO()
    assert configure_logging("json", "INFO", buf) == "json"
    log = logging.getLogger("uml.test")
    log.debug("not at INFO")
    log.info("plain %s", "line")
    token = REQUEST_ID.set("req-1")
    try:
        with job_context("job-1"):
            log.warning("about a job")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        REQUEST_ID.reset(token)
    plain, job, failed = lines(buf)
    assert plain["message"] == "plain line" and plain["level"] == "INFO"
    assert plain["logger"] == "uml.test" and plain["time"].endswith("Z")
    assert "request_id" not in plain and "job_id" not in plain
    assert (job["request_id"], job["job_id"]) == ("req-1", "job-1")
    assert failed["request_id"] == "req-1" and "job_id" not in failed
    assert "RuntimeError: boom" in failed["exc_info"]


@pytest.mark.usefixtures("root_logger")
def test_text_lines_show_the_ids() -> None:
    buf = io.StringIO()
    configure_logging("text", "INFO", buf)
    with job_context("job-2"):
        logging.getLogger("uml.test").info("hello")
    assert buf.getvalue().rstrip().endswith("INFO uml.test [job=job-2]: hello")


@pytest.mark.usefixtures("root_logger")
async def test_a_line_logged_while_serving_a_request_carries_its_id() -> None:
    buf = io.StringIO()
    configure_logging("json", "INFO", buf)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: the handler logs a warning
    async with AsyncTestClient(create_app(settings(url))) as client:
        resp = await client.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": USER}, headers=AUTH
        )
    assert resp.status_code == 503
    [warning] = [x for x in lines(buf) if x["message"].startswith("redis unavailable")]
    assert warning["request_id"] == resp.headers["x-request-id"]
