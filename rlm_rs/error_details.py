"""An RlmError as a `google.rpc.Status` and back: the in-band error of every gRPC call.

The status carries, in this order: `ErrorInfo` (reason = the error code,
domain "rlm-rs", metadata = the details as strings: what generic gRPC
tooling reads), the project's `ErrorDetail` (the details as JSON, exactly as
the REST envelope shows them), `RetryInfo` for RATE_LIMITED (the delay a
caller waits; the gateway's Retry-After) and `BadRequest` for
VALIDATION_ERROR (the offending field). `read` is how the gateway and the
client take them apart; it never raises on a malformed or foreign status.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from rlm_rs.errors import ERROR_DOMAIN, RlmError
from rlm_rs.v1.common_pb2 import ErrorDetail

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The message appears three times in a status (and once more as grpc-message),
# the details twice: these keep the whole under gRPC's 8 KiB metadata limit.
MAX_MESSAGE_CHARS = 500
MAX_DETAILS_CHARS = 1_000
MAX_STATUS_BYTES = 4_000
# "docs[2].mime_type is not supported" -> the field path a validation message starts with.
_NAME = r"[a-z_][a-z0-9_]*(?:\[\d+\])?"
_LEADING_FIELD = re.compile(rf"^({_NAME}(?:\.{_NAME})*) (?:must|is|has)\b")


def _packed(message: Message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def violated_field(error: RlmError) -> str:
    """The request field a VALIDATION_ERROR is about: details.field, or the
    path its message starts with; "" for the request as a whole."""
    named = error.details.get("field")
    if isinstance(named, str):
        return named
    match = _LEADING_FIELD.match(error.message)
    return match.group(1) if match else ""


def retry_seconds(details: dict[str, Any]) -> float | None:
    raw = details.get("retry_after_seconds")
    try:
        seconds = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_status(error: RlmError) -> status_pb2.Status:
    """The google.rpc.Status of an error (code = its gRPC status).

    A message or detail may echo what the caller sent (an over-long id, say):
    each is clipped, and details that still do not fit are left out, so the
    status always fits gRPC's trailing metadata (8 KiB by default; a status
    past it reaches the caller as RESOURCE_EXHAUSTED instead of the error)."""
    status = _status(error, MAX_MESSAGE_CHARS, MAX_DETAILS_CHARS)
    if status.ByteSize() > MAX_STATUS_BYTES:  # wide characters: the short form
        status = _status(error, 100, 0)
    return status


def _status(error: RlmError, message_chars: int, details_chars: int) -> status_pb2.Status:
    message = _clipped(error.message, message_chars)
    details_json = error.details_json()
    metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in error.details.items()}
    if len(details_json) > details_chars:
        details_json, metadata = json.dumps({"details_clipped": True}), {"details_clipped": "true"}
    else:
        metadata = {k: _clipped(v, details_chars) for k, v in metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.code, domain=ERROR_DOMAIN, metadata=metadata)
    details = [
        _packed(info),
        _packed(ErrorDetail(code=error.code, message=message, details_json=details_json)),
    ]
    if error.code == "RATE_LIMITED":
        delay = duration_pb2.Duration()
        delay.FromTimedelta(datetime.timedelta(seconds=retry_seconds(error.details) or 1))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    if error.code == "VALIDATION_ERROR":
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=_clipped(violated_field(error), message_chars), description=message
        )
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    return status_pb2.Status(code=error.grpc_status.value[0], message=message, details=details)


@dataclass
class StatusDetails:
    """What a failed call's status carried (each part None or empty when absent)."""

    info: error_details_pb2.ErrorInfo | None = None
    detail: ErrorDetail | None = None
    retry_delay_seconds: float | None = None
    field_violations: list[tuple[str, str]] = field(default_factory=list)

    @property
    def code(self) -> str | None:
        """The error code (ErrorInfo.reason), None without this project's ErrorInfo."""
        return self.info.reason if self.info is not None else None

    def details(self) -> dict[str, Any]:
        """The error's details as the REST envelope shows them: the ErrorDetail's
        JSON, else ErrorInfo's string metadata; RetryInfo fills
        retry_after_seconds when it is missing."""
        out: dict[str, Any] = {}
        if self.detail is not None and self.detail.details_json:
            try:
                loaded = json.loads(self.detail.details_json)
            except ValueError:
                loaded = None
            out = loaded if isinstance(loaded, dict) else {}
        elif self.info is not None:
            out = dict(self.info.metadata)
        if self.retry_delay_seconds is not None and "retry_after_seconds" not in out:
            out["retry_after_seconds"] = self.retry_delay_seconds
        return out


def _unpack(status: status_pb2.Status, found: StatusDetails) -> None:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        ours = ErrorDetail()
        retry = error_details_pb2.RetryInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            if (not info.domain or info.domain == ERROR_DOMAIN) and found.info is None:
                found.info = info
        elif detail.Is(ours.DESCRIPTOR) and detail.Unpack(ours):
            found.detail = ours
        elif detail.Is(retry.DESCRIPTOR) and detail.Unpack(retry):
            found.retry_delay_seconds = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
            found.field_violations.extend((v.field, v.description) for v in bad.field_violations)


def read(trailing_metadata: Iterable[Any] | None) -> StatusDetails:
    """The details among a failed call's trailing metadata (grpc-status-details-bin)."""
    found = StatusDetails()
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
            _unpack(status, found)
        except Exception:  # a malformed detail is simply absent
            return StatusDetails()
    if found.info is None:
        return StatusDetails()  # a foreign status: none of its parts are ours to trust
    return found
