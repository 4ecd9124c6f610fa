"""The client's async and sync twins keep the same surface.

``UniversalClient`` / ``SyncUniversalClient``, the OpenAI-shaped clients and their
namespaces, the WebSocket twins and the two stream types: the same public methods, each
with the same parameters (names, kinds, defaults, annotations) and the same return type,
once the async names are read as their sync twins (``AsyncStream`` as ``Stream``,
``__aenter__`` as ``__enter__``, ``aclose`` as ``close``, ...). A class added to these
modules needs a twin, or a place in ``SHARED``.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import pytest

from client import _async, _openai, _streams, _sync, _ws

PAIRS: list[tuple[type, type]] = [
    (_async.UniversalClient, _sync.SyncUniversalClient),
    (_openai.OpenAICompatibleClient, _openai.SyncOpenAICompatibleClient),
    (_openai._AsyncChat, _openai._SyncChat),
    (_openai._AsyncChatCompletions, _openai._SyncChatCompletions),
    (_openai._AsyncCompletions, _openai._SyncCompletions),
    (_openai._AsyncModels, _openai._SyncModels),
    (_ws.AsyncWebSocket, _ws.SyncWebSocket),
    (_streams.AsyncStream, _streams.Stream),
]
SHARED = {_ws.Router}  # one class serving both twins
MODULES = [_async, _sync, _openai, _ws, _streams]

# Method names: an async twin's name -> its sync twin's.
NAMES = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "aclose": "close",
}
DUNDERS = {"__init__", "__repr__", *NAMES, *NAMES.values()}

# Names in annotations: an async type -> its sync twin.
TYPES = {
    "UniversalClient": "SyncUniversalClient",
    "OpenAICompatibleClient": "SyncOpenAICompatibleClient",
    "AsyncWebSocket": "SyncWebSocket",
    "AsyncStream": "Stream",
    "AsyncClient": "Client",  # httpx
    "ClientConnection": "SyncClientConnection",  # websockets
    "AsyncIterator": "Iterator",
    "AbstractAsyncContextManager": "AbstractContextManager",
}
_TYPE_WORD = re.compile(r"\b(" + "|".join(TYPES) + r")\b")
# An async generator has no return type: AsyncGenerator[T, None] is Generator[T, None, None].
_ASYNC_GENERATOR = re.compile(r"\bAsyncGenerator\[(.+), None\]")


def _text(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _as_sync(annotation: Any) -> str:
    text = _ASYNC_GENERATOR.sub(r"Generator[\1, None, None]", _text(annotation))
    return _TYPE_WORD.sub(lambda m: TYPES[m.group(1)], text)


def _members(cls: type) -> set[str]:
    """Public names, and the dunders that twins share, defined below ``object``."""
    own = {name for klass in cls.__mro__ if klass is not object for name in vars(klass)}
    return {n for n in dir(cls) if not n.startswith("_")} | (DUNDERS & own)


def _kind(cls: type, name: str) -> str:
    raw = inspect.getattr_static(cls, name)
    for kind in (property, classmethod, staticmethod):
        if isinstance(raw, kind):
            return kind.__name__
    return "method" if callable(raw) else type(raw).__name__


def _function(cls: type, name: str) -> Callable[..., Any]:
    raw = inspect.getattr_static(cls, name)
    if isinstance(raw, property):
        assert raw.fget is not None
        return raw.fget
    return typing.cast(Callable[..., Any], getattr(cls, name))


def _shape(func: Callable[..., Any], *, sync: bool = False) -> list[tuple[str, ...]]:
    """Each parameter (name, kind, default, annotation), then the return annotation."""
    sig = inspect.signature(func)
    read = _text if sync else _as_sync
    rows = [
        (p.name, p.kind.name, repr(p.default), read(p.annotation)) for p in sig.parameters.values()
    ]
    return [*rows, ("->", read(sig.return_annotation))]


def _overloads(func: Callable[..., Any], *, sync: bool = False) -> list[list[tuple[str, ...]]]:
    return [_shape(o, sync=sync) for o in typing.get_overloads(func)]


def _ids(pair: tuple[type, type]) -> str:
    return pair[0].__name__


def test_every_class_has_a_twin() -> None:
    paired = {cls for pair in PAIRS for cls in pair} | SHARED
    defined = {
        cls
        for module in MODULES
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__
    }
    assert defined - paired == set()


@pytest.mark.parametrize("pair", PAIRS, ids=_ids)
def test_same_methods(pair: tuple[type, type]) -> None:
    async_cls, sync_cls = pair
    assert {NAMES.get(n, n) for n in _members(async_cls)} == _members(sync_cls)


@pytest.mark.parametrize("pair", PAIRS, ids=_ids)
def test_same_parameters_defaults_and_returns(pair: tuple[type, type]) -> None:
    async_cls, sync_cls = pair
    for name in sorted(_members(async_cls)):
        twin = NAMES.get(name, name)
        where = f"{async_cls.__name__}.{name} / {sync_cls.__name__}.{twin}"
        assert _kind(async_cls, name) == _kind(sync_cls, twin), where
        a, s = _function(async_cls, name), _function(sync_cls, twin)
        assert _shape(a) == _shape(s, sync=True), where
        assert _overloads(a) == _overloads(s, sync=True), where


@pytest.mark.parametrize("pair", PAIRS, ids=_ids)
def test_sync_twin_never_awaits(pair: tuple[type, type]) -> None:
    _, sync_cls = pair
    for name in _members(sync_cls):
        func = _function(sync_cls, name)
        assert not inspect.iscoroutinefunction(func), f"{sync_cls.__name__}.{name}"
        assert not inspect.isasyncgenfunction(func), f"{sync_cls.__name__}.{name}"


def _attributes(obj: object) -> dict[str, type]:
    return {k: type(v) for k, v in vars(obj).items() if not k.startswith("_")}


def _compare_attributes(a: object, s: object, twins: dict[type, type], path: str) -> None:
    """The public attributes of two twin instances are twins too, down the tree."""
    a_attrs, s_attrs = _attributes(a), _attributes(s)
    assert a_attrs.keys() == s_attrs.keys(), path
    for key, a_type in a_attrs.items():
        assert twins.get(a_type, a_type) is s_attrs[key], f"{path}.{key}"
        if a_type in twins:
            _compare_attributes(getattr(a, key), getattr(s, key), twins, f"{path}.{key}")


async def test_openai_clients_have_the_same_namespaces() -> None:
    """``client.chat.completions.create`` and the rest exist on both, built the same way."""
    twins = dict(PAIRS)
    a = _openai.OpenAICompatibleClient("http://127.0.0.1:9/v1", "k")
    s = _openai.SyncOpenAICompatibleClient("http://127.0.0.1:9/v1", "k")
    try:
        _compare_attributes(a, s, twins, "client")
        assert a.client.base_url == s.client.base_url == "http://127.0.0.1:9"
    finally:
        await a.close()
        s.close()


def test_the_map_names_real_classes() -> None:
    """Every rename in TYPES is a name one of the modules uses, so the map cannot go stale."""
    sources = " ".join(inspect.getsource(m) for m in MODULES)
    for async_name, sync_name in [*TYPES.items(), ("AsyncGenerator", "Generator")]:
        assert re.search(rf"\b{async_name}\b", sources), async_name
        assert re.search(rf"\b{sync_name}\b", sources), sync_name
