"""``OpenAICompatibleClient``: the openai SDK's call shapes over :class:`UniversalClient`.

``client.chat.completions.create(model=..., messages=..., stream=...)``,
``client.completions.create(model=..., prompt=...)`` and ``client.models.list()`` answer
the same objects (``choices[0].message.content``, ``chunk.choices[0].delta.content``) as
the official SDK, so code written for one runs on the other. ``base_url`` may end in
``/v1`` or not. :class:`SyncOpenAICompatibleClient` is the blocking twin.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from client import _calls as calls
from client._async import UniversalClient
from client._core import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S
from client._streams import AsyncStream, Stream
from client._sync import SyncUniversalClient
from client._types import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionResponse,
    ModelList,
)


def _root(base_url: str | None) -> str | None:
    if base_url is None:
        return None
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


class _AsyncChatCompletions:
    def __init__(self, client: UniversalClient) -> None:
        self._client = client

    @overload
    async def create(
        self, *, model: str, messages: calls.Messages, stream: Literal[False] = False, **kw: Any
    ) -> ChatCompletionResponse: ...

    @overload
    async def create(
        self, *, model: str, messages: calls.Messages, stream: Literal[True], **kw: Any
    ) -> AsyncStream[ChatCompletionChunk]: ...

    async def create(
        self, *, model: str, messages: calls.Messages, stream: bool = False, **kw: Any
    ) -> ChatCompletionResponse | AsyncStream[ChatCompletionChunk]:
        if stream:
            return await self._client.stream_chat(model, messages, **kw)
        return await self._client.chat(model, messages, **kw)


class _AsyncChat:
    def __init__(self, client: UniversalClient) -> None:
        self.completions = _AsyncChatCompletions(client)


class _AsyncCompletions:
    def __init__(self, client: UniversalClient) -> None:
        self._client = client

    @overload
    async def create(
        self, *, model: str, prompt: str, stream: Literal[False] = False, **kw: Any
    ) -> CompletionResponse: ...

    @overload
    async def create(
        self, *, model: str, prompt: str, stream: Literal[True], **kw: Any
    ) -> AsyncStream[CompletionChunk]: ...

    async def create(
        self, *, model: str, prompt: str, stream: bool = False, **kw: Any
    ) -> CompletionResponse | AsyncStream[CompletionChunk]:
        if stream:
            return await self._client.stream_complete(model, prompt, **kw)
        return await self._client.complete(model, prompt, **kw)


class _AsyncModels:
    def __init__(self, client: UniversalClient) -> None:
        self._client = client

    async def list(self) -> ModelList:
        return await self._client.list_models()


class OpenAICompatibleClient:
    """Async, with the openai SDK's shape: ``await client.chat.completions.create(...)``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.client = UniversalClient(
            _root(base_url), api_key, timeout=timeout, max_retries=max_retries
        )
        self.chat = _AsyncChat(self.client)
        self.completions = _AsyncCompletions(self.client)
        self.models = _AsyncModels(self.client)

    async def __aenter__(self) -> OpenAICompatibleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.aclose()


class _SyncChatCompletions:
    def __init__(self, client: SyncUniversalClient) -> None:
        self._client = client

    @overload
    def create(
        self, *, model: str, messages: calls.Messages, stream: Literal[False] = False, **kw: Any
    ) -> ChatCompletionResponse: ...

    @overload
    def create(
        self, *, model: str, messages: calls.Messages, stream: Literal[True], **kw: Any
    ) -> Stream[ChatCompletionChunk]: ...

    def create(
        self, *, model: str, messages: calls.Messages, stream: bool = False, **kw: Any
    ) -> ChatCompletionResponse | Stream[ChatCompletionChunk]:
        if stream:
            return self._client.stream_chat(model, messages, **kw)
        return self._client.chat(model, messages, **kw)


class _SyncChat:
    def __init__(self, client: SyncUniversalClient) -> None:
        self.completions = _SyncChatCompletions(client)


class _SyncCompletions:
    def __init__(self, client: SyncUniversalClient) -> None:
        self._client = client

    @overload
    def create(
        self, *, model: str, prompt: str, stream: Literal[False] = False, **kw: Any
    ) -> CompletionResponse: ...

    @overload
    def create(
        self, *, model: str, prompt: str, stream: Literal[True], **kw: Any
    ) -> Stream[CompletionChunk]: ...

    def create(
        self, *, model: str, prompt: str, stream: bool = False, **kw: Any
    ) -> CompletionResponse | Stream[CompletionChunk]:
        if stream:
            return self._client.stream_complete(model, prompt, **kw)
        return self._client.complete(model, prompt, **kw)


class _SyncModels:
    def __init__(self, client: SyncUniversalClient) -> None:
        self._client = client

    def list(self) -> ModelList:
        return self._client.list_models()


class SyncOpenAICompatibleClient:
    """Blocking, with the openai SDK's shape: ``client.chat.completions.create(...)``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.client = SyncUniversalClient(
            _root(base_url), api_key, timeout=timeout, max_retries=max_retries
        )
        self.chat = _SyncChat(self.client)
        self.completions = _SyncCompletions(self.client)
        self.models = _SyncModels(self.client)

    def __enter__(self) -> SyncOpenAICompatibleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
