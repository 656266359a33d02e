"""The API's calls as data: each RPC with its REST route, request message,
deadline and whether repeating it is safe.

Both transports read this one table, so a call means the same thing over
REST and gRPC. `idempotent` decides retries after an ambiguous failure (the
request may have run): only calls whose repetition changes nothing are
repeated then (docs/client.md, "Retries"). It must never hold behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from rlm_rs.v1 import citation_pb2, execution_pb2, session_pb2

# The gateway's deadlines (docs/api.md#rest-api), mirrored for gRPC calls.
DEFAULT_TIMEOUT = 30.0
STEP_TIMEOUT = 120.0
RESOLVE_TIMEOUT = 300.0
# Seconds added to a call the server may hold for `timeout_seconds`.
HOLD_MARGIN = 10.0
DEFAULT_WAIT_SECONDS = 30.0
DEFAULT_SYNCHRONOUS_SECONDS = 60.0


def _fixed(seconds: float) -> Callable[[Mapping[str, Any]], float]:
    return lambda params: seconds


def _wait_deadline(params: Mapping[str, Any]) -> float:
    held = float(params.get("timeout_seconds") or DEFAULT_WAIT_SECONDS)
    return max(DEFAULT_TIMEOUT, held + HOLD_MARGIN)


def _start_deadline(params: Mapping[str, Any]) -> float:
    options = params.get("options") or {}
    if not options.get("synchronous"):
        return DEFAULT_TIMEOUT
    held = float(options.get("synchronous_timeout_seconds") or DEFAULT_SYNCHRONOUS_SECONDS)
    return max(DEFAULT_TIMEOUT, held + HOLD_MARGIN)


@dataclass(frozen=True)
class Op:
    """One call of the API."""

    name: str  # the gRPC method
    service: str  # "sessions" | "executions" | "citations"
    http_method: str
    http_path: str  # `{name}` placeholders come from the request's fields
    request: type[Message]
    idempotent: bool
    deadline: Callable[[Mapping[str, Any]], float]
    query: tuple[str, ...] = ()  # request fields sent as the query string (GET)

    def path_fields(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.http_path)

    def split(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """(path, query, JSON body or None) of a REST request for `params`."""
        path = self.http_path
        rest = {k: v for k, v in params.items() if v is not None}
        for name in self.path_fields():
            path = path.replace("{" + name + "}", _path_segment(rest.pop(name, "")))
        query = {k: rest.pop(k) for k in self.query if k in rest}
        if self.http_method == "GET":
            return path, query, None
        return path, query, rest


def _path_segment(value: Any) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


_S, _E, _C = "sessions", "executions", "citations"
OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op("CreateSession", _S, "POST", "/v1/sessions", session_pb2.CreateSessionRequest, False,
           _fixed(DEFAULT_TIMEOUT)),
        Op("GetSession", _S, "GET", "/v1/sessions/{session_id}", session_pb2.GetSessionRequest, True,
           _fixed(DEFAULT_TIMEOUT)),
        # Deleting twice answers SESSION_NOT_FOUND the second time: not repeated
        # after an ambiguous failure, so a success is never reported as "not found".
        Op("DeleteSession", _S, "DELETE", "/v1/sessions/{session_id}", session_pb2.DeleteSessionRequest,
           False, _fixed(DEFAULT_TIMEOUT)),
        Op("StartExecution", _E, "POST", "/v1/sessions/{session_id}/executions",
           execution_pb2.StartExecutionRequest, False, _start_deadline),
        Op("StartFollowup", _E, "POST", "/v1/executions/{execution_id}/followups",
           execution_pb2.StartFollowupRequest, False, _start_deadline),
        Op("CreateRuntimeExecution", _E, "POST", "/v1/sessions/{session_id}/executions/runtime",
           execution_pb2.CreateRuntimeExecutionRequest, False, _fixed(DEFAULT_TIMEOUT)),
        Op("GetExecution", _E, "GET", "/v1/executions/{execution_id}", execution_pb2.GetExecutionRequest,
           True, _fixed(DEFAULT_TIMEOUT)),
        Op("WaitExecution", _E, "POST", "/v1/executions/{execution_id}/wait",
           execution_pb2.WaitExecutionRequest, True, _wait_deadline),
        # Cancelling is idempotent by contract: a finished execution answers as it is.
        Op("CancelExecution", _E, "POST", "/v1/executions/{execution_id}/cancel",
           execution_pb2.CancelExecutionRequest, True, _fixed(DEFAULT_TIMEOUT)),
        Op("ListSteps", _E, "GET", "/v1/executions/{execution_id}/steps", execution_pb2.ListStepsRequest,
           True, _fixed(DEFAULT_TIMEOUT), query=("page_size", "page_token")),
        Op("RunStep", _E, "POST", "/v1/executions/{execution_id}/steps", execution_pb2.RunStepRequest,
           False, _fixed(STEP_TIMEOUT)),
        Op("ResolveTools", _E, "POST", "/v1/executions/{execution_id}/tools/resolve",
           execution_pb2.ResolveToolsRequest, False, _fixed(RESOLVE_TIMEOUT)),
        Op("GetSpan", _C, "POST", "/v1/spans/get", citation_pb2.GetSpanRequest, True,
           _fixed(DEFAULT_TIMEOUT)),
        Op("VerifyCitation", _C, "POST", "/v1/citations/verify", citation_pb2.VerifyCitationRequest, True,
           _fixed(DEFAULT_TIMEOUT)),
        Op("ListSessions", _S, "GET", "/v1/sessions", session_pb2.ListSessionsRequest, True,
           _fixed(DEFAULT_TIMEOUT), query=("status", "page_size", "page_token")),
        Op("ListExecutions", _E, "GET", "/v1/executions", execution_pb2.ListExecutionsRequest, True,
           _fixed(DEFAULT_TIMEOUT), query=("session_id", "status", "page_size", "page_token")),
    )
}  # fmt: skip

# The event stream (WatchExecution / GET .../events) is resumable by event id,
# and an upload (SessionService/Upload / POST /v1/uploads) is a client stream;
# each transport implements them apart from the table. An upload creates a new
# object each time: it is not idempotent (a repeat stores a second copy).
UPLOAD_PATH = "/v1/uploads"
WATCH_PATH = "/v1/executions/{execution_id}/events"
