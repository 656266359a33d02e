"""SessionService and CitationService over a real gRPC socket."""

from __future__ import annotations

import grpc
import pytest

from rlm_rs.v1 import citation_pb2, session_pb2
from tests.integration.control.conftest import REPORT, Api, error_code


def test_create_ingest_get_list_delete(api: Api) -> None:
    session_id = api.ready_session()
    session = api.sessions.GetSession(
        session_pb2.GetSessionRequest(session_id=session_id), metadata=api.auth()
    )
    assert (
        session.status == session_pb2.SESSION_STATUS_READY
        and session.readiness.ready
        and session.readiness.parsed_ready
    )
    assert [d.ingest_status for d in session.docs] == [
        session_pb2.INGEST_STATUS_PARSED,
        session_pb2.INGEST_STATUS_PARSED,
    ]
    assert session.docs[0].text_s3_uri.endswith("/text.txt") and session.total_chars > 0
    listed = api.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=api.auth())
    assert [s.session_id for s in listed.sessions] == [session_id]
    deleted = api.sessions.DeleteSession(
        session_pb2.DeleteSessionRequest(session_id=session_id), metadata=api.auth()
    )
    assert deleted.status == session_pb2.SESSION_STATUS_DELETING
    with pytest.raises(grpc.RpcError) as gone:
        api.sessions.GetSession(session_pb2.GetSessionRequest(session_id=session_id), metadata=api.auth())
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND and error_code(gone.value) == "SESSION_NOT_FOUND"


def test_other_tenants_see_nothing_and_learn_nothing(api: Api) -> None:
    session_id = api.ready_session()
    other, _ = api.plane.storage.metadata.create_api_key("tenant-b")
    errors = []
    for target in (session_id, "sess_does_not_exist"):
        with pytest.raises(grpc.RpcError) as caught:
            api.sessions.GetSession(
                session_pb2.GetSessionRequest(session_id=target), metadata=api.auth(other)
            )
        errors.append((caught.value.code(), caught.value.details(), error_code(caught.value)))
    assert errors[0] == errors[1] == (grpc.StatusCode.NOT_FOUND, "session not found", "SESSION_NOT_FOUND")


def test_requests_need_a_valid_key(api: Api) -> None:
    for metadata in ((), (("authorization", "Bearer rlm_key_wrong"),), (("authorization", "Basic x"),)):
        with pytest.raises(grpc.RpcError) as caught:
            api.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_code(caught.value) == "UNAUTHORIZED"


def test_request_id_is_returned(api: Api) -> None:
    _, call = api.sessions.ListSessions.with_call(
        session_pb2.ListSessionsRequest(), metadata=(*api.auth(), ("x-request-id", "req-123"))
    )
    assert ("x-request-id", "req-123") in call.trailing_metadata()


@pytest.mark.parametrize(
    ("docs", "fragment"),
    [
        ([], "at least one document"),
        (
            [session_pb2.DocumentInput(source_name="a.txt", mime_type="text/plain", raw_s3_uri="http://x/y")],
            "not an s3:// URI",
        ),
        (
            [
                session_pb2.DocumentInput(
                    source_name="a.txt",
                    mime_type="text/plain",
                    raw_s3_uri="s3://rlm-rs/raw/tenant-a/u1/missing.txt",
                )
            ],
            "does not exist",
        ),
        (
            [
                session_pb2.DocumentInput(
                    source_name="a.exe", mime_type="application/x-msdownload", raw_s3_uri="s3://rlm-rs/raw/x"
                )
            ],
            "mime_type",
        ),
    ],
)
def test_bad_session_requests_are_validation_errors(api: Api, docs: list, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(grpc.RpcError) as caught:
        api.sessions.CreateSession(session_pb2.CreateSessionRequest(docs=docs), metadata=api.auth())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(caught.value) == "VALIDATION_ERROR" and fragment in str(caught.value.details())


def test_get_span_and_verify_citation(api: Api) -> None:
    session_id = api.ready_session()
    session = api.sessions.GetSession(
        session_pb2.GetSessionRequest(session_id=session_id), metadata=api.auth()
    )
    doc = session.docs[0]
    start = REPORT.index("Revenue grew")
    span = api.citations.GetSpan(
        citation_pb2.GetSpanRequest(
            session_id=session_id, doc_id=doc.doc_id, start_char=start, end_char=start + 12
        ),
        metadata=api.auth(),
    )
    assert span.text == "Revenue grew" and span.ref.checksum.startswith("sha256:")
    verified = api.citations.VerifyCitation(
        citation_pb2.VerifyCitationRequest(ref=span.ref), metadata=api.auth()
    )
    assert verified.valid and verified.text == "Revenue grew" and verified.source_name == "doc0.txt"
    tampered = citation_pb2.VerifyCitationRequest(ref=span.ref)
    tampered.ref.end_char += 1
    assert not api.citations.VerifyCitation(tampered, metadata=api.auth()).valid
    with pytest.raises(grpc.RpcError) as out_of_range:
        api.citations.GetSpan(
            citation_pb2.GetSpanRequest(
                session_id=session_id, doc_id=doc.doc_id, start_char=5, end_char=10**9
            ),
            metadata=api.auth(),
        )
    assert error_code(out_of_range.value) == "VALIDATION_ERROR"


def test_rate_limit_per_tenant(tmp_path, api: Api) -> None:  # type: ignore[no-untyped-def]
    api.plane.engine  # noqa: B018
    from rlm_rs.control.admission import RateLimiter

    limiter = RateLimiter({"default": {"rate_per_second": 1, "burst": 2}})
    assert limiter.take("t") == 0 and limiter.take("t") == 0
    assert limiter.take("t") > 0 and limiter.take("other") == 0


def test_health_reports_components(api: Api) -> None:
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(api.channel)
    deadline = time.monotonic() + 10
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline and len(statuses) < 4:
        for name in ("", "storage", "sandbox", "provider"):
            try:
                statuses[name] = stub.Check(health_pb2.HealthCheckRequest(service=name)).status
            except grpc.RpcError:
                time.sleep(0.05)
    assert statuses == dict.fromkeys(
        ("", "storage", "sandbox", "provider"), health_pb2.HealthCheckResponse.SERVING
    )
