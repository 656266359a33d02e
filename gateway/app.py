"""The REST gateway: the HTTP API (docs/api.md#rest-api) in front of the gRPC control plane.

A translator only: each route validates its body (pydantic models in
gateway.models), calls one control-plane RPC through the generated stubs with
the caller's `authorization` and `x-request-id` as metadata, and renders the
reply. Every non-2xx body is the spec's error envelope with a code from
rlm_rs.errors; no stack trace or internal message ever reaches a caller. It
must never import control-plane internals (rlm_rs.control, rlm_rs.storage, ...).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import grpc.aio
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from google.protobuf.message import Message
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from gateway import models as m
from gateway.backend import (
    ChannelPool,
    Stubs,
    check_health,
    error_from_rpc,
    never_sent,
    retry_after_seconds,
)
from gateway.convert import from_dict, to_dict
from gateway.viewer import view_page
from rlm_rs import limits as lim
from rlm_rs.errors import ERRORS, RlmError
from rlm_rs.observability import API_LATENCY, API_REQUESTS, end_log_scope, get_logger, start_log_scope
from rlm_rs.settings import Settings
from rlm_rs.v1 import citation_pb2, execution_pb2, session_pb2

log = logging.getLogger("rlm_rs.gateway")
access_log = get_logger()

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_DEFAULT_TIMEOUT = 30.0
_RECONNECT_WAIT = 1.0
# An event stream sends an SSE comment this often while nothing happens, so
# proxies keep the connection open and a gone client is noticed.
SSE_KEEPALIVE_SECONDS = 15.0
# Set by the control plane's WatchExecution once the watch is accepted.
WATCH_STARTED = "x-rlm-watch"
EVENT_ID_PATTERN = f"^({lim.EVENT_ID_PATTERN})?$"
# Control-plane health services asked by /health/ready ("" = the whole server).
# The three API services must serve; storage/sandbox/provider are reported
# when the control plane registers them (UNKNOWN otherwise, not a failure).
# "sandbox_hardened" NOT_SERVING (a control plane in development mode, steps
# in its own process) shows as sandbox NOT_HARDENED: still ready, never hidden.
HEALTH_COMPONENTS = [
    "",
    "rlm_rs.v1.SessionService",
    "rlm_rs.v1.ExecutionService",
    "rlm_rs.v1.CitationService",
    "storage",
    "sandbox",
    "sandbox_hardened",
    "provider",
]

_ERROR_STATUSES = (400, 401, 403, 404, 409, 410, 413, 422, 429, 500, 502, 503)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": m.ErrorEnvelope, "description": _desc}
    for status, _desc in (
        (s, ", ".join(sorted(c for c, spec in ERRORS.items() if spec.http_status == s)))
        for s in _ERROR_STATUSES
    )
}


# ---------------------------------------------------------------- errors
def error_response(err: RlmError, request_id: str) -> JSONResponse:
    headers = {REQUEST_ID_HEADER: request_id}
    retry = retry_after_seconds(err) if err.code == "RATE_LIMITED" else None
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return JSONResponse(err.envelope(request_id), status_code=err.http_status, headers=headers)


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex)


async def _rlm_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RlmError)
    return error_response(exc, _request_id(request))


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        err = RlmError("METHOD_NOT_ALLOWED", f"method {request.method} not allowed here")
    elif exc.status_code == 404:
        err = RlmError("NOT_FOUND", "no such route")
    elif exc.status_code == 413:
        err = RlmError("PAYLOAD_TOO_LARGE", "request body too large")
    elif exc.status_code in (401, 403):
        err = RlmError("UNAUTHORIZED", "missing or invalid API key")
    else:
        err = RlmError("VALIDATION_ERROR", "bad request")
    response = error_response(err, _request_id(request))
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method of every route matching the path (Starlette names only the first)."""
    methods: set[str] = set()
    for route in (*router.routes, *streams.routes, *viewer.routes, *health.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for item in exc.errors():
        errors.append(
            {
                "loc": [str(p) for p in item.get("loc", ())],
                "msg": str(item.get("msg", "")),
                "type": str(item.get("type", "")),
            }
        )
    malformed = any(e["type"] == "json_invalid" for e in errors)
    if malformed:
        message = "malformed JSON body"
    elif errors:  # name the first offending field, e.g. "body.tool_requests.llm.0.key"
        first = errors[0]
        message = f"request validation failed: {'.'.join(first['loc'])}: {first['msg']}"[:500]
    else:
        message = "request validation failed"
    err = RlmError("VALIDATION_ERROR", message, {"errors": errors[:50]})
    return error_response(err, _request_id(request))


class EdgeMiddleware:
    """Request ids, the body size limit and the last-resort 500, as raw ASGI.

    Raw ASGI (not BaseHTTPMiddleware) so it costs little per request and sees
    the body stream: an oversized body is refused by Content-Length up front or
    when the streamed bytes pass the limit.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start_log_scope(request_id=request_id)  # every line of this request carries it
        started = False
        overflow = False
        status = 500
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: AsgiMessage) -> None:
            nonlocal started, status
            if overflow:
                # The app answered a body it could not read whole: the answer is 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._too_large(request_id, send)
                return
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        if length is not None and length > self.max_body_bytes:
            await self._too_large(request_id, send)
            return
        received = 0

        async def limited_receive() -> AsgiMessage:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    overflow = True
                    raise _BodyTooLarge
            return message

        t0 = time.perf_counter()
        try:
            await self.app(scope, limited_receive, send_with_id)
        except Exception:  # the last resort: log, answer 500, no trace out
            if not overflow:
                log.exception("unhandled error", extra={"request_id": request_id})
            if not started:
                started = True
                if overflow:
                    await self._too_large(request_id, send)
                else:
                    err = RlmError("INTERNAL_ERROR", "internal error")
                    await error_response(err, request_id)(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            method = f"{scope['method']} {getattr(route, 'path', 'unmatched')}"
            API_REQUESTS.labels(method=method, code=str(status)).inc()
            API_LATENCY.labels(method=method).observe(time.perf_counter() - t0)
            latency_ms = round((time.perf_counter() - t0) * 1000, 3)
            access_log.info("http_request", method=method, status=status, latency_ms=latency_ms)
            end_log_scope()

    async def _too_large(self, request_id: str, send: Send) -> None:
        err = RlmError(
            "PAYLOAD_TOO_LARGE",
            "request body too large",
            {"max_request_bytes": self.max_body_bytes},
        )
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


class _BodyTooLarge(Exception):
    pass


# ---------------------------------------------------------------- calls
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer rlm_key_...")


class Call:
    """One request's view of the control plane: stubs plus metadata."""

    def __init__(self, stubs: Stubs, metadata: tuple[tuple[str, str], ...]):
        self.stubs = stubs
        self.metadata = metadata

    async def __call__(
        self,
        method: Callable[..., Awaitable[Any]],
        request: Message,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> Any:
        channel = self.stubs.channel
        state_before = channel.get_state(try_to_connect=False)
        try:
            return await method(request, metadata=self.metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if not never_sent(exc, state_before):
                raise error_from_rpc(exc) from None
        # The channel was (re)connecting: give it a moment, then one retry.
        try:
            await asyncio.wait_for(channel.channel_ready(), _RECONNECT_WAIT)
            return await method(request, metadata=self.metadata, timeout=timeout)
        except TimeoutError:
            raise RlmError("SERVICE_UNAVAILABLE", "the control plane is unavailable") from None
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def stream(self, method: Callable[..., Any], request: Message) -> tuple[Any, Any]:
        """Open a server-streaming call and wait until the control plane has
        accepted it (WATCH_STARTED in its initial metadata), so an error before
        the stream starts (auth, not found, validation) raises RlmError here,
        while an HTTP status can still be chosen. Returns the call and what was
        read from it already (None, a message, or grpc.aio.EOF). No deadline:
        the stream ends with its execution, or when the caller goes away."""
        for attempt in (0, 1):
            channel = self.stubs.channel
            state_before = channel.get_state(try_to_connect=False)
            call = method(request, metadata=self.metadata)
            try:
                metadata = await call.initial_metadata()
                if any(key == WATCH_STARTED for key, _ in metadata or ()):
                    return call, None
                # No mark: the call failed before it started (read raises its
                # status), or it ended at once and the mark was not delivered
                # with its end (seen ~1 in 300 for an empty stream).
                return call, await call.read()
            except grpc.aio.AioRpcError as exc:
                if attempt == 1 or not never_sent(exc, state_before):
                    raise error_from_rpc(exc) from None
            try:  # the channel was (re)connecting: give it a moment, then one retry
                await asyncio.wait_for(channel.channel_ready(), _RECONNECT_WAIT)
            except TimeoutError:
                raise RlmError("SERVICE_UNAVAILABLE", "the control plane is unavailable") from None
        raise AssertionError("unreachable")


def _call(request: Request, _auth: Annotated[Any, Depends(_bearer)] = None) -> Call:
    metadata: list[tuple[str, str]] = [(REQUEST_ID_HEADER, _request_id(request))]
    authorization = request.headers.get("authorization")
    if authorization is not None:
        if not authorization.isascii() or not authorization.isprintable():
            raise RlmError("UNAUTHORIZED", "missing or invalid API key")
        metadata.append(("authorization", authorization))
    pool: ChannelPool = request.app.state.pool
    return Call(pool.get(), tuple(metadata))


def _build(msg: Message, data: dict[str, Any]) -> Message:
    try:
        return from_dict(msg, data)
    except (ValueError, TypeError) as exc:
        raise RlmError("VALIDATION_ERROR", f"value cannot be sent: {type(exc).__name__}") from None


def _dump(body: Any) -> dict[str, Any]:
    return dict(body.model_dump(exclude_none=True)) if body is not None else {}


def wait_deadline(seconds: float) -> float:
    """The gRPC deadline of a call the control plane may hold `seconds`."""
    return max(_DEFAULT_TIMEOUT, seconds + 10.0)


def start_deadline(options: m.ExecutionOptions | None) -> float:
    """A start's deadline: a synchronous start is held its timeout (0 or unset:
    the control plane's default), an asynchronous one answers at once."""
    if options is None or not options.synchronous:
        return _DEFAULT_TIMEOUT
    return wait_deadline(options.synchronous_timeout_seconds or lim.DEFAULT_SYNCHRONOUS_TIMEOUT_SECONDS)


# ---------------------------------------------------------------- routes
router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
Caller = Depends(_call)


@router.post("/sessions", response_model=m.SessionCreated, status_code=201, tags=["sessions"])
async def create_session(body: m.CreateSessionBody, call: Call = Caller) -> Any:
    req = _build(session_pb2.CreateSessionRequest(), _dump(body))
    return to_dict(await call(call.stubs.sessions.CreateSession, req))


@router.get("/sessions/{session_id}", response_model=m.SessionView, tags=["sessions"])
async def get_session(session_id: str, call: Call = Caller) -> Any:
    req = _build(session_pb2.GetSessionRequest(), {"session_id": session_id})
    return to_dict(await call(call.stubs.sessions.GetSession, req))


@router.delete("/sessions/{session_id}", response_model=m.SessionDeleted, tags=["sessions"])
async def delete_session(session_id: str, call: Call = Caller) -> Any:
    req = _build(session_pb2.DeleteSessionRequest(), {"session_id": session_id})
    return to_dict(await call(call.stubs.sessions.DeleteSession, req))


@router.post(
    "/sessions/{session_id}/executions",
    response_model=m.ExecutionView,
    status_code=201,
    tags=["executions"],
)
async def start_execution(session_id: str, body: m.StartExecutionBody, call: Call = Caller) -> Any:
    req = _build(execution_pb2.StartExecutionRequest(), {"session_id": session_id, **_dump(body)})
    return to_dict(await call(call.stubs.executions.StartExecution, req, start_deadline(body.options)))


@router.post(
    "/executions/{execution_id}/followups",
    response_model=m.ExecutionView,
    status_code=201,
    tags=["executions"],
)
async def start_followup(execution_id: str, body: m.FollowupBody, call: Call = Caller) -> Any:
    """A follow-up question on a finished execution (409 CONFLICT while it runs):
    a new Answerer execution on the same session that starts from its `work`
    state and a digest of its turns; `followup_of` names the source."""
    req = _build(execution_pb2.StartFollowupRequest(), {"execution_id": execution_id, **_dump(body)})
    return to_dict(await call(call.stubs.executions.StartFollowup, req, start_deadline(body.options)))


@router.post(
    "/sessions/{session_id}/executions/runtime",
    response_model=m.ExecutionView,
    status_code=201,
    tags=["runtime"],
)
async def create_runtime_execution(
    session_id: str, body: m.CreateRuntimeBody | None = None, call: Call = Caller
) -> Any:
    req = _build(execution_pb2.CreateRuntimeExecutionRequest(), {"session_id": session_id, **_dump(body)})
    return to_dict(await call(call.stubs.executions.CreateRuntimeExecution, req))


@router.get("/executions/{execution_id}", response_model=m.ExecutionView, tags=["executions"])
async def get_execution(execution_id: str, call: Call = Caller) -> Any:
    req = _build(execution_pb2.GetExecutionRequest(), {"execution_id": execution_id})
    return to_dict(await call(call.stubs.executions.GetExecution, req))


@router.get("/executions/{execution_id}/steps", response_model=m.StepList, tags=["executions"])
async def list_steps(
    execution_id: str,
    call: Call = Caller,
    page_size: int = Query(
        default=0, ge=0, le=lim.MAX_STEPS_PAGE_SIZE, description="at most this many steps (0: all that fit)"
    ),
    page_token: str = Query(
        default="", max_length=lim.MAX_PAGE_TOKEN_CHARS, description="a previous page's next_page_token"
    ),
) -> Any:
    req = _build(
        execution_pb2.ListStepsRequest(),
        {"execution_id": execution_id, "page_size": page_size, "page_token": page_token},
    )
    return to_dict(await call(call.stubs.executions.ListSteps, req))


@router.post("/executions/{execution_id}/wait", response_model=m.ExecutionView, tags=["executions"])
async def wait_execution(execution_id: str, body: m.WaitBody | None = None, call: Call = Caller) -> Any:
    body = body or m.WaitBody()
    req = _build(
        execution_pb2.WaitExecutionRequest(),
        {"execution_id": execution_id, "timeout_seconds": body.timeout_seconds},
    )
    deadline = wait_deadline(body.timeout_seconds or lim.DEFAULT_WAIT_TIMEOUT_SECONDS)
    return to_dict(await call(call.stubs.executions.WaitExecution, req, deadline))


@router.post("/executions/{execution_id}/cancel", response_model=m.CancelResult, tags=["executions"])
async def cancel_execution(execution_id: str, call: Call = Caller) -> Any:
    req = _build(execution_pb2.CancelExecutionRequest(), {"execution_id": execution_id})
    return to_dict(await call(call.stubs.executions.CancelExecution, req))


@router.post("/executions/{execution_id}/steps", response_model=m.StepOutput, tags=["runtime"])
async def run_step(execution_id: str, body: m.RunStepBody, call: Call = Caller) -> Any:
    req = _build(execution_pb2.RunStepRequest(), {"execution_id": execution_id, **_dump(body)})
    return to_dict(await call(call.stubs.executions.RunStep, req, 120.0))


@router.post(
    "/executions/{execution_id}/tools/resolve",
    response_model=m.ResolveToolsResult,
    tags=["runtime"],
)
async def resolve_tools(execution_id: str, body: m.ResolveToolsBody, call: Call = Caller) -> Any:
    req = _build(execution_pb2.ResolveToolsRequest(), {"execution_id": execution_id, **_dump(body)})
    return to_dict(await call(call.stubs.executions.ResolveTools, req, 300.0))


@router.post("/spans/get", response_model=m.SpanText, tags=["citations"])
async def get_span(body: m.SpanGetBody, call: Call = Caller) -> Any:
    req = _build(citation_pb2.GetSpanRequest(), _dump(body))
    return to_dict(await call(call.stubs.citations.GetSpan, req))


@router.post("/citations/verify", response_model=m.VerifyResult, tags=["citations"])
async def verify_citation(body: m.VerifyBody, call: Call = Caller) -> Any:
    req = _build(citation_pb2.VerifyCitationRequest(), _dump(body))
    return to_dict(await call(call.stubs.citations.VerifyCitation, req))


# The viewer page (HTML) and the event stream (text/event-stream) are declared
# on their own routers: their errors are still the JSON envelope, which the /v1
# router's shared responses would label with the route's own media type.
_ENVELOPE_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
streams = APIRouter(prefix="/v1", tags=["executions"])
viewer = APIRouter(prefix="/v1", tags=["executions"])


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def _sse(event: dict[str, Any]) -> bytes:
    return f"id: {event['event_id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _event_stream(call: Any, first: Any, request_id: str) -> AsyncIterator[bytes]:
    """The watch as SSE frames (`first`: a message already read, or None), with
    a keep-alive comment while nothing happens. A failure mid-stream (e.g. the
    control plane restarted) is one `stream_error` event with the error
    envelope; the caller resumes with Last-Event-ID."""
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if first is not None:
                message, first = first, None
            else:
                if pending is None:
                    pending = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait({pending}, timeout=SSE_KEEPALIVE_SECONDS)
                if not done:
                    yield b": keep-alive\n\n"
                    continue
                message, pending = pending.result(), None
            if message is grpc.aio.EOF:
                return
            yield _sse(to_dict(message))
    except grpc.aio.AioRpcError as exc:
        err = error_from_rpc(exc)
        yield f"event: stream_error\ndata: {json.dumps(err.envelope(request_id))}\n\n".encode()
    finally:
        if pending is not None:
            pending.cancel()
        call.cancel()


@streams.get(
    "/executions/{execution_id}/events",
    response_class=EventStreamResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-Sent Events. `id:` the event id (`<turn:06d>.<seq:04d>`), "
            "`event:` its type (turn_started, root_reply, step_result, tool_requests, tool_results, "
            "child_started, child_finished, compaction, status), `data:` JSON {event_id, execution_id, "
            "type, turn_index, at, data}. The stream ends after the `status` event.",
        },
        **{
            status: {"content": _ENVELOPE_JSON, "description": spec["description"]}
            for status, spec in ERROR_RESPONSES.items()
        },
    },
)
async def watch_events(
    request: Request,
    execution_id: str,
    call: Call = Caller,
    after: str | None = Query(
        default=None, pattern=EVENT_ID_PATTERN, description="resume after this event id"
    ),
    last_event_id: str | None = Header(
        default=None,
        alias="Last-Event-ID",
        pattern=EVENT_ID_PATTERN,
        description="resume after this event id (sent by EventSource on reconnect; wins over `after`)",
    ),
) -> Any:
    """The execution's live events as Server-Sent Events, from the start or
    after a given event id, ending after the `status` event."""
    req = _build(
        execution_pb2.WatchExecutionRequest(),
        {"execution_id": execution_id, "after_event_id": last_event_id or after or ""},
    )
    stream, first = await call.stream(call.stubs.executions.WatchExecution, req)
    return EventStreamResponse(
        _event_stream(stream, first, _request_id(request)),
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@viewer.get(
    "/executions/{execution_id}/view",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "the trace viewer page"},
        404: {"content": _ENVELOPE_JSON, "description": "NOT_FOUND"},
        405: {"content": _ENVELOPE_JSON, "description": "METHOD_NOT_ALLOWED"},
        422: {"content": _ENVELOPE_JSON, "description": "VALIDATION_ERROR"},
        500: {"content": _ENVELOPE_JSON, "description": "INTERNAL_ERROR"},
    },
)
async def view_execution(
    execution_id: str = Path(max_length=lim.MAX_ID_CHARS, pattern=r"^[A-Za-z0-9_\-]+$"),
) -> Any:
    """The trace viewer (HTML). The page carries no data: it reads the API key
    from the URL fragment (`#key=...`, never sent to a server) or asks for it,
    and calls this API from the browser."""
    return view_page(execution_id)


health = APIRouter(prefix="/health", tags=["health"])


@health.get("/live", response_model=m.Live)
async def live() -> Any:
    return {"status": "ok"}


@health.get(
    "/ready",
    response_model=m.Ready,
    responses={503: {"model": m.ErrorEnvelope, "description": "SERVICE_UNAVAILABLE"}},
)
async def ready(request: Request) -> Any:
    pool: ChannelPool = request.app.state.pool
    channels = pool.all()
    components = await check_health(channels[0], HEALTH_COMPONENTS, timeout=2.0)
    overall = components.pop("", "UNREACHABLE")
    for stubs in channels[1:]:  # ready means every pooled channel is connected
        other = await check_health(stubs, [""], timeout=2.0)
        if other[""] != "SERVING":
            overall = other[""]
    hardened = components.pop("sandbox_hardened", "UNKNOWN")
    if hardened == "NOT_SERVING" and components.get("sandbox") == "SERVING":
        components["sandbox"] = "NOT_HARDENED"
    components = {"control_plane": overall, **components}
    bad = {k: v for k, v in components.items() if v not in ("SERVING", "UNKNOWN", "NOT_HARDENED")}
    if bad:
        raise RlmError("SERVICE_UNAVAILABLE", "not ready", {"components": components})
    return {"status": "ok", "components": components}


# ---------------------------------------------------------------- app
def create_app(settings: Settings, grpc_target: str | None = None) -> FastAPI:
    """The gateway app; `grpc_target` defaults to settings.grpc_address."""
    pool = ChannelPool(grpc_target or settings.grpc_address)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="RLM-RS API",
        version="1.3",
        description="HTTP API of the Recursive Language Model Runtime Service (docs/api.md).",
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.include_router(router)
    app.include_router(streams)
    app.include_router(viewer)
    app.include_router(health)
    app.add_exception_handler(RlmError, _rlm_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_request_bytes)
    return app
