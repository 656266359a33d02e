"""The parser contract (docs/api.md#parser-contract-and-search): POST /parse over the blob store.

`handle_parse(blobs, request)` is the one implementation: the HTTP service
(`rlm-rs parser serve`, FastAPI) and the embedded worker's in-process path
both call it. Beyond the spec, `source` may carry `mime_type` and
`source_name` (the document record knows them) and the request may carry
`doc_id`; without them the format is detected from the key's extension and
the doc id is the last segment of the output prefix.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from rlm_rs.canonical import checksum_bytes
from rlm_rs.errors import RlmError
from rlm_rs.ingestion.parsers import PARSER_VERSION, ParseFailure, parse_document
from rlm_rs.storage.interfaces import BlobStore, split_s3_uri


class ParseSource(BaseModel):
    s3_uri: str
    s3_version_id: str | None = None
    s3_etag: str | None = None
    mime_type: str = ""
    source_name: str = ""


class ParseOutput(BaseModel):
    s3_prefix: str


class ParseOptions(BaseModel):
    extract_structure: bool = True
    ocr_enabled: bool = False
    language_hint: str | None = None
    timeout_seconds: float = Field(120.0, gt=0, le=3600)


class ParseRequest(BaseModel):
    request_id: str
    source: ParseSource
    output: ParseOutput
    options: ParseOptions = Field(default_factory=ParseOptions)
    doc_id: str | None = None


def _output_prefix(blobs: BlobStore, prefix: str) -> str:
    if prefix.startswith("s3://"):
        bucket, key = split_s3_uri(prefix.rstrip("/"))
        if bucket != blobs.bucket:
            raise RlmError("VALIDATION_ERROR", f"output bucket {bucket!r} is not this store's")
        return key
    return prefix.strip("/")


def _failed(request_id: str, code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "status": "failed",
        "error": {"code": code, "message": message, "details": details},
        "parser_version": PARSER_VERSION,
    }


def handle_parse(blobs: BlobStore, request: ParseRequest) -> dict[str, Any]:
    """The spec's success or failure response; RlmError only for storage faults."""
    started = time.perf_counter()
    bucket, key = split_s3_uri(request.source.s3_uri)
    if bucket != blobs.bucket:
        raise RlmError("S3_READ_ERROR", f"bucket {bucket!r} is not readable here", {"key": key})
    if request.source.s3_etag:
        head = blobs.head(key)
        if head is None:
            raise RlmError("S3_READ_ERROR", f"no object {key!r}", {"key": key})
        if request.source.s3_etag.strip('"') != head.etag:
            return _failed(request.request_id, "SOURCE_CHANGED", "the object's ETag differs", {})
    data = blobs.get(key)
    prefix = _output_prefix(blobs, request.output.s3_prefix)
    doc_id = request.doc_id or prefix.rsplit("/", 1)[-1]
    try:
        parsed = parse_document(
            data,
            request.source.mime_type,
            request.source.source_name or key.rsplit("/", 1)[-1],
            timeout_seconds=request.options.timeout_seconds,
        )
    except ParseFailure as failure:
        return _failed(request.request_id, failure.code, failure.message, failure.details)
    del data
    outputs = parsed.outputs(doc_id)
    uris = {}
    for name, payload in outputs.items():
        uris[name] = blobs.uri(f"{prefix}/{name}")
        blobs.put(f"{prefix}/{name}", payload)
    return {
        "request_id": request.request_id,
        "status": "success",
        "outputs": {
            "text_s3_uri": uris["text.txt"],
            "meta_s3_uri": uris["meta.json"],
            "offsets_s3_uri": uris["offsets.json"],
        },
        "stats": {
            "char_length": len(parsed.text),
            "byte_length": len(outputs["text.txt"]),
            "page_count": len(parsed.pages),
            "parse_duration_ms": int((time.perf_counter() - started) * 1000),
        },
        "parser_version": PARSER_VERSION,
        "text_checksum": checksum_bytes(outputs["text.txt"]),  # text is NFC already
        "warnings": parsed.warnings,
    }


def _authorized(header: str | None, token: SecretStr) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    scheme, _, presented = (header or "").partition(" ")
    expected = token.get_secret_value().encode("utf-8")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode("utf-8"), expected)


def create_app(blobs: BlobStore, auth_token: SecretStr | None = None) -> Any:
    """The parser HTTP service: POST /parse, GET /health/live; spec error envelope.
    With `auth_token` (PARSER_SERVICE_AUTH_SECRET_ARN), /parse answers only
    callers that present it as a bearer token (401 UNAUTHORIZED otherwise)."""
    import uuid

    from fastapi import Depends, FastAPI, Header, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app = FastAPI(title="RLM-RS parser", version=PARSER_VERSION)

    def envelope(error: RlmError, request_id: str) -> JSONResponse:
        return JSONResponse(error.envelope(request_id), status_code=error.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = {"errors": [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]}
        error = RlmError("VALIDATION_ERROR", "invalid parse request", details)
        return envelope(error, request.headers.get("x-request-id", str(uuid.uuid4())))

    @app.exception_handler(RlmError)
    async def _rlm_error(request: Request, exc: RlmError) -> JSONResponse:
        return envelope(exc, request.headers.get("x-request-id", str(uuid.uuid4())))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        error = RlmError("PARSER_ERROR", "the parser failed unexpectedly")
        return envelope(error, request.headers.get("x-request-id", str(uuid.uuid4())))

    def caller_holds_the_secret(authorization: str | None = Header(default=None)) -> None:
        if auth_token is not None and not _authorized(authorization, auth_token):
            raise RlmError("UNAUTHORIZED", "the parser service needs its bearer token")

    @app.post("/parse", dependencies=[Depends(caller_holds_the_secret)])
    def parse(body: ParseRequest) -> dict[str, Any]:
        return handle_parse(blobs, body)

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "ok"}

    return app
