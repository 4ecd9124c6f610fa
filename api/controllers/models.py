"""Model management: ``POST /load_model``, ``POST /unload_model`` (admin), ``GET /models``.

Load and unload answer 202 with their operations (``uml:modelop:{id}``), which
``GET /models/ops/{op_id}`` reports; ``?wait=true`` waits (up to ``UML_LOAD_WAIT_S``) and
answers 200 once every operation is done. ``GET /v1/models`` (OpenAI's list of what can
serve now) stays in :mod:`api.controllers.openai`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, Parameter

from api import validation
from api.errors import APIError
from api.openapi import ERRORS, json_body
from api.security import audit
from api.security.guards import requires_admin
from api.services.model_ops import ModelAdmin
from api.state import Resources
from protocol.models import (
    LoadModelRequest,
    ModelOp,
    ModelOpList,
    ModelsOverview,
    UnloadModelRequest,
)

_load = msgspec.json.Decoder(LoadModelRequest)
_unload = msgspec.json.Decoder(UnloadModelRequest)

_OP_RESPONSES = {
    **ERRORS,
    200: ResponseSpec(
        ModelOpList,
        description="Every operation is done (`wait=true`, or nothing had to change)",
        generate_examples=False,
    ),
}
"""202 while an operation runs (poll ``/models/ops/{id}``), 200 once all are done."""

Wait = Annotated[
    bool, Parameter(description="Wait (bounded by UML_LOAD_WAIT_S) until the operation is done.")
]


def _admin(res: Resources) -> ModelAdmin:
    admin = res.models.admin
    if admin is None:  # only a bare LiveModels in a unit test lacks one
        raise APIError(503, "Model management is not configured", type="service_unavailable")
    return admin


async def _answer(res: Resources, ops: list[ModelOp], wait: bool) -> Response[ModelOpList]:
    if wait:
        ops = await _admin(res).wait(ops, res.settings.models.load_wait_s, res.models)
    done = all(op.done for op in ops)
    return Response(ModelOpList(data=ops), status_code=200 if done else 202)


class ModelsController(Controller):
    tags = ["models"]

    @post(
        "/load_model",
        summary="Load a model on a worker (admin); 202 with the operation to poll",
        guards=[requires_admin],
        status_code=202,
        responses=_OP_RESPONSES,
        operation_class=json_body(LoadModelRequest),
    )
    async def load_model(
        self, request: Request[Any, Any, Any], state: State, wait: Wait = False
    ) -> Response[ModelOpList]:
        res = Resources.of(state)
        req = validation.decode(_load, await request.body())
        audit.note(request.scope, action="model.load", target=req.model, model=req.model)
        snap = await res.models.refresh()
        op = await _admin(res).load(req, snap.workers)
        return await _answer(res, [op], wait)

    @post(
        "/unload_model",
        summary="Unload a model (admin): its queue stops, running jobs finish, memory is freed",
        guards=[requires_admin],
        status_code=202,
        responses=_OP_RESPONSES,
        operation_class=json_body(UnloadModelRequest),
    )
    async def unload_model(
        self, request: Request[Any, Any, Any], state: State, wait: Wait = False
    ) -> Response[ModelOpList]:
        res = Resources.of(state)
        req = validation.decode(_unload, await request.body())
        audit.note(request.scope, action="model.unload", target=req.model, model=req.model)
        snap = await res.models.refresh()
        ops = await _admin(res).unload(req, snap.workers)
        return await _answer(res, ops, wait)

    @get(
        "/models/ops/{op_id:str}",
        summary="One load or unload operation (admin)",
        guards=[requires_admin],
        responses=ERRORS,
    )
    async def operation(self, state: State, op_id: FromPath[str]) -> ModelOp:
        res = Resources.of(state)
        op = await _admin(res).read_op(op_id, (await res.models.refresh()).workers)
        if op is None:
            raise APIError(404, f"No model operation `{op_id}`", param="op_id", code="not_found")
        return op

    @get(
        "/models",
        summary="Every model and worker: placement, state, memory, active jobs, queue depth",
        responses=ERRORS,
    )
    async def overview(self, state: State) -> ModelsOverview:
        res = Resources.of(state)
        return await _admin(res).overview((await res.models.refresh()).workers)
