"""The MCP server (docs/api.md#mcp): the spec's eleven tools plus rlm_start_followup, rlm_upload
and the listings (rlm_list_sessions, rlm_list_executions), over the HTTP API.

A thin client of the REST gateway (RLM_BASE_URL) built on the official `mcp`
SDK (2.x `MCPServer`), served over stdio or streamable HTTP. Tool inputs are
typed with the gateway's own request models so the MCP input schemas and the
OpenAPI agree. An API error becomes a tool error whose text is the spec's
envelope. It must never talk to the control plane directly, and the HTTP
transport must never act with a key its caller did not present.

Keys. stdio is local and single-user: every tool call carries RLM_API_KEY.
Streamable HTTP is a network service for many tenants, so it takes no key of
its own: every request must carry `Authorization: Bearer <the caller's RLM
API key>`. The SDK's bearer middleware asks GatewayKeyVerifier, which asks the
gateway (a GET of a session id that cannot exist: 404 = the key is good, 401
= it is not); a request without a key, or with one the gateway refuses, is
answered 401 before any MCP message is read, so no tool runs. Each tool call
then passes the caller's own key to the gateway, which scopes it to that
key's tenant. A good key is remembered for KEY_CACHE_SECONDS (by its SHA-256,
never in clear); a revoked key still fails every tool call at once, since the
gateway checks each call. An MCP session is bound to the key that opened it
(another key gets 404 for that session id). The HTTP server runs under the
gateway's slow-client deadlines (gateway/http_protocol.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from typing import Any

import httpx
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from gateway import models as m

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# A session id no session can have (ids are sess_ + hex): GET answers 404 for
# a good key and 401 for a bad one, and reads nothing.
KEY_CHECK_PATH = "/v1/sessions/sess_mcp-key-check"
# Statuses that mean the gateway authenticated the key (429: authenticated, then rate limited).
_KEY_ACCEPTED = (200, 404, 429)
KEY_CACHE_SECONDS = 60.0
KEY_CACHE_ENTRIES = 1024
MAX_KEY_CHARS = 512

log = logging.getLogger("rlm_rs.mcp")


class GatewayKeyVerifier:
    """The SDK's TokenVerifier: a bearer token is valid when the gateway accepts it as an API key."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        self._valid_until: OrderedDict[str, float] = OrderedDict()  # sha256(key) -> monotonic

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token or len(token) > MAX_KEY_CHARS or not (token.isascii() and token.isprintable()):
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        # client_id names the principal the SDK binds an MCP session to; never the key itself
        access = AccessToken(token=token, client_id=f"rlm-key-{digest[:24]}", scopes=[])
        if self._valid_until.get(digest, 0.0) > time.monotonic():
            self._valid_until.move_to_end(digest)
            return access
        try:
            answer = await self._client.get(KEY_CHECK_PATH, headers={"authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:  # fail closed: no gateway, no key check
            log.warning("mcp_key_check_unreachable", extra={"error": type(exc).__name__})
            return None
        if answer.status_code not in _KEY_ACCEPTED:
            if answer.status_code not in (401, 403):
                log.warning("mcp_key_check_failed", extra={"status": answer.status_code})
            return None
        self._valid_until[digest] = time.monotonic() + KEY_CACHE_SECONDS
        while len(self._valid_until) > KEY_CACHE_ENTRIES:
            self._valid_until.popitem(last=False)
        return access


class RlmApi:
    """The HTTP API, as the MCP tools need it: with RLM_API_KEY (stdio), or with
    the key of the caller of this request (HTTP, `caller_keys=True`)."""

    def __init__(
        self, base_url: str, api_key: str | None, timeout: float = 120.0, *, caller_keys: bool = False
    ):
        self._api_key = None if caller_keys else api_key
        self._caller_keys = caller_keys
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    def _authorization(self) -> dict[str, str]:
        if self._caller_keys:
            caller = get_access_token()
            if caller is None:  # the transport refuses such requests before any tool runs
                raise ToolError(json.dumps({"error": {"code": "UNAUTHORIZED", "message": "no API key"}}))
            return {"authorization": f"Bearer {caller.token}"}
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str = "",
    ) -> dict[str, Any]:
        """One REST call: a JSON `body`, or raw `content` (an upload); `params`
        is the query string (None values left out)."""
        if isinstance(body, BaseModel):
            body = body.model_dump(exclude_none=True)
        headers = self._authorization()
        extra: dict[str, Any] = {"json": body}
        if content is not None:
            headers["content-type"] = content_type or "application/octet-stream"
            extra = {"content": content}
        if params:
            extra["params"] = {k: v for k, v in params.items() if v is not None}
        try:
            resp = await self._client.request(method, path, headers=headers, **extra)
        except httpx.HTTPError as exc:
            raise ToolError(f"RLM API unreachable: {type(exc).__name__}") from None
        try:
            data = resp.json()
        except ValueError:
            data = {"error": {"code": "INTERNAL_ERROR", "message": resp.text[:200]}}
        if resp.status_code >= 400:
            raise ToolError(json.dumps(data, sort_keys=True))
        return dict(data)


def build_server(
    base_url: str | None = None, api_key: str | None = None, *, caller_keys: bool = False
) -> MCPServer:
    """The server; `caller_keys` (the HTTP transport) requires each request's own
    API key and ignores `api_key`/RLM_API_KEY."""
    base_url = base_url or os.environ.get("RLM_BASE_URL", DEFAULT_BASE_URL)
    api = RlmApi(
        base_url,
        api_key if api_key is not None else os.environ.get("RLM_API_KEY"),
        caller_keys=caller_keys,
    )
    auth: dict[str, Any] = {}
    if caller_keys:
        auth = {
            "token_verifier": GatewayKeyVerifier(base_url),
            # the gateway issues the keys; no OAuth routes or resource metadata are served
            "auth": AuthSettings(issuer_url=base_url, resource_server_url=None),
        }
    server = MCPServer(
        name="rlm-rs",
        instructions=(
            "RLM-RS: run Recursive Language Model executions over document sessions. "
            "Create a session, wait until it is READY, then start an execution (Answerer) "
            "or drive steps yourself (Runtime); verify citations with rlm_verify_citation."
        ),
        **auth,
    )
    _session_tools(server, api)
    _listing_tools(server, api)
    _execution_tools(server, api)
    _runtime_tools(server, api)
    _span_tools(server, api)
    return server


def _session_tools(server: MCPServer, api: RlmApi) -> None:
    """The tools that make a session: upload a document, create the session."""

    @server.tool()
    async def rlm_create_session(
        docs: list[m.DocumentInput],
        ttl_minutes: int | None = None,
        options: m.SessionOptions | None = None,
        models_default: m.Models | None = None,
        budgets_default: m.Budgets | None = None,
    ) -> dict[str, Any]:
        """Create a session (a corpus + config with a TTL) from raw documents in blob storage."""
        body = m.CreateSessionBody(
            docs=docs,
            ttl_minutes=ttl_minutes,
            options=options,
            models_default=models_default,
            budgets_default=budgets_default,
        )
        return await api.request("POST", "/v1/sessions", body)

    @server.tool()
    async def rlm_upload(
        file_name: str,
        content: str | None = None,
        content_base64: str | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Upload one document (text as `content`, or any file as `content_base64`);
        returns its raw_s3_uri for rlm_create_session. The type defaults to the one
        file_name's extension implies (.pdf, .docx, .html, .md, .txt). For large
        files use POST /v1/uploads or the Python client, which stream."""
        return await api.request(
            "POST",
            "/v1/uploads",
            params={"file_name": file_name},
            content=_upload_bytes(content, content_base64),
            content_type=content_type or "",
        )


def _listing_tools(server: MCPServer, api: RlmApi) -> None:
    """The tools that list sessions and executions, and get or delete a session."""

    @server.tool()
    async def rlm_list_sessions(
        status: str | None = None, page_size: int | None = None, page_token: str | None = None
    ) -> dict[str, Any]:
        """Your sessions, newest first: {sessions, next_page_token} (pass the token back for more)."""
        query = {"status": status, "page_size": page_size, "page_token": page_token}
        return await api.request("GET", "/v1/sessions", params=query)

    @server.tool()
    async def rlm_list_executions(
        session_id: str | None = None,
        status: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """Your executions, newest first, optionally of one session and in one status:
        {executions, next_page_token}."""
        query = {"session_id": session_id, "status": status, "page_size": page_size, "page_token": page_token}
        return await api.request("GET", "/v1/executions", params=query)

    @server.tool()
    async def rlm_get_session(session_id: str) -> dict[str, Any]:
        """A session's status, readiness and documents."""
        return await api.request("GET", f"/v1/sessions/{_seg(session_id)}")

    @server.tool()
    async def rlm_delete_session(session_id: str) -> dict[str, Any]:
        """Delete a session (asynchronous; status DELETING)."""
        return await api.request("DELETE", f"/v1/sessions/{_seg(session_id)}")


def _execution_tools(server: MCPServer, api: RlmApi) -> None:
    """The Answerer tools: start, get, wait for and follow up an execution."""

    @server.tool()
    async def rlm_start_execution(
        session_id: str,
        question: str,
        models: m.Models | None = None,
        budgets: m.Budgets | None = None,
        options: m.ExecutionOptions | None = None,
    ) -> dict[str, Any]:
        """Start an Answerer execution: the service runs the loop and answers with citations."""
        body = m.StartExecutionBody(question=question, models=models, budgets=budgets, options=options)
        return await api.request("POST", f"/v1/sessions/{_seg(session_id)}/executions", body)

    @server.tool()
    async def rlm_get_execution(execution_id: str) -> dict[str, Any]:
        """An execution's status, answer, citations and budgets consumed."""
        return await api.request("GET", f"/v1/executions/{_seg(execution_id)}")

    @server.tool()
    async def rlm_wait_execution(execution_id: str, timeout_seconds: float = 30.0) -> dict[str, Any]:
        """Wait up to timeout_seconds for an execution to finish; returns it either way."""
        body = m.WaitBody(timeout_seconds=timeout_seconds)
        return await api.request("POST", f"/v1/executions/{_seg(execution_id)}/wait", body)

    @server.tool()
    async def rlm_start_followup(
        execution_id: str,
        question: str,
        models: m.Models | None = None,
        budgets: m.Budgets | None = None,
        options: m.ExecutionOptions | None = None,
    ) -> dict[str, Any]:
        """Ask a follow-up of a finished execution: a new Answerer execution on the same
        session that starts from its work state and a digest of its turns."""
        body = m.FollowupBody(question=question, models=models, budgets=budgets, options=options)
        return await api.request("POST", f"/v1/executions/{_seg(execution_id)}/followups", body)


def _runtime_tools(server: MCPServer, api: RlmApi) -> None:
    """The Runtime tools: create an execution, run a step, resolve its tool requests."""

    @server.tool()
    async def rlm_runtime_create_execution(
        session_id: str,
        models: m.Models | None = None,
        budgets: m.Budgets | None = None,
        options: m.ExecutionOptions | None = None,
    ) -> dict[str, Any]:
        """Create a Runtime execution: you drive the steps, the service runs them."""
        body = m.CreateRuntimeBody(models=models, budgets=budgets, options=options)
        return await api.request("POST", f"/v1/sessions/{_seg(session_id)}/executions/runtime", body)

    @server.tool()
    async def rlm_runtime_step(
        execution_id: str,
        code: str,
        state: dict[str, Any] | None = None,
        resolve_tools: bool | None = None,
    ) -> dict[str, Any]:
        """Run one step of Python (bare or a ```repl block) against the session's documents."""
        body = m.RunStepBody(code=code, state=state, options=m.RunStepOptions(resolve_tools=resolve_tools))
        return await api.request("POST", f"/v1/executions/{_seg(execution_id)}/steps", body)

    @server.tool()
    async def rlm_resolve_tools(
        execution_id: str, tool_requests: m.ToolRequests, models: m.Models | None = None
    ) -> dict[str, Any]:
        """Resolve queued tool requests (llm sub-calls, searches) of a Runtime execution."""
        body = m.ResolveToolsBody(tool_requests=tool_requests, models=models)
        return await api.request("POST", f"/v1/executions/{_seg(execution_id)}/tools/resolve", body)


def _span_tools(server: MCPServer, api: RlmApi) -> None:
    """The citation tools: read a span, verify a SpanRef."""

    @server.tool()
    async def rlm_get_span(session_id: str, doc_id: str, start_char: int, end_char: int) -> dict[str, Any]:
        """The text of [start_char, end_char) of a document, with its verifiable SpanRef."""
        body = m.SpanGetBody(session_id=session_id, doc_id=doc_id, start_char=start_char, end_char=end_char)
        return await api.request("POST", "/v1/spans/get", body)

    @server.tool()
    async def rlm_verify_citation(ref: m.SpanRef) -> dict[str, Any]:
        """Verify a SpanRef by recomputing its checksum; returns the cited text when valid."""
        return await api.request("POST", "/v1/citations/verify", m.VerifyBody(ref=ref))


TOOL_NAMES = (
    "rlm_upload",
    "rlm_list_sessions",
    "rlm_list_executions",
    "rlm_create_session",
    "rlm_get_session",
    "rlm_delete_session",
    "rlm_start_execution",
    "rlm_get_execution",
    "rlm_wait_execution",
    "rlm_start_followup",
    "rlm_runtime_create_execution",
    "rlm_runtime_step",
    "rlm_resolve_tools",
    "rlm_get_span",
    "rlm_verify_citation",
)


def _upload_bytes(content: str | None, content_base64: str | None) -> bytes:
    """rlm_upload's document: `content` as UTF-8 or `content_base64` decoded; exactly one is given."""
    if (content is None) == (content_base64 is None):
        raise ToolError(_envelope("VALIDATION_ERROR", "give exactly one of content and content_base64"))
    if content is not None:
        return content.encode("utf-8")
    try:
        return base64.b64decode(content_base64 or "", validate=True)
    except (binascii.Error, ValueError):
        raise ToolError(_envelope("VALIDATION_ERROR", "content_base64 is not base64")) from None


def _envelope(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}}, sort_keys=True)


def _seg(value: str) -> str:
    """One URL path segment (no path injection through an id)."""
    from urllib.parse import quote

    return quote(value, safe="")


def serve(transport: str, host: str = "127.0.0.1", port: int = 8090) -> None:
    if transport == "stdio":
        build_server().run("stdio")
        return
    import uvicorn

    from gateway.http_protocol import TimedH11Protocol
    from rlm_rs.settings import get_settings

    settings = get_settings()
    app = build_server(caller_keys=True).streamable_http_app(host=host)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,
        http=TimedH11Protocol.configured(
            settings.http_header_timeout_seconds, settings.http_body_timeout_seconds
        ),
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        limit_concurrency=settings.http_max_connections,
        timeout_keep_alive=5,
    )
