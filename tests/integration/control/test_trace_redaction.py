"""redact_trace holds on every copy of a trace (rlm_rs/control/executions/traces.py): the
stored blob, the inline trace_json (return_trace), a child's trace embedded in
its parent's, the child's own blob, and the live events of both; a real
control plane on a real socket, a scripted root model."""

from __future__ import annotations

import gzip
import json

from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import Api
from tests.integration.control.test_executions import block, start

SECRETS = ("kid-secret-question", "kid-secret-answer", "root-secret-stdout", "root-secret-answer")


def _script() -> list[dict[str, object]]:
    return [
        {
            "match": "[root]",
            "root": [
                block("tool.queue_rlm('kid', '[kid] kid-secret-question', doc_indices=[1])\ntool.YIELD()"),
                block(
                    "print('root-secret-stdout', state['_tool_results']['rlm']['kid']['text'])\n"
                    "tool.FINAL('root-secret-answer')"
                ),
            ],
        },
        {"match": "[kid]", "root": [block("print(context[0][0:7])\ntool.FINAL('kid-secret-answer')")]},
    ]


def _copies(api: Api, execution: execution_pb2.Execution) -> dict[str, str]:
    """Every stored or returned copy of the tree's traces and events, as text."""
    blobs = api.plane.storage.blobs
    engine = api.plane.engine
    child = execution.children[0]
    copies = {
        "trace_json": execution.trace_json,
        "blob": gzip.decompress(blobs.get(execution.trace_s3_uri.split("/", 3)[3])).decode(),
        "child_blob": gzip.decompress(blobs.get(child.trace_s3_uri.split("/", 3)[3])).decode(),
    }
    for name, execution_id in (("events", execution.execution_id), ("child_events", child.execution_id)):
        copies[name] = "\n".join(e["data_json"] for e in engine.events.after(execution_id))
    return copies


def test_redact_trace_holds_on_every_copy(api: Api) -> None:
    api.provider.script["executions"] = _script()
    execution = start(api, api.ready_session(), "[root] a question", return_trace=True, redact_trace=True)
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == "root-secret-answer"  # the result itself is the caller's
    copies = _copies(api, execution)
    for name, text in copies.items():
        assert text, name
        leaked = [secret for secret in SECRETS if secret in text]
        assert not leaked, (name, leaked)
    trace = json.loads(execution.trace_json)
    assert trace == json.loads(copies["blob"])  # one document, returned and stored
    assert trace["question"] == {"redacted": True, "chars": len("[root] a question")}
    assert trace["turns"][1]["lambda"]["stdout"]["redacted"] is True
    embedded = trace["children"][0]
    assert embedded["execution_id"] == execution.children[0].execution_id
    assert embedded["turns"][0]["code"]["redacted"] is True
    assert embedded["final"]["answer"] == {"redacted": True, "chars": len("kid-secret-answer")}
    step_events = [
        json.loads(e["data_json"])
        for e in api.plane.engine.events.after(execution.execution_id)
        if e["type"] == "step_result"
    ]
    assert step_events and all(e["stdout"]["redacted"] is True for e in step_events)


def test_without_redact_trace_every_copy_keeps_the_text(api: Api) -> None:
    """The control: the same tree without redact_trace carries every secret,
    so the assertions above would see a leak."""
    api.provider.script["executions"] = _script()
    execution = start(api, api.ready_session(), "[root] a question", return_trace=True)
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    copies = _copies(api, execution)
    everything = "\n".join(copies.values())
    assert all(secret in everything for secret in SECRETS)
    assert "root-secret-stdout" in copies["trace_json"] and "kid-secret-answer" in copies["child_events"]
