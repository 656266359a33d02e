"""The MCP server with the SDK's own client, against the running gateway: all
fifteen tools (the spec's eleven, rlm_start_followup, rlm_upload and the two
listings) over stdio, and the
streamable-HTTP transport, which requires each caller's own API key (401
before any tool runs without one) and acts with it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from gateway.mcp_server import TOOL_NAMES
from tests.integration.gateway.conftest import DOC_TEXT, Stack, free_port, wait_until


def result_json(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    if isinstance(result.structured_content, dict) and result.structured_content:
        data = result.structured_content
        return dict(data.get("result", data)) if set(data) == {"result"} else dict(data)
    return dict(json.loads(result.content[0].text))


async def exercise_all_tools(session: ClientSession, stack: Stack) -> set[str]:
    called: set[str] = set()

    async def call(name: str, **args: Any) -> dict[str, Any]:
        called.add(name)
        return result_json(await session.call_tool(name, args))

    tools = await session.list_tools()
    assert {t.name for t in tools.tools} == set(TOOL_NAMES)
    schema = next(t for t in tools.tools if t.name == "rlm_get_span").input_schema
    assert schema["properties"]["start_char"]["type"] == "integer"

    uploaded = await call("rlm_upload", file_name="mcp notes.md", content="# From MCP\nRevenue grew.\n")
    assert uploaded["content_type"] == "text/markdown" and "/raw/t1/" in uploaded["raw_s3_uri"]
    binary = await call("rlm_upload", file_name="b.txt", content_base64="aGVsbG8K", content_type="text/plain")
    assert binary["size_bytes"] == 6
    refused = await session.call_tool("rlm_upload", {"file_name": "a.txt"})
    assert refused.is_error and '"VALIDATION_ERROR"' in getattr(refused.content[0], "text", "")
    doc = {"source_name": "again.md", "mime_type": "text/markdown", "raw_s3_uri": uploaded["raw_s3_uri"]}
    created = await call("rlm_create_session", docs=[doc], ttl_minutes=30)
    assert created["status"] == "CREATING"
    listed = await call("rlm_list_sessions", page_size=1)
    assert [s["session_id"] for s in listed["sessions"]] == [created["session_id"]]
    assert listed["next_page_token"]
    got = await call("rlm_get_session", session_id=stack.session_id)
    assert got["status"] == "READY"
    deleted = await call("rlm_delete_session", session_id=created["session_id"])
    assert deleted["status"] == "DELETING"

    started = await call("rlm_start_execution", session_id=stack.session_id, question="revenue in 2024?")
    waited = await call("rlm_wait_execution", execution_id=started["execution_id"], timeout_seconds=20)
    assert waited["status"] == "COMPLETED", waited
    fetched = await call("rlm_get_execution", execution_id=started["execution_id"])
    assert fetched["answer"].startswith("Revenue grew 12%")
    followed = await call(
        "rlm_start_followup",
        execution_id=started["execution_id"],
        question="and the revenue once more?",
        options={"synchronous": True, "synchronous_timeout_seconds": 20},
    )
    assert followed["followup_of"] == started["execution_id"] and followed["status"] == "COMPLETED"
    executions = await call("rlm_list_executions", session_id=stack.session_id, status="COMPLETED")
    assert [e["execution_id"] for e in executions["executions"][:2]] == [
        followed["execution_id"], started["execution_id"],
    ]  # fmt: skip

    runtime = await call("rlm_runtime_create_execution", session_id=stack.session_id)
    step = await call(
        "rlm_runtime_step",
        execution_id=runtime["execution_id"],
        code="tool.queue_llm('k', 'summarize ' + context[0][0:6])\nprint('ok')",
    )
    assert step["success"] is True and step["stdout"].strip() == "ok"
    prompt = step["tool_requests"]["llm"][0]["prompt"]
    resolved = await call(
        "rlm_resolve_tools",
        execution_id=runtime["execution_id"],
        tool_requests={"llm": [{"key": "k", "prompt": prompt}]},
    )
    assert resolved["statuses"] == {"k": "resolved"}

    span = await call(
        "rlm_get_span", session_id=stack.session_id, doc_id=stack.doc_id, start_char=0, end_char=6
    )
    assert span["text"] == DOC_TEXT[0:6]
    verified = await call("rlm_verify_citation", ref=span["ref"])
    assert verified["valid"] is True

    missing = await session.call_tool("rlm_get_execution", {"execution_id": "exec_nope"})
    assert missing.is_error
    assert '"EXECUTION_NOT_FOUND"' in getattr(missing.content[0], "text", "")
    return called


def test_all_tools_over_stdio(stack: Stack) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "rlm_rs.cli", "mcp", "serve", "--transport", "stdio"],
        env={**stack.env, "RLM_BASE_URL": stack.base_url, "RLM_API_KEY": stack.api_key},
    )

    async def main() -> set[str]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await exercise_all_tools(session, stack)

    called = asyncio.run(asyncio.wait_for(main(), timeout=90))
    assert called == set(TOOL_NAMES)


@pytest.fixture(scope="module")
def mcp_http(stack: Stack) -> Iterator[str]:
    """`rlm-rs mcp serve --transport http`, with ANOTHER tenant's key in its
    environment: the HTTP transport must act only with each caller's own key."""
    port = free_port()
    env = {**stack.env, "RLM_BASE_URL": stack.base_url, "RLM_API_KEY": stack.other_key}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_rs.cli", "mcp", "serve", "--transport", "http",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code < 500, "the MCP HTTP server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _session_call(url: str, key: str, tool: str, args: dict[str, Any]) -> tuple[set[str], Any]:
    async with (
        create_mcp_http_client(headers={"authorization": f"Bearer {key}"}) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        return {t.name for t in tools.tools}, await session.call_tool(tool, args)


def test_streamable_http_acts_with_the_callers_own_key(stack: Stack, mcp_http: str) -> None:
    args = {"session_id": stack.session_id}
    names, result = asyncio.run(
        asyncio.wait_for(_session_call(mcp_http, stack.api_key, "rlm_get_session", args), timeout=60)
    )
    assert names == set(TOOL_NAMES)
    got = result_json(result)
    assert got["session_id"] == stack.session_id and got["status"] == "READY"
    # the same call with the other tenant's key is that tenant's view: not found
    _, foreign = asyncio.run(
        asyncio.wait_for(_session_call(mcp_http, stack.other_key, "rlm_get_session", args), timeout=60)
    )
    assert foreign.is_error and '"SESSION_NOT_FOUND"' in getattr(foreign.content[0], "text", "")


INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": HANDSHAKE_PROTOCOL_VERSIONS[-1], "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}},
}  # fmt: skip
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


def test_streamable_http_refuses_requests_without_a_good_key(stack: Stack, mcp_http: str) -> None:
    delete = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "rlm_delete_session", "arguments": {"session_id": stack.session_id}}}  # fmt: skip
    refusals = [{}, {"authorization": "Bearer rlm_key_not_a_key"}, {"authorization": f"Bearer {stack.api_key}x"},
                {"authorization": f"Basic {stack.api_key}"}, {"authorization": "Bearer " + "k" * 5000}]  # fmt: skip
    for headers in refusals:
        for message in (INITIALIZE, delete):
            answer = httpx.post(mcp_http, json=message, headers={**MCP_HEADERS, **headers}, timeout=10)
            # the MCP server's bearer middleware answers, not a tool: a tool error would be a 200
            assert answer.status_code == 401, (headers.keys(), answer.text)
            assert answer.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    # no tool ran: the session the delete named is still there
    assert stack.client().get(f"/v1/sessions/{stack.session_id}").json()["status"] == "READY"

    async def sdk_with_a_wrong_key() -> None:
        await _session_call(mcp_http, "rlm_key_wrong", "rlm_get_session", {"session_id": stack.session_id})

    # the SDK's client cannot even initialize (it reports the 401 as an error response)
    with pytest.raises(BaseExceptionGroup) as refused:
        asyncio.run(asyncio.wait_for(sdk_with_a_wrong_key(), timeout=60))
    assert refused.group_contains(MCPError)


def test_an_mcp_session_is_bound_to_the_key_that_opened_it(stack: Stack, mcp_http: str) -> None:
    opened = httpx.post(mcp_http, json=INITIALIZE, timeout=10,
                        headers={**MCP_HEADERS, "authorization": f"Bearer {stack.api_key}"})  # fmt: skip
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    for key, status in ((stack.other_key, 404), (stack.api_key, 200)):
        headers = {**MCP_HEADERS, "authorization": f"Bearer {key}", "mcp-session-id": session,
                   "mcp-protocol-version": HANDSHAKE_PROTOCOL_VERSIONS[-1]}  # fmt: skip
        answer = httpx.post(mcp_http, json=listing, headers=headers, timeout=10)
        assert answer.status_code == status, (status, answer.text)
