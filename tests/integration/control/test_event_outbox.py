"""Events wait in the lease's outbox for the turn's commit, but never long:
during a root call that outlasts the flush delay, the turn's first event is
in storage (for watchers on any node) within EVENT_FLUSH_SECONDS, written
by the flusher under the lease, before the turn commits."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rlm_rs.control.executions.events import EVENT_FLUSH_SECONDS
from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import Api


def test_a_long_root_call_does_not_hold_the_turns_events_back(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.provider.script["executions"] = [{"match": "[slow]", "root": ["```repl\ntool.FINAL('done')\n```"]}]
    release = threading.Event()
    answer = api.provider.complete

    def slow_root(model: str, messages: list[dict[str, str]], **options: Any) -> Any:
        if options["context"].role == "root":
            release.wait(20)  # the root call lasts until the test has looked
        return answer(model, messages, **options)

    monkeypatch.setattr(api.provider, "complete", slow_root)
    session_id = api.ready_session()
    began = time.monotonic()
    started = api.executions.StartExecution(
        execution_pb2.StartExecutionRequest(session_id=session_id, question="[slow] q"), metadata=api.auth()
    )
    try:
        events: list[dict[str, Any]] = []
        while not events and time.monotonic() - began < 10:
            time.sleep(0.05)
            events = api.plane.storage.metadata.list_events(started.execution_id)
        seen_after = time.monotonic() - began
        assert [e["type"] for e in events] == ["turn_started"], events  # the root call is still running
        assert seen_after < EVENT_FLUSH_SECONDS + 4.0, seen_after  # the root call itself lasts 20 s
        record = api.plane.storage.metadata.read_execution(session_id, started.execution_id) or {}
        assert record["next_turn"] == 0  # written before the turn committed
    finally:
        release.set()
    done = api.executions.WaitExecution(
        execution_pb2.WaitExecutionRequest(execution_id=started.execution_id, timeout_seconds=30),
        metadata=api.auth(),
    )
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    types = [e["type"] for e in api.plane.storage.metadata.list_events(started.execution_id)]
    assert types[0] == "turn_started" and types[-1] == "status" and "root_reply" in types


def test_whoever_sees_the_final_status_finds_the_status_event(api: Api) -> None:
    """The final status and the event that closes the stream are one write:
    polled as fast as storage answers, no execution is ever seen ended
    without its status event (before, the event followed the status by a
    moment and a reader could fall between them)."""
    api.provider.script["executions"] = [{"match": "[quick]", "root": ["```repl\ntool.FINAL('done')\n```"]}]
    session_id = api.ready_session()
    metadata = api.plane.storage.metadata
    for _ in range(12):
        started = api.executions.StartExecution(
            execution_pb2.StartExecutionRequest(session_id=session_id, question="[quick] q"),
            metadata=api.auth(),
        )
        deadline = time.monotonic() + 20
        while True:
            record = metadata.read_execution(session_id, started.execution_id) or {}
            if record.get("status") != "RUNNING":
                events = metadata.list_events(started.execution_id)
                break
            assert time.monotonic() < deadline, "the execution did not end"
        assert record["status"] == "COMPLETED"
        assert events and events[-1]["type"] == "status", [e["type"] for e in events]
