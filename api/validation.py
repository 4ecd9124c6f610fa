"""Request bodies → :class:`protocol.jobs.JobSpec`, or an OpenAI-shaped 400.

Bodies are decoded here with msgspec (not by Litestar) so every failure names the field at
fault: msgspec's path ``$.messages[0].role`` becomes ``param = "messages[0].role"``.

HTTP status: malformed JSON, invalid UTF-8 (anywhere, unknown fields included), nesting
too deep to decode, numbers out of range, wrong types and unsupported features all answer
**400** ``invalid_request_error``, as OpenAI does (never 422, never a 5xx). A body above
``max_body_bytes`` answers 413 (Litestar's limit, translated in :mod:`api.errors`).

Caps (settings): ``max_tokens``, stop strings (count and length), chat messages, and the
prompt's total characters, an API-side bound that needs no tokenizer (the worker still
enforces the model's token context).

Unknown fields are ignored (the SDK adds new ones often). Fields that would silently change
what is generated (``n > 1``, ``logprobs``, ``best_of``, ``echo``, ``suffix``, tools,
non-text ``response_format``, penalties, ``logit_bias``, image parts) are rejected with
``code = "unsupported_parameter"``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from api.errors import APIError, invalid_request, not_supported
from api.services.jobs import NewJob
from protocol.jobs import (
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE_CHARS,
    JobSpec,
    JobSubmission,
    SamplingParams,
)
from protocol.openai import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    TextPart,
)
from protocol.settings import ServerSettings

R = TypeVar("R", bound=msgspec.Struct)

_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"(missing required|unknown) field `(?P<field>[^`]+)`")

_completion_decoder = msgspec.json.Decoder(CompletionRequest)
_chat_decoder = msgspec.json.Decoder(ChatCompletionRequest)


def error_param(message: str) -> str | None:
    """The request field a msgspec error message points at, OpenAI style (``a.b[0].c``)."""
    match = _PATH.search(message)
    path = match.group("path") if match else ""
    missing = _MISSING.search(message)
    if missing:
        path = f"{path}.{missing.group('field')}" if path else missing.group("field")
    return path or None


def check_utf8(body: bytes) -> None:
    """400 unless the whole body is UTF-8: msgspec skips an unknown field without reading its
    name or value as text, so invalid bytes there would pass unseen."""
    if body.isascii():  # the common case, and no copy
        return
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise invalid_request(f"Request body is not valid UTF-8: {exc.reason}") from None


def _whole(value: Any) -> Any:
    """``value`` with every float that is a whole number (``2.0``) made an int (``2``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value


def _decode_numbers_as_json_means(decoder: msgspec.json.Decoder[R], body: bytes) -> R:
    """JSON has one number type, so ``2.0`` is the integer 2 (JSON Schema agrees, and the
    OpenAPI document promises integers); msgspec's strict decoding refuses it, and its lax
    mode would also take ``"2"``. Tried only after a strict decode refused a float."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        if "got `float`" not in str(exc):
            raise
    return decoder.decode(msgspec.json.encode(_whole(msgspec.json.decode(body))))


def decode(decoder: msgspec.json.Decoder[R], body: bytes) -> R:
    """Decode a request body; any fault is a 400 naming the field (``param``)."""
    check_utf8(body)
    try:
        return _decode_numbers_as_json_means(decoder, body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        param = error_param(text)
        if param and param.startswith("prompt[") and "got `int`" in text:
            raise not_supported("prompt", "token-id prompts") from None
        raise invalid_request(_PATH.sub("", text), param=param) from None
    except msgspec.DecodeError as exc:
        raise invalid_request(f"Request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 inside strings
        raise invalid_request(f"Request body is not valid UTF-8: {exc.reason}") from None
    except RecursionError:  # msgspec's guard against deep nesting in free-form fields
        raise invalid_request("Request body is nested too deeply") from None


def _check_cap(value: int | None, param: str, cfg: ServerSettings) -> None:
    if value is not None and value > cfg.max_tokens_cap:
        raise invalid_request(f"{param} must be at most {cfg.max_tokens_cap}", param=param)


def _sampling(
    req: CompletionRequest | ChatCompletionRequest, max_tokens: int | None, cfg: ServerSettings
) -> SamplingParams:
    _check_cap(req.max_tokens, "max_tokens", cfg)  # even where max_completion_tokens wins
    if isinstance(req, ChatCompletionRequest):
        _check_cap(req.max_completion_tokens, "max_completion_tokens", cfg)
    if max_tokens is None:  # the default never exceeds the cap
        max_tokens = min(cfg.default_max_tokens, cfg.max_tokens_cap)
    if req.n != 1:
        raise not_supported("n", "n other than 1")
    if req.presence_penalty:
        raise not_supported("presence_penalty")
    if req.frequency_penalty:
        raise not_supported("frequency_penalty")
    if req.logit_bias:
        raise not_supported("logit_bias")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > cfg.max_stop:
        raise invalid_request(f"At most {cfg.max_stop} stop sequences are allowed", param="stop")
    if any(len(s) > cfg.max_stop_chars for s in stop):
        raise invalid_request(
            f"A stop sequence may be at most {cfg.max_stop_chars} characters", param="stop"
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=max(req.top_k, 0),
        seed=req.seed,
        stop=tuple(s for s in stop if s),
    )


def completion(body: bytes, cfg: ServerSettings) -> tuple[CompletionRequest, JobSpec]:
    """Decode and check a ``/v1/completions`` body."""
    req = decode(_completion_decoder, body)
    if req.logprobs is not None:
        raise not_supported("logprobs")
    if req.best_of is not None and req.best_of > 1:
        raise not_supported("best_of", "best_of other than 1")
    if req.echo:
        raise not_supported("echo")
    if req.suffix:
        raise not_supported("suffix")
    if isinstance(req.prompt, list):
        if len(req.prompt) != 1:
            raise invalid_request(
                "prompt must be one string (batched prompts are not supported)", param="prompt"
            )
        prompt = req.prompt[0]
    else:
        prompt = req.prompt
    _check_prompt_chars(len(prompt), "prompt", cfg)
    sampling = _sampling(req, req.max_tokens, cfg)
    spec = JobSpec(kind="completion", model=req.model, sampling=sampling, prompt=prompt)
    return req, spec


def _check_prompt_chars(chars: int, param: str, cfg: ServerSettings) -> None:
    if chars > cfg.max_prompt_chars:
        raise invalid_request(
            f"The prompt may be at most {cfg.max_prompt_chars} characters", param=param
        )


def _flatten(message: ChatMessage, index: int) -> ChatMessage:
    """Join text parts into one string; reject image parts."""
    if not isinstance(message.content, list):
        return message
    texts: list[str] = []
    for part_index, part in enumerate(message.content):
        if not isinstance(part, TextPart):
            raise not_supported(f"messages[{index}].content[{part_index}]", "image content")
        texts.append(part.text)
    return ChatMessage(role=message.role, content="\n".join(texts), name=message.name)


def chat(body: bytes, cfg: ServerSettings) -> tuple[ChatCompletionRequest, JobSpec]:
    """Decode and check a ``/v1/chat/completions`` body."""
    req = decode(_chat_decoder, body)
    if req.logprobs or req.top_logprobs:
        raise not_supported("logprobs" if req.logprobs else "top_logprobs")
    if req.tools:
        raise not_supported("tools")
    if req.tool_choice not in (None, "none"):
        raise not_supported("tool_choice")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise not_supported("response_format", "response_format other than text")
    if len(req.messages) > cfg.max_messages:
        raise invalid_request(f"At most {cfg.max_messages} messages are allowed", param="messages")
    messages = [_flatten(m, i) for i, m in enumerate(req.messages)]
    _check_prompt_chars(sum(len(m.content or "") for m in messages), "messages", cfg)
    max_tokens = req.max_completion_tokens or req.max_tokens
    sampling = _sampling(req, max_tokens, cfg)
    spec = JobSpec(kind="chat", model=req.model, sampling=sampling, messages=messages)
    return req, spec


_submission_decoder = msgspec.json.Decoder(JobSubmission)


def job_submission(body: bytes, cfg: ServerSettings) -> NewJob:
    """Decode and check a ``POST /v1/jobs`` body; errors in ``body`` name ``body.<field>``."""
    sub = decode(_submission_decoder, body)
    inner = bytes(sub.body)
    try:
        spec = (chat(inner, cfg) if sub.type == "chat" else completion(inner, cfg))[1]
    except APIError as exc:
        if exc.info.param:
            exc.info.param = f"body.{exc.info.param}"
        raise
    return NewJob(
        spec=spec,
        priority=sub.priority,
        deadline=parse_deadline(sub.deadline),
        metadata=check_metadata(sub.metadata),
    )


def parse_deadline(value: float | str | None) -> float | None:
    """Unix seconds from a number or an ISO 8601 time (naive times are UTC)."""
    if value is None or isinstance(value, float | int):
        return None if value is None else float(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_request(
            "deadline must be Unix seconds or an ISO 8601 time", param="deadline"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """``metadata`` of a job or a batch, within OpenAI's limits (pairs, key and value size)."""
    if len(metadata) > MAX_METADATA_PAIRS:
        raise invalid_request(f"At most {MAX_METADATA_PAIRS} metadata pairs", param="metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            raise invalid_request(
                f"Metadata keys may have at most {MAX_METADATA_KEY_CHARS} characters and "
                f"values {MAX_METADATA_VALUE_CHARS}",
                param=f"metadata.{key[:MAX_METADATA_KEY_CHARS]}",
            )
    return metadata
