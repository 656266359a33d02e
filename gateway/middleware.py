"""The gateway's edge: request ids, the body size limit, the access log and the last-resort 500.

Raw ASGI (not BaseHTTPMiddleware) so it costs little per request and sees the
body stream: an oversized body is refused by Content-Length up front or when
the streamed bytes pass the limit. Every log line of a request carries its
request id; each request ends with one `http_request` line and its metrics.
It never reads a body it forwards, and never lets a stack trace out.
"""

from __future__ import annotations

import json
import logging
import re
import time

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from gateway.errors import REQUEST_ID_HEADER, error_response
from rlm_rs.errors import RlmError, new_request_id
from rlm_rs.observability import API_LATENCY, API_REQUESTS, end_log_scope, get_logger, start_log_scope

log = logging.getLogger("rlm_rs.gateway")
access_log = get_logger()

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class _BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    """Request ids, the body size limit, the access log and the last-resort 500."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, upload_path: str = "", max_upload_bytes: int = 0):
        self.app = app
        self.max_body_bytes = max_body_bytes
        # The upload route's body is streamed through, not read: its own limit.
        self.upload_path = upload_path
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, length = _read_headers(scope)
        uploading = bool(self.upload_path) and scope.get("path") == self.upload_path
        limit = self.max_upload_bytes if uploading else self.max_body_bytes
        too_large = {"max_upload_bytes" if uploading else "max_request_bytes": limit}
        scope.setdefault("state", {})["request_id"] = request_id
        start_log_scope(request_id=request_id)  # every line of this request carries it
        exchange = _Exchange(self, request_id, limit, too_large, receive, send)
        if length is not None and length > limit:
            await self._too_large(request_id, send, too_large)
            return
        t0 = time.perf_counter()
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:  # the last resort: log, answer 500, no trace out
            await exchange.fail(scope, receive)
        finally:
            _log_access(scope, exchange.status, t0)
            end_log_scope()

    async def _too_large(self, request_id: str, send: Send, details: dict[str, int]) -> None:
        err = RlmError("PAYLOAD_TOO_LARGE", "request body too large", details)
        body = json.dumps(err.envelope(request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": err.http_status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _read_headers(scope: Scope) -> tuple[str, int | None]:
    """The request id (the caller's X-Request-Id when well formed, else a new
    one) and the Content-Length (None when absent or not a number)."""
    request_id = ""
    length: int | None = None
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID_OK.match(candidate):
                request_id = candidate
        elif key == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
    return request_id or new_request_id(), length


def _log_access(scope: Scope, status: int, t0: float) -> None:
    """One request's metrics and its `http_request` access-log line."""
    route = scope.get("route")
    method = f"{scope['method']} {getattr(route, 'path', 'unmatched')}"
    API_REQUESTS.labels(method=method, code=str(status)).inc()
    API_LATENCY.labels(method=method).observe(time.perf_counter() - t0)
    latency_ms = round((time.perf_counter() - t0) * 1000, 3)
    access_log.info("http_request", method=method, status=status, latency_ms=latency_ms)


class _Exchange:
    """One request's passage through the edge: the app's receive counts the
    body against the limit, its send stamps the request id and notes the status."""

    def __init__(
        self,
        edge: EdgeMiddleware,
        request_id: str,
        limit: int,
        too_large: dict[str, int],
        receive: Receive,
        send: Send,
    ) -> None:
        self.edge = edge
        self.request_id = request_id
        self.limit = limit
        self.too_large = too_large
        self._receive = receive
        self._send = send
        self.header = (REQUEST_ID_HEADER.encode(), request_id.encode())
        self.started = False
        self.overflow = False
        self.status = 500
        self.received = 0

    async def send(self, message: AsgiMessage) -> None:
        if self.overflow:
            # The app answered a body it could not read whole: the answer is 413.
            if message["type"] == "http.response.start" and not self.started:
                self.started = True
                await self.edge._too_large(self.request_id, self._send, self.too_large)
            return
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            headers = [h for h in message.get("headers", []) if h[0] != self.header[0]]
            message = {**message, "headers": [*headers, self.header]}
        await self._send(message)

    async def receive(self) -> AsgiMessage:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.overflow = True
                raise _BodyTooLarge
        return message

    async def fail(self, scope: Scope, receive: Receive) -> None:
        """The app raised: log it (unless the body was too large) and answer
        413 or a 500 envelope if nothing was sent yet. Called in the except block."""
        if not self.overflow:
            log.exception("unhandled error", extra={"request_id": self.request_id})
        if self.started:
            return
        self.started = True
        if self.overflow:
            await self.edge._too_large(self.request_id, self._send, self.too_large)
        else:
            err = RlmError("INTERNAL_ERROR", "internal error")
            await error_response(err, self.request_id)(scope, receive, self.send)
