"""The domain's values as types: every status, mode and kind (str enums),
the one model of budgets and consumption, and the records the metadata
store returns. Standard library only: every layer may import it, the
gateway and the sandbox included; nothing here touches storage.
"""

from rlm_rs.domain.budgets import (
    BUDGETS,
    CONSUMED,
    Budgets,
    Consumed,
    ZeroMeans,
    consumed_zero,
    default_budgets,
)
from rlm_rs.domain.enums import (
    PARSED_STATUSES,
    TERMINAL_STATUSES,
    EventType,
    ExecutionMode,
    ExecutionStatus,
    IngestStatus,
    OutputMode,
    ReadinessMode,
    SessionStatus,
    ToolKind,
    ToolStatus,
)
from rlm_rs.domain.records import (
    DocumentRecord,
    ErrorRecord,
    EventRecord,
    ExecutionRecord,
    Piece,
    SessionRecord,
    StepRecord,
)

__all__ = [
    "BUDGETS",
    "CONSUMED",
    "PARSED_STATUSES",
    "TERMINAL_STATUSES",
    "Budgets",
    "Consumed",
    "DocumentRecord",
    "ErrorRecord",
    "EventRecord",
    "EventType",
    "ExecutionMode",
    "ExecutionRecord",
    "ExecutionStatus",
    "IngestStatus",
    "OutputMode",
    "Piece",
    "ReadinessMode",
    "SessionRecord",
    "SessionStatus",
    "StepRecord",
    "ToolKind",
    "ToolStatus",
    "ZeroMeans",
    "consumed_zero",
    "default_budgets",
]
