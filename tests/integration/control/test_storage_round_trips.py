"""What a turn and a waiter cost in storage round-trips, on a real control
plane (the bench's counting proxy over the item and blob stores,
rlm_rs/bench/_storage_calls.py): no document listing and no state read per
turn, one listing and one step read when an execution ends, and a waiter
that is woken by the change instead of polling storage ten times a second."""

from __future__ import annotations

import threading
import time

from rlm_rs.bench._storage_calls import count_storage_calls, per_turn
from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import Api

THREE_TURNS = [
    "```repl\nstate['work']['hits'] = len(context[0].find('Revenue'))\n```",
    "```repl\nprint(state['work']['hits'])\n```",
    "```repl\ntool.FINAL(str(state['work']['hits']))\n```",
]


def test_a_turn_reads_neither_the_documents_nor_the_state(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "[three]", "root": THREE_TURNS}]
    session_id = api.ready_session()
    calls = count_storage_calls(api.plane.storage)
    calls.enabled = True
    execution = api.executions.StartExecution(
        execution_pb2.StartExecutionRequest(
            session_id=session_id,
            question="[three] count",
            options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=30),
        ),
        metadata=api.auth(),
    )
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    logged = calls.take()
    # the API and the loop read the execution by its key, never through an index (which may lag)
    by_index = [
        c.op for c in logged if c.op.startswith("items.query_index") and c.thread.startswith(("rpc", "ans"))
    ]
    assert not by_index, by_index
    counted = per_turn(logged, 1)
    ops = counted["per_turn_mean_by_op"]
    assert "items.query documents" not in ops and "items.get execution_state:STATE" not in ops, ops
    assert "items.query_index executions" not in ops, ops  # never the id index
    # one fenced transaction (counters, step record, state, and the turn's events: a fast turn
    # writes no event of its own); the lease is renewed by the heartbeat and the commit
    assert ops == {"items.transact commit": 1.0}, ops
    assert counted["per_turn_median"] == 1, counted
    # steps, documents, the trace, the status, the status event and the quota place given back
    assert counted["finalise_per_execution_median"] <= 6, counted


def test_a_waiter_is_woken_by_the_change_not_by_polling(api: Api) -> None:
    created = api.executions.CreateRuntimeExecution(
        execution_pb2.CreateRuntimeExecutionRequest(session_id=api.ready_session()), metadata=api.auth()
    )
    execution_id = created.execution_id
    calls = count_storage_calls(api.plane.storage)
    waited: dict[str, float | str] = {}

    def waiter() -> None:
        began = time.monotonic()
        done = api.executions.WaitExecution(
            execution_pb2.WaitExecutionRequest(execution_id=execution_id, timeout_seconds=30),
            metadata=api.auth(),
        )
        waited.update(status=done.status, at=time.monotonic() - began)

    calls.enabled = True
    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(2.5)
    reads = [
        c
        for c in calls.take()
        if c.op in ("items.get executions", "items.query_index executions") and c.thread.startswith("rpc")
    ]
    api.executions.CancelExecution(
        execution_pb2.CancelExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    cancelled_at = time.monotonic()
    thread.join(10)
    assert waited["status"] == execution_pb2.EXECUTION_STATUS_CANCELLED
    assert time.monotonic() - cancelled_at < 1.0  # woken by the cancel, not by a poll
    # before: a read every 0.1 s (about 25 here); now about one a second
    assert 1 <= len(reads) <= 5, len(reads)
