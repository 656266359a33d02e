"""The MCP server with the SDK's own client, against the running gateway: all
twelve tools (the spec's eleven and rlm_start_followup) over stdio, and the streamable-HTTP transport."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import httpx
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

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

    doc = {"source_name": "again.txt", "mime_type": "text/plain", "raw_s3_uri": stack.raw_uri}
    created = await call("rlm_create_session", docs=[doc], ttl_minutes=30)
    assert created["status"] == "CREATING"
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


def test_streamable_http_transport(stack: Stack) -> None:
    port = free_port()
    env = {**stack.env, "RLM_BASE_URL": stack.base_url, "RLM_API_KEY": stack.api_key}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_rs.cli", "mcp", "serve", "--transport", "http",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code < 500, "the MCP HTTP server")

        async def main() -> dict[str, Any]:
            async with (
                streamable_http_client(url) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                tools = await session.list_tools()
                assert {t.name for t in tools.tools} == set(TOOL_NAMES)
                return result_json(
                    await session.call_tool("rlm_get_session", {"session_id": stack.session_id})
                )

        got = asyncio.run(asyncio.wait_for(main(), timeout=60))
        assert got["session_id"] == stack.session_id and got["status"] == "READY"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
