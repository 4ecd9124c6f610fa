"""OpenAI ``/v1/completions`` and ``/v1/chat/completions``: requests, responses, chunks.

Unknown request fields are accepted and ignored (the official SDK adds fields often).
Fields that would silently change the meaning of a request are declared so the API can
reject values it does not honour (``n > 1``, ``logprobs``, ``tools``, penalties, ...);
see ``api.validation``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

# Reusable field definitions keep the two request types consistent.
MaxTokens = Annotated[int, Meta(ge=1, le=2**31 - 1, description="Most tokens to generate.")]
Temperature = Annotated[
    float, Meta(ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
]
TopP = Annotated[float, Meta(gt=0.0, le=1.0, description="Nucleus sampling mass.")]
TopK = Annotated[
    int, Meta(ge=-1, le=2**31 - 1, description="Keep the k most likely tokens; 0 or -1 disables.")
]
Seed = Annotated[
    int, Meta(ge=-(2**63), le=2**63 - 1, description="Seed for reproducible sampling.")
]
Stop = str | list[str] | None
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]


class StreamOptions(Struct, kw_only=True):
    include_usage: bool = False


class Usage(Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _SamplingFields(Struct, kw_only=True):
    """Fields shared by both request types."""

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    top_k: TopK = 0
    seed: Seed | None = None
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    user: str | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: dict[str, float] | None = None


class CompletionRequest(_SamplingFields, kw_only=True):
    prompt: str | list[str]
    max_tokens: MaxTokens | None = 16
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None


class TextPart(Struct, kw_only=True, tag="text", tag_field="type"):
    text: str


class ImagePart(Struct, kw_only=True, tag="image_url", tag_field="type"):
    image_url: Any = None


ContentPart = TextPart | ImagePart
Role = Literal["system", "developer", "user", "assistant", "tool"]


class ChatMessage(Struct, kw_only=True, omit_defaults=True):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_SamplingFields, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


# ---- responses -------------------------------------------------------------------------


class CompletionChoice(Struct, kw_only=True):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class AssistantMessage(Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(Struct, kw_only=True):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ChatDelta(Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(Struct, kw_only=True):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class CompletionChunk(Struct, kw_only=True):
    """OpenAI streams completions as ``text_completion`` objects, one per chunk."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "uml"


class ModelList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelCard] = field(default_factory=list)


# ---- errors ----------------------------------------------------------------------------


class ErrorInfo(Struct, kw_only=True):
    """OpenAI's error object: what went wrong, its family, and the request field at fault."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(Struct, kw_only=True):
    error: ErrorInfo


def encode(obj: Any) -> bytes:
    """JSON-encode any protocol Struct."""
    return msgspec.json.encode(obj)
