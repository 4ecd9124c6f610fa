"""``/admin/keys``: create and rotate (the plaintext is answered once), list (no hashes), revoke;
``/admin/audit``: read the audit log.

Every route here needs a key with the ``admin`` scope; a user key gets 403. Each change
names itself in the request's audit record (``action``, ``target``); the record already
names the acting key.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, Parameter

from api import validation
from api.errors import APIError
from api.openapi import ERRORS, MIN_0, json_body
from api.security import audit
from api.security.guards import requires_admin
from api.state import Resources
from protocol import auth
from protocol.audit import AuditList
from protocol.auth import CreatedKey, CreateKeyRequest, KeyList, KeyView, RotateKeyRequest


def _not_found(key_id: str) -> APIError:
    return APIError(404, f"No API key with id `{key_id}`", param="id", code="key_not_found")


_create_decoder = msgspec.json.Decoder(CreateKeyRequest)
_rotate_decoder = msgspec.json.Decoder(RotateKeyRequest)


class AdminKeysController(Controller):
    path = "/admin/keys"
    tags = ["admin"]
    guards = [requires_admin]

    @post(
        summary="Create an API key; the answer holds the key itself, shown this once",
        responses=ERRORS,
        operation_class=json_body(CreateKeyRequest),
    )
    async def create(self, request: Request[Any, Any, Any], state: State) -> CreatedKey:
        body = await request.body()
        record, plaintext = auth.from_request(validation.decode(_create_decoder, body))
        await Resources.of(state).keys.add(record)
        audit.note(request.scope, action="key.create", target=record.id)
        return CreatedKey(key=plaintext, info=auth.view(record))

    @get(summary="List API keys (never their secrets or hashes)", responses=ERRORS)
    async def list_keys(self, state: State) -> KeyList:
        records = await Resources.of(state).keys.all()
        return KeyList(data=[auth.view(r) for r in records])

    @delete("/{key_id:str}", summary="Revoke an API key", status_code=200, responses=ERRORS)
    async def revoke(
        self, request: Request[Any, Any, Any], state: State, key_id: FromPath[str]
    ) -> KeyView:
        audit.note(request.scope, action="key.revoke", target=key_id)
        record = await Resources.of(state).keys.revoke(key_id)
        if record is None:
            raise _not_found(key_id)
        return auth.view(record)

    @post(
        "/{key_id:str}/rotate",
        summary="Give a key a new secret, answered this once; the old one works for `grace`",
        status_code=200,
        responses=ERRORS,
        operation_class=json_body(RotateKeyRequest, required=False),
    )
    async def rotate(
        self, request: Request[Any, Any, Any], state: State, key_id: FromPath[str]
    ) -> CreatedKey:
        body = await request.body()
        req = validation.decode(_rotate_decoder, body or b"{}")
        grace_s = 0.0 if req.grace is None else auth.parse_duration(req.grace)
        audit.note(request.scope, action="key.rotate", target=key_id)
        result = await Resources.of(state).keys.rotate(key_id, grace_s)
        if result is None:
            raise _not_found(key_id)
        record, plaintext = result
        return CreatedKey(key=plaintext, info=auth.view(record))


class AdminAuditController(Controller):
    path = "/admin/audit"
    tags = ["admin"]
    guards = [requires_admin]

    @get(summary="Audit records, newest first", responses=ERRORS)
    async def read(
        self,
        state: State,
        since: Annotated[
            float | None,
            Parameter(
                ge=0,
                le=1e12,
                schema_extra=MIN_0,
                description="Only records from this Unix time on.",
            ),
        ] = None,
        key_id: Annotated[
            str | None, Parameter(max_length=64, description="Only records of this key id.")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000, description="Most records.")] = 100,
    ) -> AuditList:
        return await audit.read(Resources.of(state).redis, since, key_id, limit)
