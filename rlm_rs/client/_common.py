"""What the sync and async clients share: the URL → transport rule, request
bodies, request ids, and the waits' pacing. Pure functions, no I/O.

URL schemes (docs/client.md, "Transports"): `http://` / `https://` → the REST
gateway; `grpc://host:port` → the control plane's gRPC port in plaintext;
`grpcs://host:port` → gRPC over TLS; `unix:/path` (or `unix:///path`) → gRPC
on a Unix socket. Anything else is refused, never guessed.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from rlm_rs.client.types import MIME_TYPES, DocumentInput, Json, UploadProgress, docs_json

# Answerer runs end within max_total_seconds (ceiling 3,600 s); ask() waits this
# long by default before WaitTimeoutError.
DEFAULT_ASK_TIMEOUT = 600.0
DEFAULT_READY_TIMEOUT = 600.0
# One WaitExecution holds the server at most this long (its limit is 300 s).
WAIT_CHUNK_SECONDS = 60.0


@dataclass(frozen=True)
class Target:
    kind: str  # "http" | "grpc"
    address: str  # base URL (http) or gRPC target
    tls: bool


def parse_target(url: str) -> Target:
    """Which transport a URL names (module docstring)."""
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"no socket path in {url!r}")
        return Target("grpc", "unix:" + path, False)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise ValueError(f"no host in {url!r}")
        return Target("http", url.rstrip("/"), scheme == "https")
    if scheme in ("grpc", "grpcs"):
        if not parts.hostname or parts.port is None or parts.path not in ("", "/"):
            raise ValueError(f"a gRPC URL is grpc://host:port or grpcs://host:port, not {url!r}")
        return Target("grpc", parts.netloc, scheme == "grpcs")
    raise ValueError(
        f"unsupported URL {url!r}: use http(s)://host[:port] (REST), grpc(s)://host:port or unix:/path (gRPC)"
    )


def new_request_id() -> str:
    """The x-request-id of one call (every retry of it sends the same one)."""
    return "req_" + uuid.uuid4().hex


def _clean(data: Mapping[str, Any] | None) -> Json | None:
    if not data:
        return None
    out = {k: v for k, v in data.items() if v is not None}
    return out or None


def create_session_params(
    docs: Sequence[DocumentInput | str | Mapping[str, Any]],
    *,
    ttl_minutes: int | None,
    enable_search: bool | None,
    readiness_mode: str | None,
    models: Mapping[str, str] | None,
    budgets: Mapping[str, float] | None,
) -> Json:
    if isinstance(docs, str | bytes) or not docs:
        raise ValueError("docs must be a non-empty list of documents (s3:// URIs or DocumentInput)")
    options = _clean({"enable_search": enable_search, "readiness_mode": readiness_mode})
    return {
        "docs": docs_json(docs),
        "ttl_minutes": ttl_minutes,
        "options": options,
        "models_default": _clean(models),
        "budgets_default": _clean(budgets),
    }


def execution_params(
    *,
    question: str | None = None,
    models: Mapping[str, str] | None = None,
    budgets: Mapping[str, float] | None = None,
    output_mode: str | None = None,
    return_trace: bool | None = None,
    redact_trace: bool | None = None,
) -> Json:
    options = _clean({"output_mode": output_mode, "return_trace": return_trace, "redact_trace": redact_trace})
    params: Json = {"models": _clean(models), "budgets": _clean(budgets), "options": options}
    if question is not None:
        params["question"] = question
    return params


def run_step_params(code: str, state: Mapping[str, Any] | None, resolve_tools: bool) -> Json:
    params: Json = {"code": code}
    if state is not None:
        params["state"] = dict(state)
    if resolve_tools:
        params["options"] = {"resolve_tools": True}
    return params


def poll_interval(attempt: int) -> float:
    """Seconds between session polls: quick at first, then every 2 s."""
    return min(2.0, 0.2 * 1.5**attempt)


# ---------------------------------------------------------------- uploads
# An upload is read from its source in pieces of this size (the progress
# callback's step) and sent as gRPC UploadRequest messages of UPLOAD_CHUNK_BYTES
# (well under the server's smallest sensible RLM_MAX_REQUEST_BYTES).
UPLOAD_PIECE_BYTES = 1024 * 1024
UPLOAD_CHUNK_BYTES = 128 * 1024
# An upload may take as long as its size needs.
UPLOAD_TIMEOUT = 3600.0

UploadFile = str | os.PathLike[str] | bytes | IO[bytes]


@dataclass(frozen=True)
class UploadSource:
    """One file to upload, readable again from the start for each attempt."""

    file_name: str
    content_type: str
    size: int | None
    open: Callable[[], Iterator[bytes]]

    def progress(self, index: int, files: int, sent: int, done: bool = False) -> UploadProgress:
        return UploadProgress(self.file_name, index, files, sent, self.size, done)


def upload_source(
    source: UploadFile, file_name: str | None = None, content_type: str | None = None
) -> UploadSource:
    """A path, bytes or a binary file object (seekable to be retried) as an UploadSource.
    The content type defaults to the one the name's extension implies, else
    application/octet-stream (the server then infers it from the name, or refuses)."""
    size: int | None
    opener: Callable[[], Iterator[bytes]]
    if isinstance(source, bytes):
        data = source
        name = file_name or "upload"
        size = len(data)

        def opener() -> Iterator[bytes]:
            for start in range(0, len(data), UPLOAD_PIECE_BYTES):
                yield data[start : start + UPLOAD_PIECE_BYTES]

    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        name = file_name or os.path.basename(path)
        size = os.path.getsize(path)

        def opener() -> Iterator[bytes]:
            with open(path, "rb") as handle:
                while piece := handle.read(UPLOAD_PIECE_BYTES):
                    yield piece

    else:
        handle = source
        name = file_name or os.path.basename(str(getattr(handle, "name", "") or "")) or "upload"
        start = handle.tell() if handle.seekable() else None
        size = None

        def opener() -> Iterator[bytes]:
            if start is not None:
                handle.seek(start)
            while piece := handle.read(UPLOAD_PIECE_BYTES):
                yield piece

    if not content_type:
        content_type = MIME_TYPES.get(posixpath.splitext(name)[1].lower(), "application/octet-stream")
    return UploadSource(file_name=name, content_type=content_type, size=size, open=opener)
