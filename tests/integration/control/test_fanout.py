"""Fan-out through a real control plane: sub-calls scale past the old 8 per
process, one tenant's fan-out does not starve another's, and the children of
one step run concurrently, each with its share of the parent's budgets
reserved while it runs and the unused part returned."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from rlm_rs.providers.base import Completion
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import Budgets
from tests.integration.control.conftest import Api


class Slow:
    """Makes the scripted provider's sub-calls take `seconds`, counting how
    many (of those whose prompt holds `only`) are in flight at once."""

    def __init__(self, api: Api, seconds: float, only: str = "") -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        inner: Callable[..., Completion] = api.provider.complete

        def complete(model: str, messages: list[dict[str, str]], **kwargs: Any) -> Completion:
            if kwargs["context"].role == "root" or only not in messages[-1]["content"]:
                return inner(model, messages, **kwargs)
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                time.sleep(self.seconds)
                return inner(model, messages, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1

        api.provider.complete = complete  # type: ignore[method-assign]


def _fan_out_step(api: Api, execution_id: str, calls: int) -> Any:
    batches = [
        f"tool.queue_llm_batch('b{i}', ['p {i} ' + str(j) for j in range(100)])" for i in range(calls // 100)
    ]
    singles = [f"tool.queue_llm('s{i}', 'single {i}')" for i in range(calls % 100)]
    code = "\n".join([*batches, *singles, "tool.YIELD()"])
    return api.executions.RunStep(
        execution_pb2.RunStepRequest(
            execution_id=execution_id, code=code, options=execution_pb2.RunStepOptions(resolve_tools=True)
        ),
        metadata=api.auth(),
    )


def _tenant(api: Api, tenant: str) -> Api:
    key, _ = api.plane.storage.metadata.create_api_key(tenant, name="tests")
    return dataclasses.replace(api, key=key)


def test_four_executions_run_many_more_sub_calls_at_once_than_eight(api: Api) -> None:
    slow = Slow(api, 0.05)
    tenants = [api, api, _tenant(api, "tenant-b"), _tenant(api, "tenant-b")]
    executions = [(t, t.runtime_execution(max_tool_requests_per_step=200)) for t in tenants]
    results: list[Any] = []
    started = time.perf_counter()
    threads = [
        threading.Thread(target=lambda t=t, e=e: results.append(_fan_out_step(t, e, 200)))
        for t, e in executions
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert len(results) == 4 and all(r.success for r in results)
    assert all(set(json.loads(r.state_json)["_tool_status"].values()) == {"resolved"} for r in results)
    # 800 calls of 50 ms: 8 at a time took 5 s; the process's 64 (32 per execution, 48 per tenant) ~0.7 s
    assert slow.peak >= 32, slow.peak
    print(f"4 executions x 200 sub-calls of 50 ms: {elapsed:.2f} s, peak {slow.peak} in flight")


def test_one_tenants_fan_out_does_not_starve_another(api: Api) -> None:
    slow = Slow(api, 0.05)
    other = _tenant(api, "tenant-b")
    big = api.runtime_execution(max_tool_requests_per_step=1_000, max_llm_subcalls=1_000)
    small = other.runtime_execution()
    big_done = threading.Event()

    def run_big() -> None:
        _fan_out_step(api, big, 1_000)
        big_done.set()

    runner = threading.Thread(target=run_big)
    runner.start()
    deadline = time.monotonic() + 30
    while slow.running < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.perf_counter()
    result = _fan_out_step(other, small, 2)
    waited = time.perf_counter() - started
    assert result.success and json.loads(result.state_json)["_tool_status"] == {
        "s0": "resolved",
        "s1": "resolved",
    }
    # behind a FIFO of 1,000 calls of 50 ms it would wait for most of them (>= 1.5 s at 32 at once)
    assert not big_done.is_set() and waited < 1.0, waited
    print(f"2 calls of another tenant behind a 1,000-call fan-out: answered in {waited:.2f} s")
    runner.join()


KID = (
    "```repl\n"
    "if 'k' in state['_tool_results']['llm']:\n"
    "    tool.FINAL(state['_tool_results']['llm']['k']['text'])\n"
    "else:\n"
    "    tool.queue_llm('k', 'slow child call')\n"
    "    tool.YIELD()\n"
    "```"
)
PARENT = [
    "```repl\n"
    "for name in ('one', 'two', 'three'):\n"
    "    tool.queue_rlm(name, '[kid] ' + name, doc_indices=[0])\n"
    "tool.YIELD()\n"
    "```",
    "```repl\n"
    "state['work']['kids'] = sorted(r['text'] for r in state['_tool_results']['rlm'].values())\n"
    "for i in range(7):\n"
    "    tool.queue_llm('p' + str(i), 'parent call ' + str(i))\n"
    "tool.YIELD()\n"
    "```",
    "```repl\n"
    "ok = [k for k, v in state['_tool_status'].items() if v == 'resolved']\n"
    "tool.FINAL(str(len(ok)) + ' ' + ','.join(state['work']['kids']))\n"
    "```",
]


def test_children_of_one_step_run_concurrently_with_their_budgets_reserved(api: Api) -> None:
    slow = Slow(api, 0.4, only="slow child")
    api.provider.script["executions"] = [
        {"match": "[kid]", "root": [KID]},
        {"match": "[parent]", "root": PARENT},
    ]
    api.provider.script["sub"] = [{"match": "slow child", "text": "kid-answer"}]
    api.provider.script["default_sub"] = "ok"
    session_id = api.ready_session()
    started = time.perf_counter()
    done = api.executions.StartExecution(
        execution_pb2.StartExecutionRequest(
            session_id=session_id,
            question="[parent] fan out to children",
            budgets=Budgets(max_llm_subcalls=10),
            options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=60),
        ),
        metadata=api.auth(),
    )
    elapsed = time.perf_counter() - started
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED, done.error
    # the parent's own seven calls all resolved: the children's unused reservations came back
    assert done.answer == "7 kid-answer,kid-answer,kid-answer"
    assert done.budgets_consumed.llm_subcalls == 10 and done.budgets_consumed.rlm_subcalls == 3
    children = api.plane.engine.children(api.plane.engine.get("tenant-a", done.execution_id))
    # each child's share of the parent's 10 sub-calls was reserved as it started: never more than 10 in all
    shares = sorted(int(c["budgets_requested"]["max_llm_subcalls"]) for c in children)
    assert shares == [3, 3, 4] and sum(shares) <= 10
    assert slow.peak >= 3  # the three children's 0.4 s calls ran at once
    print(f"3 children with a 0.4 s sub-call each: {elapsed:.2f} s, {slow.peak} child calls at once")
