"""Every example step in every variant of the root prompt runs unchanged
through the sandbox's executor (the policy layers of a real step: reply
parsing, AST policy, RestrictedPython, the step API), over a small corpus,
with inline calls answered by a rule-based channel. A prompt that teaches
code the sandbox refuses fails here."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from rlm_rs.control.prompts import examples, system_prompt
from rlm_rs.sandbox._replies import code_blocks
from rlm_rs.sandbox.executor import run_step
from rlm_rs.sandbox.policy import default_step_limits
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument, InlineCall, InlineReply, StepRequest
from tests.unit.sandbox.conftest import write_docs

RECORDS = "".join(
    f"rec-{i:03d} | 2024-03-{i % 28 + 1:02d} | user{i % 7} | "
    + ("asked for a refund, box broken" if i % 5 == 0 else "arrived quickly, thanks")
    + "\n"
    for i in range(120)
)
NOTES = "Meeting notes, 3 March\nDecision: ship v2 on 1 April.\nAction: Bo drafts the release note.\n"
VARIANTS = list(itertools.product([True, False], repeat=3))  # subcalls, rlm, contexts


def _answer(call: InlineCall, timeout: float) -> InlineReply:
    """The sub-model: counts refund lines; a child RLM: a fixed answer."""
    kind = call.WhichOneof("call")
    if kind == "llm_batch":
        texts = [json.dumps({"complaints": p.count("refund")}) for p in call.llm_batch.prompts]
    elif kind == "llm":
        texts = [json.dumps({"complaints": call.llm.prompt.count("refund")})]
    else:
        texts = ["Ship v2 on 1 April (decided 3 March)."]
    return InlineReply(call_id=call.call_id, texts=texts, errors=[""] * len(texts))


@pytest.fixture
def corpus(tmp_path: Path) -> list[ContextDocument]:
    return write_docs(tmp_path, [RECORDS, NOTES])


def _prompt(subcalls: bool, rlm: bool, contexts: bool) -> str:
    return system_prompt(
        doc_count=2, subcalls=subcalls, search=False, contexts=contexts, max_stdout_chars=15_000, rlm=rlm
    )


@pytest.mark.parametrize(("subcalls", "rlm", "contexts"), VARIANTS)
def test_every_example_in_the_prompt_runs_unchanged(
    corpus: list[ContextDocument], subcalls: bool, rlm: bool, contexts: bool
) -> None:
    prompt = _prompt(subcalls, rlm, contexts)
    blocks = code_blocks(prompt)
    assert blocks == code_blocks(examples(subcalls=subcalls, rlm=rlm, contexts=contexts))
    assert len(blocks) == 2 + 3 * subcalls + rlm
    policy = default_step_limits()
    policy.enable_llm, policy.enable_rlm = subcalls, rlm
    state: dict[str, object] = {"work": {}}
    for code in blocks:
        result = run_step(
            StepRequest(code=code, state_json=json.dumps(state), context_manifest=corpus, limits=policy),
            inline=_answer,
        )
        assert result.success, (code, result.error)
        state = json.loads(result.state_json)
        if result.yield_reason:  # the queued example: the control plane answers before the next step
            batch = result.tool_requests.llm_batch[0]
            state["_tool_results"] = {
                "llm_batch": {
                    batch.key: {"results": [{"text": "One line.", "meta": {}} for _ in batch.prompts]}
                }
            }
            state["_tool_status"] = {batch.key: "resolved"}
        else:
            state.pop("_tool_results", None)
            state.pop("_tool_status", None)
    assert result.final.is_final  # every variant's examples end with an answer
    work = state["work"]
    assert isinstance(work, dict) and work["refund_hits"]
    if subcalls:
        assert work["complaints"] == RECORDS.count("refund") == 24
        assert work["summaries"]
    if rlm:
        assert "1 April" in work["decisions"]
    if contexts:
        assert [s.tag for s in result.span_log if s.tag] == ["context"] * 3


@pytest.mark.parametrize(("subcalls", "rlm", "contexts"), VARIANTS)
def test_the_prompt_states_the_effective_limits(subcalls: bool, rlm: bool, contexts: bool) -> None:
    limits = {"max_tool_requests_per_step": 40, "max_llm_subcalls": 777, "max_step_seconds": 12.5}
    text = system_prompt(
        doc_count=1, subcalls=subcalls, search=False, contexts=contexts, max_stdout_chars=100, rlm=rlm,
        limits=limits,
    )  # fmt: skip
    assert "12.5 s of compute per step" in text
    assert ("777 sub-calls in all" in text) == subcalls
    assert ("40 queued requests per step" in text) == subcalls
    assert ("up to 100 prompts per llm_query_batched call" in text) == subcalls
    if subcalls:
        assert 'tool.queue_llm_batch("summaries", prompts[:40])' in text  # sized by the effective cap
        assert "batch: many records in each prompt" in text
    assert "never one per chunk" not in text
    assert ('state["_tool_results"][kind][key]' in text) == (subcalls or rlm)
