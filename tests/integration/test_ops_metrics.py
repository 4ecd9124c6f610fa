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


def test_workers_report_their_engine_series_through_their_heartbeats(http: httpx.Client) -> None:
    body = {"model": "tiny", "prompt": "count", "max_tokens": 8, "temperature": 0}
    assert http.post("/v1/completions", json=body).status_code == 200

    def tokens(text: str) -> float:
        found = re.findall(
            r'^uml_worker_tokens_total\{model="tiny",worker="[^"]+"\} (\S+)$', text, re.M
        )
        return sum(float(v) for v in found)

    # heartbeats carry the counters; the next beat (1 s) after the job shows its tokens
    wait_for(lambda: tokens(http.get("/metrics").text) >= 8, 10, "the worker's token count")
    text = http.get("/metrics").text
    assert re.search(
        r'^uml_worker_engine_steps_total\{model="tiny",worker="\S+"\} [1-9]', text, re.M
    )
    assert re.search(r'^uml_worker_model_load_seconds\{model="tiny",worker="\S+"\} ', text, re.M)
    assert re.search(r'^uml_worker_free_slots\{worker="\S+"\} ', text, re.M)
