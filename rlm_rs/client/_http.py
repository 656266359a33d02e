"""The HTTP transport: the REST API (`/v1`, docs/api.md#rest-api) through httpx, sync and async.

Each call is one request built from the operation table (`_ops.OPS`); a
non-2xx answer becomes the `RlmApiError` of its envelope, with the request id
and `Retry-After`. The event stream is Server-Sent Events, decoded here; a
`stream_error` frame becomes its error. It never retries (`_retry.py` does)
and never logs the API key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from rlm_rs.client._common import UPLOAD_TIMEOUT
from rlm_rs.client._ops import UPLOAD_PATH, WATCH_PATH, Op
from rlm_rs.client.errors import RlmApiError, RlmConnectionError, api_error

REQUEST_ID_HEADER = "x-request-id"
CONNECT_TIMEOUT = 10.0
# The gateway sends a keep-alive comment every 15 s: a stream silent for this
# long is a dead connection, and is resumed.
STREAM_READ_TIMEOUT = 60.0
# A status without the envelope (a proxy's page) still gets a code.
_CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    502: "SERVICE_UNAVAILABLE",
    503: "SERVICE_UNAVAILABLE",
    504: "SERVICE_UNAVAILABLE",
}


def _headers(api_key: str) -> dict[str, str]:
    from rlm_rs.client import __version__

    return {"authorization": f"Bearer {api_key}", "user-agent": f"rlm-rs-client/{__version__}"}


def error_from_envelope(
    envelope: Any, *, status: int | None, request_id: str, retry_after: str | None = None
) -> RlmApiError:
    """The error an envelope `{"error": {code, message, request_id, details}}` carries."""
    body = envelope.get("error") if isinstance(envelope, Mapping) else None
    if not isinstance(body, Mapping) or not body.get("code"):
        code = _CODE_BY_STATUS.get(status or 0, "INTERNAL_ERROR")
        return api_error(code, f"HTTP {status} without an error envelope", request_id=request_id,
                         http_status=status)  # fmt: skip
    details = dict(body.get("details") or {}) if isinstance(body.get("details"), Mapping) else {}
    if retry_after and "retry_after_seconds" not in details:
        details["retry_after_seconds"] = retry_after
    return api_error(
        str(body["code"]),
        str(body.get("message") or body["code"]),
        details=details,
        request_id=str(body.get("request_id") or request_id),
        http_status=status,
    )


def error_from_response(response: httpx.Response, request_id: str) -> RlmApiError:
    try:
        envelope = response.json()
    except ValueError:
        envelope = None
    return error_from_envelope(
        envelope,
        status=response.status_code,
        request_id=response.headers.get(REQUEST_ID_HEADER) or request_id,
        retry_after=response.headers.get("retry-after"),
    )


def _reply(response: httpx.Response, request_id: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise error_from_response(response, request_id)
    try:
        data = response.json()
    except ValueError:
        raise api_error("INTERNAL_ERROR", "the server answered something that is not JSON",
                        request_id=request_id, http_status=response.status_code) from None  # fmt: skip
    return data if isinstance(data, dict) else {"value": data}


def connection_error(exc: httpx.TransportError) -> RlmConnectionError:
    """Refused, unresolvable or timed-out connects never sent the request."""
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return RlmConnectionError(f"{type(exc).__name__}: {exc}", sent=sent)


def _request_args(op: Op, params: Mapping[str, Any], request_id: str) -> dict[str, Any]:
    path, query, body = op.split(params)
    args: dict[str, Any] = {
        "method": op.http_method,
        "url": path,
        "headers": {REQUEST_ID_HEADER: request_id},
        "timeout": httpx.Timeout(op.deadline(params), connect=CONNECT_TIMEOUT),
    }
    if query:
        args["params"] = query
    if body is not None and (body or op.http_method == "POST"):
        args["json"] = body
    return args


def _watch_args(execution_id: str, after: str, request_id: str) -> dict[str, Any]:
    from urllib.parse import quote

    headers = {REQUEST_ID_HEADER: request_id, "accept": "text/event-stream"}
    if after:
        headers["last-event-id"] = after
    return {
        "method": "GET",
        "url": WATCH_PATH.replace("{execution_id}", quote(execution_id, safe="")),
        "headers": headers,
        "timeout": httpx.Timeout(CONNECT_TIMEOUT, read=STREAM_READ_TIMEOUT),
    }


# ---------------------------------------------------------------- SSE
@dataclass
class SseFrame:
    event: str
    data: str
    id: str


class SseDecoder:
    """Server-Sent Events, line by line (the subset the gateway sends: id, event, data, comments)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id = ""

    def feed(self, line: str) -> SseFrame | None:
        if line == "":
            if not self._data and not self._event:
                return None
            frame = SseFrame(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], ""
            return frame
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def _event_of(frame: SseFrame, request_id: str) -> dict[str, Any] | None:
    if frame.event == "stream_error":
        try:
            envelope = json.loads(frame.data)
        except ValueError:
            envelope = None
        raise error_from_envelope(envelope, status=None, request_id=request_id)
    if not frame.data:
        return None
    data = json.loads(frame.data)
    return data if isinstance(data, dict) else None


def _upload_args(file_name: str, content_type: str, request_id: str) -> dict[str, Any]:
    return {
        "method": "POST",
        "url": UPLOAD_PATH,
        "params": {"file_name": file_name},
        "headers": {REQUEST_ID_HEADER: request_id, "content-type": content_type},
        "timeout": httpx.Timeout(UPLOAD_TIMEOUT, connect=CONNECT_TIMEOUT),
    }


# ---------------------------------------------------------------- transports
class HttpTransport:
    """Sync REST transport over one httpx.Client (connection pooling, keep-alive)."""

    kind = "http"

    def __init__(self, base_url: str, api_key: str, *, verify: Any = True):
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), verify=verify)

    def call(self, op: Op, params: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        try:
            response = self._http.request(**_request_args(op, params, request_id))
        except httpx.TransportError as exc:
            raise connection_error(exc) from None
        return _reply(response, request_id)

    def upload(
        self, file_name: str, content_type: str, pieces: Iterator[bytes], request_id: str
    ) -> dict[str, Any]:
        """POST /v1/uploads with the pieces as a chunked body (never joined)."""
        try:
            response = self._http.request(**_upload_args(file_name, content_type, request_id), content=pieces)
        except httpx.TransportError as exc:
            raise connection_error(exc) from None
        return _reply(response, request_id)

    def watch(self, execution_id: str, after: str, request_id: str) -> Generator[dict[str, Any], None, None]:
        try:
            with self._http.stream(**_watch_args(execution_id, after, request_id)) as response:
                if response.status_code >= 300:
                    response.read()
                    raise error_from_response(response, request_id)
                decoder = SseDecoder()
                for line in response.iter_lines():
                    frame = decoder.feed(line)
                    if frame is not None and (event := _event_of(frame, request_id)) is not None:
                        yield event
        except httpx.TransportError as exc:
            raise connection_error(exc) from None

    def close(self) -> None:
        self._http.close()


class AsyncHttpTransport:
    """Async REST transport over one httpx.AsyncClient."""

    kind = "http"

    def __init__(self, base_url: str, api_key: str, *, verify: Any = True):
        self.base_url = base_url
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), verify=verify)

    async def call(self, op: Op, params: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        try:
            response = await self._http.request(**_request_args(op, params, request_id))
        except httpx.TransportError as exc:
            raise connection_error(exc) from None
        return _reply(response, request_id)

    async def upload(
        self, file_name: str, content_type: str, pieces: AsyncIterator[bytes], request_id: str
    ) -> dict[str, Any]:
        try:
            response = await self._http.request(
                **_upload_args(file_name, content_type, request_id), content=pieces
            )
        except httpx.TransportError as exc:
            raise connection_error(exc) from None
        return _reply(response, request_id)

    async def watch(
        self, execution_id: str, after: str, request_id: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async with self._http.stream(**_watch_args(execution_id, after, request_id)) as response:
                if response.status_code >= 300:
                    await response.aread()
                    raise error_from_response(response, request_id)
                decoder = SseDecoder()
                async for line in response.aiter_lines():
                    frame = decoder.feed(line)
                    if frame is not None and (event := _event_of(frame, request_id)) is not None:
                        yield event
        except httpx.TransportError as exc:
            raise connection_error(exc) from None

    async def close(self) -> None:
        await self._http.aclose()
