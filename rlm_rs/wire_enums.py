"""The one mapping between the wire's enums (rlm_rs/v1) and the domain's
str enums (rlm_rs/domain/enums.py), used by the services, the gateway and
the tools that read gRPC replies. A member's domain value is its contract
value (its JSON string, rlm_rs/codec.py), so each pair converts through the
codec's enum tables; it never invents a value: an unknown one is ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from rlm_rs.codec import enum_codec
from rlm_rs.domain import enums
from rlm_rs.v1 import execution_pb2, session_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)
D = TypeVar("D", bound=StrEnum)


@dataclass(frozen=True)
class WireEnum(Generic[V, D]):
    """A proto enum and the domain StrEnum (rlm_rs/domain/enums.py) it carries.
    A member's domain value is its contract value (the JSON string), so the
    two convert through `enum_codec`; 0 (`*_UNSPECIFIED`) has no domain value."""

    proto: _EnumTypeWrapper[V]
    domain: type[D]

    def to_proto(self, value: str) -> V:
        """The member number of a domain value (ValueError for "" or an unknown one)."""
        return cast(V, enum_codec(self.proto.DESCRIPTOR).number(str(value)))

    def to_domain(self, number: int) -> D:
        """The domain value of a member number (ValueError for 0 or an unknown one)."""
        value = enum_codec(self.proto.DESCRIPTOR).to_value.get(number)
        if value is None:
            raise ValueError(f"{self.proto.DESCRIPTOR.full_name} {number} has no {self.domain.__name__}")
        return self.domain(value)


# Every enum of the public services, paired (tests/unit/test_wire_enums.py checks
# that every member of each maps to the other and back, and that none is missing).
EXECUTION_STATUS = WireEnum(execution_pb2.ExecutionStatus, enums.ExecutionStatus)
EXECUTION_MODE = WireEnum(execution_pb2.ExecutionMode, enums.ExecutionMode)
OUTPUT_MODE = WireEnum(execution_pb2.OutputMode, enums.OutputMode)
EVENT_TYPE = WireEnum(execution_pb2.EventType, enums.EventType)
TOOL_STATUS = WireEnum(execution_pb2.ToolStatus, enums.ToolStatus)
SESSION_STATUS = WireEnum(session_pb2.SessionStatus, enums.SessionStatus)
READINESS_MODE = WireEnum(session_pb2.ReadinessMode, enums.ReadinessMode)
INGEST_STATUS = WireEnum(session_pb2.IngestStatus, enums.IngestStatus)
WIRE_ENUMS: tuple[WireEnum[Any, Any], ...] = (
    EXECUTION_STATUS, EXECUTION_MODE, OUTPUT_MODE, EVENT_TYPE, TOOL_STATUS,
    SESSION_STATUS, READINESS_MODE, INGEST_STATUS,
)  # fmt: skip
