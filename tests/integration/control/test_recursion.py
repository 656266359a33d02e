"""Recursive sub-executions (tool.queue_rlm) and root-history compaction over a
real gRPC socket, with the scripted root model answering each execution of the
tree by its question."""

from __future__ import annotations

import gzip
import json
import time

from rlm_rs.control.sessions import load_session
from rlm_rs.v1 import citation_pb2, execution_pb2
from rlm_rs.v1.common_pb2 import Budgets, SpanRef
from tests.integration.control.conftest import NOTES, REPORT, Api
from tests.integration.control.test_executions import block, start

RISKS_LINE = REPORT[REPORT.index("Risks:") : REPORT.index("2027.") + 5]
LEASE = "the data centre lease ends in 2027"
DECISION = "Decision: ship v2 on 1 April."


def _tree_script() -> list[dict[str, object]]:
    risks_start = REPORT.index("Risks:")
    lease_in_risks = RISKS_LINE.index(LEASE)
    return [
        {
            "match": "[root]",
            "root": [
                block(
                    f"tool.queue_rlm('risks', '[risks] What are the risks?', spans=[[0, {risks_start}, "
                    f"{risks_start + len(RISKS_LINE)}]])\n"
                    "tool.queue_rlm('notes', '[notes] What was decided?', doc_indices=[1])\n"
                    "tool.YIELD('children')"
                ),
                block(
                    "rlm = state['_tool_results']['rlm']\n"
                    "print(state['_tool_status'])\n"
                    "tool.FINAL(rlm['risks']['text'] + ' | ' + rlm['notes']['text'])"
                ),
            ],
        },
        {
            "match": "[risks]",
            "root": [
                block(
                    "print(len(context), len(context[0]))\n"
                    f"tool.queue_rlm('lease', '[lease] When does the lease end?', "
                    f"spans=[[0, {lease_in_risks}, {lease_in_risks + len(LEASE)}]])\n"
                    "tool.YIELD('grandchild')"
                ),
                block(
                    "hit = context[0].find('currency')[0]\n"
                    "word = context[0][hit['start_char']:hit['end_char']]\n"
                    "tool.FINAL(word + ' risk; ' + state['_tool_results']['rlm']['lease']['text'])"
                ),
            ],
        },
        {"match": "[lease]", "root": [block("tool.FINAL(context[0][0:len(context[0])])")]},
        {
            "match": "[notes]",
            "root": [
                block(
                    "hit = context[0].find('Decision:')[0]\n"
                    f"tool.FINAL(context[0][hit['start_char']:hit['start_char'] + {len(DECISION)}])"
                )
            ],
        },
    ]


def _verify_all(api: Api, refs: list[SpanRef]) -> list[str]:
    texts = []
    for ref in refs:
        verified = api.citations.VerifyCitation(
            citation_pb2.VerifyCitationRequest(ref=ref), metadata=api.auth()
        )
        assert verified.valid, ref
        texts.append(verified.text)
    return texts


def test_depth_two_tree_answers_with_citations_that_verify_against_the_parent_session(api: Api) -> None:
    api.provider.script["executions"] = _tree_script()
    session_id = api.ready_session()
    execution = start(api, session_id, "[root] Risks and decisions?")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == f"currency risk; {LEASE} | {DECISION}"
    consumed = execution.budgets_consumed
    assert consumed.rlm_subcalls == 3 and consumed.turns == 2  # two children and one grandchild
    texts = _verify_all(api, list(execution.citations))
    # the grandchild read the lease clause of a derived span document; the child
    # read "currency" in its own derived document; the notes child a whole document:
    # every citation points at the session's own documents
    assert LEASE in texts and "currency" in texts and DECISION in texts
    by_text = dict(zip(texts, execution.citations, strict=True))
    assert (by_text[LEASE].doc_index, by_text[LEASE].start_char) == (0, REPORT.index(LEASE))
    assert (by_text[DECISION].doc_index, by_text[DECISION].start_char) == (1, NOTES.index(DECISION))

    engine = api.plane.engine
    parent = engine.get("tenant-a", execution.execution_id)
    children = engine.children(parent)
    assert [(c["depth"], c["status"]) for c in children] == [(1, "COMPLETED"), (1, "COMPLETED")]
    risks, notes = children
    corpus = notes.get("corpus")
    assert risks["parent_execution_id"] == execution.execution_id and corpus and corpus[0]["whole"]
    # span documents live only while their child runs
    assert not (engine.docs.cache_dir / "derived" / risks["execution_id"]).exists()
    (grandchild,) = engine.children(risks)
    assert grandchild["depth"] == 2 and grandchild["answer"] == LEASE
    assert int(grandchild["citations"][0]["start_char"]) == REPORT.index(LEASE)
    # each child's own budgets were capped by its share of what its parent had left: of the
    # parent's 10 rlm sub-calls, one for each child and half of the other 8 each (children.py)
    assert (
        risks["budgets_requested"]["max_depth"] == 2 and risks["budgets_requested"]["max_rlm_subcalls"] == 4
    )
    assert grandchild["budgets_requested"]["max_rlm_subcalls"] == 3
    assert notes["budgets_requested"]["max_rlm_subcalls"] == 4  # started while risks held its 1 + 4

    steps = api.executions.ListSteps(
        execution_pb2.ListStepsRequest(execution_id=execution.execution_id), metadata=api.auth()
    ).steps
    results = json.loads(steps[0].state_json)["_tool_results"]["rlm"]  # the step that queued them
    assert results["notes"]["meta"]["status"] == "COMPLETED" and results["notes"]["meta"]["depth"] == 1
    assert results["risks"]["citations"] and results["risks"]["meta"]["execution_id"] == risks["execution_id"]

    trace_key = execution.trace_s3_uri.split("/", 3)[3]
    trace = json.loads(gzip.decompress(api.plane.storage.blobs.get(trace_key)))
    assert [c["execution_id"] for c in trace["children"]] == [risks["execution_id"], notes["execution_id"]]
    assert trace["children"][0]["children"][0]["final"]["answer"] == LEASE
    events = [e["type"] for e in engine.events.after(execution.execution_id)]
    assert events.count("child_started") == 2 and events.count("child_finished") == 2
    assert events[-1] == "status"


def test_max_depth_is_refused_with_a_tool_error_the_model_can_read(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "[top]",
            "root": [
                block("tool.queue_rlm('c', '[middle] go deeper')\ntool.YIELD()"),
                block("tool.FINAL(state['_tool_results']['rlm']['c']['text'])"),
            ],
        },
        {
            "match": "[middle]",
            "root": [
                block("tool.queue_rlm('d', '[bottom] too deep')\ntool.YIELD()"),
                block(
                    "r = state['_tool_results']['rlm']['d']\n"
                    "tool.FINAL(state['_tool_status']['d'] + ': ' + r['meta']['error'])"
                ),
            ],
        },
        {"match": "[bottom]", "root": [block("tool.FINAL('should never run')")]},
    ]
    session_id = api.ready_session()
    execution = start(api, session_id, "[top] recurse", budgets=Budgets(max_depth=1))
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == (
        "error: BUDGET_EXCEEDED: max_depth reached: this execution is at depth 1 and max_depth is 1"
    )
    assert execution.budgets_consumed.rlm_subcalls == 1  # the refused grandchild never existed
    (middle,) = api.plane.engine.children(api.plane.engine.get("tenant-a", execution.execution_id))
    assert middle["depth"] == 1 and api.plane.engine.children(middle) == []


def test_a_child_never_exceeds_what_its_parent_has_left(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "[parent]",
            "root": [
                block(
                    "tool.queue_rlm('a', '[greedy] ask a lot', budgets={'max_llm_subcalls': 10})\n"
                    "tool.queue_rlm('b', '[second] one more child')\n"
                    "tool.YIELD()"
                ),
                block(
                    "r = state['_tool_results']['rlm']\n"
                    "b = state['_tool_status']['b'] + ': ' + r['b']['meta']['error']\n"
                    "tool.FINAL(r['a']['text'] + ' / ' + b)"
                ),
            ],
        },
        {
            "match": "[greedy]",
            "root": [
                block(
                    "for i in range(3):\n    tool.queue_llm('q' + str(i), 'question ' + str(i))\ntool.YIELD()"
                ),
                block("s = state['_tool_status']\ntool.FINAL(','.join([s['q0'], s['q1'], s['q2']]))"),
            ],
        },
    ]
    session_id = api.ready_session()
    execution = start(
        api, session_id, "[parent] budgets", budgets=Budgets(max_llm_subcalls=2, max_rlm_subcalls=1)
    )
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == (
        "resolved,resolved,error / error: BUDGET_EXCEEDED: rlm sub-call budget spent (max_rlm_subcalls=1)"
    )
    (child,) = api.plane.engine.children(api.plane.engine.get("tenant-a", execution.execution_id))
    assert child["budgets_requested"]["max_llm_subcalls"] == 2  # asked for 10, the parent had 2 left
    assert child["budgets_requested"]["max_rlm_subcalls"] == 0
    # the child's sub-calls count against the parent's budget
    assert execution.budgets_consumed.llm_subcalls == 2 and execution.budgets_consumed.rlm_subcalls == 1
    assert execution.budgets_consumed.input_tokens > 0


def test_bad_sub_corpus_is_a_tool_error(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "[bad]",
            "root": [
                block("tool.queue_rlm('x', '[child] q', doc_indices=[7])\ntool.YIELD()"),
                block("tool.FINAL(state['_tool_results']['rlm']['x']['meta']['error'])"),
            ],
        }
    ]
    execution = start(api, api.ready_session(), "[bad] corpus")
    assert execution.answer == "VALIDATION_ERROR: doc_index 7 is not in the corpus (0..1)"
    assert execution.budgets_consumed.rlm_subcalls == 0


def test_long_history_is_compacted_by_a_sub_call_and_kept_in_state(api: Api) -> None:
    engine = api.plane.engine
    engine.settings = api.settings.model_copy(update={"root_context_tokens": 3_000, "compaction_share": 0.85})
    chatter = block("print('x' * 1500)\nstate['work']['n'] = state['work'].get('n', 0) + 1")
    api.provider.script["executions"] = [
        {"match": "[long]", "root": [chatter] * 4 + [block("tool.FINAL(str(state['work']['n']))")]}
    ]
    api.provider.script["sub"] = [{"match": "You are compacting", "text": "SUMMARY: printed x four times"}]
    execution = start(api, api.ready_session(), "[long] keep talking")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED and execution.answer == "4"
    compactions = [c for c in api.provider.calls if c["role"] == "compaction"]
    assert compactions and "--- turn 1 ---" in compactions[0]["prompt"]
    roots = [c["prompt"] for c in api.provider.calls if c["role"] == "root"]
    assert "Summary of earlier work:\nSUMMARY: printed x four times" in roots[-1]
    # the prompt after a compaction is back under the threshold (chars / 4 tokens);
    # the context is small but holds the root prompt (about 6,000 chars) with room for turns
    print("PROMPT<<<" + roots[-1] + ">>>")
    assert len(roots[-1]) // 4 < 0.85 * 3_000
    state_json = engine.steps(engine.get("tenant-a", execution.execution_id))[-1]["state_json"]
    assert state_json is not None
    state = json.loads(state_json)
    assert state["_history"]["summary"] == "SUMMARY: printed x four times"
    assert state["_history"]["through_turn"] >= 1
    kinds = [e["type"] for e in engine.events.after(execution.execution_id)]
    assert "compaction" in kinds
    # the compaction call's tokens are counted
    assert execution.budgets_consumed.input_tokens > sum(len(p.split()) for p in roots)


def test_cancelling_a_parent_cancels_its_running_children(api: Api) -> None:
    engine = api.plane.engine
    session = load_session(engine.storage, "tenant-a", api.ready_session())
    parent = engine.create(
        "tenant-a", session, mode="ANSWERER", question="p", models={}, budgets={}, options={}
    )
    engine.storage.metadata.acquire_lease(  # another control plane "runs" it: the sweep leaves it alone
        "executions", f"SESSION#{parent['session_id']}", f"EXEC#{parent['execution_id']}",
        owner="elsewhere", ttl_seconds=60,
    )  # fmt: skip
    child = engine.create(
        "tenant-a", session, mode="ANSWERER", question="c", models={}, budgets={}, options={},
        extra={"parent_execution_id": parent["execution_id"], "depth": 1},
    )  # fmt: skip
    engine.records.update(parent, {"children": [child["execution_id"]]})
    assert engine.cancel("tenant-a", parent["execution_id"])["status"] == "CANCELLED"
    assert engine.get("tenant-a", child["execution_id"])["status"] == "CANCELLED"
    # the takeover sweep never starts a child on its own: its parent runs it
    orphan = engine.create(
        "tenant-a", session, mode="ANSWERER", question="o", models={}, budgets={}, options={},
        extra={"parent_execution_id": parent["execution_id"], "depth": 1},
    )  # fmt: skip
    engine.records.update(orphan, {"lease_owner": "", "lease_until": 0})  # its owner died long ago
    engine.recover_orphans()
    assert engine.get("tenant-a", orphan["execution_id"])["lease_owner"] == ""


def test_a_queued_execution_is_leased_from_birth_so_the_sweep_leaves_it_alone(api: Api) -> None:
    engine = api.plane.engine
    session = load_session(engine.storage, "tenant-a", api.ready_session())
    queued = engine.create(
        "tenant-a", session, mode="ANSWERER", question="q", models={}, budgets={}, options={}
    )
    assert queued["lease_owner"] == engine.owner and queued["lease_until"] > time.time()
    assert engine.recover_orphans() == 0  # not an orphan: its loop may just be waiting for a thread
    runtime = engine.create(
        "tenant-a", session, mode="RUNTIME", question="", models={}, budgets={}, options={}
    )
    assert not runtime.get("lease_owner")  # runtime executions have no loop to lease
