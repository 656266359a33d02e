"""The MCP server (docs/api.md#mcp): the spec's eleven tools plus rlm_start_followup, over the HTTP API.

A thin client of the REST gateway (RLM_BASE_URL, RLM_API_KEY) built on the
official `mcp` SDK (2.x `MCPServer`), served over stdio or streamable HTTP.
Tool inputs are typed with the gateway's own request models so the MCP input
schemas and the OpenAPI agree. An API error becomes a tool error whose text is
the spec's envelope. It must never talk to the control plane directly.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from gateway import models as m

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


class RlmApi:
    """The HTTP API, as the MCP tools need it."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 120.0):
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    async def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if isinstance(body, m.BaseModel):
            body = body.model_dump(exclude_none=True)
        try:
            resp = await self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ToolError(f"RLM API unreachable: {type(exc).__name__}") from None
        try:
            data = resp.json()
        except ValueError:
            data = {"error": {"code": "INTERNAL_ERROR", "message": resp.text[:200]}}
        if resp.status_code >= 400:
            raise ToolError(json.dumps(data, sort_keys=True))
        return dict(data)


def build_server(base_url: str | None = None, api_key: str | None = None) -> MCPServer:
    api = RlmApi(
        base_url or os.environ.get("RLM_BASE_URL", DEFAULT_BASE_URL),
        api_key if api_key is not None else os.environ.get("RLM_API_KEY"),
    )
    server = MCPServer(
        name="rlm-rs",
        instructions=(
            "RLM-RS: run Recursive Language Model executions over document sessions. "
            "Create a session, wait until it is READY, then start an execution (Answerer) "
            "or drive steps yourself (Runtime); verify citations with rlm_verify_citation."
        ),
    )

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
    async def rlm_get_session(session_id: str) -> dict[str, Any]:
        """A session's status, readiness and documents."""
        return await api.request("GET", f"/v1/sessions/{_seg(session_id)}")

    @server.tool()
    async def rlm_delete_session(session_id: str) -> dict[str, Any]:
        """Delete a session (asynchronous; status DELETING)."""
        return await api.request("DELETE", f"/v1/sessions/{_seg(session_id)}")

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

    @server.tool()
    async def rlm_get_span(session_id: str, doc_id: str, start_char: int, end_char: int) -> dict[str, Any]:
        """The text of [start_char, end_char) of a document, with its verifiable SpanRef."""
        body = m.SpanGetBody(session_id=session_id, doc_id=doc_id, start_char=start_char, end_char=end_char)
        return await api.request("POST", "/v1/spans/get", body)

    @server.tool()
    async def rlm_verify_citation(ref: m.SpanRef) -> dict[str, Any]:
        """Verify a SpanRef by recomputing its checksum; returns the cited text when valid."""
        return await api.request("POST", "/v1/citations/verify", m.VerifyBody(ref=ref))

    return server


TOOL_NAMES = (
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


def _seg(value: str) -> str:
    """One URL path segment (no path injection through an id)."""
    from urllib.parse import quote

    return quote(value, safe="")


def serve(transport: str, host: str = "127.0.0.1", port: int = 8090) -> None:
    server = build_server()
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)
