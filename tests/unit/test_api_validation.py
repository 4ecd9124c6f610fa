"""Request bodies → JobSpec, and the OpenAI-shaped 400s for everything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.errors import APIError
from api.validation import chat, completion, error_param
from protocol.settings import ServerSettings

CFG = ServerSettings(max_tokens_cap=100, default_max_tokens=32, max_stop=2)
USER = [{"role": "user", "content": "hi"}]


def _chat(**body: Any) -> bytes:
    return json.dumps({"model": "tiny", "messages": USER, **body}).encode()


def _completion(**body: Any) -> bytes:
    return json.dumps({"model": "tiny", "prompt": "hi", **body}).encode()


def _error(fn: Any, body: bytes) -> APIError:
    with pytest.raises(APIError) as info:
        fn(body, CFG)
    assert info.value.status == 400
    assert info.value.info.type == "invalid_request_error"
    return info.value


def test_chat_spec_is_normalised() -> None:
    body = _chat(
        max_completion_tokens=7,
        max_tokens=9,
        temperature=0,
        top_k=-1,
        seed=3,
        stop="\n",
        unknown_field={"ignored": True},
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
    )
    _, spec = chat(body, CFG)
    assert spec.kind == "chat" and spec.model == "tiny"
    assert spec.sampling.max_tokens == 7
    assert spec.sampling.temperature == 0.0
    assert spec.sampling.top_k == 0
    assert spec.sampling.seed == 3
    assert spec.sampling.stop == ("\n",)
    assert spec.messages is not None and spec.messages[0].content == "a\nb"


def test_chat_max_tokens_fallbacks() -> None:
    assert chat(_chat(max_tokens=9), CFG)[1].sampling.max_tokens == 9
    assert chat(_chat(), CFG)[1].sampling.max_tokens == CFG.default_max_tokens


def test_completion_prompt_forms() -> None:
    assert completion(_completion(prompt=["only"]), CFG)[1].prompt == "only"
    assert completion(_completion(prompt=""), CFG)[1].prompt == ""
    assert completion(_completion(), CFG)[1].sampling.max_tokens == 16
    assert _error(completion, _completion(prompt=["a", "b"])).info.param == "prompt"
    assert _error(completion, _completion(prompt=[])).info.param == "prompt"
    assert _error(completion, _completion(prompt=[1, 2])).info.param == "prompt"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1]", None),
        (json.dumps({"messages": USER}).encode(), "model"),
        (_chat(messages=[]), "messages"),
        (_chat(messages=[{"role": "bogus", "content": "x"}]), "messages[0].role"),
        (_chat(messages=[{"content": "x"}]), "messages[0].role"),
        (_chat(temperature="hot"), "temperature"),
        (_chat(temperature=3), "temperature"),
        (_chat(max_tokens=101), "max_tokens"),
        (_chat(max_completion_tokens=101), "max_completion_tokens"),
        (_chat(max_tokens=0), "max_tokens"),
        (_chat(stop=["a", "b", "c"]), "stop"),
        (_chat(n=2), "n"),
        (_chat(logprobs=True), "logprobs"),
        (_chat(tools=[{"type": "function"}]), "tools"),
        (_chat(tool_choice="auto"), "tool_choice"),
        (_chat(response_format={"type": "json_object"}), "response_format"),
        (_chat(presence_penalty=0.5), "presence_penalty"),
        (_chat(frequency_penalty=0.5), "frequency_penalty"),
        (_chat(logit_bias={"1": 2.0}), "logit_bias"),
        (
            _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "messages[0].content[0]",
        ),
    ],
)
def test_chat_errors_name_the_field(body: bytes, param: str | None) -> None:
    assert _error(chat, body).info.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_completion(logprobs=1), "logprobs"),
        (_completion(best_of=2), "best_of"),
        (_completion(echo=True), "echo"),
        (_completion(suffix="x"), "suffix"),
        (_completion(max_tokens=1000), "max_tokens"),
        (_completion(n=3), "n"),
    ],
)
def test_completion_errors_name_the_field(body: bytes, param: str) -> None:
    assert _error(completion, body).info.param == param


def test_accepted_defaults_sent_by_sdks() -> None:
    body = _chat(
        n=1,
        presence_penalty=0,
        frequency_penalty=0,
        logit_bias={},
        tools=[],
        tool_choice="none",
        response_format={"type": "text"},
        stream_options={"include_usage": True},
        user="u",
    )
    chat(body, CFG)
    completion(_completion(best_of=1, echo=False, suffix=None), CFG)


def test_error_param_paths() -> None:
    assert error_param("Expected `str`, got `int` - at `$.messages[0].role`") == "messages[0].role"
    assert (
        error_param("Object missing required field `role` - at `$.messages[1]`")
        == "messages[1].role"
    )
    assert error_param("Object missing required field `model`") == "model"
    assert error_param("Expected `object`, got `array`") is None
