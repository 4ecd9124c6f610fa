"""One running job inside the scheduler: token ids in, stream events out.

The scheduler owns every :class:`ActiveJob`; nothing here touches Redis or the engine.
Text flows token ids → incremental detokenizer → stop-string matcher → pending events,
which the sink writes once per scheduler iteration.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from protocol.events import DoneEvent, ErrorEvent, Event, StatusEvent, TokenEvent
from protocol.jobs import JobSpec
from protocol.openai import ErrorInfo, Usage
from protocol.states import JobStatus
from workers.detok import IncrementalDetokenizer
from workers.stops import StopMatcher


@dataclass(eq=False)
class ActiveJob:
    job_id: str
    spec: JobSpec
    prompt_ids: list[int]
    attempt: int
    worker_id: str
    detok: IncrementalDetokenizer
    stops: StopMatcher
    seq: int = 0
    """The last sequence number used in this job's event log."""
    interactive: bool = False
    """Interactive priority: the engine prefills it ahead of batched decoding."""
    forced_ids: list[int] = field(default_factory=list)
    """A resumed attempt's already-emitted tokens, fed to the engine as a forced prefix."""
    meter: str | None = None
    """The token window the job's tokens are charged to when it ends (``protocol.meter``)."""
    tokens: int = 0
    pending_ids: list[int] = field(default_factory=list)
    """Tokens generated whose text has not been emitted yet (held by detokenizer/stops)."""
    text_parts: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    event_ids: dict[int, list[int]] = field(default_factory=dict)
    """seq → the token ids a pending token event emits (logged beside it, for resume)."""
    fields: dict[str, Any] = field(default_factory=dict)
    first_token_at: float | None = None
    finished: bool = False
    handed_back: bool = False
    """Stopped by a shutdown past its grace period: back to the queue, not ended."""
    final_status: JobStatus | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def start(self) -> None:
        self.events.append(
            StatusEvent(
                seq=self._next_seq(),
                status=JobStatus.RUNNING,
                attempt=self.attempt,
                worker=self.worker_id,
            )
        )

    def add_tokens(self, token_ids: list[int]) -> bool:
        """Take new token ids; True when a stop string ended the job."""
        if not token_ids:
            return False
        if self.first_token_at is None:
            self.first_token_at = time.time()
            self.fields["first_token_at"] = self.first_token_at
        self.tokens += len(token_ids)
        self.pending_ids += token_ids
        safe, hit = self.stops.push(self.detok.push(token_ids))
        self._emit(safe)
        self.fields["completion_tokens"] = self.tokens
        return hit

    def _emit(self, text: str) -> None:
        if not text:
            return
        self.text_parts.append(text)
        seq = self._next_seq()
        self.events.append(TokenEvent(seq=seq, text=text, tokens=len(self.pending_ids)))
        self.event_ids[seq], self.pending_ids = self.pending_ids, []

    def finish(self, finish_reason: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
        """Flush held text and append the final ``done`` event."""
        if self.finished:
            return
        if not self.stops.hit:
            safe, hit = self.stops.push(self.detok.flush())
            self._emit(safe if hit else safe + self.stops.flush())
        self.finished = True
        self.final_status = status
        usage = Usage(
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=self.tokens,
            total_tokens=len(self.prompt_ids) + self.tokens,
        )
        self.events.append(
            DoneEvent(seq=self._next_seq(), finish_reason=finish_reason, usage=usage)
        )
        self.fields.update(
            status=status.value,
            text="".join(self.text_parts),
            finish_reason=finish_reason,
            usage=usage,
            completion_tokens=self.tokens,
            finished_at=time.time(),
        )

    def hand_back(self) -> None:
        """Stop here without a final event: another worker resumes from the log."""
        if not self.finished:
            self.finished = True
            self.handed_back = True

    def fail(
        self,
        message: str,
        error_type: str = "server_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        if self.finished:
            return
        self.finished = True
        self.final_status = JobStatus.FAILED
        error = ErrorInfo(message=message, type=error_type, param=param, code=code)
        self.events.append(ErrorEvent(seq=self._next_seq(), error=error))
        self.fields.update(status=JobStatus.FAILED.value, error=error, finished_at=time.time())

    def take_writes(self) -> tuple[list[Event], dict[str, Any], dict[int, list[int]]]:
        """The events, hash fields and token ids to write this iteration (and forget them)."""
        writes = self.events, self.fields, self.event_ids
        self.events, self.fields, self.event_ids = [], {}, {}
        return writes
