"""Heartbeats: a root call three times longer than the lease never loses the
lease while the process lives, although another node's takeover sweep runs
the whole time against the same storage; and the lease is checked at start-up."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rlm_rs.control.executions.engine import ExecutionEngine
from rlm_rs.control.executions.leases import check_lease
from rlm_rs.providers.base import Completion
from rlm_rs.providers.scripted import ScriptedProvider
from rlm_rs.sandbox.client import InProcessSandbox
from rlm_rs.settings import Settings
from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import Api

LEASE = 1.0
SLOW_CALL = 3.5


class SlowFirstRoot:
    """The scripted provider, with the first turn's root call taking SLOW_CALL seconds."""

    name = "scripted"

    def __init__(self, inner: ScriptedProvider) -> None:
        self.inner = inner
        self.root_calls = 0

    def complete(self, model: str, messages: list[dict[str, str]], **kw: Any) -> Completion:
        if kw["context"].role == "root":
            self.root_calls += 1
            if kw["context"].turn_index == 0:
                time.sleep(SLOW_CALL)
        return self.inner.complete(model, messages, **kw)


def test_a_root_call_longer_than_the_lease_keeps_it(api: Api) -> None:
    engine = api.plane.engine
    engine.ctx.lease_seconds = engine.records.lease_seconds = LEASE
    slow = SlowFirstRoot(api.provider)
    engine.ctx.provider = slow
    api.provider.script["executions"] = [
        {"match": "", "root": ["```repl\nprint(context[0][:8])\n```", "```repl\ntool.FINAL('done')\n```"]}
    ]
    other = ExecutionEngine(
        api.plane.storage, api.settings, InProcessSandbox(), api.provider,
        owner="node-b", lease_seconds=LEASE, workers=2,
    )  # fmt: skip
    try:
        started = api.executions.StartExecution(
            execution_pb2.StartExecutionRequest(session_id=api.ready_session(), question="q"),
            metadata=api.auth(),
        )
        taken = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            taken += other.recover_orphans()  # another node's sweep, all through the slow call
            if engine.get("tenant-a", started.execution_id)["status"] != "RUNNING":
                break
            time.sleep(0.1)
    finally:
        other.close()
    record = engine.get("tenant-a", started.execution_id)
    assert taken == 0, "another node took the execution while its owner was in a root call"
    assert record["status"] == "COMPLETED" and record["answer"] == "done"
    assert slow.root_calls == 2 and record["budgets_consumed"]["turns"] == 2  # no turn ran twice
    assert record["lease_owner"] == engine.owner


def test_the_lease_is_checked_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(API_KEY_PEPPER="p", RLM_LLM_TIMEOUT_SECONDS=60, RLM_LLM_MAX_RETRIES=2)
    with pytest.raises(ValueError, match="shorter than 1 s"):
        check_lease(0.5, settings)
    check_lease(30, settings)  # a 180 s root call rests on the heartbeat: logged, not refused
    check_lease(200, settings)
