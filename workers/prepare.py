"""A claimed job made ready for the scheduler: prompt → token ids → :class:`ActiveJob`.

The task thread does this work, off the scheduler's path: it renders the chat template,
tokenizes the prompt and checks it fits the model's context (:func:`prepare_job`). A
resumed attempt (``attempt`` > 1 with events already logged) then takes what the log
holds (:func:`resume_state`) as its forced prefix (:func:`resume_job`). A job that ends
before it starts (cancelled while queued, or not preparable) still writes its final
event through a bare job (:func:`unstarted_job`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import NamedTuple, cast

import redis

from protocol.events import TokenEvent, decode_event
from protocol.jobs import JobSpec, SamplingParams, exceeds_context
from protocol.keys import EVENT_FIELD, IDS_FIELD, entry_id, events_key
from workers.detok import CONTEXT_IDS, IncrementalDetokenizer
from workers.engines import Engine
from workers.jobstate import ActiveJob
from workers.stops import StopMatcher

__all__ = [
    "ContextTooLong",
    "ResumeState",
    "prepare_job",
    "resume_job",
    "resume_state",
    "unstarted_job",
]

log = logging.getLogger(__name__)

_NO_SAMPLING = SamplingParams(max_tokens=1)


class ContextTooLong(ValueError):
    """The prompt plus max_tokens does not fit the model's context (OpenAI's error code)."""

    code = "context_length_exceeded"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def prepare_job(
    engine: Engine, max_seq_len: int, job_id: str, spec: JobSpec, attempt: int, worker_id: str
) -> ActiveJob:
    """Render and tokenize the prompt; :class:`ContextTooLong` if it does not fit."""
    if spec.kind == "chat":
        messages = [
            {"role": m.role, "content": m.content if isinstance(m.content, str) else ""}
            for m in spec.messages or []
        ]
        prompt = engine.render_chat(messages)
    else:
        prompt = spec.prompt or ""
    prompt_ids = engine.encode(prompt)
    if exceeds_context(len(prompt_ids), spec.sampling.max_tokens, max_seq_len):
        raise ContextTooLong(
            f"The prompt ({len(prompt_ids)} tokens) plus max_tokens "
            f"({spec.sampling.max_tokens}) exceeds the model's context of {max_seq_len} tokens",
            param="messages" if spec.kind == "chat" else "prompt",
        )
    # A completion continues its prompt, so its first token decodes as it would mid-text
    # (SentencePiece's leading space kept); a chat reply starts clean.
    context = prompt_ids[-CONTEXT_IDS:] if spec.kind == "completion" else []
    job = ActiveJob(
        job_id=job_id,
        spec=spec,
        prompt_ids=prompt_ids,
        attempt=attempt,
        worker_id=worker_id,
        detok=IncrementalDetokenizer(engine.decode, context=context),
        stops=StopMatcher(spec.sampling.stop),
    )
    job.fields["prompt_tokens"] = len(prompt_ids)  # written with the first events
    return job


class ResumeState(NamedTuple):
    """What a job's log holds up to a seq: the text, its token count and, when every token
    entry carries them (workers since the ``ids`` field), the token ids themselves."""

    text: str
    tokens: int
    ids: list[int] | None


def resume_state(client: redis.Redis, job_id: str, last_seq: int) -> ResumeState:
    """The text, token count and token ids the job's log holds up to ``last_seq``."""
    parts: list[str] = []
    tokens = 0
    ids: list[int] | None = []
    event_field, ids_field = EVENT_FIELD.encode(), IDS_FIELD.encode()
    # The worker's clients answer bytes (no decode_responses).
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        client.xrange(events_key(job_id), "-", entry_id(last_seq)),
    )
    for _, fields in entries:
        event = decode_event(fields[event_field])
        if not isinstance(event, TokenEvent):
            continue
        parts.append(event.text)
        tokens += event.tokens
        logged = fields.get(ids_field)
        if ids is None or logged is None:
            ids = None
        else:
            ids += [int(i) for i in logged.split(b",")]
    if ids is not None and len(ids) != tokens:
        ids = None
    return ResumeState("".join(parts), tokens, ids)


def resume_job(engine: Engine, job: ActiveJob, state: ResumeState) -> None:
    """Continue an earlier attempt: its emitted tokens are the forced prefix of this one.

    The log up to the claim's last seq holds what subscribers have; the new attempt numbers
    its events after it and feeds those token ids back to the engine, which also skips the
    sampler draws they took, so a greedy or seeded job goes on exactly as the first
    attempt would have: no gap, no duplicate, the same text. A log without ids (written
    before they were logged) falls back to re-encoding its text.
    """
    if not state.tokens:
        return
    ids = state.ids
    if ids is None:
        ids = engine.encode(state.text)
        bos = engine.encode("")
        if bos and ids[: len(bos)] == bos:
            ids = ids[len(bos) :]
    job.forced_ids = ids
    job.detok = IncrementalDetokenizer(engine.decode, context=ids[-CONTEXT_IDS:])
    job.text_parts.append(state.text)
    job.tokens = state.tokens
    job.first_token_at = time.time()  # keeps the first attempt's first_token_at
    log.info(
        "job %s: attempt %d resumes after %d tokens",
        job.job_id,
        job.attempt,
        state.tokens,
        extra={"job_id": job.job_id},
    )


def unstarted_job(job_id: str, worker_id: str, attempt: int, last_seq: int) -> ActiveJob:
    """A job with no prompt, numbering its events after ``last_seq``: it only ends (its
    ``finish`` or ``fail`` writes the final event of a job that never ran)."""
    spec = JobSpec(kind="completion", model="", sampling=_NO_SAMPLING)
    job = ActiveJob(
        job_id=job_id,
        spec=spec,
        prompt_ids=[],
        attempt=attempt,
        worker_id=worker_id,
        detok=IncrementalDetokenizer(_no_text),
        stops=StopMatcher(()),
    )
    job.seq = last_seq
    return job


def _no_text(ids: Sequence[int]) -> str:
    return ""
