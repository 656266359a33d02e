"""One conformance suite for both storage backends (see conftest.py)."""

from __future__ import annotations

import time

import pytest

from rlm_rs.errors import RlmError
from rlm_rs.storage import Storage
from rlm_rs.storage.interfaces import Condition
from rlm_rs.storage.state import INLINE_LIMIT_BYTES, load_state, save_state


def _session(tenant: str, session_id: str, **extra: object) -> dict[str, object]:
    return {"tenant_id": tenant, "session_id": session_id, "status": "CREATING",
            "created_at": "2026-11-24T00:00:00Z", "ttl_epoch": 2_000_000_000,
            "options": {"enable_search": False, "readiness_mode": "LAX"}, "doc_count": 2,
            "total_chars": 1234, **extra}  # fmt: skip


def test_item_crud_and_queries(storage: Storage) -> None:
    items = storage.metadata.items
    items.put("documents", {"PK": "SESSION#s1", "SK": "DOC#b", "doc_index": 1, "ratio": 0.5})
    items.put(
        "documents",
        {"PK": "SESSION#s1", "SK": "DOC#a", "doc_index": 0, "nested": {"x": [1, "y", None]}},
    )
    items.put("documents", {"PK": "SESSION#s2", "SK": "DOC#c", "doc_index": 0})
    got = items.get("documents", "SESSION#s1", "DOC#a")
    assert got is not None and got["nested"] == {"x": [1, "y", None]} and got["version"] == 1
    assert [i["SK"] for i in items.query("documents", "SESSION#s1", "DOC#")] == ["DOC#a", "DOC#b"]
    assert items.get("documents", "SESSION#s1", "DOC#b")["ratio"] == 0.5  # type: ignore[index]
    updated = items.update("documents", "SESSION#s1", "DOC#b", {"ingest_status": "PARSED"})
    assert updated["version"] == 2 and updated["ingest_status"] == "PARSED" and updated["doc_index"] == 1
    items.delete("documents", "SESSION#s1", "DOC#b")
    assert items.get("documents", "SESSION#s1", "DOC#b") is None
    assert items.get("documents", "SESSION#zz", "DOC#a") is None


def test_put_if_absent_refuses_a_second_write(storage: Storage) -> None:
    storage.metadata.put_session(_session("t1", "s1"))
    with pytest.raises(RlmError) as caught:
        storage.metadata.put_session(_session("t1", "s1", status="READY"))
    assert caught.value.code == "CONFLICT"
    assert storage.metadata.get_session("t1", "s1")["status"] == "CREATING"


def test_conditional_updates_conflict(storage: Storage) -> None:
    meta = storage.metadata
    meta.put_session(_session("t1", "s1"))
    meta.update_session("t1", "s1", {"status": "READY"}, from_statuses=("CREATING",))
    with pytest.raises(RlmError) as wrong_status:
        meta.update_session("t1", "s1", {"status": "READY"}, from_statuses=("CREATING",))
    assert wrong_status.value.code == "CONFLICT"
    version = meta.get_session("t1", "s1")["version"]
    meta.update_session("t1", "s1", {"doc_count": 3}, expected_version=version)
    with pytest.raises(RlmError) as stale:
        meta.update_session("t1", "s1", {"doc_count": 4}, expected_version=version)
    assert stale.value.code == "CONFLICT"
    assert meta.get_session("t1", "s1")["doc_count"] == 3
    with pytest.raises(RlmError):
        storage.metadata.items.update("sessions", "TENANT#t1", "SESSION#missing", {"a": 1})


def test_lookups_by_id_and_tenant_listing(storage: Storage) -> None:
    meta = storage.metadata
    meta.put_session(_session("t1", "s1"))
    meta.put_session(_session("t1", "s2", status="READY"))
    meta.put_session(_session("t2", "s3"))
    assert meta.find_session("s3")["tenant_id"] == "t2"  # type: ignore[index]
    assert [s["session_id"] for s in meta.list_sessions("t1")] == ["s1", "s2"]
    assert [s["session_id"] for s in meta.list_sessions("t1", status="READY")] == ["s2"]
    meta.put_execution({"tenant_id": "t1", "session_id": "s1", "execution_id": "e1", "status": "RUNNING"})
    assert meta.get_execution("t1", "e1")["session_id"] == "s1"


def test_tenants_cannot_see_each_other(storage: Storage) -> None:
    meta = storage.metadata
    meta.put_session(_session("t1", "s1"))
    meta.put_execution({"tenant_id": "t1", "session_id": "s1", "execution_id": "e1", "status": "RUNNING"})
    with pytest.raises(RlmError) as session:
        meta.get_session("t2", "s1")
    assert session.value.code == "SESSION_NOT_FOUND"
    with pytest.raises(RlmError) as missing:
        meta.get_session("t2", "never")
    assert (missing.value.code, missing.value.message) == (
        session.value.code,
        session.value.message,
    )
    with pytest.raises(RlmError) as execution:
        meta.get_execution("t2", "e1")
    assert execution.value.code == "EXECUTION_NOT_FOUND"
    assert meta.list_sessions("t2") == []


def test_lease_expiry_and_takeover(storage: Storage) -> None:
    meta = storage.metadata
    meta.put_execution({"tenant_id": "t1", "session_id": "s1", "execution_id": "e1", "status": "RUNNING"})
    key = ("executions", "SESSION#s1", "EXEC#e1")
    assert meta.acquire_lease(*key, owner="A", ttl_seconds=0.5) is not None
    assert meta.acquire_lease(*key, owner="B", ttl_seconds=0.5) is None
    assert meta.acquire_lease(*key, owner="A", ttl_seconds=0.5) is not None  # renew
    with pytest.raises(RlmError):
        meta.update_execution("s1", "e1", {"status": "COMPLETED"}, lease_owner="B")
    deadline = time.monotonic() + 5
    taken = None
    while taken is None and time.monotonic() < deadline:
        time.sleep(0.1)
        taken = meta.acquire_lease(*key, owner="B", ttl_seconds=30)
    assert taken is not None and taken["lease_owner"] == "B"
    assert meta.acquire_lease(*key, owner="A", ttl_seconds=30) is None
    assert meta.release_lease(*key, owner="B")
    assert meta.acquire_lease(*key, owner="A", ttl_seconds=30) is not None


def test_blob_round_trip_ranges_and_listing(storage: Storage) -> None:
    blobs = storage.blobs
    info = blobs.put("parsed/t1/s1/d1/text.txt", "héllo wörld".encode())
    assert info.size == 13
    assert blobs.get("parsed/t1/s1/d1/text.txt").decode() == "héllo wörld"
    assert blobs.get_range("parsed/t1/s1/d1/text.txt", 1, 3) == "é".encode()
    assert blobs.get_range("parsed/t1/s1/d1/text.txt", 10, 100) == b"rld"
    blobs.put("parsed/t1/s1/d1/meta.json", b"{}")
    blobs.put("parsed/t2/s9/d1/text.txt", b"other tenant")
    assert list(blobs.list("parsed/t1/")) == [
        "parsed/t1/s1/d1/meta.json",
        "parsed/t1/s1/d1/text.txt",
    ]
    head = blobs.head("parsed/t1/s1/d1/meta.json")
    assert head is not None and head.size == 2
    assert blobs.head("parsed/none") is None
    assert blobs.uri("parsed/t1/s1/d1/text.txt") == f"s3://{blobs.bucket}/parsed/t1/s1/d1/text.txt"
    blobs.delete("parsed/t1/s1/d1/meta.json")
    assert blobs.head("parsed/t1/s1/d1/meta.json") is None
    with pytest.raises(RlmError) as missing:
        blobs.get("parsed/t1/s1/d1/meta.json")
    assert missing.value.code == "S3_READ_ERROR"


def test_blob_keys_are_immutable(storage: Storage) -> None:
    storage.blobs.put("traces/t1/s1/e1.json.gz", b"abc")
    storage.blobs.put("traces/t1/s1/e1.json.gz", b"abc")  # same bytes: idempotent
    with pytest.raises(RlmError) as caught:
        storage.blobs.put("traces/t1/s1/e1.json.gz", b"abd")
    assert caught.value.code == "CONFLICT"
    assert storage.blobs.get("traces/t1/s1/e1.json.gz") == b"abc"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/./b", "nul\x00"])
def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(RlmError) as caught:
        storage.blobs.put(key, b"x")
    assert caught.value.code == "VALIDATION_ERROR"


def test_large_object_round_trip(storage: Storage) -> None:
    data = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    storage.blobs.put("raw/big.bin", data)
    assert storage.blobs.get("raw/big.bin") == data
    assert storage.blobs.get_range("raw/big.bin", 10_000_000, 10_000_010) == data[10_000_000:10_000_010]


def test_state_inline_and_offloaded_bit_for_bit(storage: Storage) -> None:
    small = '{"work":{"a":1}}'
    big = '{"work":"' + "é" * (INLINE_LIMIT_BYTES // 2 + 10) + '"}'
    for turn, text in enumerate([small, big]):
        record = save_state(storage.metadata, storage.blobs, tenant_id="t1", execution_id="e1",
                            turn_index=turn, state_json=text)  # fmt: skip
        loaded = load_state(storage.metadata, storage.blobs, "e1")
        assert loaded is not None and loaded[0] == text
        assert (record["state_json"] is None) == (text is big)
    assert record["state_s3_uri"].endswith("state/t1/e1/state_1.json.gz")
    assert record["summary"] == {"byte_length": len(big.encode()), "char_length": len(big)}


def test_tampered_state_fails_its_checksum(storage: Storage) -> None:
    save_state(storage.metadata, storage.blobs, tenant_id="t1", execution_id="e1", turn_index=0,
               state_json='{"a":1}')  # fmt: skip
    storage.metadata.items.update("execution_state", "EXEC#e1", "STATE", {"state_json": '{"a":2}'})
    with pytest.raises(RlmError) as caught:
        load_state(storage.metadata, storage.blobs, "e1")
    assert caught.value.code == "CHECKSUM_MISMATCH"


def test_api_keys_store_only_a_keyed_hash(storage: Storage) -> None:
    meta = storage.metadata
    plaintext, record = meta.create_api_key("t1", name="ci")
    assert plaintext.startswith("rlm_key_") and record["tenant_id"] == "t1"
    stored = meta.items.get("api_keys", f"KEY#{record['key_hash']}", f"KEY#{record['key_hash']}")
    assert stored is not None and plaintext not in str(stored)
    assert meta.authenticate(plaintext)["tenant_id"] == "t1"  # type: ignore[index]
    assert meta.authenticate(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert meta.authenticate("not-a-key") is None
    meta.revoke_api_key(record["key_hash"])
    assert meta.authenticate(plaintext) is None
    expired, _ = meta.create_api_key("t1", expires_at="2000-01-01T00:00:00.000000Z")
    assert meta.authenticate(expired) is None


def test_audit_log_is_per_tenant(storage: Storage) -> None:
    storage.metadata.append_audit("t1", "req-1", {"action": "CreateSession", "status_code": 200})
    storage.metadata.append_audit("t2", "req-2", {"action": "GetSession", "status_code": 404})
    (entry,) = storage.metadata.list_audit("t1")
    assert entry["action"] == "CreateSession" and entry["request_id"] == "req-1"


def test_condition_holds_semantics() -> None:
    item = {"version": 3, "status": "READY", "lease_owner": "A", "lease_until": 100.0}
    assert Condition(version=3, attr_in=("status", ("READY",))).holds(item)
    assert not Condition(version=2).holds(item)
    assert not Condition(lease_free_for=("B", 50.0)).holds(item)
    assert Condition(lease_free_for=("B", 150.0)).holds(item)
    assert Condition(lease_free_for=("A", 50.0)).holds(item)
    assert not Condition().holds(None)


def test_sessions_by_status_across_tenants(storage: Storage) -> None:
    meta = storage.metadata
    meta.put_session(_session("t1", "s1"))
    meta.put_session(_session("t2", "s2"))
    meta.put_session(_session("t2", "s3", status="READY"))
    assert sorted(s["session_id"] for s in meta.sessions_with_status("CREATING")) == ["s1", "s2"]
    meta.update_session("t2", "s2", {"status": "READY"}, from_statuses=("CREATING",))
    assert [s["session_id"] for s in meta.sessions_with_status("CREATING")] == ["s1"]
    assert sorted(s["session_id"] for s in meta.sessions_with_status("READY")) == ["s2", "s3"]


def test_init_is_idempotent(storage: Storage) -> None:
    storage.metadata.put_session(_session("t1", "s1"))
    storage.init()  # tables and bucket exist: no error, nothing lost
    storage.init()
    assert storage.metadata.get_session("t1", "s1")["status"] == "CREATING"
