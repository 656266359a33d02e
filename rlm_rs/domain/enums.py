"""Every status, mode and kind of the domain as a str enum.

Members are `str` (StrEnum): a member compares equal to its value, and JSON,
protobuf string fields and stored records carry exactly the strings they
carried before, so records written by either spelling read the same. The
values are the contract's (docs/api.md); never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"  # FINAL reached
    FAILED = "FAILED"  # the root model could not be reached, or the loop crashed
    TIMEOUT = "TIMEOUT"  # a turn ended past max_total_seconds
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # a total budget spent, or the deadline passed before a turn
    MAX_TURNS_EXCEEDED = "MAX_TURNS_EXCEEDED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self is not ExecutionStatus.RUNNING


TERMINAL_STATUSES: frozenset[str] = frozenset(s for s in ExecutionStatus if s.terminal)


class ExecutionMode(StrEnum):
    ANSWERER = "ANSWERER"  # the control plane's loop asks the root model for each step
    RUNTIME = "RUNTIME"  # the caller sends each step (RunStep)


class OutputMode(StrEnum):
    ANSWER = "ANSWER"  # an answer with citations
    CONTEXTS = "CONTEXTS"  # the spans tagged `context`, no answer


class SessionStatus(StrEnum):
    CREATING = "CREATING"  # documents registered, ingestion running
    READY = "READY"
    FAILED = "FAILED"  # ingestion failed (per the readiness mode)
    EXPIRED = "EXPIRED"  # past its ttl
    DELETING = "DELETING"  # deleted: answers SESSION_NOT_FOUND while its data is removed

    @property
    def live(self) -> bool:
        return self in (SessionStatus.CREATING, SessionStatus.READY, SessionStatus.FAILED)


class ReadinessMode(StrEnum):
    STRICT = "STRICT"  # READY when every document parsed
    LAX = "LAX"  # READY when every document parsed or failed, at least one parsed


class IngestStatus(StrEnum):
    REGISTERED = "REGISTERED"
    PARSING = "PARSING"
    PARSED = "PARSED"
    INDEXING = "INDEXING"
    INDEXED = "INDEXED"
    FAILED = "FAILED"

    @property
    def parsed(self) -> bool:
        """Its text is readable (a step may see it)."""
        return self in (IngestStatus.PARSED, IngestStatus.INDEXING, IngestStatus.INDEXED)


PARSED_STATUSES: frozenset[str] = frozenset(s for s in IngestStatus if s.parsed)


class ToolStatus(StrEnum):
    """A queued tool request's outcome, in state["_tool_status"][key]."""

    PENDING = "pending"  # queued by a runtime step, not resolved yet
    RESOLVED = "resolved"
    ERROR = "error"


class EventType(StrEnum):
    """Live execution events (rlm_rs/control/executions/events.py), in the order they happen."""

    TURN_STARTED = "turn_started"
    COMPACTION = "compaction"
    ROOT_REPLY = "root_reply"
    STEP_RESULT = "step_result"
    TOOL_REQUESTS = "tool_requests"
    CHILD_STARTED = "child_started"
    CHILD_FINISHED = "child_finished"
    TOOL_RESULTS = "tool_results"
    STATUS = "status"  # the last event of an execution


class ToolKind(StrEnum):
    """The kinds of tool request a step may queue (ToolRequests' fields)."""

    LLM = "llm"
    LLM_BATCH = "llm_batch"
    SEARCH = "search"
    RLM = "rlm"
