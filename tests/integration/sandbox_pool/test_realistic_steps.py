"""Realistic steps through the hardened pool never trip the seccomp allowlist:
every DocView helper, tools, YIELD/FINAL, state, errors with messages. A
LAMBDA_ERROR here would mean the allowlist misses a syscall the executor needs
(re-run this whenever glibc, CPython or the executor changes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm_rs.canonical import build_offsets
from rlm_rs.sandbox.client import PoolSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument, StepRequest

pytestmark = pytest.mark.root

TEXT = "Alpha section. The quick brown fox.\n\nBeta section: café naïve — ünïcode.\n" * 50
META = {
    "version": 1,
    "doc_id": "d0",
    "parser_version": "test",
    "structure": {
        "type": "document",
        "title": "t",
        "children": [
            {
                "type": "section",
                "title": "A",
                "level": 1,
                "start_char": 0,
                "end_char": 36,
                "page": 1,
                "children": [],
            },
        ],
    },
    "pages": [{"page_num": 1, "start_char": 0, "end_char": len(TEXT)}],
    "tables": [],
}

STEPS = {
    "slice_and_find": "d = context[0]\nprint(d[0:5], d.slice(6, 13, tag='context'))\n"
    "print(len(d.find('fox')))",
    "regex": "hits = context[0].regex(r'caf\\w+', max_hits=3)\nprint(len(hits))",
    "sections_pages": "d = context[0]\nprint(len(d.sections()), len(d.page_spans()))",
    "state_and_tools": "state['work'] = {'n': sorted([3, 1, 2]), 'z': list(zip([1], [2]))}\n"
    "tool.queue_llm('k1', 'summarise ' + context[0][0:20])\ntool.YIELD('wait')",
    "final": "tool.FINAL('the answer')",
    "runtime_error_message": "x = {}\nx['missing']",
    "unicode_and_fstring": "v = 3.5\nprint(f'{v:>8}|é', str(len('naïve')))",
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> ContextDocument:
    root: Path = tmp_path_factory.mktemp("docs")
    (root / "d0.txt").write_text(TEXT, encoding="utf-8")
    offsets = build_offsets(TEXT, "d0", interval=100)
    (root / "d0.offsets.json").write_text(json.dumps(offsets))
    (root / "d0.meta.json").write_text(json.dumps(META))
    return ContextDocument(
        doc_index=0,
        doc_id="d0",
        source_name="d0.txt",
        mime_type="text/plain",
        char_length=len(TEXT),
        byte_length=offsets["byte_length"],
        text_path=str(root / "d0.txt"),
        offsets_path=str(root / "d0.offsets.json"),
        meta_path=str(root / "d0.meta.json"),
    )


@pytest.mark.parametrize("name", sorted(STEPS))
def test_realistic_step_stays_inside_the_allowlist(
    pool: PoolSandbox, document: ContextDocument, name: str
) -> None:
    request = StepRequest(code=STEPS[name], state_json='{"work": {}}', context_manifest=[document])
    result = pool.run_step(request)
    assert result.error.code != "LAMBDA_ERROR", result.error
    assert result.isolation == "pool"
    if name == "runtime_error_message":
        assert result.error.code == "SANDBOX_RUNTIME_ERROR"
        assert "KeyError" in result.error.message
    else:
        assert result.success, result.error
    if name == "state_and_tools":
        assert result.yield_reason == "wait"
        assert result.tool_requests.llm[0].key == "k1"
        assert json.loads(result.state_json)["work"]["n"] == [1, 2, 3]
    if name == "final":
        assert result.final.is_final and result.final.answer == "the answer"
    if name == "slice_and_find":
        assert result.stdout.split()[:2] == ["Alpha", "section"]
        assert any(span.tag == "context" for span in result.span_log)
