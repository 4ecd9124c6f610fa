"""OpenAI's Batch API: create, read, list and cancel batches (docs/batches.md)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, Parameter

from api.controllers.openai import owner_of
from api.openapi import ERRORS, BatchCreateOperation
from api.state import Resources
from protocol.batches import Batch, BatchList


class BatchesController(Controller):
    path = "/v1/batches"
    tags = ["batches"]

    @post(
        "",
        summary="Create a batch",
        description="Run every line of a `purpose=batch` file as a batch-priority job.",
        status_code=200,
        responses=ERRORS,
        operation_class=BatchCreateOperation,
    )
    async def create(self, request: Request[Any, Any, Any], state: State) -> Batch:
        res = Resources.of(state)
        batch = await res.batches.create(owner_of(request), await request.body())
        res.batch_runner.poke()
        return batch

    @get("", summary="List your batches, newest first", responses=ERRORS)
    async def list_batches(
        self,
        request: Request[Any, Any, Any],
        state: State,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
        after: Annotated[str | None, Parameter(max_length=64)] = None,
    ) -> BatchList:
        batches, more = await Resources.of(state).batches.page(owner_of(request), after, limit)
        return BatchList(
            data=batches,
            first_id=batches[0].id if batches else None,
            last_id=batches[-1].id if batches else None,
            has_more=more,
        )

    @get("/{batch_id:str}", summary="Read a batch", responses=ERRORS)
    async def get_batch(
        self, request: Request[Any, Any, Any], state: State, batch_id: FromPath[str]
    ) -> Batch:
        return await Resources.of(state).batches.get(owner_of(request), batch_id)

    @post("/{batch_id:str}/cancel", summary="Cancel a batch", status_code=200, responses=ERRORS)
    async def cancel(
        self, request: Request[Any, Any, Any], state: State, batch_id: FromPath[str]
    ) -> Batch:
        res = Resources.of(state)
        batch = await res.batches.cancel(owner_of(request), batch_id)
        res.batch_runner.poke()
        return batch
