"""The OpenAPI document tells the truth (AsyncTestClient, real Redis): bodies handlers decode
themselves are documented and required, bounds hold, streams are ``text/event-stream``,
``OPTIONS`` names every method, and each field documented with the one value served is
refused (400 ``unsupported_parameter``) for any other, as :mod:`api.validation` does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api import validation
from api.app import create_app
from api.errors import APIError
from api.request_schemas import served_request
from protocol.settings import ServerSettings
from tests.auth import AUTH
from tests.unit.test_api_http import error_of, settings


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    cfg = settings(redis_url, max_stop=2, max_stop_chars=8, max_messages=3, max_prompt_chars=99)
    async with AsyncTestClient(create_app(cfg)) as client:
        client.headers.update(AUTH)
        yield client


@pytest.fixture
async def document(client: AsyncTestClient[Any]) -> dict[str, Any]:
    doc: dict[str, Any] = (await client.get("/schema/openapi.json")).json()
    return doc


def body_of(document: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    body: dict[str, Any] = document["paths"][path][method]["requestBody"]
    return body


@pytest.mark.parametrize(
    "path",
    [
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/jobs",
        "/v1/batches",
        "/v1/files",
        "/admin/keys",
        "/load_model",
        "/unload_model",
    ],
)
def test_bodies_handlers_decode_are_documented_and_required(
    document: dict[str, Any], path: str
) -> None:
    assert body_of(document, path)["required"] is True


def test_a_rotation_body_is_documented_and_optional(document: dict[str, Any]) -> None:
    body = body_of(document, "/admin/keys/{key_id}/rotate")
    assert body["required"] is False
    assert "grace" in body["content"]["application/json"]["schema"]["properties"]


def test_bounds_litestar_drops_are_written(document: dict[str, Any]) -> None:
    """``ge=0`` is falsy: Litestar left ``since`` and ``after`` unbounded below."""
    params = {
        (path, p["name"]): p["schema"]
        for path in ("/admin/audit", "/v1/jobs/{job_id}/events")
        for p in document["paths"][path]["get"]["parameters"]
    }
    assert params[("/admin/audit", "since")]["minimum"] == 0
    assert params[("/v1/jobs/{job_id}/events", "after")]["minimum"] == 0


def test_batch_endpoint_and_window_are_enums(document: dict[str, Any]) -> None:
    props = body_of(document, "/v1/batches")["content"]["application/json"]["schema"]
    assert props["properties"]["endpoint"]["enum"] == ["/v1/chat/completions", "/v1/completions"]
    assert props["properties"]["completion_window"]["enum"] == ["24h"]


def test_streams_are_documented_as_event_streams(document: dict[str, Any]) -> None:
    events = document["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]
    assert set(events["content"]) == {"text/event-stream"}
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    assert set(chat["content"]) == {"application/json", "text/event-stream"}
    event = events["content"]["text/event-stream"]["schema"]
    assert event["properties"]["data"]["type"] == "string"  # each event, as EventSource reads it


def test_the_apps_own_caps_are_in_its_document(document: dict[str, Any]) -> None:
    chat = body_of(document, "/v1/chat/completions")["content"]["application/json"]["schema"]
    stop = chat["properties"]["stop"]["anyOf"]
    assert stop[0]["maxLength"] == 8 and stop[1]["maxItems"] == 2
    assert chat["properties"]["messages"]["maxItems"] == 3
    assert chat["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 64
    job = body_of(document, "/v1/jobs")["content"]["application/json"]["schema"]
    completion = job["oneOf"][0]["properties"]["body"]["properties"]
    assert completion["prompt"]["anyOf"][0]["maxLength"] == 99


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/jobs", "GET, OPTIONS, POST"),
        ("/v1/files/f", "DELETE, GET, OPTIONS"),
        ("/v1/batches", "GET, OPTIONS, POST"),
        ("/admin/keys", "GET, OPTIONS, POST"),
    ],
)
async def test_options_names_every_method_of_the_path(
    redis_url: str, path: str, allow: str
) -> None:
    async with AsyncTestClient(create_app(settings(redis_url))) as client:  # no key needed
        response = await client.options(path)
    assert response.status_code == 204 and response.headers["allow"] == allow


# A value outside what each field is documented to serve, per kind.
UNSERVED: dict[str, dict[str, Any]] = {
    "completion": {
        "n": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": -1,
        "logit_bias": {"1": 1},
        "logprobs": 1,
        "best_of": 2,
        "echo": True,
        "suffix": "x",
    },
    "chat": {
        "n": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": -1,
        "logit_bias": {"1": 1},
        "logprobs": True,
        "top_logprobs": 2,
        "tools": [{}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
    },
}
BASE = {
    "completion": {"model": "m", "prompt": "hi"},
    "chat": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
}


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_every_field_documented_with_one_served_value_refuses_the_others(kind: str) -> None:
    cfg = ServerSettings()
    props = served_request(kind, cfg)["properties"]  # type: ignore[arg-type]
    documented = {name for name, s in props.items() if "served" in s.get("description", "")}
    assert documented == set(UNSERVED[kind])
    check = validation.completion if kind == "completion" else validation.chat
    for name, value in UNSERVED[kind].items():
        with pytest.raises(APIError) as info:
            check(msgspec.json.encode({**BASE[kind], name: value}), cfg)
        assert (info.value.info.code, info.value.info.param) == ("unsupported_parameter", name)


async def test_whole_floats_are_integers_as_json_says(client: AsyncTestClient[Any]) -> None:
    """The document says integer; JSON (and JSON Schema) count ``2.0`` as one."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1.0}
    response = await client.post("/v1/chat/completions", json={**body, "max_tokens": 4.0})
    assert error_of(response, 404)["code"] == "model_not_found"  # decoded, then no such model
    response = await client.post("/v1/chat/completions", json={**body, "max_tokens": 4.5})
    assert error_of(response, 400)["param"] == "max_tokens"
    response = await client.post("/v1/chat/completions", json={**body, "max_tokens": "4"})
    assert error_of(response, 400)["param"] == "max_tokens"
