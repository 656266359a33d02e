"""Executions: the Answerer loop (docs/api.md#the-answerer-loop), runtime
steps, and how an execution ends.

Every execution is a record (executions table) plus one record per step
(execution_state, SK `STEP#<turn>`) and the latest state (SK `STATE`), saved
inline or offloaded (rlm_rs/storage/state.py). A turn is committed at its end
(step record, state, counters), so a failed step leaves the persisted state
exactly as it was, and a process that dies mid-turn leaves the previous turn
intact: whoever takes the lease over (after `lease_seconds`) replays that
turn; its sub-calls come from the cache, not the provider.

Statuses: COMPLETED (FINAL), FAILED (the root model could not be reached, or
the corpus could not be read), BUDGET_EXCEEDED (the wall-clock deadline,
max_total_seconds, passed: when a turn was due or when one ended, in both
modes; or spans/sub-call/prompt/cost budgets ran out), MAX_TURNS_EXCEEDED,
CANCELLED. TIMEOUT is in the status list but never reached
(docs/api.md#statuses). Both modes run the same turn pipeline and the same
limit check after every committed turn (turn.py).

Modules, by responsibility:
  engine.py     the façade the servicers call
  context.py    what every part reads (storage, sandbox, provider, caches)
  records.py    execution records, step records and persisted state
  turn.py       one turn: dispatch -> apply -> resolve tools -> commit -> check limits
  answerer.py   the Answerer loop (root prompt, root model call) and its pool
  runtime.py    caller-driven steps and tool resolution
  finish.py     ending an execution (citations, contexts, trace), cancelling
  watch.py      waiting for an execution and streaming its events
  followups.py  a new execution continuing a finished one
  children.py   recursive sub-executions (tool.queue_rlm); subcorpus.py their documents
  claims.py     one writer per turn: the loop's lease, step claims, the commit fence
  events.py     live events; history.py the root prompt's history; traces.py traces
"""

from rlm_rs.control.executions.engine import ExecutionEngine

__all__ = ["ExecutionEngine"]
