"""Recursive sub-executions (tool.queue_rlm): child ids, budget caps, sub-corpus views.

A child is an Answerer execution on the parent's session, over a sub-corpus:
whole documents (`doc_indices`), or spans materialised as derived documents
(`spans`), or, when both are empty, every document. The child's documents
are numbered from 0 in its own context; its `corpus` record maps each one
back to (parent doc_index, start_char, end_char), so the child's span log is
turned into SpanRefs into the *session's* documents and its citations verify
with the same GetSpan/VerifyCitation as any other.

Depth: a top-level execution is depth 0; a child is created only while
`depth + 1 <= max_depth` (default 2: root -> child -> grandchild).

Budgets: the child's budgets are its request merged over the parent's, then
capped by what the parent has left (sub-calls, prompt chars, spans, seconds,
cost, rlm sub-calls after this one) and by the parent's per-step limits; the
tree's max_depth cannot be raised. Children of one step run one after another,
so each is capped by what the previous ones left. When a child ends, its
consumption is added to the parent's (rlm_subcalls + 1 for the child itself).

Ids are derived from (parent, turn, key): a parent turn replayed after a lease
takeover finds the same child (finished: its result is reused; running: it is
resumed) instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from rlm_rs.canonical import build_offsets, canonical_json
from rlm_rs.control.budgets import merge_budgets
from rlm_rs.control.limits import parse_json_object
from rlm_rs.errors import RlmError
from rlm_rs.textfile import TextFile
from rlm_rs.v1.common_pb2 import RlmRequest, Span
from rlm_rs.v1.sandbox_pb2 import ContextDocument

MAX_SUBCORPUS_CHARS = 50_000_000
# per-step limits a child may lower but never raise
_PER_STEP = (
    "max_turns", "max_step_seconds", "max_spans_per_step", "max_tool_requests_per_step",
    "max_llm_prompt_chars", "max_stdout_chars", "max_state_chars",
)  # fmt: skip
# consumption that rolls up from a child into its parent
ROLLUP = (
    "llm_subcalls", "llm_prompt_chars_total", "spans_total", "input_tokens", "output_tokens",
    "cost_usd", "cache_hits", "rlm_subcalls",
)  # fmt: skip


def child_execution_id(parent_id: str, turn: int, key: str) -> str:
    digest = hashlib.sha256(f"{parent_id}\0{turn}\0{key}".encode()).hexdigest()
    return f"exec_{digest[:24]}"


def child_budgets(
    parent: dict[str, Any], consumed: dict[str, Any], requested_json: str, now: float
) -> dict[str, Any]:
    """The child's budgets, or RlmError(BUDGET_EXCEEDED|VALIDATION_ERROR) with
    a reason the root model can read."""
    budgets = parent["budgets_requested"]
    depth = int(parent.get("depth") or 0)
    if depth + 1 > int(budgets["max_depth"]):
        raise RlmError(
            "BUDGET_EXCEEDED",
            f"max_depth reached: this execution is at depth {depth} and max_depth is {budgets['max_depth']}",
        )
    rlm_left = int(budgets["max_rlm_subcalls"]) - int(consumed["rlm_subcalls"])
    if rlm_left <= 0:
        raise RlmError(
            "BUDGET_EXCEEDED", f"rlm sub-call budget spent (max_rlm_subcalls={budgets['max_rlm_subcalls']})"
        )
    seconds_left = seconds_left_at(parent, now)
    if seconds_left < 1.0:
        raise RlmError("BUDGET_EXCEEDED", f"only {max(seconds_left, 0):.1f}s of max_total_seconds left")
    cost_cap = float(budgets["max_cost_usd"])
    cost_left = cost_cap - float(consumed["cost_usd"])
    if cost_cap > 0 and cost_left <= 0:
        raise RlmError("BUDGET_EXCEEDED", f"cost budget spent (max_cost_usd={cost_cap})")
    overrides = {}
    if requested_json.strip() not in ("", "null"):
        overrides = parse_json_object(requested_json, "budgets")  # no NaN, no RecursionError
    merged = merge_budgets(budgets, overrides)  # validates names, types and ceilings
    caps: dict[str, float] = {name: budgets[name] for name in _PER_STEP}
    caps.update(
        max_llm_subcalls=int(budgets["max_llm_subcalls"]) - int(consumed["llm_subcalls"]),
        max_total_llm_prompt_chars=int(budgets["max_total_llm_prompt_chars"])
        - int(consumed["llm_prompt_chars_total"]),
        max_spans_total=int(budgets["max_spans_total"]) - int(consumed["spans_total"]),
        max_total_seconds=round(seconds_left, 3),
        max_rlm_subcalls=rlm_left - 1,
        max_depth=int(budgets["max_depth"]),
    )
    for name, cap in caps.items():
        merged[name] = type(merged[name])(max(min(merged[name], cap), 0))
    if cost_cap > 0:
        requested_cost = float(merged["max_cost_usd"])
        merged["max_cost_usd"] = cost_left if requested_cost <= 0 else min(requested_cost, cost_left)
    return merged


def subcorpus(request: RlmRequest, manifest: list[ContextDocument]) -> list[dict[str, Any]]:
    """The child's documents as pieces of the parent's: [{doc_index, start_char,
    end_char, whole}], validated against the manifest (RlmError otherwise)."""
    if request.doc_indices and request.spans:
        raise RlmError("VALIDATION_ERROR", "give doc_indices or spans, not both")
    pieces: list[dict[str, Any]] = []
    if request.spans:
        for span in request.spans:
            doc = _doc(manifest, span.doc_index)
            if not 0 <= span.start_char < span.end_char <= doc.char_length:
                raise RlmError(
                    "VALIDATION_ERROR",
                    f"span [{span.start_char}, {span.end_char}) is outside document {span.doc_index} "
                    f"(0..{doc.char_length})",
                )
            pieces.append(
                {"doc_index": span.doc_index, "start_char": span.start_char, "end_char": span.end_char,
                 "whole": False}
            )  # fmt: skip
    else:
        indices = list(request.doc_indices) or [d.doc_index for d in manifest]
        if len(set(indices)) != len(indices):
            raise RlmError("VALIDATION_ERROR", "doc_indices has duplicates")
        for index in indices:
            doc = _doc(manifest, index)
            pieces.append({"doc_index": index, "start_char": 0, "end_char": doc.char_length, "whole": True})
    total = sum(p["end_char"] - p["start_char"] for p in pieces if not p["whole"])
    if total > MAX_SUBCORPUS_CHARS:
        raise RlmError("VALIDATION_ERROR", f"spans total {total} chars (at most {MAX_SUBCORPUS_CHARS})")
    return pieces


def _doc(manifest: list[ContextDocument], index: int) -> ContextDocument:
    if not 0 <= index < len(manifest):
        raise RlmError("VALIDATION_ERROR", f"doc_index {index} is not in the corpus (0..{len(manifest) - 1})")
    return manifest[index]


def child_manifest(
    pieces: list[dict[str, Any]], manifest: list[ContextDocument], derived_dir: Path
) -> list[ContextDocument]:
    """The child's context: whole documents point at the parent's files;
    spans are written once as derived documents (text + offsets.json)."""
    out: list[ContextDocument] = []
    for position, piece in enumerate(pieces):
        parent = manifest[piece["doc_index"]]
        if piece["whole"]:
            entry = ContextDocument()
            entry.CopyFrom(parent)
            entry.doc_index = position
            out.append(entry)
            continue
        start, end = piece["start_char"], piece["end_char"]
        text_path = derived_dir / f"{position}.txt"
        offsets_path = derived_dir / f"{position}.offsets.json"
        if not offsets_path.exists():
            text = TextFile.open_path(parent.text_path, parent.offsets_path or None).slice(start, end)
            derived_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(text_path, text.encode("utf-8"))
            doc_id = f"{parent.doc_id}[{start}:{end}]"
            _write_atomic(offsets_path, canonical_json(build_offsets(text, doc_id)).encode("utf-8"))
        out.append(
            ContextDocument(
                doc_index=position,
                doc_id=f"{parent.doc_id}[{start}:{end}]",
                source_name=f"{parent.source_name} [{start}:{end}]",
                mime_type="text/plain",
                char_length=end - start,
                byte_length=text_path.stat().st_size,
                text_path=str(text_path),
                offsets_path=str(offsets_path),
            )
        )
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def to_parent(span: Span, pieces: list[dict[str, Any]]) -> Span:
    """A span of the child's document -> the same text in the parent's document."""
    piece = pieces[span.doc_index]
    return Span(
        doc_index=piece["doc_index"],
        start_char=piece["start_char"] + span.start_char,
        end_char=piece["start_char"] + span.end_char,
        tag=span.tag,
    )


def compose(piece: dict[str, Any], parent_pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """A piece of a child's document -> the same text in the session's
    document (for a grandchild, whose parent is itself a child)."""
    outer = parent_pieces[piece["doc_index"]]
    return {
        "doc_index": outer["doc_index"],
        "start_char": outer["start_char"] + piece["start_char"],
        "end_char": outer["start_char"] + piece["end_char"],
        "whole": piece["whole"] and outer["whole"],
    }


def roll_up(consumed: dict[str, Any], child_consumed: dict[str, Any]) -> None:
    for name in ROLLUP:
        consumed[name] = consumed.get(name, 0) + child_consumed.get(name, 0)
    consumed["rlm_subcalls"] += 1
    consumed["cost_usd"] = round(float(consumed["cost_usd"]), 10)


def seconds_left_at(parent: dict[str, Any], now: float) -> float:
    """What is left of the parent's max_total_seconds at `now`."""
    return float(parent["started_epoch"]) + float(parent["budgets_requested"]["max_total_seconds"]) - now
