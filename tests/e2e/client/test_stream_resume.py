"""An event stream cut mid-way by the network resumes after the last event received.

A TCP proxy between the client and the appliance (gateway for REST, control plane for
gRPC) forwards half of the stream's bytes and then closes the connection. The client
must reconnect, resume after the last event id it yielded (REST: the Last-Event-ID
header of the second request), and deliver every event exactly once, in order.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

from rlm_rs.client import AsyncClient, Client, RetryPolicy
from tests.e2e.client._proxy import CuttingProxy
from tests.e2e.client.conftest import Appliance


@pytest.fixture
def proxy(appliance: Appliance, transport: str) -> Iterator[CuttingProxy]:
    port = appliance.up.http_port if transport == "http" else appliance.up.grpc_port
    proxy = CuttingProxy(port)
    yield proxy
    proxy.close()


def _url(transport: str, proxy: CuttingProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}" if transport == "http" else f"grpc://127.0.0.1:{proxy.port}"


def _event_ids(url: str, api_key: str, execution_id: str, mode: str) -> list[str]:
    policy = RetryPolicy(initial_backoff_seconds=0.1)
    if mode == "sync":
        with Client(url, api_key, retry=policy) as client:
            return [e.event_id for e in client.executions.events(execution_id)]

    async def collect() -> list[str]:
        async with AsyncClient(url, api_key, retry=policy) as client:
            return [e.event_id async for e in client.executions.events(execution_id)]

    return asyncio.run(collect())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_cut_stream_resumes_after_the_last_event(
    appliance: Appliance, transport: str, proxy: CuttingProxy, mode: str
) -> None:
    with Client(appliance.http_url, appliance.api_key) as direct:
        session = direct.sessions.create(docs=appliance.uris)
        execution = direct.executions.wait(session.start("When was the light first lit?").execution_id)
        expected = [e.event_id for e in direct.executions.events(execution.execution_id)]
    assert len(expected) >= 6

    # Uncut through the proxy: one connection, the whole stream; its size sets the cut.
    with Client(_url(transport, proxy), appliance.api_key) as client:
        assert [e.event_id for e in client.executions.events(execution.execution_id)] == expected
    assert len(proxy.connections) == 1 and proxy.connections[0].done.wait(10)
    whole = proxy.connections[0].down_bytes

    proxy.cut_next_after(whole // 2)
    got = _event_ids(_url(transport, proxy), appliance.api_key, execution.execution_id, mode)
    cut, *after = proxy.connections[1:]
    assert cut.cut_after == whole // 2 and cut.down_bytes == whole // 2, "the proxy did not cut"
    assert after, "the client did not reconnect"
    assert got == expected  # every event exactly once, in order
    if transport == "http":
        resumed = re.findall(rb"(?im)^last-event-id: (\S+)\r$", bytes(after[0].up))
        assert len(resumed) == 1
        last_before_cut = resumed[0].decode()
        assert last_before_cut in expected[1:-1]  # resumed mid-way, neither from scratch nor after the end
        first_request = bytes(cut.up)
        assert b"last-event-id" not in first_request.lower()
