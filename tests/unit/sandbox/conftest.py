"""Shared set-up for executor tests: documents on disk and a one-call runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.canonical import build_offsets, canonicalize_text
from rlm_rs.sandbox.executor import run_step
from rlm_rs.sandbox.policy import default_step_limits
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument, StepRequest, StepResult

CORPUS = [
    "Annual report 2024\n\nRevenue grew 12% to $4.2M. The CEO, Ana Souza, said growth came "
    "from the Lisbon office.\n\nRisks: currency exposure in São Paulo and Zürich.\n",
    "Meeting notes — 3 March\nAttendees: Ana, Bo, Chen\nDecision: ship v2 on 1 April.\n"
    "Action: Bo drafts the release note. ✓ approved\n",
]
META = {
    "version": 1,
    "structure": {
        "type": "document",
        "title": "Annual report 2024",
        "children": [
            {"type": "section", "title": "Revenue", "level": 1, "start_char": 20,
             "end_char": 110, "page": 1, "children": [
                 {"type": "section", "title": "Lisbon", "level": 2, "start_char": 60,
                  "end_char": 110, "page": 1, "children": []}]},
            {"type": "section", "title": "Risks", "level": 1, "start_char": 109,
             "end_char": 160, "page": 2, "children": []},
        ],
    },
    "pages": [{"page_num": 1, "start_char": 0, "end_char": 111},
              {"page_num": 2, "start_char": 111, "end_char": 160}],
    "tables": [],
}  # fmt: skip


def write_docs(
    directory: Path, texts: list[str], metas: list[dict[str, Any] | None] | None = None
) -> list[ContextDocument]:
    manifest = []
    for index, raw in enumerate(texts):
        text = canonicalize_text(raw)
        text_path = directory / f"d{index}.txt"
        text_path.write_text(text, encoding="utf-8", newline="")
        offsets = build_offsets(text, f"doc-{index}", interval=16)
        offsets_path = directory / f"d{index}.offsets.json"
        offsets_path.write_text(json.dumps(offsets), encoding="utf-8")
        meta_path = ""
        meta = (metas or [None] * len(texts))[index]
        if meta is not None:
            meta_path = str(directory / f"d{index}.meta.json")
            Path(meta_path).write_text(json.dumps(meta), encoding="utf-8")
        manifest.append(
            ContextDocument(
                doc_index=index, doc_id=f"doc-{index}", source_name=f"file{index}.txt",
                mime_type="text/plain", char_length=len(text),
                byte_length=offsets["byte_length"], text_path=str(text_path),
                offsets_path=str(offsets_path), meta_path=meta_path,
            )
        )  # fmt: skip
    return manifest


Runner = Callable[..., StepResult]


@pytest.fixture
def corpus(tmp_path: Path) -> list[ContextDocument]:
    return write_docs(tmp_path, CORPUS, [META, None])


@pytest.fixture
def run(corpus: list[ContextDocument]) -> Runner:
    """run(code, state=None, docs=corpus, **limit_overrides) -> StepResult."""

    def runner(
        code: str,
        state: dict[str, Any] | None = None,
        docs: list[ContextDocument] | None = None,
        **limits: Any,
    ) -> StepResult:
        require_block = bool(limits.pop("require_repl_block", False))
        policy = default_step_limits()
        for name, value in limits.items():
            setattr(policy, name, value)
        request = StepRequest(
            code=code,
            state_json=json.dumps(state if state is not None else {}),
            context_manifest=corpus if docs is None else docs,
            limits=policy,
            require_repl_block=require_block,
        )
        return run_step(request)

    return runner


def state_of(result: StepResult) -> dict[str, Any]:
    return json.loads(result.state_json)  # type: ignore[no-any-return]
