"""The JSON schemas of the request bodies handlers decode themselves, as the API serves them.

A schema starts as msgspec's schema of the ``protocol`` Struct the handler decodes, and is
then narrowed to what :mod:`api.validation` accepts, so a request the document admits is
never refused: a field the Struct declares only to refuse it (``n > 1``, ``logprobs``,
``tools``, image parts, ...: 400 ``unsupported_parameter``) is documented with the one value
served, and the caps that come from settings (``max_tokens``, stop strings, messages, the
prompt's characters) are written in. ``tests/unit/test_api_openapi.py`` keeps the two in step.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from protocol.jobs import JobSubmission
from protocol.openai import ChatCompletionRequest, CompletionRequest, TextPart
from protocol.settings import ServerSettings

Schema = dict[str, Any]
Kind = Literal["completion", "chat"]

_PREFIX = "#/$defs/"
_NULL: Schema = {"type": "null"}
_UNSUPPORTED = "Only this value is served; any other answers 400 `unsupported_parameter`."

_SERVED_SAMPLING: dict[str, Schema] = {
    "n": {"type": "integer", "const": 1, "default": 1},
    "presence_penalty": {"type": "number", "const": 0, "default": 0.0},
    "frequency_penalty": {"type": "number", "const": 0, "default": 0.0},
    "logit_bias": {"anyOf": [_NULL, {"type": "object", "maxProperties": 0}], "default": None},
}
_SERVED: dict[Kind, dict[str, Schema]] = {
    "completion": {
        **_SERVED_SAMPLING,
        "logprobs": {**_NULL, "default": None},
        "best_of": {"anyOf": [_NULL, {"type": "integer", "maximum": 1}], "default": None},
        "echo": {"type": "boolean", "const": False, "default": False},
        "suffix": {"anyOf": [_NULL, {"type": "string", "maxLength": 0}], "default": None},
    },
    "chat": {
        **_SERVED_SAMPLING,
        "logprobs": {"type": "boolean", "const": False, "default": False},
        "top_logprobs": {"anyOf": [_NULL, {"type": "integer", "const": 0}], "default": None},
        "tools": {"anyOf": [_NULL, {"type": "array", "maxItems": 0}], "default": None},
        "tool_choice": {"enum": [None, "none"], "default": None},
        "response_format": {
            "anyOf": [_NULL, {"type": "object", "properties": {"type": {"const": "text"}}}],
            "default": None,
        },
    },
}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every ``$ref`` by its definition (the request types are not recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_PREFIX):
            return _inline(defs[ref.removeprefix(_PREFIX)], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def request_schema(cls: type[msgspec.Struct]) -> Schema:
    """The JSON schema of ``cls`` with no references left (nor a discriminator naming one)."""
    schema = msgspec.json.schema(cls)
    defs = schema.pop("$defs", {})
    inlined: Schema = _inline(schema, defs)
    return inlined


def _text(max_chars: int) -> Schema:
    return {"type": "string", "maxLength": max_chars}


def _capped(props: Schema, cfg: ServerSettings) -> None:
    """Write the settings' caps shared by both kinds into ``props``."""
    for name in ("max_tokens", "max_completion_tokens"):
        if name in props:
            props[name]["anyOf"][0]["maximum"] = cfg.max_tokens_cap
    stop = _text(cfg.max_stop_chars)
    props["stop"] = {
        "anyOf": [stop, {"type": "array", "items": stop, "maxItems": cfg.max_stop}, _NULL],
        "default": None,
    }


def _completion(props: Schema, cfg: ServerSettings) -> None:
    prompt = _text(cfg.max_prompt_chars)
    batch = {"type": "array", "items": prompt, "minItems": 1, "maxItems": 1}
    props["prompt"] = {"anyOf": [prompt, batch], "description": "One prompt (a list of one)."}


def _chat(props: Schema, cfg: ServerSettings) -> None:
    messages = props["messages"]
    messages["maxItems"] = cfg.max_messages
    messages["description"] = (
        f"The text of all messages together may have at most {cfg.max_prompt_chars} characters."
    )
    content = messages["items"]["properties"]["content"]
    parts = {"type": "array", "items": request_schema(TextPart)}  # image parts are not served
    content["anyOf"] = [{"type": "string"}, parts, _NULL]


def served_request(kind: Kind, cfg: ServerSettings) -> Schema:
    """The documented body of ``/v1/completions`` or ``/v1/chat/completions``."""
    schema = request_schema(CompletionRequest if kind == "completion" else ChatCompletionRequest)
    props = schema["properties"]
    for name, served in _SERVED[kind].items():
        props[name] = {**served, "description": _UNSUPPORTED}
    _capped(props, cfg)
    (_completion if kind == "completion" else _chat)(props, cfg)
    return schema


def job_submission(cfg: ServerSettings) -> Schema:
    """``POST /v1/jobs``: ``body`` is a completion body when ``type`` is ``completion``, a chat
    body when it is ``chat`` (``msgspec.Raw`` in the Struct, decoded by type)."""
    base = request_schema(JobSubmission)
    kinds: tuple[Kind, Kind] = ("completion", "chat")
    variants = [
        {
            **base,
            "properties": {
                **base["properties"],
                "type": {"const": k},
                "body": served_request(k, cfg),
            },
        }
        for k in kinds
    ]
    return {"oneOf": variants}
