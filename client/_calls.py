"""Every route the clients call, as a pure :class:`~client._core.Call` (plus its answer type).

Both client faces call these and run the I/O; nothing here sends anything. Bodies follow
the server's wire types (``protocol.openai``, ``protocol.jobs``); model management,
files and batches follow issue #5's and OpenAI's shapes and answer plain JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from client._core import Call

Messages = Sequence[Mapping[str, Any] | Any]
JobKind = Literal["chat", "completion"]


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def chat_body(
    model: str, messages: Messages, params: Mapping[str, Any], stream: bool = False
) -> dict[str, Any]:
    body = {"model": model, "messages": list(messages), **_clean(params)}
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def completion_body(
    model: str, prompt: str, params: Mapping[str, Any], stream: bool = False
) -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, **_clean(params)}
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def chat(body: dict[str, Any]) -> Call:
    return Call("POST", "/v1/chat/completions", json=body, stream=bool(body.get("stream")))


def completion(body: dict[str, Any]) -> Call:
    return Call("POST", "/v1/completions", json=body, stream=bool(body.get("stream")))


def health() -> Call:
    return Call("GET", "/health")


def models() -> Call:
    return Call("GET", "/v1/models")


def submission(
    model: str,
    *,
    messages: Messages | None,
    prompt: str | None,
    priority: str | None,
    deadline: float | str | None,
    metadata: Mapping[str, str] | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """A ``POST /v1/jobs`` body: chat when ``messages`` is given, completion for ``prompt``."""
    if (messages is None) == (prompt is None):
        raise ValueError("give exactly one of messages (a chat job) or prompt (a completion)")
    kind: JobKind = "chat" if messages is not None else "completion"
    body = (
        chat_body(model, messages, params)
        if messages is not None
        else completion_body(model, prompt or "", params)
    )
    sub: dict[str, Any] = {"type": kind, "body": body}
    if priority is not None:
        sub["priority"] = priority
    if deadline is not None:
        sub["deadline"] = deadline
    if metadata:
        sub["metadata"] = dict(metadata)
    return sub


def submit_job(submission: dict[str, Any], idempotency_key: str | None) -> Call:
    """One Idempotency-Key per logical submission: every retry of this Call reuses it."""
    return Call("POST", "/v1/jobs", json=submission).with_idempotency_key(idempotency_key)


def get_job(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{job_id}")


def list_jobs(status: str | None, limit: int | None, after: str | None) -> Call:
    return Call(
        "GET", "/v1/jobs", params=_clean({"status": status, "limit": limit, "after": after})
    )


def cancel_job(job_id: str) -> Call:
    return Call("POST", f"/v1/jobs/{job_id}/cancel")


# ---- model management: POST /load_model, /unload_model, GET /models (docs/models.md) ----


def load_model(
    model: str,
    worker: str | None,
    device: str | None,
    path: str | None,
    engine: str | None,
    wait: bool,
) -> Call:
    body = _clean(
        {"model": model, "worker": worker, "device": device, "path": path, "engine": engine}
    )
    return Call("POST", "/load_model", json=body, params={"wait": "true"} if wait else None)


def unload_model(model: str, worker: str | None, wait: bool) -> Call:
    body = _clean({"model": model, "worker": worker})
    return Call("POST", "/unload_model", json=body, params={"wait": "true"} if wait else None)


def model_op(op_id: str) -> Call:
    return Call("GET", f"/models/ops/{op_id}")


def models_overview() -> Call:
    return Call("GET", "/models")


# ---- files and batches (OpenAI's /v1/files and /v1/batches) -----------------------------


def upload_file(file: str | Path | bytes, purpose: str, filename: str | None) -> Call:
    if isinstance(file, bytes):
        content, name = file, filename or "upload.jsonl"
    else:
        path = Path(file)
        content, name = path.read_bytes(), filename or path.name
    files = {"file": (name, content, "application/jsonl")}
    return Call("POST", "/v1/files", files=files, data={"purpose": purpose})


def get_file(file_id: str) -> Call:
    return Call("GET", f"/v1/files/{file_id}")


def file_content(file_id: str) -> Call:
    return Call("GET", f"/v1/files/{file_id}/content")


def list_files(purpose: str | None) -> Call:
    return Call("GET", "/v1/files", params=_clean({"purpose": purpose}))


def delete_file(file_id: str) -> Call:
    return Call("DELETE", f"/v1/files/{file_id}")


def create_batch(
    input_file_id: str, endpoint: str, completion_window: str, metadata: Mapping[str, str] | None
) -> Call:
    """No Idempotency-Key: ``/v1/batches`` does not honour one, so a create is retried only
    when the server certainly did not take it (429, 503, a connection never opened)."""
    body = _clean(
        {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
            "metadata": dict(metadata) if metadata else None,
        }
    )
    return Call("POST", "/v1/batches", json=body)


def get_batch(batch_id: str) -> Call:
    return Call("GET", f"/v1/batches/{batch_id}")


def list_batches(limit: int | None, after: str | None) -> Call:
    return Call("GET", "/v1/batches", params=_clean({"limit": limit, "after": after}))


def cancel_batch(batch_id: str) -> Call:
    return Call("POST", f"/v1/batches/{batch_id}/cancel")
