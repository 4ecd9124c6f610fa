"""``/metrics`` of a real ``uml serve`` after a real streamed completion on a real worker."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.integration.stack import wait_for

pytestmark = pytest.mark.timeout(120)


def value(text: str, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert found, f"no {sample} in\n{text}"
    return float(found.group(1))


def test_a_streamed_completion_shows_up_in_metrics(http: httpx.Client) -> None:
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 8, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        chunks = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert chunks[-1] == "data: [DONE]" and len(chunks) >= 3
    text = http.get("/metrics").text
    assert value(text, 'uml_time_to_first_token_seconds_count{model="tiny"}') >= 1
    assert value(text, 'uml_inter_token_latency_seconds_count{model="tiny"}') >= 1
    completions = 'uml_http_requests_total{method="POST",route="/v1/completions",status="200"}'
    assert value(text, completions) >= 1
    assert value(text, 'uml_workers{model="tiny"}') >= 1
    assert value(text, 'uml_queue_depth{model="tiny"}') == 0
    assert value(text, "uml_redis_up") == 1
    # the stream above has ended; its subscription closes as its response finishes
    wait_for(
        lambda: value(http.get("/metrics").text, "uml_open_streams") == 0, 10, "no open stream"
    )
