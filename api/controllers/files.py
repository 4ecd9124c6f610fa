"""OpenAI's Files API for batch input: upload, read, download, list, delete (docs/batches.md).

Uploads are ``multipart/form-data`` with ``file`` and ``purpose=batch``; the body limit of
these routes is ``UML_BATCH_MAX_FILE_BYTES`` (413 beyond), set by the router that mounts
them (see :func:`api.app.create_app`). An upload must fit the key's storage quota
(:mod:`api.services.file_quota`): one whose ``Content-Length`` already says it cannot is
refused before its body is read.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath, Parameter

from api.controllers.openai import owner_of
from api.errors import APIError, invalid_request
from api.openapi import ERRORS, FileUploadOperation
from api.services.batches import parse
from api.state import Resources
from protocol.batches import FileDeleted, FileList, FileObject
from protocol.settings import BatchSettings

MAX_FILENAME_CHARS = 255

UPLOAD_OVERHEAD_BYTES = 64 * 1024
"""Room for a multipart upload's boundaries and part headers around the file's bytes."""


def least_file_bytes(request: Request[Any, Any, Any]) -> int:
    """The fewest bytes the uploaded file can have, by the request's ``Content-Length``."""
    declared = request.headers.get("content-length", "")
    return max(0, int(declared) - UPLOAD_OVERHEAD_BYTES) if declared.isdigit() else 0


async def batch_input(upload: UploadFile, cfg: BatchSettings) -> bytes:
    """The bytes of an uploaded batch input file: 413 over the file cap, 400 naming the
    first line that is not a request line (checked off the event loop)."""
    content = await upload.read()
    await upload.close()
    if len(content) > cfg.max_file_bytes:
        raise APIError(
            413,
            f"The file is {len(content)} bytes; at most {cfg.max_file_bytes} are accepted",
            param="file",
            code="file_too_large",
        )
    await anyio.to_thread.run_sync(parse.check_input_file, content, cfg.max_lines)
    return content


class FilesController(Controller):
    path = "/v1/files"
    tags = ["files"]

    @post(
        "",
        summary="Upload a batch input file",
        description="multipart/form-data: `file` (JSONL, one request per line) and "
        "`purpose=batch`.",
        status_code=200,
        responses=ERRORS,
        operation_class=FileUploadOperation,
    )
    async def upload(self, request: Request[Any, Any, Any], state: State) -> FileObject:
        res = Resources.of(state)
        owner = owner_of(request)
        await res.files.quota.check(owner, least_file_bytes(request))
        form = await request.form()
        purpose = form.get("purpose")
        upload = form.get("file")
        if not isinstance(purpose, str) or not purpose:
            raise invalid_request("purpose is required", param="purpose")
        if purpose != "batch":
            raise invalid_request(
                "Only purpose=batch is supported", param="purpose", code="unsupported_parameter"
            )
        if not isinstance(upload, UploadFile):
            raise invalid_request("file is required (a multipart file part)", param="file")
        filename = (upload.filename or "upload.jsonl")[:MAX_FILENAME_CHARS]
        content = await batch_input(upload, res.settings.batch)
        return await res.files.create(owner, filename, purpose, content)

    @get("", summary="List your files, newest first", responses=ERRORS)
    async def list_files(
        self,
        request: Request[Any, Any, Any],
        state: State,
        purpose: Annotated[str | None, Parameter(max_length=32)] = None,
        limit: Annotated[int, Parameter(ge=1, le=10_000)] = 100,
        after: Annotated[str | None, Parameter(max_length=64)] = None,
    ) -> FileList:
        files, more = await Resources.of(state).files.page(owner_of(request), after, limit, purpose)
        return FileList(
            data=files,
            first_id=files[0].id if files else None,
            last_id=files[-1].id if files else None,
            has_more=more,
        )

    @get("/{file_id:str}", summary="Read a file's metadata", responses=ERRORS)
    async def get_file(
        self, request: Request[Any, Any, Any], state: State, file_id: FromPath[str]
    ) -> FileObject:
        return await Resources.of(state).files.get(owner_of(request), file_id)

    @get(
        "/{file_id:str}/content",
        summary="Download a file's bytes",
        responses=ERRORS,
        media_type="application/octet-stream",
    )
    async def content(
        self, request: Request[Any, Any, Any], state: State, file_id: FromPath[str]
    ) -> Response[bytes]:
        body = await Resources.of(state).files.content(owner_of(request), file_id)
        return Response(body, media_type="application/octet-stream")

    @delete("/{file_id:str}", summary="Delete a file", status_code=200, responses=ERRORS)
    async def delete_file(
        self, request: Request[Any, Any, Any], state: State, file_id: FromPath[str]
    ) -> FileDeleted:
        await Resources.of(state).files.delete(owner_of(request), file_id)
        return FileDeleted(id=file_id)
