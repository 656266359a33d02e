"""Root prompts from the package's templates (prompts/root.md, prompts/turn.md):
sub-calls enabled and disabled variants and the CONTEXTS addendum (docs/api.md#the-answerer-loop);
the turn prompt's bounded history (a summary plus earlier turns, each
clipped), the compaction prompt (prompts/compaction.md) and a follow-up's
digest of the execution it continues."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

_TRUNCATE = 4_000
_HISTORY_CODE_CHARS = 1_500
_HISTORY_OUTPUT_CHARS = 1_000


@cache
def _template(name: str) -> str:
    return resources.files("rlm_rs.control").joinpath("prompts", name).read_text(encoding="utf-8")


def system_prompt(
    *,
    doc_count: int,
    subcalls: bool,
    search: bool,
    contexts: bool,
    max_stdout_chars: int,
    rlm: bool = False,
) -> str:
    tool_lines = ""
    if subcalls:
        tool_lines += (
            "`tool.queue_llm(key, prompt)` asks a sub-model (answer next step in "
            'state["_tool_results"]["llm"][key]["text"]); '
            "`tool.queue_llm_batch(key, [prompt, ...])` asks several at once (answers in "
            'state["_tool_results"]["llm_batch"][key]["results"][i]["text"]); '
        )
    if rlm:
        tool_lines += (
            "`tool.queue_rlm(key, question, doc_indices=None, spans=None)` runs a child RLM like you over "
            "whole documents or [doc_index, start, end] spans (answer and citations next step in "
            'state["_tool_results"]["rlm"][key]); '
        )
    if search:
        tool_lines += "`tool.queue_search(key, query, k=10)` finds candidate spans; "
    inline_lines = _inline_lines(subcalls, rlm)
    subcall_rule = (
        "use sub-calls only for semantic judgement on small pieces, never one per chunk of everything. "
        if subcalls
        else "sub-calls are disabled for this run: answer with code alone. "
    )
    addendum = ""
    if contexts:
        addendum = (
            "\n\nOUTPUT MODE CONTEXTS: your answer text is ignored. Mark every passage that answers "
            'the question with `doc.slice(a, b, tag="context")` (or tag="context:<label>"); only '
            "those spans are returned, in the order you mark them. Then call tool.FINAL('done')."
        )
    return _template("root.md").format(
        doc_count=doc_count,
        tool_lines=tool_lines,
        inline_lines=inline_lines,
        subcall_rule=subcall_rule,
        max_stdout_chars=max_stdout_chars,
        pattern_tail="ask sub-calls inline for what code cannot judge, use the answers," if subcalls else "",
        contexts_addendum=addendum,
    )


def _inline_lines(subcalls: bool, rlm: bool) -> str:
    """The inline calls (answers on the next line of the same step); the
    queued `tool.queue_*` + YIELD form stays the spec-compatible alternative."""
    calls = []
    if subcalls:
        calls += [
            "`llm_query(prompt)` returns the sub-model's text",
            "`llm_query_batched([prompt, ...])` returns the texts in order, asked concurrently",
        ]
    if rlm:
        calls.append(
            "`rlm_query(question, doc_indices=None, spans=None)` runs a child RLM like you and "
            "returns its answer (what it cites counts as yours)"
        )
    if not calls:
        return ""
    return (
        "- Inline calls, answered within the step: " + "; ".join(calls) + ". A failed call returns "
        'text starting "Error:". Fan out and aggregate in one step, e.g. '
        "`answers = llm_query_batched(chunks)` then combine `answers`. The queued form below "
        "(answers next step) is the spec-compatible alternative.\n"
    )


def _clip(text: str, limit: int = _TRUNCATE) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... [{len(text) - limit} more chars]"


def _turns(turns: list[dict[str, Any]]) -> str:
    """Earlier turns, each clipped (code, stdout, error)."""
    parts = []
    for entry in turns:
        part = f"--- turn {entry['turn'] + 1} ---\n{_clip(entry['code'], _HISTORY_CODE_CHARS)}"
        if entry.get("stdout"):
            part += f"\nstdout: {_clip(entry['stdout'], _HISTORY_OUTPUT_CHARS)}"
        if entry.get("error"):
            part += f"\nerror: {_clip(entry['error'], _HISTORY_OUTPUT_CHARS)}"
        parts.append(part)
    return "\n".join(parts)


def turn_prompt(
    *,
    question: str,
    doc_lengths: list[tuple[str, int]],
    turn_index: int,
    max_turns: int,
    budget_snapshot: dict[str, Any],
    tool_status: dict[str, str],
    last_code: str,
    last_stdout: str,
    last_error: str,
    summary: str = "",
    earlier_turns: list[dict[str, Any]] | None = None,
) -> str:
    pending = {k: v for k, v in tool_status.items()}
    tool_summary = f"Tool status: {json.dumps(pending, sort_keys=True)}" if pending else ""
    history = ""
    if summary:
        history += f"Summary of earlier work:\n{summary}\n\n"
    if earlier_turns:
        history += f"Earlier turns:\n{_turns(earlier_turns)}\n\n"
    return _template("turn.md").format(
        question=question,
        doc_count=len(doc_lengths),
        doc_lengths=", ".join(f"[{i}] {name}: {n} chars" for i, (name, n) in enumerate(doc_lengths)),
        turn_number=turn_index + 1,
        max_turns=max_turns,
        budget_snapshot=json.dumps(budget_snapshot, sort_keys=True),
        tool_summary=tool_summary,
        history=history,
        last_code=_clip(last_code) or "(none)",
        last_stdout=_clip(last_stdout) or "(none)",
        last_error=_clip(last_error) or "(none)",
    )


def compaction_prompt(*, question: str, summary: str, turns: list[dict[str, Any]]) -> str:
    return _template("compaction.md").format(
        question=question,
        summary=summary or "(none)",
        turns=_turns(turns),
    )


def followup_digest(
    *, source: Mapping[str, Any], summary: str, turns: list[dict[str, Any]], limit: int
) -> str:
    """What a follow-up execution is told about the one it continues."""
    text = (
        f"This run continues execution {source['execution_id']} ({source['status']}).\n"
        f"Its question: {_clip(source.get('question') or '', 2_000)}\n"
        f"Its answer: {_clip(source.get('answer') or '(none)', 4_000)}\n"
        'Its notes are in state["work"] as it left them.'
    )
    if summary:
        text += f"\nSummary of its earlier work:\n{summary}"
    if turns:
        text += f"\nIts last turns:\n{_turns(turns)}"
    return text[:limit]
