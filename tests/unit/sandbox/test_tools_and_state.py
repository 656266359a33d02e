"""ToolAPI requests, YIELD/FINAL, JSON state rules and reserved keys."""

from __future__ import annotations

import json

from rlm_rs.v1.common_pb2 import Budgets
from tests.unit.sandbox.conftest import Runner, state_of


def test_queue_llm_records_the_spec_shape(run: Runner) -> None:
    result = run(
        "tool.queue_llm('k1', 'Summarise: ' + context[1][:20], max_tokens=64, "
        "metadata={'doc': 1})\ntool.YIELD('waiting for k1')"
    )
    assert result.success, result.error
    (request,) = result.tool_requests.llm
    assert (request.key, request.model_hint, request.max_tokens, request.temperature) == (
        "k1",
        "sub",
        64,
        0.0,
    )
    assert request.prompt.startswith("Summarise: Meeting")
    assert json.loads(request.metadata_json) == {"doc": 1}
    assert result.yield_reason == "waiting for k1"
    assert not result.final.is_final


def test_queue_search_only_when_enabled(run: Runner) -> None:
    refused = run("tool.queue_search('s', 'revenue')")
    assert refused.error.code == "SANDBOX_RUNTIME_ERROR"
    assert "search is not enabled" in refused.error.message
    allowed = run("tool.queue_search('s', 'revenue', k=3, filters={'doc_ids': ['doc-0']})",
                  enable_search=True)  # fmt: skip
    (request,) = allowed.tool_requests.search
    assert (request.key, request.query, request.k, list(request.filters.doc_ids)) == (
        "s",
        "revenue",
        3,
        ["doc-0"],
    )


def test_queue_llm_refused_when_subcalls_disabled(run: Runner) -> None:
    result = run("tool.queue_llm('k', 'hi')", enable_llm=False)
    assert "sub-calls are disabled" in result.error.message


def test_duplicate_key_and_long_prompt_are_errors_the_model_can_catch(run: Runner) -> None:
    code = (
        "tool.queue_llm('k', 'a')\n"
        "try:\n    tool.queue_llm('k', 'b')\nexcept ValueError as e:\n    print('dup', e)\n"
        "try:\n    tool.queue_llm('j', 'x' * 50)\nexcept ValueError as e:\n    print('long')\n"
    )
    result = run(code, max_llm_prompt_chars=10)
    assert result.success, result.error
    assert "dup" in result.stdout and "long" in result.stdout
    assert [r.key for r in result.tool_requests.llm] == ["k"]


def test_too_many_tool_requests_end_the_step(run: Runner) -> None:
    result = run("for i in range(5):\n    tool.queue_llm(f'k{i}', 'p')",
                 max_tool_requests_per_step=3)  # fmt: skip
    assert result.error.code == "BUDGET_EXCEEDED"
    assert len(result.tool_requests.llm) == 0  # a failed step queues nothing


def test_final_with_json_answer_is_canonical(run: Runner) -> None:
    result = run("tool.FINAL({'b': 2, 'a': [1]})")
    assert result.final.is_final and result.final.answer == '{"a":[1],"b":2}'


def test_schema_describes_the_tools(run: Runner) -> None:
    result = run("state['s'] = tool.schema()")
    schema = state_of(result)["s"]
    assert schema["queue_llm"]["enabled"] is True and schema["queue_search"]["enabled"] is False


def test_reserved_keys_are_read_only(run: Runner) -> None:
    state = {"_tool_results": {"llm": {"k": {"text": "42", "meta": {}}}}, "_budgets": {"t": 1}}
    code = (
        "answer = state['_tool_results']['llm']['k']['text']\n"
        "state['_tool_results']['llm']['k']['text'] = 'forged'\n"
        "state['_budgets'] = {'t': 999}\nstate['_new'] = 1\nstate['work'] = {'a': answer}\n"
    )
    result = run(code, state=state)
    assert result.success, result.error
    assert state_of(result) == {**state, "work": {"a": "42"}}


def test_state_must_stay_json(run: Runner) -> None:
    for code, path in [
        ("state['x'] = {1: 'a'}", "state['x']"),
        ("state['x'] = float('nan')", "state['x']"),
        ("state['x'] = [set()]", "state['x'][0]"),
        ("state['x'] = range(3)", "state['x']"),
    ]:
        result = run(code, state={"keep": 1})
        assert result.error.code == "STATE_INVALID_TYPE", code
        assert path in result.error.message
        assert state_of(result) == {"keep": 1}


def test_tuples_become_lists(run: Runner) -> None:
    assert state_of(run("state['t'] = (1, (2, 3))")) == {"t": [1, [2, 3]]}


def test_state_too_large_keeps_the_old_state(run: Runner) -> None:
    result = run("state['big'] = 'x' * 2000", state={"keep": True}, max_state_chars=1000)
    assert result.error.code == "STATE_TOO_LARGE"
    assert state_of(result) == {"keep": True}


def test_max_state_chars_bounds_the_model_owned_keys_not_the_tool_results(run: Runner) -> None:
    """Tool results used to count: ~3,000 short results made every later step STATE_TOO_LARGE."""
    results = {"llm": {f"k{i}": {"text": "x" * 100, "meta": {}} for i in range(50)}}
    fine = run("state['work'] = 'y' * 500", state={"_tool_results": results}, max_state_chars=1000)
    assert fine.success, fine.error
    assert len(fine.state_json) > 5000 and json.loads(fine.state_json)["_tool_results"] == results
    over = run("state['work'] = 'y' * 1000", state={"_tool_results": results}, max_state_chars=1000)
    assert over.error.code == "STATE_TOO_LARGE"


def test_rebinding_state_to_a_non_dict_is_refused(run: Runner) -> None:
    result = run("state = [1, 2]")
    assert result.error.code == "STATE_INVALID_TYPE"


def test_invalid_input_state_is_refused(run: Runner) -> None:
    from rlm_rs.sandbox.executor import run_step
    from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest

    result = run_step(StepRequest(code="x = 1", state_json="[1]"))
    assert result.error.code == "STATE_INVALID_TYPE"


def test_queue_llm_batch_counts_each_prompt_as_a_request(run: Runner) -> None:
    ok = run(
        "tool.queue_llm_batch('b', ['p1', 'p2'], max_tokens=8)\ntool.YIELD()", max_tool_requests_per_step=3
    )
    (batch,) = ok.tool_requests.llm_batch
    assert (batch.key, list(batch.prompts), batch.max_tokens) == ("b", ["p1", "p2"], 8)
    too_many = run("tool.queue_llm_batch('b', ['p1', 'p2'])\ntool.queue_llm('c', 'p3')\ntool.queue_llm('d', 'p4')",
                   max_tool_requests_per_step=3)  # fmt: skip
    assert too_many.error.code == "BUDGET_EXCEEDED"
    for code, fragment in [("tool.queue_llm_batch('b', [])", "prompts must be a list"),
                           ("tool.queue_llm_batch('b', ['ok', 3])", "prompts[1]"),
                           ("tool.queue_llm_batch('b', 'not a list')", "prompts must be a list")]:  # fmt: skip
        result = run(code)
        assert result.error.code == "SANDBOX_RUNTIME_ERROR" and fragment in result.error.message, code


def test_queue_rlm_records_a_child_over_documents_or_spans(run: Runner) -> None:
    whole = run(
        "tool.queue_rlm('c', 'What changed?', doc_indices=[1], budgets={'max_turns': 3})\ntool.YIELD()"
    )
    (request,) = whole.tool_requests.rlm
    assert (request.key, request.question, list(request.doc_indices)) == ("c", "What changed?", [1])
    assert request.budgets == Budgets(max_turns=3) and not request.budgets.HasField("max_depth")
    spans = run(
        "tool.queue_rlm('s', 'q', spans=[[0, 5, 40], {'doc_index': 1, 'start_char': 0, 'end_char': 9}])"
    )
    assert [(s.doc_index, s.start_char, s.end_char) for s in spans.tool_requests.rlm[0].spans] == [
        (0, 5, 40),
        (1, 0, 9),
    ]
    assert not spans.tool_requests.rlm[0].HasField("budgets")
    typed = run(
        "tool.queue_rlm('t', 'q', budgets={'max_turns': 3.0, 'max_total_seconds': 60, 'max_depth': 0})"
    )
    assert typed.tool_requests.rlm[0].budgets == Budgets(max_turns=3, max_total_seconds=60.0, max_depth=0)
    assert typed.tool_requests.rlm[0].budgets.HasField("max_depth")  # an explicit zero is kept


def test_queue_rlm_arguments_are_checked_before_anything_is_queued(run: Runner) -> None:
    for code, fragment in [("tool.queue_rlm('c', '')", "question must be"),
                           ("tool.queue_rlm('c', 'q', doc_indices=[0], spans=[[0, 1, 2]])", "not both"),
                           ("tool.queue_rlm('c', 'q', doc_indices=[-1])", "doc_indices must hold"),
                           ("tool.queue_rlm('c', 'q', spans=[[0, 9, 3]])", "start < end"),
                           ("tool.queue_rlm('c', 'q', spans=[[0, 1]])", "spans[0]"),
                           ("tool.queue_rlm('c', 'q', budgets={'max_turns': 'many'})", "budgets must be"),
                           ("tool.queue_rlm('c', 'q', budgets={'max_turnz': 3})", "not 'max_turnz'"),
                           ("tool.queue_rlm('c', 'q', budgets={'max_turns': 2.5})", "must be a whole number"),
                           ("tool.queue_rlm('c', 'q', budgets={'max_turns': 2 ** 40})", "out of range")]:  # fmt: skip
        result = run(code)
        assert result.error.code == "SANDBOX_RUNTIME_ERROR" and fragment in result.error.message, code
        assert not result.tool_requests.rlm
    disabled = run("tool.queue_rlm('c', 'q')", enable_rlm=False)
    assert "queue_rlm) are disabled" in disabled.error.message
