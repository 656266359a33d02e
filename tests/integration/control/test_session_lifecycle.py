"""Deleting and expiring sessions over a real gRPC socket: every read of an
existing execution stops at once (a call in flight included), the session's
executions are cancelled, and its data is gone from disk
(rlm_rs/control/lifecycle.py). Also: a 409 never shows storage keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from rlm_rs.sandbox.client import InProcessSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import PoolStatus, StepRequest, StepResult
from rlm_rs.v1 import citation_pb2, execution_pb2, session_pb2
from rlm_rs.v1.common_pb2 import LlmRequest, ToolRequests
from tests.integration.control.conftest import Api, control_plane, error_code

READ_AND_QUEUE = (
    "head = context[0][0:40]\n"
    "state['work']['big'] = 'x' * 400000\n"  # offloaded: a state object in the blob store
    "tool.queue_llm('gist', 'Summarise: ' + head)\n"
)


class GatedSandbox:
    """The real in-process sandbox, except that the first step waits at the
    gate until the test opens it (to act while a step is in flight)."""

    def __init__(self) -> None:
        self.inner = InProcessSandbox()
        self.entered, self.gate = threading.Event(), threading.Event()
        self._first = True

    def run_step(self, request: StepRequest) -> StepResult:
        if self._first:
            self._first = False
            self.entered.set()
            assert self.gate.wait(30)
        return self.inner.run_step(request)

    def status(self) -> PoolStatus:
        return self.inner.status()

    def close(self) -> None:
        return None


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[Api, GatedSandbox]]:
    sandbox = GatedSandbox()
    with control_plane(tmp_path, sandbox) as api:
        yield api, sandbox


def _runtime(api: Api, session_id: str) -> str:
    return str(
        api.executions.CreateRuntimeExecution(
            execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id), metadata=api.auth()
        ).execution_id
    )


def _step(api: Api, execution_id: str, code: str, resolve: bool = False) -> execution_pb2.RunStepResponse:
    result: execution_pb2.RunStepResponse = api.executions.RunStep(
        execution_pb2.RunStepRequest(
            execution_id=execution_id, code=code, options=execution_pb2.RunStepOptions(resolve_tools=resolve)
        ),
        metadata=api.auth(),
    )
    return result


def _reads(api: Api, session_id: str, execution_id: str, ref: Any) -> dict[str, Callable[[], Any]]:
    """Every call that reads through an existing execution or the session."""
    e, c, auth = api.executions, api.citations, api.auth()
    return {
        "RunStep": lambda: _step(api, execution_id, "print(context[0][0:10])"),
        "ListSteps": lambda: e.ListSteps(
            execution_pb2.ListStepsRequest(execution_id=execution_id), metadata=auth
        ),
        "GetExecution": lambda: e.GetExecution(
            execution_pb2.GetExecutionRequest(execution_id=execution_id), metadata=auth
        ),
        "WaitExecution": lambda: e.WaitExecution(
            execution_pb2.WaitExecutionRequest(execution_id=execution_id, timeout_seconds=0.1), metadata=auth
        ),
        "ResolveTools": lambda: e.ResolveTools(
            execution_pb2.ResolveToolsRequest(
                execution_id=execution_id, tool_requests=ToolRequests(llm=[LlmRequest(key="k", prompt="p")])
            ),
            metadata=auth,
        ),
        "CancelExecution": lambda: e.CancelExecution(
            execution_pb2.CancelExecutionRequest(execution_id=execution_id), metadata=auth
        ),
        "StartFollowup": lambda: e.StartFollowup(
            execution_pb2.StartFollowupRequest(execution_id=execution_id, question="more?"), metadata=auth
        ),
        "WatchExecution": lambda: list(
            e.WatchExecution(
                execution_pb2.WatchExecutionRequest(execution_id=execution_id), metadata=auth, timeout=10
            )
        ),
        "GetSpan": lambda: c.GetSpan(
            citation_pb2.GetSpanRequest(session_id=session_id, doc_id=ref.doc_id, start_char=0, end_char=10),
            metadata=auth,
        ),
        "VerifyCitation": lambda: c.VerifyCitation(
            citation_pb2.VerifyCitationRequest(ref=ref), metadata=auth
        ),
    }


def _refused(call: Callable[[], Any]) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return error_code(caught.value)


def _on_disk(api: Api, session_id: str, execution_id: str) -> dict[str, Any]:
    blobs = api.settings.data_dir / "blobs" / "rlm-rs"
    return {
        "parsed": sorted(str(p) for p in (blobs / "parsed" / "tenant-a" / session_id).rglob("*")),
        "state": sorted(str(p) for p in (blobs / "state" / "tenant-a" / execution_id).rglob("*")),
        "cache_markers": sorted(
            str(p) for p in (blobs / "cache" / "tenant-a" / "sessions" / session_id).rglob("*")
        ),
        "cache_entries": sorted(str(p) for p in (blobs / "cache" / "tenant-a" / "llm").rglob("*")),
        "search": sorted(str(p) for p in (blobs / "search" / "tenant-a" / session_id).rglob("*")),
        "records": api.plane.storage.metadata.items.query("execution_state", f"EXEC#{execution_id}"),
        "open_texts": [u for u in api.plane.engine.docs._texts if session_id in u],
    }


def _ready_with_work(api: Api) -> tuple[str, str, Any]:
    """A READY search-enabled session, a RUNNING runtime execution that read
    the corpus, offloaded its state and cached a sub-call, and a citation ref."""
    session_id = api.ready_session(enable_search=True)
    execution_id = _runtime(api, session_id)
    assert _step(api, execution_id, READ_AND_QUEUE, resolve=True).success
    doc_id = (
        api.sessions.GetSession(session_pb2.GetSessionRequest(session_id=session_id), metadata=api.auth())
        .docs[0]
        .doc_id
    )
    span = api.citations.GetSpan(
        citation_pb2.GetSpanRequest(session_id=session_id, doc_id=doc_id, start_char=0, end_char=10),
        metadata=api.auth(),
    )
    return session_id, execution_id, span.ref


def test_deleting_a_session_stops_every_read_and_removes_its_files(api: Api) -> None:
    session_id, execution_id, ref = _ready_with_work(api)
    before = _on_disk(api, session_id, execution_id)
    for name in ("parsed", "search", "state", "cache_entries", "records", "open_texts"):
        assert before[name], name  # the data really existed
    reads = _reads(api, session_id, execution_id, ref)
    assert (
        api.executions.GetExecution(
            execution_pb2.GetExecutionRequest(execution_id=execution_id), metadata=api.auth()
        ).status
        == execution_pb2.EXECUTION_STATUS_RUNNING
    )

    api.sessions.DeleteSession(session_pb2.DeleteSessionRequest(session_id=session_id), metadata=api.auth())

    assert {name: _refused(call) for name, call in reads.items()} == dict.fromkeys(reads, "SESSION_NOT_FOUND")
    assert _on_disk(api, session_id, execution_id) == {
        "parsed": [], "state": [], "cache_markers": [], "cache_entries": [], "search": [], "records": [],
        "open_texts": [],
    }  # fmt: skip
    stored = api.plane.storage.metadata.get_execution("tenant-a", execution_id)
    assert stored["status"] == "CANCELLED"  # its loop or next step can never run again
    assert not (api.settings.data_dir / "blobs" / "rlm-rs" / "parsed" / "tenant-a" / session_id).exists()


def test_a_step_in_flight_when_the_session_is_deleted_returns_nothing(
    gated: tuple[Api, GatedSandbox],
) -> None:
    api, sandbox = gated
    session_id = api.ready_session()
    execution_id = _runtime(api, session_id)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = _step(api, execution_id, "print(context[0][0:60])")
        except grpc.RpcError as exc:
            outcome["error"] = error_code(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert sandbox.entered.wait(10)  # the step is inside the sandbox now
    api.sessions.DeleteSession(session_pb2.DeleteSessionRequest(session_id=session_id), metadata=api.auth())
    sandbox.gate.set()
    thread.join(30)
    assert outcome == {"error": "SESSION_NOT_FOUND"}  # not the text the step printed
    # what the step wrote after the purge goes with the sweeper's next pass
    # (it purges again until the settle window after the delete has passed)
    assert api.plane.reaper is not None
    api.plane.reaper.sweep()
    assert api.plane.storage.metadata.items.query("execution_state", f"EXEC#{execution_id}") == []
    assert list(api.plane.storage.blobs.list(f"state/tenant-a/{execution_id}/")) == []


def test_an_expired_session_answers_expired_and_the_sweeper_removes_its_data(api: Api) -> None:
    session_id, execution_id, ref = _ready_with_work(api)
    api.plane.storage.metadata.update_session("tenant-a", session_id, {"ttl_epoch": int(time.time()) - 1})
    reads = _reads(api, session_id, execution_id, ref)
    assert {name: _refused(call) for name, call in reads.items()} == dict.fromkeys(reads, "SESSION_EXPIRED")
    assert _on_disk(api, session_id, execution_id)["parsed"]  # expiry answers at once; removal is the sweep's
    assert api.plane.reaper is not None and api.plane.reaper.sweep() == 1
    after = _on_disk(api, session_id, execution_id)
    assert after == {
        "parsed": [], "state": [], "cache_markers": [], "cache_entries": [], "search": [], "records": [],
        "open_texts": [],
    }  # fmt: skip
    assert api.plane.storage.metadata.get_execution("tenant-a", execution_id)["status"] == "CANCELLED"
    assert _refused(reads["GetExecution"]) == "SESSION_EXPIRED"


def test_the_control_plane_sweeps_on_its_own(tmp_path: Path) -> None:
    """RLM_SESSION_SWEEP_SECONDS: the control plane runs the sweeper itself."""
    from rlm_rs.control.server import start_control_plane
    from rlm_rs.settings import Settings
    from rlm_rs.storage import open_storage
    from rlm_rs.storage.uploads import store_upload

    settings = Settings(RLM_DATA_DIR=tmp_path / "data", API_KEY_PEPPER="p", RLM_SESSION_SWEEP_SECONDS=0.2)
    storage = open_storage(settings)
    storage.metadata.put_session({"tenant_id": "t", "session_id": "sess_old", "status": "READY",
                                  "ttl_epoch": int(time.time()) - 5, "options": {}, "defaults": {}})  # fmt: skip
    storage.blobs.put("parsed/t/sess_old/d0/text.txt", b"old text")
    store_upload(storage.blobs, "t", "kept.txt", b"an upload stays")
    plane = start_control_plane(settings, "127.0.0.1:0", storage=storage, sandbox=InProcessSandbox())
    try:
        deadline = time.monotonic() + 10
        while storage.blobs.head("parsed/t/sess_old/d0/text.txt") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert storage.blobs.head("parsed/t/sess_old/d0/text.txt") is None
        assert storage.metadata.get_session("t", "sess_old")["status"] == "EXPIRED"
        assert len(list(storage.blobs.list("raw/t/"))) == 1
    finally:
        plane.stop(1)


def test_a_conflict_shows_no_storage_keys(gated: tuple[Api, GatedSandbox]) -> None:
    """Two steps on one execution at once: the loser's 409 names no internal
    key (whichever of the two loses: the one that finds the turn taken, or
    the one whose offloaded state object was written first by the other)."""
    from grpc_status import rpc_status

    api, sandbox = gated
    execution_id = _runtime(api, api.ready_session())
    outcomes: list[Any] = []

    def attempt(fill: str) -> None:
        try:
            outcomes.append(_step(api, execution_id, f"state['work']['big'] = '{fill}' * 400000"))
        except grpc.RpcError as exc:
            outcomes.append(exc)

    slow = threading.Thread(target=attempt, args=("a",))
    slow.start()
    assert sandbox.entered.wait(10)  # the first step is inside the sandbox
    attempt("b")
    sandbox.gate.set()
    slow.join(30)
    conflicts = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    assert len(outcomes) == 2 and [error_code(c) for c in conflicts] == ["CONFLICT"], outcomes
    shown = f"{conflicts[0].details()}{rpc_status.from_call(conflicts[0])!r}"  # type: ignore[arg-type]
    for internal in ("state/", "SESSION#", "EXEC#", "tenant-a/", "parsed/"):
        assert internal not in shown, shown
