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

from rlm_rs.domain.budgets import BUDGETS
from rlm_rs.limits import MAX_BATCH_PROMPTS

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
    limits: Mapping[str, Any] | None = None,
) -> str:
    """The root model's system prompt. `limits` are the execution's effective
    budgets (rlm_rs/domain/budgets.py names; missing ones take the defaults):
    the prompt states them and its examples are sized by them."""
    numbers = {name: field.default for name, field in BUDGETS.items()}
    numbers.update({k: v for k, v in (limits or {}).items() if k in numbers})
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
    subcall_rule = (
        "decide with code what code can decide and ask sub-calls for semantic judgement. When every "
        "record or chunk must be judged (counting, classifying, aggregating), batch: many records in "
        "each prompt, many prompts in each llm_query_batched call, then aggregate the answers in code "
        "in the same step. "
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
        inline_lines=_inline_lines(subcalls, rlm),
        subcall_rule=subcall_rule,
        max_stdout_chars=max_stdout_chars,
        results_line=_results_line(subcalls or rlm or search),
        limits_line=_limits_line(subcalls, numbers),
        pattern_tail="ask sub-calls inline for what code cannot judge, use the answers," if subcalls else "",
        examples=examples(subcalls=subcalls, rlm=rlm, contexts=contexts, limits=numbers),
        contexts_addendum=addendum,
    )


def _results_line(tools: bool) -> str:
    """Where answers appear: inline in the step, queued ones for one step in state."""
    if not tools:
        return ""
    return (
        "Where results appear: inline calls return their answers in the same step. Queued tools' results "
        'are in state["_tool_results"][kind][key] with state["_tool_status"][key] (pending, resolved or '
        "error) for the next step only, then they leave the state: copy what you need into "
        'state["work"].\n'
    )


def _limits_line(subcalls: bool, limits: Mapping[str, Any]) -> str:
    """The effective caps this run's steps meet (the turn prompt's "Budget left" shows what remains)."""
    step_seconds, state_chars = _number(limits["max_step_seconds"]), _number(limits["max_state_chars"])
    line = f"This run's limits: {step_seconds} s of compute per step"
    if subcalls:
        subcalls_total = _number(limits["max_llm_subcalls"])
        per_step = _number(limits["max_tool_requests_per_step"])
        prompt_chars = _number(limits["max_llm_prompt_chars"])
        line += (
            f"; {subcalls_total} sub-calls in all; up to {MAX_BATCH_PROMPTS} prompts per llm_query_batched "
            f"call or queued batch; {per_step} queued requests per step (each prompt of a batch is one); "
            f"prompts up to {prompt_chars} chars each"
        )
    return line + f"; state up to {state_chars} chars. Each turn shows the budget left.\n"


def _number(value: Any) -> str:
    number = float(value)
    return f"{int(number):,}" if number.is_integer() else f"{number:g}"


def examples(*, subcalls: bool, rlm: bool, contexts: bool, limits: Mapping[str, Any] | None = None) -> str:
    """The prompt's example steps for this variant, as ```repl blocks (each runs
    unchanged in the sandbox: tests/unit/control/test_prompt_examples.py)."""
    numbers = {name: field.default for name, field in BUDGETS.items()}
    numbers.update(limits or {})
    steps = [_EXAMPLE_READ]
    if subcalls:
        per_step = max(min(MAX_BATCH_PROMPTS, int(numbers["max_tool_requests_per_step"])), 1)
        steps.append((_EXAMPLE_BATCH[0], _EXAMPLE_BATCH[1].replace("BATCH", str(MAX_BATCH_PROMPTS))))
        steps.append((_EXAMPLE_QUEUED[0], _EXAMPLE_QUEUED[1].replace("PER_STEP", str(per_step))))
        steps.append(_EXAMPLE_QUEUED_NEXT)
    if rlm:
        steps.append(_EXAMPLE_RLM)
    steps.append(_EXAMPLE_CONTEXTS if contexts else _EXAMPLE_FINAL)
    return "".join(f"{title}:\n```repl\n{code.strip()}\n```\n" for title, code in steps)


_EXAMPLE_READ = (
    "Look, then read around hits",
    r"""
doc = context[0]
print(len(context), len(doc), doc[:300])
hits = doc.find("refund", max_hits=5)
for hit in hits:
    print(hit["start_char"], doc[max(hit["start_char"] - 100, 0):hit["end_char"] + 100])
state["work"]["refund_hits"] = [hit["start_char"] for hit in hits]
""",
)
_EXAMPLE_BATCH = (
    "Judge every record: many per prompt, many prompts per call, aggregate in the same step",
    r"""
lines = [line for line in context[0][0:len(context[0])].split("\n") if line.strip()]
chunks = ["\n".join(lines[i:i + 50]) for i in range(0, len(lines), 50)]
ask = 'How many of these records are complaints? Answer as JSON {"complaints": n}.\n'
prompts = [ask + chunk for chunk in chunks]
answers = []
for i in range(0, len(prompts), BATCH):
    answers += llm_query_batched(prompts[i:i + BATCH])
total = 0
for text in answers:
    found = re.search(r'"complaints":\s*(\d+)', text)
    total += int(found.group(1)) if found else 0
state["work"]["complaints"] = total
print(len(prompts), "prompts,", total, "complaints")
""",
)
_EXAMPLE_QUEUED = (
    "The queued form (answers next step)",
    r"""
lines = [line for line in context[0][0:20000].split("\n") if line.strip()]
prompts = ["Summarise in one line:\n" + "\n".join(lines[i:i + 50]) for i in range(0, len(lines), 50)]
tool.queue_llm_batch("summaries", prompts[:PER_STEP])
tool.YIELD("waiting for summaries")
""",
)
_EXAMPLE_QUEUED_NEXT = (
    "The next step reads them (and keeps what it needs)",
    r"""
results = state["_tool_results"]["llm_batch"]["summaries"]["results"]
state["work"]["summaries"] = [r["text"] for r in results if r["text"]]
print(state["_tool_status"]["summaries"], len(state["work"]["summaries"]))
""",
)
_EXAMPLE_RLM = (
    "A child RLM over one document",
    r"""
answer = rlm_query("Which decisions were taken, and when?", doc_indices=[len(context) - 1])
state["work"]["decisions"] = answer
print(answer)
""",
)
_EXAMPLE_FINAL = (
    "Answer",
    r"""
hits = context[0].find("refund", max_hits=1)
first = hits[0]["text"] if hits else "none"
tool.FINAL(f"{len(state['work'].get('refund_hits', []))} refund mentions; first: {first}")
""",
)
_EXAMPLE_CONTEXTS = (
    "Mark the passages that answer (CONTEXTS mode)",
    r"""
for hit in context[0].find("refund", max_hits=3):
    context[0].slice(hit["start_char"], hit["end_char"] + 200, tag="context")
tool.FINAL("done")
""",
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
