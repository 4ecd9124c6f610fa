"""Preparing a claimed job (workers.prepare), with a byte-level engine: no model, no Redis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pytest

from protocol.events import ErrorEvent
from protocol.jobs import JobSpec, SamplingParams
from protocol.openai import ChatMessage
from workers.engines import Engine
from workers.prepare import (
    ContextTooLong,
    ResumeState,
    prepare_job,
    resume_job,
    unstarted_job,
)

BOS = 1


class ByteEngine:
    """The tokenizer part of an engine: one id per byte (+2), BOS first."""

    def encode(self, text: str) -> list[int]:
        return [BOS, *(b + 2 for b in text.encode())]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i - 2 for i in ids if i >= 2).decode(errors="replace")

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


ENGINE = cast(Engine, ByteEngine())


def spec(max_tokens: int = 4) -> JobSpec:
    sampling = SamplingParams(max_tokens=max_tokens, stop=("\n",))
    return JobSpec(kind="completion", model="m", sampling=sampling, prompt="hi")


def test_a_completion_is_tokenized_and_its_prompt_counted() -> None:
    job = prepare_job(ENGINE, 16, "j", spec(), attempt=2, worker_id="w-1")
    assert job.prompt_ids == ENGINE.encode("hi")
    assert (job.attempt, job.worker_id, job.seq) == (2, "w-1", 0)
    assert job.fields == {"prompt_tokens": 3}
    assert job.add_tokens(ENGINE.encode("!\n")[1:])  # the stop string ends it
    assert "".join(job.text_parts) == "!"


def test_a_chat_goes_through_the_template() -> None:
    chat = JobSpec(
        kind="chat",
        model="m",
        sampling=SamplingParams(max_tokens=4),
        messages=[ChatMessage(role="user", content="yo")],
    )
    job = prepare_job(ENGINE, 64, "j", chat, attempt=1, worker_id="w-1")
    assert job.prompt_ids == ENGINE.encode("<user>yo<assistant>")


def test_a_prompt_past_the_context_is_refused_with_its_param() -> None:
    with pytest.raises(ContextTooLong) as refused:
        prepare_job(ENGINE, 6, "j", spec(max_tokens=4), attempt=1, worker_id="w-1")
    assert refused.value.param == "prompt" and refused.value.code == "context_length_exceeded"
    assert prepare_job(ENGINE, 0, "j", spec(max_tokens=4), 1, "w-1").prompt_ids  # 0: unknown


def test_a_resumed_job_forces_the_logged_ids_or_the_text_without_bos() -> None:
    job = prepare_job(ENGINE, 64, "j", spec(), attempt=2, worker_id="w-1")
    resume_job(ENGINE, job, ResumeState("ab", 2, [99, 100]))
    assert (job.forced_ids, job.tokens, job.text_parts) == ([99, 100], 2, ["ab"])
    assert job.first_token_at is not None
    old = prepare_job(ENGINE, 64, "k", spec(), attempt=2, worker_id="w-1")
    resume_job(ENGINE, old, ResumeState("ab", 2, None))  # a log written before ids were
    assert old.forced_ids == ENGINE.encode("ab")[1:]
    fresh = prepare_job(ENGINE, 64, "l", spec(), attempt=2, worker_id="w-1")
    resume_job(ENGINE, fresh, ResumeState("", 0, []))  # nothing to resume
    assert (fresh.forced_ids, fresh.tokens) == ([], 0)


def test_an_unstarted_job_numbers_its_final_event_after_the_log() -> None:
    job = unstarted_job("j", "w-1", attempt=1, last_seq=3)
    job.fail("no", error_type="invalid_request_error", param="prompt")
    events, fields, _ = job.take_writes()
    [event] = events
    assert isinstance(event, ErrorEvent) and event.seq == 4
    assert event.error.param == "prompt" and fields["status"] == "failed"
