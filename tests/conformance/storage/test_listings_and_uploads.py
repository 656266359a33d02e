"""Listings and streamed uploads in the storage layer, on both back ends:
newest-first pages by tenant (GSI3), cursors, filters, tenant isolation;
put_stream in chunks (S3 multipart past one part), and nothing left behind
when the stream fails."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from rlm_rs.errors import RlmError
from rlm_rs.storage import Storage
from rlm_rs.storage._aws import MULTIPART_PART_BYTES
from rlm_rs.storage.metadata import now_iso
from rlm_rs.storage.uploads import stream_upload


def _session(storage: Storage, tenant: str, index: int, status: str = "READY") -> str:
    session_id = f"sess_{tenant}_{index:04d}"
    storage.metadata.put_session(
        {
            "tenant_id": tenant,
            "session_id": session_id,
            "status": status,
            "created_at": now_iso(1_800_000_000 + index),
        }
    )
    return session_id


def _execution(storage: Storage, tenant: str, session_id: str, index: int, **extra: object) -> str:
    execution_id = f"exec_{tenant}_{index:04d}"
    storage.metadata.put_execution(
        {
            "tenant_id": tenant,
            "session_id": session_id,
            "execution_id": execution_id,
            "status": "COMPLETED" if index % 2 else "RUNNING",
            "started_at": now_iso(1_800_000_000 + index),
            **extra,
        }
    )
    return execution_id


def test_sessions_are_listed_newest_first_in_pages_per_tenant(storage: Storage) -> None:
    mine = [_session(storage, "t1", i) for i in range(7)]
    _session(storage, "t2", 100)  # newer than all of t1's, another tenant
    _session(storage, "t1", 50, status="DELETING")  # left out
    seen, cursor = [], ""
    while True:
        page, cursor = storage.metadata.list_sessions_page("t1", limit=3, after=cursor)
        assert len(page) <= 3
        seen += [s["session_id"] for s in page]
        if not cursor:
            break
    assert seen == list(reversed(mine))
    assert all("GSI3PK" not in s and "PK" not in s for s in page)  # storage keys stay inside
    assert storage.metadata.list_sessions_page("nobody", limit=5) == ([], "")


def test_a_status_filter_reads_a_bounded_slice_and_keeps_order(storage: Storage) -> None:
    for i in range(6):
        _session(storage, "t1", i, status="READY" if i % 3 == 0 else "CREATING")
    page, cursor = storage.metadata.list_sessions_page("t1", limit=10, status="READY")
    assert [s["session_id"] for s in page] == ["sess_t1_0003", "sess_t1_0000"]
    assert cursor == ""


def test_executions_are_listed_by_tenant_session_and_status_without_children(storage: Storage) -> None:
    s1, s2 = _session(storage, "t1", 1), _session(storage, "t1", 2)
    ids = [_execution(storage, "t1", s1 if i < 4 else s2, i) for i in range(6)]
    _execution(storage, "t1", s1, 10, parent_execution_id=ids[0], depth=1)  # a child: not listed
    _execution(storage, "t2", _session(storage, "t2", 3), 11)
    page, cursor = storage.metadata.list_executions_page("t1", limit=50)
    assert [e["execution_id"] for e in page] == list(reversed(ids)) and cursor == ""
    page, _ = storage.metadata.list_executions_page("t1", limit=50, session_id=s1, status="COMPLETED")
    assert [e["execution_id"] for e in page] == [ids[3], ids[1]]
    first, cursor = storage.metadata.list_executions_page("t1", limit=4)
    rest, end = storage.metadata.list_executions_page("t1", limit=4, after=cursor)
    assert [e["execution_id"] for e in first + rest] == list(reversed(ids)) and end == ""
    # an update (status change) keeps the record in the listing
    storage.metadata.update_execution(s1, ids[0], {"status": "CANCELLED"})
    page, _ = storage.metadata.list_executions_page("t1", limit=50, status="CANCELLED")
    assert [e["execution_id"] for e in page] == [ids[0]]


def _chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield bytes([sent // size % 251]) * n
        sent += n


def test_put_stream_stores_the_chunks_in_order(storage: Storage) -> None:
    total = MULTIPART_PART_BYTES + 300_000  # S3: a multipart upload of two parts
    expected = hashlib.sha256(b"".join(_chunks(total))).hexdigest()
    info = storage.blobs.put_stream("raw/t1/upl_a/big.bin", _chunks(total), "application/octet-stream")
    assert info.size == total
    assert hashlib.sha256(storage.blobs.get("raw/t1/upl_a/big.bin")).hexdigest() == expected
    small = storage.blobs.put_stream("raw/t1/upl_b/small.txt", iter([b"ab", b"", b"c"]))
    assert small.size == 3 and storage.blobs.get("raw/t1/upl_b/small.txt") == b"abc"
    with pytest.raises(RlmError) as caught:
        storage.blobs.put_stream("raw/t1/upl_b/small.txt", iter([b"x"]))
    assert caught.value.code == "CONFLICT"


@pytest.mark.parametrize("fail_after", [1, 40])  # within the first part; after a part was sent
def test_a_failing_stream_leaves_nothing_behind(storage: Storage, fail_after: int) -> None:
    def broken() -> Iterator[bytes]:
        for index, chunk in enumerate(_chunks(64 * 1024 * 1024)):
            if index == fail_after:
                raise RlmError("PAYLOAD_TOO_LARGE", "upload too large")
            yield chunk

    with pytest.raises(RlmError):
        storage.blobs.put_stream("raw/t1/upl_c/broken.bin", broken())
    assert storage.blobs.head("raw/t1/upl_c/broken.bin") is None
    assert list(storage.blobs.list("raw/t1/")) == []
    client = getattr(storage.blobs, "client", None)
    if client is not None:  # S3: no multipart upload left open (its parts would be billed)
        assert client.list_multipart_uploads(Bucket=storage.blobs.bucket).get("Uploads", []) == []
    root = getattr(storage.blobs, "root", None)
    if root is not None:  # embedded: no temporary file left
        assert [p for p in root.rglob("*") if p.is_file()] == []


def test_stream_upload_checks_type_size_and_content_before_keeping_anything(storage: Storage) -> None:
    stored = stream_upload(
        storage.blobs, "t1", "../../notes.md", "text/markdown; charset=utf-8", iter([b"# Hi\n"]), 100
    )
    assert stored.raw_s3_uri.startswith(f"s3://{storage.blobs.bucket}/raw/t1/upl_")
    assert stored.raw_s3_uri.endswith("/notes.md") and stored.content_type == "text/markdown"
    assert stored.sha256 == hashlib.sha256(b"# Hi\n").hexdigest() and stored.size_bytes == 5
    refusals = [
        ("a.exe", "application/x-msdownload", [b"MZ"], 100, "UNSUPPORTED_MEDIA_TYPE"),
        ("a.txt", "text/plain", [b"x" * 60, b"y" * 60], 100, "PAYLOAD_TOO_LARGE"),
        ("a.pdf", "application/pdf", [b"not a pdf at all"], 100, "VALIDATION_ERROR"),
        ("a.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", [b"%PDF-"], 100,
         "VALIDATION_ERROR"),
        ("a.txt", "text/plain", [b"\x00\x01binary"], 100, "VALIDATION_ERROR"),
        ("a.txt", "text/plain", [], 100, "VALIDATION_ERROR"),
        ("", "text/plain", [b"x"], 100, "VALIDATION_ERROR"),
    ]  # fmt: skip
    for name, content_type, chunks, limit, code in refusals:
        with pytest.raises(RlmError) as caught:
            stream_upload(storage.blobs, "t1", name, content_type, iter(chunks), limit)
        assert caught.value.code == code, (name, content_type)
    assert list(storage.blobs.list("raw/t1/")) == [stored.raw_s3_uri.split("/", 3)[3]]


def test_create_tables_adds_the_listing_index_to_an_older_dynamodb_table(moto_endpoint: str) -> None:
    """A table made before GSI3 existed gets it from `storage init` (create_tables)."""
    from rlm_rs.storage._aws import DynamoItemStore

    store = DynamoItemStore(region="us-east-1", table_prefix="old_rlm_", endpoint_url=moto_endpoint)
    store.client.create_table(
        TableName="old_rlm_sessions",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("PK", "SK", "GSI1PK")],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [{"AttributeName": "GSI1PK", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    store.create_tables()
    indexes = store.client.describe_table(TableName="old_rlm_sessions")["Table"]["GlobalSecondaryIndexes"]
    assert "GSI3" in {index["IndexName"] for index in indexes}
    store.create_tables()  # idempotent
    store.put("sessions", {"PK": "TENANT#t", "SK": "SESSION#s", "GSI3PK": "TENANT#t", "GSI3SK": "2026#s"})
    assert [i["SK"] for i in store.query_newest("sessions", "TENANT#t", limit=5)] == ["SESSION#s"]
