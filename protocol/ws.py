"""WebSocket messages on ``/ws``: JSON text frames, each an object with a ``type``.

Client → server::

    {"type": "generate", "body": {<chat or completions request>}, "ref": "a1"}
    {"type": "subscribe", "job_id": "…", "after": 0}
    {"type": "cancel", "job_id": "…"}
    {"type": "ping", "ref": "p1"}

Server → client::

    {"type": "job", "job_id": "…", "model": "tiny", "ref": "a1"}
    {"type": "token", "job_id": "…", "seq": 2, "text": "Hel"}
    {"type": "done", "job_id": "…", "seq": 9, "finish_reason": "stop", "usage": {…}}
    {"type": "error", "job_id": "…", "seq": 9, "error": {"message", "type", "param", "code"}}
    {"type": "pong", "ref": "p1"}

``generate`` takes a chat body (it has ``messages``) or a completions body (``prompt``);
``kind`` may say which explicitly. ``ref`` is the client's own tag, echoed in the answer
(``job``, or an ``error`` with no ``job_id`` if the body was refused). ``token``, ``done``
and ``error`` of a job carry its log ``seq``, so ``subscribe {after: seq}`` on a new socket
resumes with no gap and no duplicate.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from protocol.openai import ErrorInfo, Usage

SUBPROTOCOL = "uml.v1"
"""The subprotocol the server selects when the client offers it."""
KEY_SUBPROTOCOL_PREFIX = "uml.key."
"""Browsers cannot set headers on a WebSocket: they may offer ``uml.key.<API key>``."""

CLOSE_UNAUTHORIZED = 4401
"""The handshake's key did not open (on a server that cannot answer a plain HTTP 401)."""
CLOSE_KEY_EXPIRED = 4401
"""The socket's key stopped opening by the clock: it expired, or the old secret it was opened
with reached the end of its rotation grace (the reason says which). A new key is needed."""
CLOSE_KEY_REVOKED = 4410
"""The socket's key was revoked: closed on every replica within seconds of the revoke."""
CLOSE_OVERLOADED = 4008
"""The socket's send buffer overflowed (the client reads too slowly); its jobs are cancelled."""
CLOSE_POLICY = 1008
"""The client went on sending past its message budget after being told to slow down."""
CLOSE_TOO_BIG = 1009
"""A frame over the body cap (``UML_MAX_BODY_BYTES``), refused before it is read whole."""
CLOSE_SHUTDOWN = 1001


class Generate(Struct, kw_only=True, tag="generate", tag_field="type"):
    body: msgspec.Raw
    kind: Literal["chat", "completion"] | None = None
    ref: str | None = None


class Subscribe(Struct, kw_only=True, tag="subscribe", tag_field="type"):
    job_id: str
    after: int = 0


class Cancel(Struct, kw_only=True, tag="cancel", tag_field="type"):
    job_id: str


class Ping(Struct, kw_only=True, tag="ping", tag_field="type"):
    ref: str | None = None


ClientMessage = Generate | Subscribe | Cancel | Ping


class JobAccepted(Struct, kw_only=True, tag="job", tag_field="type"):
    job_id: str
    model: str
    ref: str | None = None


class Token(Struct, kw_only=True, tag="token", tag_field="type"):
    job_id: str
    seq: int
    text: str


class Done(Struct, kw_only=True, tag="done", tag_field="type"):
    job_id: str
    seq: int
    finish_reason: str
    usage: Usage


class Error(Struct, kw_only=True, tag="error", tag_field="type"):
    """A job's ``error`` event (``job_id`` and ``seq`` set) or a refused message (no seq)."""

    error: ErrorInfo
    job_id: str | None = None
    seq: int | None = None
    ref: str | None = None
    status: int | None = None
    """For a refused message: the HTTP status the same request would have got."""


class Pong(Struct, kw_only=True, tag="pong", tag_field="type"):
    ref: str | None = None


ServerMessage = JobAccepted | Token | Done | Error | Pong

_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(ClientMessage)
_server_decoder = msgspec.json.Decoder(ServerMessage)


def encode(message: ClientMessage | ServerMessage) -> bytes:
    return _encoder.encode(message)


def decode_client(data: str | bytes) -> ClientMessage:
    message: ClientMessage = _client_decoder.decode(data)
    return message


def decode_server(data: str | bytes) -> ServerMessage:
    message: ServerMessage = _server_decoder.decode(data)
    return message
