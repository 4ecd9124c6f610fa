"""``/admin/keys``: create (the plaintext is answered once), list (no hashes), revoke.

Every route here needs a key with the ``admin`` scope; a user key gets 403.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from api import validation
from api.errors import APIError
from api.security.guards import requires_admin
from api.state import Resources
from protocol import auth
from protocol.auth import CreatedKey, CreateKeyRequest, KeyList, KeyView


def _not_found(key_id: str) -> APIError:
    return APIError(404, f"No API key with id `{key_id}`", param="id", code="key_not_found")


_create_decoder = msgspec.json.Decoder(CreateKeyRequest)


class AdminKeysController(Controller):
    path = "/admin/keys"
    tags = ["admin"]
    guards = [requires_admin]

    @post(summary="Create an API key; the answer holds the key itself, shown this once")
    async def create(self, request: Request[Any, Any, Any], state: State) -> CreatedKey:
        body = await request.body()
        record, plaintext = auth.from_request(validation.decode(_create_decoder, body))
        await Resources.of(state).keys.add(record)
        return CreatedKey(key=plaintext, info=auth.view(record))

    @get(summary="List API keys (never their secrets or hashes)")
    async def list_keys(self, state: State) -> KeyList:
        records = await Resources.of(state).keys.all()
        return KeyList(data=[auth.view(r) for r in records])

    @delete("/{key_id:str}", summary="Revoke an API key", status_code=200)
    async def revoke(self, state: State, key_id: FromPath[str]) -> KeyView:
        record = await Resources.of(state).keys.revoke(key_id)
        if record is None:
            raise _not_found(key_id)
        return auth.view(record)
