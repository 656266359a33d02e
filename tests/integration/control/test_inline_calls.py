"""Inline calls (llm_query, llm_query_batched, rlm_query) through a real
control plane: resolved while the step waits, with the same budgets, cache,
cost, events, trace records and children as queued calls."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path
from typing import Any

from rlm_rs.domain.records import ExecutionRecord
from rlm_rs.providers.base import CallContext, Completion
from rlm_rs.sandbox.client import Inline, InProcessSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest, StepResult
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import Budgets
from tests.integration.control.conftest import NOTES, REPORT, Api, control_plane
from tests.integration.control.test_executions import block, start

# An rlms-style step: fan out over chunks inline, aggregate in the same step.
RLMS_STEP = block(
    "chunks = ['<c' + str(i) + '> ' + context[0][i * 10:(i + 1) * 10] for i in range(10)]\n"
    "answers = llm_query_batched(chunks)\n"
    "total = sum(int(a) for a in answers)\n"
    "print(len(answers), total)\n"
    "tool.FINAL('total ' + str(total))"
)


def _chunk_script() -> list[dict[str, str]]:
    return [{"match": f"<c{i}>", "text": str(i)} for i in range(10)]


def test_an_rlms_style_step_fans_out_and_aggregates_in_one_turn(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "[sum]", "root": [RLMS_STEP]}]
    api.provider.script["sub"] = _chunk_script()
    execution = start(api, api.ready_session(), "[sum] add them up")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == "total 45"
    consumed = execution.budgets_consumed
    assert consumed.turns == 1 and consumed.llm_subcalls == 10 and consumed.output_tokens >= 10
    roots = [c for c in api.provider.calls if c["role"] == "root"]
    assert len(roots) == 1  # one root turn: the answers were used on the next line
    # the same events and trace records as queued calls, marked inline
    events = api.plane.engine.events.after(execution.execution_id)
    requested = [e for e in events if e["type"] == "tool_requests"]
    assert requested and json.loads(requested[0]["data_json"]) == {"llm_batch": ["inline#1"], "inline": True}
    results = [e for e in events if e["type"] == "tool_results"]
    assert json.loads(results[0]["data_json"])["statuses"] == {"inline#1": "resolved"}
    trace_key = execution.trace_s3_uri.split("/", 3)[3]
    trace = json.loads(gzip.decompress(api.plane.storage.blobs.get(trace_key)))
    records = trace["turns"][0]["tool_resolution"]["results"]
    assert len(records) == 10 and all(r["inline"] and r["type"] == "llm" for r in records)
    assert [r["key"] for r in records][:2] == ["inline#1[0]", "inline#1[1]"]


def test_inline_calls_are_refused_by_the_same_budgets_as_queued_ones(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "[few]",
            "root": [
                block(
                    "a = llm_query('<c1> one')\n"
                    "rest = llm_query_batched(['<c2> two', '<c3> three'])\n"
                    "tool.FINAL(a + '|' + '|'.join(rest))"
                )
            ],
        }
    ]
    api.provider.script["sub"] = _chunk_script()
    execution = start(api, api.ready_session(), "[few] ask", budgets=Budgets(max_llm_subcalls=2))
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == "1|2|Error: sub-call budget spent (max_llm_subcalls=2)"
    assert execution.budgets_consumed.llm_subcalls == 2


def test_temperature_zero_inline_calls_come_from_the_cache(api: Api) -> None:
    same = "llm_query('<c7> same prompt')"
    api.provider.script["executions"] = [
        {
            "match": "[twice]",
            "root": [
                block(f"state['work']['a'] = {same}\nprint('once')"),
                block(f"tool.FINAL(state['work']['a'] + {same} + llm_query('<c7> hot', temperature=0.5))"),
            ],
        }
    ]
    api.provider.script["sub"] = _chunk_script()
    execution = start(api, api.ready_session(), "[twice] cache")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == "777"
    subs = [c for c in api.provider.calls if c["role"] == "sub"]
    assert [c["prompt"] for c in subs] == ["<c7> same prompt", "<c7> hot"]
    assert execution.budgets_consumed.cache_hits == 1


def test_rlm_query_runs_a_child_whose_citations_are_the_parents(api: Api) -> None:
    decision = "Decision: ship v2 on 1 April."
    api.provider.script["executions"] = [
        {
            "match": "[parent]",
            "root": [block("tool.FINAL('child says: ' + rlm_query('[child] decided?', doc_indices=[1]))")],
        },
        {
            "match": "[child]",
            "root": [
                block(
                    "hit = context[0].find('Decision:')[0]\n"
                    f"tool.FINAL(context[0][hit['start_char']:hit['start_char'] + {len(decision)}])"
                )
            ],
        },
    ]
    execution = start(api, api.ready_session(), "[parent] what was decided")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == "child says: " + decision
    assert execution.budgets_consumed.rlm_subcalls == 1 and execution.budgets_consumed.turns == 1
    (ref,) = execution.citations
    assert (ref.doc_index, ref.start_char, ref.end_char) == (
        1,
        NOTES.index(decision),
        NOTES.index(decision) + len(decision),
    )
    engine = api.plane.engine
    (child,) = engine.children(engine.get("tenant-a", execution.execution_id))
    assert child["depth"] == 1 and child["status"] == "COMPLETED"


def test_a_recursion_bomb_through_rlm_query_stops_at_max_depth_and_budgets(api: Api) -> None:
    """Every execution answers by asking a child the same question: the
    tree stops at max_depth (each refusal comes back as an Error: text), and
    never creates more children than max_rlm_subcalls."""
    api.provider.script["executions"] = [
        {
            "match": "[bomb]",
            "root": [
                block(
                    "a = rlm_query('[bomb] again')\nb = rlm_query('[bomb] again!')\ntool.FINAL(a + ' / ' + b)"
                )
            ],
        }
    ]
    execution = start(api, api.ready_session(), "[bomb] go", budgets=Budgets(max_depth=2, max_rlm_subcalls=3))
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    engine = api.plane.engine
    tree: list[ExecutionRecord] = []
    frontier = [engine.get("tenant-a", execution.execution_id)]
    while frontier:
        node = frontier.pop()
        tree.append(node)
        frontier.extend(engine.children(node))
    assert max(int(n.get("depth") or 0) for n in tree) == 2
    assert len(tree) - 1 <= 3 and execution.budgets_consumed.rlm_subcalls <= 3
    assert "Error: BUDGET_EXCEEDED: max_depth reached" in json.dumps([n.get("answer") for n in tree])


def test_runtime_steps_call_inline_too(api: Api) -> None:
    api.provider.script["sub"] = _chunk_script()
    execution_id = api.runtime_execution()
    result = api.executions.RunStep(
        execution_pb2.RunStepRequest(execution_id=execution_id, code="print(llm_query('<c4> x'))"),
        metadata=api.auth(),
    )
    assert result.success and result.stdout == "4\n"
    record = api.plane.engine.get("tenant-a", execution_id)
    assert record["budgets_consumed"]["llm_subcalls"] == 1


class _TimedSandbox(InProcessSandbox):
    """The in-process sandbox, noting when each step came back."""

    def __init__(self) -> None:
        self.returned: list[float] = []

    def run_step(self, request: StepRequest, inline: Inline | None = None) -> StepResult:
        try:
            return super().run_step(request, inline)
        finally:
            self.returned.append(time.monotonic())


def test_cancel_interrupts_a_step_waiting_on_an_inline_call(tmp_path: Path) -> None:
    sandbox = _TimedSandbox()
    with control_plane(tmp_path, sandbox) as api:
        entered = threading.Event()
        plain = api.provider.complete

        def slow(model: str, messages: list[dict[str, str]], **kw: Any) -> Completion:
            context: CallContext = kw["context"]
            if context.role == "sub":
                entered.set()
                time.sleep(8)
            return plain(model, messages, **kw)

        api.provider.complete = slow  # type: ignore[method-assign]
        api.provider.script["executions"] = [
            {"match": "[slow]", "root": [block("tool.FINAL(llm_query('wait'))")]}
        ]
        started = api.executions.StartExecution(
            execution_pb2.StartExecutionRequest(session_id=api.ready_session(), question="[slow] q"),
            metadata=api.auth(),
        )
        assert entered.wait(10)
        cancelled_at = time.monotonic()
        api.executions.CancelExecution(
            execution_pb2.CancelExecutionRequest(execution_id=started.execution_id), metadata=api.auth()
        )
        give_up = time.monotonic() + 5
        while not sandbox.returned and time.monotonic() < give_up:
            time.sleep(0.02)
        assert sandbox.returned, "the waiting step was not interrupted"
        assert sandbox.returned[0] - cancelled_at < 1.5  # not the 8 s the call takes
        record = api.plane.engine.get("tenant-a", started.execution_id)
        assert record["status"] == "CANCELLED" and int(record["next_turn"]) == 0  # nothing committed


def test_waiting_does_not_count_against_max_step_seconds(api: Api) -> None:
    plain = api.provider.complete

    def slow(model: str, messages: list[dict[str, str]], **kw: Any) -> Completion:
        if kw["context"].role == "sub":
            time.sleep(1.5)
        return plain(model, messages, **kw)

    api.provider.complete = slow  # type: ignore[method-assign]
    api.provider.script["executions"] = [
        {"match": "[patient]", "root": [block("tool.FINAL(llm_query('<c5> x'))")]}
    ]
    api.provider.script["sub"] = _chunk_script()
    execution = start(api, api.ready_session(), "[patient] q", budgets=Budgets(max_step_seconds=1))
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == "5"
    assert REPORT  # the session's documents were the usual two
