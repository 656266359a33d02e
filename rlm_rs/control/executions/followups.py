"""Follow-ups: a new Answerer execution that continues a finished one.

It runs on the same session, starts from the source's `work` and carries a
digest of the source (question, answer, history summary, last turns) as its
history summary (history.py). The source is only read, never changed.
"""

from __future__ import annotations

from typing import Any

from rlm_rs.canonical import canonical_json
from rlm_rs.control.executions import history
from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.records import initial_state
from rlm_rs.domain import TERMINAL_STATUSES, ExecutionMode, ExecutionRecord
from rlm_rs.errors import RlmError


def followup(
    ctx: Context,
    tenant_id: str,
    execution_id: str,
    *,
    question: str,
    models: dict[str, str],
    budgets: dict[str, Any],
    options: dict[str, Any],
) -> ExecutionRecord:
    """The follow-up's record and first state; the caller starts it."""
    source = ctx.records.get(tenant_id, execution_id)
    if source["status"] not in TERMINAL_STATUSES:
        raise RlmError(
            "CONFLICT",
            f"execution is {source['status']}: a follow-up needs a finished execution",
            {"status": source["status"]},
        )
    if not question.strip():
        raise RlmError("VALIDATION_ERROR", "question must not be empty")
    session = ctx.storage.metadata.get_session(tenant_id, source["session_id"])
    source_state = ctx.records.load_state(source)
    record = ctx.records.create(
        tenant_id,
        session,
        mode=ExecutionMode.ANSWERER,
        question=question,
        models={**source["models"], **{k: v for k, v in models.items() if v}},
        budgets=budgets,
        options=options,
        extra={"followup_of": execution_id},
    )
    turns = history.committed_turns(ctx.storage, source["execution_id"])
    state = history.followup_state(initial_state(), source, source_state, turns)
    ctx.records.save_state(record, 0, canonical_json(state))
    return record
