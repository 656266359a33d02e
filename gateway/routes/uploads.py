"""POST /v1/uploads: a raw document streamed into the control plane's Upload.

The body is the file's bytes (`Content-Type` its MIME type, `?file_name=`
its name). It is never read whole: each piece the server receives is passed
on as gRPC UploadRequest messages of at most UPLOAD_CHUNK_BYTES, the first
naming the file, the last marked `last`. When the body breaks (over
RLM_MAX_UPLOAD_BYTES, the caller gone) the stream ends without `last`, so
the control plane stores nothing. Size, type and tenancy are decided by the
control plane (rlm_rs/storage/uploads.py); the edge middleware refuses an
oversized body early. A stream cannot be replayed, so it is never retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from fastapi import APIRouter, Header, Query, Request
from starlette.requests import ClientDisconnect

from gateway import models as m
from gateway.calls import Call, caller
from gateway.convert import to_dict
from gateway.errors import ENVELOPE_JSON, ERROR_RESPONSES, error_from_rpc
from rlm_rs.errors import RlmError
from rlm_rs.v1 import session_pb2

UPLOAD_PATH = "/v1/uploads"
# Well under any RLM_MAX_REQUEST_BYTES (the control plane's largest gRPC message).
UPLOAD_CHUNK_BYTES = 128 * 1024
# An upload may take as long as the caller needs to send it (the HTTP server's
# read deadlines stop a stalled one).
UPLOAD_DEADLINE_SECONDS = 3600.0
MAX_CONTENT_TYPE_CHARS = 256
MAX_FILE_NAME_CHARS = 512

router = APIRouter(responses=ERROR_RESPONSES, tags=["uploads"])


@router.post(
    UPLOAD_PATH,
    response_model=m.UploadView,
    status_code=201,
    responses={415: {"content": ENVELOPE_JSON, "description": "UNSUPPORTED_MEDIA_TYPE"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the file's bytes; Content-Type is its MIME type",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload(
    request: Request,
    file_name: str = Query(min_length=1, max_length=MAX_FILE_NAME_CHARS, description="the file's name"),
    content_type: str = Header(
        default="",
        alias="content-type",
        max_length=MAX_CONTENT_TYPE_CHARS,
        description="a type the parsers read; application/octet-stream or none: from file_name's extension",
    ),
    call: Call = caller,
) -> Any:
    """Upload one raw document (streamed; at most RLM_MAX_UPLOAD_BYTES). The
    answer's `raw_s3_uri` names it in POST /v1/sessions; only this tenant
    can name it."""
    broken: list[BaseException] = []

    async def chunks() -> AsyncIterator[session_pb2.UploadRequest]:
        yield session_pb2.UploadRequest(file_name=file_name, content_type=content_type)
        pending = bytearray()
        try:
            async for piece in request.stream():
                pending += piece
                while len(pending) >= UPLOAD_CHUNK_BYTES:
                    yield session_pb2.UploadRequest(data=bytes(pending[:UPLOAD_CHUNK_BYTES]))
                    del pending[:UPLOAD_CHUNK_BYTES]
        except Exception as exc:  # the body broke: end without `last`, nothing is stored
            broken.append(exc)
            return
        yield session_pb2.UploadRequest(data=bytes(pending), last=True)

    try:
        result = await call.stubs.sessions.Upload(
            chunks(), metadata=call.metadata, timeout=UPLOAD_DEADLINE_SECONDS
        )
    except grpc.aio.AioRpcError as exc:
        if not broken:
            raise error_from_rpc(exc) from None
        result = None
    if broken:  # the body's own failure is the answer (the middleware's 413)
        if isinstance(broken[0], ClientDisconnect):
            raise RlmError("VALIDATION_ERROR", "the upload body ended early; nothing was stored")
        raise broken[0]
    assert result is not None  # the call answered: without a broken body, its error was raised above
    return to_dict(result)
