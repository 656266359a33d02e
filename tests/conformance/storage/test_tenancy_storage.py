"""Tenancy and deletion in the storage layer, on both back ends: prefix
deletion, the raw upload namespace, errors that carry no storage keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_rs.errors import RlmError
from rlm_rs.storage import Storage
from rlm_rs.storage._embedded import LocalBlobStore
from rlm_rs.storage.interfaces import BlobInfo, Condition
from rlm_rs.storage.uploads import RawGrants, readable_raw_key, store_upload, upload_key


def test_delete_prefix_removes_exactly_the_folder(storage: Storage) -> None:
    blobs = storage.blobs
    inside = ["parsed/t1/s1/d0/text.txt", "parsed/t1/s1/d0/meta.json", "parsed/t1/s1/d1/text.txt"]
    outside = ["parsed/t1/s10/d0/text.txt", "parsed/t1/s1x", "parsed/t2/s1/d0/text.txt", "raw/t1/u/a.txt"]
    for key in inside + outside:
        blobs.put(key, key.encode())
    assert blobs.delete_prefix("parsed/t1/s1/") == 3
    assert all(blobs.head(key) is None for key in inside)
    assert all(blobs.get(key) == key.encode() for key in outside)
    assert list(blobs.list("parsed/t1/s1/")) == []
    assert blobs.delete_prefix("parsed/t1/s1/") == 0  # idempotent
    assert blobs.delete_prefix("parsed/nothing/") == 0


@pytest.mark.parametrize("prefix", ["", "/", "parsed", "parsed/../", "a//"])
def test_delete_prefix_refuses_anything_but_a_folder(storage: Storage, prefix: str) -> None:
    storage.blobs.put("parsed/t1/s1/d0/text.txt", b"x")
    with pytest.raises(RlmError) as caught:
        storage.blobs.delete_prefix(prefix)
    assert caught.value.code == "VALIDATION_ERROR"
    assert storage.blobs.get("parsed/t1/s1/d0/text.txt") == b"x"


def test_embedded_delete_prefix_leaves_nothing_on_disk(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs", "rlm-rs")
    root = tmp_path / "blobs" / "rlm-rs" / "parsed"
    blobs.put("parsed/t1/s1/d0/text.txt", b"x" * 1000)
    (root / "t1" / "s1" / "d0" / ".tmp-killed-writer").write_bytes(b"half")
    blobs.put("parsed/t1/s2/d0/text.txt", b"y")
    assert blobs.delete_prefix("parsed/t1/s1/") == 1
    assert not (root / "t1" / "s1").exists()  # files, a dead writer's temp file, folders
    assert (root / "t1" / "s2" / "d0" / "text.txt").read_bytes() == b"y"
    blobs.delete_prefix("parsed/t1/s2/")
    assert not (root / "t1").exists() and root.parent.is_dir()  # empty parents go, the bucket stays


def test_errors_carry_no_storage_keys(storage: Storage) -> None:
    """A CONFLICT or a read error can reach a caller (a 409, a 502): neither
    its details nor its message may name an internal key."""
    meta, blobs = storage.metadata, storage.blobs
    meta.items.put("executions", {"PK": "SESSION#s1", "SK": "EXEC#e1", "status": "RUNNING"})
    blobs.put("state/t1/e1/state_0.json.gz", b"a")
    failures = []
    for attempt in (
        lambda: meta.items.put("executions", {"PK": "SESSION#s1", "SK": "EXEC#e1"}, if_absent=True),
        lambda: meta.items.update(
            "executions",
            "SESSION#s1",
            "EXEC#e1",
            {"x": 1},
            condition=Condition(attr_in=("status", ("DONE",))),
        ),
        lambda: blobs.put("state/t1/e1/state_0.json.gz", b"b"),
        lambda: blobs.get("state/t1/e1/state_9.json.gz"),
        lambda: blobs.get_range("state/t1/e1/state_9.json.gz", 0, 10),
    ):
        with pytest.raises(RlmError) as caught:
            attempt()
        failures.append(caught.value)
    assert [f.code for f in failures] == ["CONFLICT"] * 3 + ["S3_READ_ERROR"] * 2
    for failure in failures:
        shown = failure.message + repr(failure.details)
        assert "SESSION#" not in shown and "EXEC#" not in shown and "state/" not in shown, shown


def test_raw_namespace_admits_only_the_callers_uploads(storage: Storage) -> None:
    blobs = storage.blobs
    own = store_upload(blobs, "acme", "report.txt", b"acme's report")
    foreign = store_upload(blobs, "globex", "report.txt", b"globex's report")
    assert own.startswith(f"s3://{blobs.bucket}/raw/acme/") and foreign.startswith(
        f"s3://{blobs.bucket}/raw/globex/"
    )
    blobs.put("parsed/globex/s1/d0/text.txt", b"parsed")
    blobs.put("cache/acme/llm/abc.json", b"{}")
    blobs.put("shared/reference/manual.txt", b"shared")
    grants = RawGrants.parse({"acme": ["shared/reference/"]})
    assert readable_raw_key(blobs, "acme", own, grants) == own.split("/", 3)[3]
    assert readable_raw_key(blobs, "acme", blobs.uri("shared/reference/manual.txt"), grants)
    refused = [
        foreign,  # another tenant's upload
        blobs.uri("parsed/globex/s1/d0/text.txt"),  # internal, another tenant's
        blobs.uri("cache/acme/llm/abc.json"),  # internal, its own
        blobs.uri("raw/acme/none/missing.txt"),  # missing
        f"s3://another-bucket/{own.split('/', 3)[3]}",  # its own key, another bucket
        blobs.uri("shared/reference/manual.txt"),  # granted to acme only
    ]
    assert [
        readable_raw_key(blobs, "globex" if i == 5 else "acme", uri, grants) for i, uri in enumerate(refused)
    ] == [None] * len(refused)


def test_raw_namespace_never_looks_at_a_key_it_refuses(storage: Storage) -> None:
    """One HEAD on every path, never of a refused key: the refusal's cost
    cannot depend on whether the foreign object exists."""
    blobs = storage.blobs
    foreign = store_upload(blobs, "globex", "secret.txt", b"globex only")
    missing = blobs.uri("raw/globex/0000/absent.txt")
    seen: list[str] = []
    real_head = blobs.head

    def head(key: str) -> BlobInfo | None:
        seen.append(key)
        return real_head(key)

    blobs.head = head  # type: ignore[method-assign]
    try:
        assert readable_raw_key(blobs, "acme", foreign, RawGrants()) is None
        assert readable_raw_key(blobs, "acme", missing, RawGrants()) is None
    finally:
        del blobs.head
    assert seen == ["raw/acme/.absent", "raw/acme/.absent"]


@pytest.mark.parametrize(
    "grant", [["raw/globex/"], ["parsed/"], ["state/x/"], ["cache/"], ["no-slash"], [""], "shared/"]
)
def test_operator_grants_cannot_reach_internal_or_tenant_keys(grant: object) -> None:
    with pytest.raises(ValueError):
        RawGrants.parse({"acme": grant})


def test_upload_keys_are_one_tenant_segment_and_a_safe_name(tmp_path: Path) -> None:
    assert upload_key("acme", "0123abcd", "../../etc/passwd") == "raw/acme/0123abcd/passwd"
    assert upload_key("acme", "u1", "a b/ç.txt") == "raw/acme/u1/_.txt"
    for tenant in ("a/b", "..", "", "x" * 200):
        with pytest.raises(RlmError):
            upload_key(tenant, "u1", "f.txt")
    with pytest.raises(RlmError):
        upload_key("acme", "../x", "f.txt")


def test_api_keys_need_a_tenant_id_that_is_one_path_segment(storage: Storage) -> None:
    for tenant in ("a/b", "..", "", " x", "a\x00"):
        with pytest.raises(RlmError) as caught:
            storage.metadata.create_api_key(tenant)
        assert caught.value.code == "VALIDATION_ERROR"
    assert storage.metadata.create_api_key("tenant-a.b_c@d")[1]["tenant_id"] == "tenant-a.b_c@d"


def test_keyed_digest_depends_on_pepper_and_purpose(storage: Storage) -> None:
    meta = storage.metadata
    digest = meta.keyed_digest("llm-cache", b"material")
    assert len(digest) == 64 and digest == meta.keyed_digest("llm-cache", b"material")
    assert digest != meta.keyed_digest("other", b"material")
    import hashlib

    assert digest != hashlib.sha256(b"material").hexdigest()
