"""An error that echoes a caller's over-long input still fits gRPC's trailing
metadata (8 KiB): found by tests/fuzz/test_fuzz_grpc.py, where a 5,000-char id
turned NOT_FOUND into RESOURCE_EXHAUSTED "metadata size exceeds soft limit"."""

import base64

from rlm_rs import error_details
from rlm_rs.errors import RlmError


def _trailer_bytes(error: RlmError) -> int:
    status = error_details.to_status(error)
    return len(base64.b64encode(status.SerializeToString())) + len(status.message.encode()) * 3


def test_a_long_echoed_id_is_clipped_and_the_code_kept() -> None:
    error = RlmError("EXECUTION_NOT_FOUND", "execution not found: " + "1" * 20_000, {"id": "1" * 20_000})
    status = error_details.to_status(error)
    assert _trailer_bytes(error) < 8_192
    assert status.message.startswith("execution not found: 111") and status.message.endswith("…")
    parsed = error_details.read([(error_details.STATUS_DETAILS_KEY, status.SerializeToString())])
    assert parsed.code == "EXECUTION_NOT_FOUND"


def test_wide_characters_fall_back_to_the_short_form() -> None:
    error = RlmError("VALIDATION_ERROR", "question " + "\U0001f600" * 5_000, {"field": "q" * 3_000})
    assert _trailer_bytes(error) < 8_192
    assert (
        error_details.read(
            [(error_details.STATUS_DETAILS_KEY, error_details.to_status(error).SerializeToString())]
        ).code
        == "VALIDATION_ERROR"
    )


def test_ordinary_errors_are_untouched() -> None:
    error = RlmError("RATE_LIMITED", "slow down", {"retry_after_seconds": 2})
    status = error_details.to_status(error)
    parsed = error_details.read([(error_details.STATUS_DETAILS_KEY, status.SerializeToString())])
    assert status.message == "slow down" and parsed.details()["retry_after_seconds"] == 2
    assert parsed.retry_delay_seconds == 2
