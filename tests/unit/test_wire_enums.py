"""rlm_rs/wire_enums.py: every proto enum of the public services maps to its
domain str enum and back, none is left out, no status, mode or kind travels as
a string, and the REST JSON of executions, sessions and events shows the
contract's strings (upper case statuses and modes, lower case event types)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, cast

import pytest
from google.protobuf.descriptor import FieldDescriptor, FileDescriptor

from rlm_rs import codec, wire_enums
from rlm_rs.domain import EventType, ExecutionStatus, IngestStatus, SessionStatus, ToolStatus
from rlm_rs.v1 import citation_pb2, common_pb2, execution_pb2, session_pb2

PUBLIC_FILES: tuple[FileDescriptor, ...] = tuple(
    m.DESCRIPTOR for m in (common_pb2, execution_pb2, session_pb2, citation_pb2)
)
# Field names that hold a status, mode or kind wherever they appear.
KIND_NAMES = {"status", "mode", "type", "output_mode", "readiness_mode", "ingest_status", "statuses"}


@pytest.mark.parametrize("pair", wire_enums.WIRE_ENUMS, ids=lambda p: p.domain.__name__)
def test_every_member_maps_to_the_domain_and_back(pair: wire_enums.WireEnum[Any, Any]) -> None:
    numbers = [v.number for v in pair.proto.DESCRIPTOR.values if v.number]
    members: list[StrEnum] = list(cast(type[StrEnum], pair.domain))
    assert sorted(pair.to_proto(pair.to_domain(n)) for n in numbers) == sorted(numbers)
    assert [pair.to_domain(pair.to_proto(d)) for d in members] == members
    assert len(numbers) == len(members)  # nothing on one side only
    unspecified = pair.proto.DESCRIPTOR.values_by_number[0].name
    assert unspecified.endswith("_UNSPECIFIED")
    for bad in (0, 999):
        with pytest.raises(ValueError):
            pair.to_domain(bad)
    for bad_value in ("", "running", "NOPE"):
        with pytest.raises(ValueError):
            pair.to_proto(bad_value)


def test_every_enum_of_the_public_services_is_paired() -> None:
    declared = {e.full_name for f in PUBLIC_FILES for e in f.enum_types_by_name.values()}
    paired = {p.proto.DESCRIPTOR.full_name for p in wire_enums.WIRE_ENUMS}
    assert declared == paired


def _fields(files: tuple[FileDescriptor, ...]) -> list[tuple[str, FieldDescriptor]]:
    found: list[tuple[str, FieldDescriptor]] = []
    for file in files:
        stack = list(file.message_types_by_name.values())
        while stack:
            message = stack.pop()
            stack.extend(message.nested_types)
            found.extend((f"{message.full_name}.{f.name}", f) for f in message.fields)
    return found


def test_no_status_mode_or_kind_is_a_string_on_the_wire() -> None:
    strings = []
    for name, field in _fields(PUBLIC_FILES):
        typed = (
            field.message_type.fields_by_name["value"]
            if field.message_type and field.message_type.GetOptions().map_entry
            else field
        )
        if field.name in KIND_NAMES and typed.type != FieldDescriptor.TYPE_ENUM:
            strings.append(name)
    # RunStepResponse.isolation ("pool" or "in-process") is copied from the sandbox's StepResult.
    assert strings == []


def test_execution_json_shows_the_contract_strings() -> None:
    message = execution_pb2.Execution(
        execution_id="exec_1",
        mode=wire_enums.EXECUTION_MODE.to_proto("ANSWERER"),
        output_mode=execution_pb2.OUTPUT_MODE_CONTEXTS,
        status=wire_enums.EXECUTION_STATUS.to_proto(ExecutionStatus.MAX_TURNS_EXCEEDED),
        children=[execution_pb2.Execution(status=execution_pb2.EXECUTION_STATUS_RUNNING)],
    )
    data = codec.to_json(message)
    assert (data["mode"], data["output_mode"], data["status"]) == (
        "ANSWERER",
        "CONTEXTS",
        "MAX_TURNS_EXCEEDED",
    )
    assert data["children"][0]["status"] == "RUNNING"
    assert codec.parse(execution_pb2.Execution, data) == message
    cancel = codec.to_json(
        execution_pb2.CancelExecutionResponse(status=execution_pb2.EXECUTION_STATUS_CANCELLED)
    )
    assert cancel["status"] == "CANCELLED"
    unset = codec.to_json(execution_pb2.Execution())
    assert (unset["mode"], unset["status"]) == (None, None)  # 0 is null, never "UNSPECIFIED"


def test_session_json_shows_the_contract_strings() -> None:
    message = session_pb2.Session(
        status=wire_enums.SESSION_STATUS.to_proto(SessionStatus.READY),
        options=session_pb2.SessionOptions(readiness_mode=session_pb2.READINESS_MODE_LAX),
        docs=[
            session_pb2.DocumentStatus(ingest_status=wire_enums.INGEST_STATUS.to_proto(IngestStatus.INDEXING))
        ],
    )
    data = codec.to_json(message)
    assert data["status"] == "READY" and data["options"]["readiness_mode"] == "LAX"
    assert data["docs"][0]["ingest_status"] == "INDEXING"
    assert (
        codec.to_json(session_pb2.DeleteSessionResponse(status=session_pb2.SESSION_STATUS_DELETING))["status"]
        == "DELETING"
    )
    request = codec.parse(session_pb2.ListSessionsRequest, {"status": "EXPIRED"})
    assert request.status == session_pb2.SESSION_STATUS_EXPIRED


def test_events_and_tool_statuses_are_lower_case() -> None:
    for kind in EventType:
        event = execution_pb2.ExecutionEvent(type=wire_enums.EVENT_TYPE.to_proto(kind), data_json="{}")
        assert codec.to_json(event)["type"] == kind.value == kind.value.lower()
    resolved = execution_pb2.ResolveToolsResponse(
        statuses={s.value: wire_enums.TOOL_STATUS.to_proto(s) for s in ToolStatus}
    )
    assert codec.to_json(resolved)["statuses"] == {
        "pending": "pending",
        "resolved": "resolved",
        "error": "error",
    }
    assert codec.parse(execution_pb2.ExecutionEvent, {"type": "child_finished"}).type == (
        execution_pb2.EVENT_TYPE_CHILD_FINISHED
    )
