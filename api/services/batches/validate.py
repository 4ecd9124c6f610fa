"""The *validating* step of a batch (see :mod:`api.services.batches.runner`).

The input file is parsed in a thread (:func:`~api.services.batches.parse.parse_input`); the
lines whose model nobody serves, or whose ``max_tokens`` overflows its model's context,
become error lines too; the runnable lines go to the batch's ``todo`` list and the error
lines to its ``err`` list in one transaction, and the status moves on only if it is still
``validating``: a repeat after a takeover writes the same lists again.
"""

from __future__ import annotations

import anyio
import msgspec
import redis.asyncio as aioredis

from api.errors import APIError
from api.services.batches.parse import ParsedFile, Prepared, error_line, parse_input
from api.services.batches.store import BatchStore
from api.services.models import LiveModels
from protocol.batches import BatchError, BatchErrors, BatchStatus
from protocol.jobs import MIN_PROMPT_TOKENS, exceeds_context
from protocol.keys import BATCHES_ACTIVE, batch_key, batch_part_key, file_key
from protocol.settings import Settings

_encode = msgspec.json.encode


class Validator:
    """Runs the *validating* step of a batch: ``validating`` → ``in_progress`` | ``failed``."""

    def __init__(
        self, redis: aioredis.Redis, settings: Settings, models: LiveModels, batches: BatchStore
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.cfg = settings.batch
        self.models = models
        self.batches = batches

    async def run(self, batch_id: str, fields: dict[str, str]) -> None:
        """Parse the input file, keep the lines that can run, then ``in_progress`` (or
        ``failed``, when the file as a whole cannot be read)."""
        key = batch_key(batch_id)
        content = await self.redis.hget(file_key(fields["input_file_id"]), "content")
        if content is None:
            await self._fail(batch_id, "file_not_found", "The input file no longer exists")
            return
        parsed: ParsedFile = await anyio.to_thread.run_sync(
            parse_input,
            batch_id,
            content if isinstance(content, bytes) else content.encode(),
            fields["endpoint"],
            self.settings.server,
            self.cfg.max_lines,
        )
        if parsed.fatal:
            errors = BatchErrors(data=parsed.fatal)
            await self.redis.hset(key, "errors", _encode(errors))
            await self._fail(batch_id, None, None)
            return
        runnable = await self._servable(batch_id, parsed)
        models = {p.spec.model for p in runnable}
        todo = batch_part_key(batch_id, "todo")
        err = batch_part_key(batch_id, "err")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(
                todo, err, batch_part_key(batch_id, "pending"), batch_part_key(batch_id, "out")
            )
            for start in range(0, len(runnable), 1000):
                pipe.rpush(todo, *[_encode(p) for p in runnable[start : start + 1000]])
            for start in range(0, len(parsed.errors), 1000):
                pipe.rpush(err, *[_encode(e) for e in parsed.errors[start : start + 1000]])
            for part in (todo, err):
                pipe.expire(part, self.cfg.file_ttl_s)
            pipe.hset(
                key,
                mapping={
                    "total": parsed.total,
                    "failed": len(parsed.errors),
                    "completed": 0,
                    "cursor": 0,
                    "todo_len": len(runnable),
                    "model": models.pop() if len(models) == 1 else "",
                },
            )
            await pipe.execute()
        await self.batches.move(batch_id, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)

    async def _servable(self, batch_id: str, parsed: ParsedFile) -> list[Prepared]:
        """The prepared lines whose model some worker serves and whose ``max_tokens`` fits its
        announced context (as ``POST /v1/jobs`` checks); the others become errors."""
        missing: dict[str, str] = {}
        context: dict[str, int] = {}
        for model in sorted({p.spec.model for p in parsed.todo}):
            try:
                await self.models.require(model)
                context[model] = await self.models.context(model)
            except APIError as exc:
                missing[model] = exc.info.message
        keep: list[Prepared] = []
        for p in parsed.todo:
            max_tokens = p.spec.sampling.max_tokens
            if p.spec.model in missing:
                message = f"Line {p.line}: {missing[p.spec.model]} (param `body.model`)"
                parsed.errors.append(
                    error_line(batch_id, p.line, p.custom_id, "model_not_found", message)
                )
            elif exceeds_context(MIN_PROMPT_TOKENS, max_tokens, context[p.spec.model]):
                message = (
                    f"Line {p.line}: max_tokens ({max_tokens}) exceeds the model's context of "
                    f"{context[p.spec.model]} tokens (param `body.max_tokens`)"
                )
                code = "context_length_exceeded"
                parsed.errors.append(error_line(batch_id, p.line, p.custom_id, code, message))
            else:
                keep.append(p)
        return keep

    async def _fail(self, batch_id: str, code: str | None, message: str | None) -> None:
        key = batch_key(batch_id)
        if code is not None:
            errors = BatchErrors(data=[BatchError(code=code, message=message)])
            await self.redis.hset(key, "errors", msgspec.json.encode(errors))
        moved = await self.batches.move(batch_id, BatchStatus.VALIDATING, BatchStatus.FAILED)
        if not moved:  # cancelled while validating
            await self.batches.move(batch_id, BatchStatus.CANCELLING, BatchStatus.CANCELLED)
        await self.redis.srem(BATCHES_ACTIVE, batch_id)
