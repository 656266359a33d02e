"""Upload (client stream) and the listings over a real gRPC socket: chunks
past the largest message, nothing stored without the last chunk or past the
size limit, authentication before anything is read; ListSessions and
ListExecutions newest first, paged, filtered and per tenant."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.v1 import execution_pb2, session_pb2
from tests.integration.control.conftest import Api, control_plane, error_code

TEXT = b"Harrow Point light was first lit in 1873.\n"


def _chunks(
    data: bytes, size: int, *, name: str = "light.txt", last: bool = True
) -> Iterator[session_pb2.UploadRequest]:
    yield session_pb2.UploadRequest(file_name=name, content_type="text/plain")
    for start in range(0, len(data), size):
        yield session_pb2.UploadRequest(data=data[start : start + size])
    if last:
        yield session_pb2.UploadRequest(last=True)


def _raw_keys(api: Api, tenant: str = "tenant-a") -> list[str]:
    return list(api.plane.storage.blobs.list(f"raw/{tenant}/"))


def _code(call: object) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return error_code(caught.value)


def test_an_upload_in_chunks_larger_than_any_message_becomes_a_ready_session(api: Api) -> None:
    data = TEXT * 400_000  # ~17 MB: past the control plane's 10 MiB message limit
    result = api.sessions.Upload(_chunks(data, 1024 * 1024), metadata=api.auth())
    assert result.size_bytes == len(data) and result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.raw_s3_uri == f"s3://{api.settings.s3_bucket}/raw/tenant-a/{result.upload_id}/light.txt"
    created = api.sessions.CreateSession(
        session_pb2.CreateSessionRequest(
            docs=[
                session_pb2.DocumentInput(
                    source_name="light.txt", mime_type="text/plain", raw_s3_uri=result.raw_s3_uri
                )
            ]
        ),
        metadata=api.auth(),
    )
    IngestionWorker(api.plane.storage, api.settings).run_once()
    got = api.sessions.GetSession(
        session_pb2.GetSessionRequest(session_id=created.session_id), metadata=api.auth()
    )
    assert got.status == session_pb2.SESSION_STATUS_READY and got.total_chars == len(data) - 1


def test_an_upload_is_kept_only_when_complete_and_within_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_UPLOAD_BYTES", "100000")
    with control_plane(tmp_path) as api:
        assert _code(
            lambda: api.sessions.Upload(_chunks(TEXT * 100, 1000, last=False), metadata=api.auth())
        ) == ("VALIDATION_ERROR")
        assert _code(lambda: api.sessions.Upload(_chunks(b"x" * 100_001, 10_000), metadata=api.auth())) == (
            "PAYLOAD_TOO_LARGE"
        )
        assert _code(lambda: api.sessions.Upload(iter([]), metadata=api.auth())) == "VALIDATION_ERROR"
        bad_type = iter(
            [
                session_pb2.UploadRequest(
                    file_name="a.zip", content_type="application/zip", data=b"PK", last=True
                )
            ]
        )
        assert _code(lambda: api.sessions.Upload(bad_type, metadata=api.auth())) == "UNSUPPORTED_MEDIA_TYPE"
        wrong_key = api.auth("rlm_key_wrong")
        assert _code(lambda: api.sessions.Upload(_chunks(TEXT, 10), metadata=wrong_key)) == "UNAUTHORIZED"
        assert _raw_keys(api) == []
        files = [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]
        assert files == []  # no object and no temporary file
        ok = api.sessions.Upload(_chunks(b"y" * 100_000, 30_000), metadata=api.auth())
        assert ok.size_bytes == 100_000 and _raw_keys(api) == [ok.raw_s3_uri.split("/", 3)[3]]


def test_sessions_are_listed_newest_first_per_tenant(api: Api) -> None:
    mine = [api.ready_session([f"text {i}"]) for i in range(3)]
    other_key, _ = api.plane.storage.metadata.create_api_key("tenant-b")
    theirs = api.sessions.CreateSession(
        session_pb2.CreateSessionRequest(
            docs=[session_pb2.DocumentInput(
                source_name="b.txt", mime_type="text/plain",
                raw_s3_uri=api.sessions.Upload(_chunks(b"b", 10), metadata=api.auth(other_key)).raw_s3_uri,
            )]
        ),
        metadata=api.auth(other_key),
    ).session_id  # fmt: skip
    seen, token = [], ""
    while True:
        page = api.sessions.ListSessions(
            session_pb2.ListSessionsRequest(page_size=2, page_token=token), metadata=api.auth()
        )
        seen += [s.session_id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(mine))
    listed = api.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=api.auth(other_key))
    assert [s.session_id for s in listed.sessions] == [theirs]
    ready = api.sessions.ListSessions(
        session_pb2.ListSessionsRequest(status=session_pb2.SESSION_STATUS_CREATING), metadata=api.auth()
    )
    assert list(ready.sessions) == []
    first = api.sessions.ListSessions(session_pb2.ListSessionsRequest(page_size=1), metadata=api.auth())
    for bad in (
        session_pb2.ListSessionsRequest(
            page_size=1, page_token=first.next_page_token, status=session_pb2.SESSION_STATUS_READY
        ),  # other filters
        session_pb2.ListSessionsRequest(
            status=cast(session_pb2.SessionStatus.ValueType, 99)
        ),  # no such status
        session_pb2.ListSessionsRequest(page_size=201),
    ):
        assert _code(lambda: api.sessions.ListSessions(bad, metadata=api.auth())) == "VALIDATION_ERROR"  # noqa: B023


def test_executions_are_listed_newest_first_by_session_and_status(api: Api) -> None:
    s1, s2 = api.ready_session(), api.ready_session()
    started = []
    for session_id in (s1, s2, s1):
        started.append(
            api.executions.CreateRuntimeExecution(
                execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id), metadata=api.auth()
            ).execution_id
        )
    api.executions.CancelExecution(
        execution_pb2.CancelExecutionRequest(execution_id=started[0]), metadata=api.auth()
    )

    def listed(**filters: Any) -> list[str]:  # str and int fields of the request
        page = api.executions.ListExecutions(
            execution_pb2.ListExecutionsRequest(**filters), metadata=api.auth()
        )
        return [e.execution_id for e in page.executions]

    assert listed() == list(reversed(started))
    assert listed(session_id=s1) == [started[2], started[0]]
    assert listed(status=execution_pb2.EXECUTION_STATUS_CANCELLED) == [started[0]]
    assert listed(session_id=s1, status=execution_pb2.EXECUTION_STATUS_RUNNING) == [started[2]]
    other_key, _ = api.plane.storage.metadata.create_api_key("tenant-b")
    page = api.executions.ListExecutions(execution_pb2.ListExecutionsRequest(), metadata=api.auth(other_key))
    assert list(page.executions) == []
    # a deleted session's executions are no longer listed
    api.sessions.DeleteSession(session_pb2.DeleteSessionRequest(session_id=s2), metadata=api.auth())
    assert listed() == [started[2], started[0]]
    assert (
        _code(
            lambda: api.executions.ListExecutions(
                execution_pb2.ListExecutionsRequest(session_id=s2), metadata=api.auth()
            )
        )
        == "SESSION_NOT_FOUND"
    )
