"""The SSE route's edges against a stand-in control plane: an error before
the stream is an envelope, a failure midway is one stream_error frame, quiet
periods send keep-alive comments, a lost started mark is no error."""

from __future__ import annotations

import json

import httpx
import pytest

import gateway.routes.events
from tests.unit.gateway.test_edges import assert_envelope


def frames(client: httpx.Client, execution_id: str) -> tuple[httpx.Response, list[str]]:
    with client.stream("GET", f"/v1/executions/{execution_id}/events") as resp:
        return resp, resp.read().decode().split("\n\n")


def test_events_are_sse_frames_until_the_stream_ends(client: httpx.Client) -> None:
    resp, parts = frames(client, "fine")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    first = parts[0].split("\n")
    assert first[:2] == ["id: 000000.0000", "event: turn_started"]
    data = json.loads(first[2].removeprefix("data: "))
    assert data == {
        "event_id": "000000.0000", "execution_id": "fine", "type": "turn_started", "turn_index": 0,
        "at": "2026-01-01T00:00:00Z", "data": {"budgets": {}},
    }  # fmt: skip
    assert parts[1].startswith("id: 000001.9999\nevent: status\n") and parts[2:] == [""]


def test_an_error_before_the_stream_is_the_envelope(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/executions/missing/events"), 404, "EXECUTION_NOT_FOUND")


def test_a_stream_without_the_started_mark_is_still_served(client: httpx.Client) -> None:
    resp, parts = frames(client, "unmarked")
    assert resp.status_code == 200 and parts[0].startswith("id: 000000.0000\nevent: turn_started\n")
    resp, parts = frames(client, "empty")
    assert resp.status_code == 200 and parts == [""]


def test_a_failure_midway_is_one_stream_error_frame(client: httpx.Client) -> None:
    resp, parts = frames(client, "midway")
    assert resp.status_code == 200
    assert parts[0].startswith("id: 000000.0000\n")
    event, data = parts[1].split("\n")
    assert event == "event: stream_error"
    envelope = json.loads(data.removeprefix("data: "))
    assert envelope["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert envelope["error"]["request_id"] == resp.headers["x-request-id"]
    assert parts[2:] == [""]


def test_quiet_periods_send_keep_alive_comments(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway.routes.events, "SSE_KEEPALIVE_SECONDS", 0.05)
    _, parts = frames(client, "slow")
    assert parts[0] == ": keep-alive"
    assert any(p.startswith("id: 000000.0000\n") for p in parts)


@pytest.mark.parametrize("after", ["1", "000001.0001x", "abcdef.ghij"])
def test_a_malformed_resume_id_is_refused_by_the_gateway(client: httpx.Client, after: str) -> None:
    assert_envelope(
        client.get("/v1/executions/fine/events", params={"after": after}), 422, "VALIDATION_ERROR"
    )
    resp = client.get("/v1/executions/fine/events", headers={"Last-Event-ID": after})
    assert_envelope(resp, 422, "VALIDATION_ERROR")
