"""GET /v1/executions/{id}/events: an execution's live events as Server-Sent Events.

Declared on its own router: its errors are still the JSON envelope, which the
/v1 routers' shared responses would label text/event-stream. The stream opens
only once the control plane has accepted the watch (gateway.calls.Call.stream),
so auth and not-found errors keep their HTTP status; a failure mid-stream is
one `stream_error` event, and the caller resumes with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from gateway.calls import Call, build, caller
from gateway.convert import to_dict
from gateway.errors import ENVELOPE_JSON, ERROR_RESPONSES, error_from_rpc, request_id
from rlm_rs import limits as lim
from rlm_rs.v1 import execution_pb2

router = APIRouter(prefix="/v1", tags=["executions"])

# An event stream sends an SSE comment this often while nothing happens, so
# proxies keep the connection open and a gone client is noticed.
SSE_KEEPALIVE_SECONDS = 15.0
EVENT_ID_PATTERN = f"^({lim.EVENT_ID_PATTERN})?$"


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def _sse(event: dict[str, Any]) -> bytes:
    return f"id: {event['event_id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _event_stream(call: Any, first: Any, request_id: str) -> AsyncIterator[bytes]:
    """The watch as SSE frames (`first`: a message already read, or None), with
    a keep-alive comment while nothing happens."""
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


@router.get(
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
            status: {"content": ENVELOPE_JSON, "description": spec["description"]}
            for status, spec in ERROR_RESPONSES.items()
        },
    },
)
async def watch_events(
    request: Request,
    execution_id: str,
    call: Call = caller,
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
    req = build(
        execution_pb2.WatchExecutionRequest(),
        {"execution_id": execution_id, "after_event_id": last_event_id or after or ""},
    )
    stream, first = await call.stream(call.stubs.executions.WatchExecution, req)
    return EventStreamResponse(
        _event_stream(stream, first, request_id(request)),
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
