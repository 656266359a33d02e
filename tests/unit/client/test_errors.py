"""The client's exception tree covers exactly the contract's error codes (rlm_rs/errors.py),
and the HTTP transport reads an error envelope (or a bare status) into the right class."""

from __future__ import annotations

import pytest

from rlm_rs.client import errors as ce
from rlm_rs.client._http import error_from_envelope
from rlm_rs.errors import ERRORS


def test_every_contract_code_has_a_class_and_no_other_code_does() -> None:
    assert set(ce.ERROR_CLASSES) == set(ERRORS)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("UNAUTHORIZED", ce.UnauthorizedError),
        ("SESSION_NOT_FOUND", ce.SessionNotFoundError),
        ("EXECUTION_NOT_FOUND", ce.ExecutionNotFoundError),
        ("NOT_FOUND", ce.NotFoundError),
        ("RATE_LIMITED", ce.RateLimitedError),
        ("VALIDATION_ERROR", ce.ValidationError),
        ("PAYLOAD_TOO_LARGE", ce.PayloadTooLargeError),
        ("SERVICE_UNAVAILABLE", ce.ServiceUnavailableError),
        ("MAX_TURNS_EXCEEDED", ce.BudgetExceededError),
    ],
)
def test_the_class_follows_the_code(code: str, cls: type[ce.RlmApiError]) -> None:
    error = ce.api_error(code, "m", request_id="req_1")
    assert type(error) is cls and error.code == code and error.request_id == "req_1"
    assert isinstance(error, ce.RlmApiError) and isinstance(error, ce.RlmClientError)


def test_not_found_codes_share_a_parent() -> None:
    assert issubclass(ce.SessionNotFoundError, ce.NotFoundError)
    assert issubclass(ce.ExecutionNotFoundError, ce.NotFoundError)


def test_an_unknown_code_is_kept_on_the_base_class() -> None:
    error = ce.api_error("SOMETHING_NEW", "later server", http_status=418)
    assert type(error) is ce.RlmApiError and error.code == "SOMETHING_NEW" and error.http_status == 418


def test_envelope_gives_code_message_details_request_id_and_status() -> None:
    envelope = {
        "error": {
            "code": "SESSION_NOT_FOUND",
            "message": "session not found",
            "request_id": "req_abc",
            "details": {"session_id": "sess_x"},
        }
    }
    error = error_from_envelope(envelope, status=404, request_id="req_sent")
    assert isinstance(error, ce.SessionNotFoundError)
    assert (error.message, error.request_id, error.http_status) == ("session not found", "req_abc", 404)
    assert error.details == {"session_id": "sess_x"}


def test_retry_after_header_fills_a_missing_detail() -> None:
    envelope = {"error": {"code": "RATE_LIMITED", "message": "slow down", "request_id": "r", "details": {}}}
    error = error_from_envelope(envelope, status=429, request_id="r", retry_after="3")
    assert isinstance(error, ce.RateLimitedError) and error.retry_after_seconds == 3.0


def test_detail_wins_over_the_rounded_header() -> None:
    envelope = {
        "error": {
            "code": "RATE_LIMITED",
            "message": "m",
            "request_id": "r",
            "details": {"retry_after_seconds": "0.4"},
        }
    }
    error = error_from_envelope(envelope, status=429, request_id="r", retry_after="1")
    assert isinstance(error, ce.RateLimitedError) and error.retry_after_seconds == 0.4


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (502, ce.ServiceUnavailableError),
        (429, ce.RateLimitedError),
        (401, ce.UnauthorizedError),
        (500, ce.InternalError),
    ],
)
def test_a_status_without_an_envelope_still_gets_a_code(status: int, cls: type[ce.RlmApiError]) -> None:
    error = error_from_envelope("<html>proxy</html>", status=status, request_id="req_sent")
    assert type(error) is cls and error.request_id == "req_sent" and error.http_status == status
