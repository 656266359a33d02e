"""The root model's history: what each root prompt shows of earlier turns,
compaction when it grows too large, and a follow-up's starting state.

The turn prompt carries the summary in state["_history"] ({summary,
through_turn}: orchestrator-owned, persisted with the turn), the turns since
it (each clipped) and the last turn. Its size is estimated as chars / 4
tokens; past `RLM_COMPACTION_SHARE` of `RLM_ROOT_CONTEXT_TOKENS`, every shown
turn but the last is summarised by one sub-model call. docs/recursion-and-history.md
has the rationale.
"""

from __future__ import annotations

from typing import Any

from rlm_rs.control import prompts
from rlm_rs.control.budgets import snapshot
from rlm_rs.control.costs import PriceTable
from rlm_rs.domain import Consumed, ExecutionRecord
from rlm_rs.observability import get_logger
from rlm_rs.providers.base import CallContext, Provider, ProviderError
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.tracing import span as trace_span

SUMMARY_CHARS = 8_000
FOLLOWUP_DIGEST_CHARS = 12_000
log = get_logger(component="history")


def committed_turns(storage: Storage, execution_id: str) -> list[dict[str, Any]]:
    """{turn, code, stdout, error} of every committed turn, in order."""
    items = storage.metadata.list_steps(execution_id)
    turns = []
    for item in sorted(items, key=lambda i: int(i["turn_index"])):
        error = item.get("error") or {}
        turns.append(
            {
                "turn": int(item["turn_index"]),
                "code": (item.get("trace") or {}).get("code", ""),
                "stdout": item.get("stdout", ""),
                "error": f"{error.get('code')}: {error.get('message')}" if error else "",
            }
        )
    return turns


def too_large(settings: Settings, *texts: str) -> bool:
    """The prompt's estimated tokens (chars / 4) past the compaction share."""
    tokens = sum(len(t) for t in texts) // 4
    return tokens > settings.compaction_share * settings.root_context_tokens


def turn_prompt(
    execution: ExecutionRecord,
    docs: list[Any],
    state: dict[str, Any],
    consumed: Consumed,
    turns: list[dict[str, Any]],
) -> str:
    budgets = execution["budgets_requested"]
    summary = state.get("_history") or {}
    through = int(summary.get("through_turn", -1))
    shown = [t for t in turns if t["turn"] > through]
    last = shown[-1] if shown else {}
    return prompts.turn_prompt(
        question=execution["question"],
        doc_lengths=[(d.source_name, d.char_length) for d in docs],
        turn_index=int(execution["next_turn"]),
        max_turns=int(budgets["max_turns"]),
        budget_snapshot=snapshot(budgets, consumed, started_epoch=execution["started_epoch"]),
        tool_status=state.get("_tool_status", {}),
        summary=summary.get("summary", ""),
        earlier_turns=shown[:-1],
        last_code=last.get("code", ""),
        last_stdout=last.get("stdout", ""),
        last_error=last.get("error", ""),
    )


def compact(
    provider: Provider,
    prices: PriceTable,
    execution: ExecutionRecord,
    state: dict[str, Any],
    consumed: Consumed,
    turns: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Summarise every shown turn but the last into state["_history"] with one
    sub-model call (its tokens and cost go into `consumed`; it is not one of
    the step's sub-calls). A failed call leaves a note that the turns were
    dropped. Returns the compaction event's data, or None when there is
    nothing left to summarise."""
    previous = state.get("_history") or {}
    through = int(previous.get("through_turn", -1))
    older = [t for t in turns if t["turn"] > through][:-1]
    if not older:
        return None
    turn = int(execution["next_turn"])
    prompt = prompts.compaction_prompt(
        question=execution["question"], summary=previous.get("summary", ""), turns=older
    )
    try:
        with trace_span("llm.compaction", execution_id=execution["execution_id"], turn_index=turn):
            completion = provider.complete(
                execution["models"]["sub_model"],
                [{"role": "user", "content": prompt}],
                max_tokens=2048,
                temperature=0.0,
                context=CallContext(role="compaction", question=execution["question"], turn_index=turn),
            )
        prices.record(consumed, completion.model, completion.input_tokens, completion.output_tokens)
        summary = completion.text[:SUMMARY_CHARS]
    except ProviderError as exc:
        log.warning("compaction_failed", execution_id=execution["execution_id"], error=str(exc))
        first, last = older[0]["turn"] + 1, older[-1]["turn"] + 1
        note = f"[turns {first}-{last} were dropped: their summary could not be made]"
        summary = (previous.get("summary", "") + "\n" + note)[-SUMMARY_CHARS:]
    state["_history"] = {"summary": summary, "through_turn": older[-1]["turn"]}
    return {
        "turns": [older[0]["turn"], older[-1]["turn"]],
        "prompt_chars": len(prompt),
        "summary_chars": len(summary),
    }


def followup_state(
    fresh: dict[str, Any], source: ExecutionRecord, source_state: dict[str, Any], turns: list[dict[str, Any]]
) -> dict[str, Any]:
    """A follow-up's first state: a fresh state with the source's `work` and
    a digest of the source (question, answer, summary, last three turns) as
    its history summary."""
    work = source_state.get("work")
    return {
        **fresh,
        "work": work if isinstance(work, dict) else {},
        "_history": {
            "summary": prompts.followup_digest(
                source=source,
                summary=(source_state.get("_history") or {}).get("summary", ""),
                turns=turns[-3:],
                limit=FOLLOWUP_DIGEST_CHARS,
            ),
            "through_turn": -1,
        },
    }
