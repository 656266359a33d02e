"""Live events as Server-Sent Events, follow-ups and the execution tree over
real HTTP: gateway process -> control plane process (scripted root model)."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from tests.integration.gateway.conftest import DOC_TEXT, Stack
from tests.integration.gateway.test_endpoints import envelope

ANSWER = "Revenue grew 12% to $4.5M in 2024."


def read_sse(resp: httpx.Response) -> list[dict[str, Any]]:
    """The frames of an event stream: {"id", "event", "data"} (data parsed), comments skipped."""
    frames: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    for line in resp.iter_lines():
        if not line:
            if frame:
                frames.append(frame)
            frame = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            frame[field] = json.loads(value) if field == "data" else value
    if frame:
        frames.append(frame)
    return frames


def events(stack: Stack, execution_id: str, headers: dict[str, str] | None = None, **params: str) -> Any:
    with (
        stack.client() as c,
        c.stream("GET", f"/v1/executions/{execution_id}/events", params=params, headers=headers) as resp,
    ):
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache" and resp.headers["x-request-id"]
        return read_sse(resp)


def answered(stack: Stack, question: str) -> dict[str, Any]:
    with stack.client() as c:
        resp = c.post(
            f"/v1/sessions/{stack.session_id}/executions",
            json={"question": question, "options": {"synchronous": True, "synchronous_timeout_seconds": 20}},
        )
    assert resp.status_code == 201 and resp.json()["status"] == "COMPLETED", resp.text
    return dict(resp.json())


def test_events_stream_as_sse_from_start_to_status(stack: Stack) -> None:
    with stack.client() as c:
        started = c.post(f"/v1/sessions/{stack.session_id}/executions", json={"question": "revenue, live?"})
    eid = started.json()["execution_id"]
    frames = events(stack, eid)  # from the start, while it runs or after: the same events
    assert [f["event"] for f in frames] == ["turn_started", "root_reply", "step_result", "status"]
    for frame in frames:
        data = frame["data"]
        assert set(data) == {"event_id", "execution_id", "type", "turn_index", "at", "data"}
        assert frame["id"] == data["event_id"] and frame["event"] == data["type"]
        assert data["execution_id"] == eid and isinstance(data["data"], dict)
    assert frames[2]["data"]["data"]["final"] == ANSWER
    assert frames[-1]["data"]["data"]["status"] == "COMPLETED"
    assert frames[-1]["data"]["data"]["answer"] == ANSWER
    assert frames[-1]["id"] == "000001.9999"


def test_events_resume_with_last_event_id_or_after(stack: Stack) -> None:
    eid = answered(stack, "revenue to resume")["execution_id"]
    ids = [f["id"] for f in events(stack, eid)]
    assert [f["id"] for f in events(stack, eid, headers={"Last-Event-ID": ids[1]})] == ids[2:]
    assert [f["id"] for f in events(stack, eid, after=ids[0])] == ids[1:]
    # a reconnecting EventSource sends Last-Event-ID with the original URL: the header wins
    resumed = events(stack, eid, headers={"Last-Event-ID": ids[2]}, after=ids[0])
    assert [f["id"] for f in resumed] == ids[3:]
    assert events(stack, eid, after=ids[-1]) == []


def test_events_errors_are_json_envelopes_before_the_stream(stack: Stack) -> None:
    eid = answered(stack, "revenue for errors")["execution_id"]
    with stack.client(stack.other_key) as other:
        foreign = envelope(other.get(f"/v1/executions/{eid}/events"), 404, "EXECUTION_NOT_FOUND")
        unknown = envelope(other.get("/v1/executions/exec_nope/events"), 404, "EXECUTION_NOT_FOUND")
    assert foreign["message"] == unknown["message"]
    with stack.client() as c:
        envelope(c.get(f"/v1/executions/{eid}/events", params={"after": "12"}), 422, "VALIDATION_ERROR")
        bad_header = c.get(f"/v1/executions/{eid}/events", headers={"Last-Event-ID": "x"})
        envelope(bad_header, 422, "VALIDATION_ERROR")
    with httpx.Client(base_url=stack.base_url, timeout=10) as anon:
        envelope(anon.get(f"/v1/executions/{eid}/events"), 401, "UNAUTHORIZED")


def test_events_of_a_runtime_execution_arrive_live_and_end_with_its_status(stack: Stack) -> None:
    with stack.client() as c:
        eid = c.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={}).json()["execution_id"]
        frames: list[dict[str, Any]] = []
        opened = threading.Event()

        def follow() -> None:
            with (
                stack.client() as reader,
                reader.stream("GET", f"/v1/executions/{eid}/events") as resp,
            ):
                opened.set()
                frames.extend(read_sse(resp))

        thread = threading.Thread(target=follow)
        thread.start()
        assert opened.wait(10)  # the stream is open (200) before anything happened
        assert c.post(f"/v1/executions/{eid}/steps", json={"code": "print('live')"}).status_code == 200
        assert c.post(f"/v1/executions/{eid}/cancel").json()["status"] == "CANCELLED"
        thread.join(20)
    assert not thread.is_alive()
    assert [f["event"] for f in frames] == ["step_result", "status"]
    assert frames[0]["data"]["data"]["stdout"] == "live\n"
    assert frames[1]["data"]["data"]["status"] == "CANCELLED"


def test_followup_reads_the_work_of_the_finished_execution(stack: Stack) -> None:
    first = answered(stack, "remember the chief executive")
    assert first["answer"] == "noted"
    with stack.client() as c:
        resp = c.post(
            f"/v1/executions/{first['execution_id']}/followups",
            json={
                "question": "recall the chief executive",
                "options": {"synchronous": True, "synchronous_timeout_seconds": 20},
            },
        )
        assert resp.status_code == 201, resp.text
        followed = resp.json()
        assert followed["status"] == "COMPLETED", followed
        assert followed["answer"] == "The chief executive is Ada Lovelace"
        assert followed["followup_of"] == first["execution_id"]
        assert followed["session_id"] == stack.session_id
        got = c.get(f"/v1/executions/{followed['execution_id']}").json()
        assert got["followup_of"] == first["execution_id"]
        steps = c.get(f"/v1/executions/{followed['execution_id']}/steps").json()["steps"]
        assert steps[0]["stdout"] == "from before: Ada Lovelace\n"
        assert c.get(f"/v1/executions/{first['execution_id']}").json()["followup_of"] is None


def test_followup_errors(stack: Stack) -> None:
    with stack.client() as c:
        running = c.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={}).json()
        path = f"/v1/executions/{running['execution_id']}/followups"
        conflict = envelope(c.post(path, json={"question": "more?"}), 409, "CONFLICT")
        assert conflict["details"]["status"] == "RUNNING"
        envelope(c.post(path, json={"question": ""}), 422, "VALIDATION_ERROR")
        envelope(c.post(path, json={}), 422, "VALIDATION_ERROR")
        envelope(
            c.post("/v1/executions/exec_nope/followups", json={"question": "q"}), 404, "EXECUTION_NOT_FOUND"
        )
        c.post(f"/v1/executions/{running['execution_id']}/cancel")
    with stack.client(stack.other_key) as other:
        envelope(other.post(path, json={"question": "q"}), 404, "EXECUTION_NOT_FOUND")


def test_resolve_tools_returns_rlm_results_and_get_shows_the_tree(stack: Stack) -> None:
    with stack.client() as c:
        eid = c.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={}).json()["execution_id"]
        resp = c.post(
            f"/v1/executions/{eid}/tools/resolve",
            json={"tool_requests": {"rlm": [{"key": "child", "question": "what about revenue?"}]}},
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["statuses"] == {"child": "resolved"}
        result = body["tool_results"]["rlm"]["child"]
        assert result["text"] == ANSWER
        [ref] = result["citations"]
        assert ref["doc_id"] == stack.doc_id and DOC_TEXT[ref["start_char"] : ref["end_char"]] == ANSWER[:34]
        assert result["meta"]["status"] == "COMPLETED" and result["meta"]["depth"] == 1
        parent = c.get(f"/v1/executions/{eid}").json()
        [child] = parent["children"]
        assert child["execution_id"] == result["meta"]["execution_id"]
        assert child["parent_execution_id"] == eid and child["depth"] == 1
        assert child["answer"] == ANSWER and child["children"] == []
        assert parent["depth"] == 0 and parent["parent_execution_id"] is None
        c.post(f"/v1/executions/{eid}/cancel")
