import grpc
import pytest

from rlm_rs.errors import ERRORS, RlmError, code_for_grpc_status

SPEC_CODES = {
    "UNAUTHORIZED": 401, "FORBIDDEN": 403, "SESSION_NOT_FOUND": 404,
    "EXECUTION_NOT_FOUND": 404, "SESSION_NOT_READY": 409, "SESSION_EXPIRED": 410,
    "VALIDATION_ERROR": 422, "RATE_LIMITED": 429, "BUDGET_EXCEEDED": 400,
    "MAX_TURNS_EXCEEDED": 400, "STEP_TIMEOUT": 400, "SANDBOX_AST_REJECTED": 400,
    "SANDBOX_LINE_LIMIT": 400, "STATE_INVALID_TYPE": 400, "STATE_TOO_LARGE": 400,
    "CHECKSUM_MISMATCH": 400, "S3_READ_ERROR": 502, "PARSER_ERROR": 502,
    "LLM_PROVIDER_ERROR": 502, "LAMBDA_ERROR": 500, "INTERNAL_ERROR": 500,
}  # fmt: skip


@pytest.mark.parametrize(("code", "status"), sorted(SPEC_CODES.items()))
def test_every_spec_code_has_its_http_status(code: str, status: int) -> None:
    assert ERRORS[code].http_status == status


def test_envelope_has_the_spec_shape() -> None:
    err = RlmError("SESSION_NOT_FOUND", "no such session", {"session_id": "s1"})
    assert err.envelope("req-1") == {
        "error": {
            "code": "SESSION_NOT_FOUND",
            "message": "no such session",
            "request_id": "req-1",
            "details": {"session_id": "s1"},
        }
    }
    assert err.grpc_status is grpc.StatusCode.NOT_FOUND


def test_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown error code"):
        RlmError("NOPE", "x")


def test_status_without_error_info_maps_to_a_spec_code() -> None:
    assert code_for_grpc_status(grpc.StatusCode.UNAUTHENTICATED) == "UNAUTHORIZED"
    assert code_for_grpc_status(grpc.StatusCode.UNKNOWN) == "INTERNAL_ERROR"


def test_every_code_builds_its_family() -> None:
    from rlm_rs import errors

    for code in ERRORS:
        error = RlmError(code, "x")
        assert type(error) is not RlmError and code in type(error).codes, code
    assert isinstance(RlmError("LAMBDA_ERROR", "x"), errors.SandboxUnavailable)
    assert isinstance(RlmError("LAMBDA_ERROR", "x"), errors.UpstreamError)
    assert isinstance(RlmError("MAX_TURNS_EXCEEDED", "x"), errors.BudgetExceeded)


def test_a_family_catches_codes_raised_by_their_string() -> None:
    from rlm_rs.errors import ConflictError, NotFound

    with pytest.raises(ConflictError):
        raise RlmError("CONFLICT", "two writers")
    with pytest.raises(NotFound):
        raise RlmError("EXECUTION_NOT_FOUND", "gone")
    with pytest.raises(ValueError, match="is a NotFound, not a ConflictError"):
        ConflictError("EXECUTION_NOT_FOUND", "x")


def test_an_error_survives_pickling_with_its_family() -> None:
    import pickle

    from rlm_rs.errors import ConflictError

    error = pickle.loads(pickle.dumps(RlmError("CONFLICT", "busy", {"status": "RUNNING"})))
    assert isinstance(error, ConflictError) and error.details == {"status": "RUNNING"}
