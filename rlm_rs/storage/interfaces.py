"""The two storage interfaces every backend implements, and their vocabulary.

`ItemStore` is deliberately DynamoDB-shaped (tables of items keyed by PK/SK,
two sparse secondary indexes on GSI1PK and GSI2PK, conditional writes,
optimistic `version`) so the
embedded SQLite backend and the AWS backend behave the same and pass one
conformance suite. `BlobStore` is S3-shaped with immutable keys. Typed access
for the rest of the appliance is `rlm_rs.storage.metadata.MetadataStore`;
nothing outside rlm_rs/storage should build keys or conditions itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rlm_rs.errors import RlmError

Item = dict[str, Any]

# Logical table names (docs/api.md#storage); the physical name is DDB_TABLE_PREFIX + name
# with the spec's own "rlm_" prefix dropped: default prefix "rlm_" gives
# "rlm_sessions".
INDEXES: tuple[str, ...] = ("GSI1", "GSI2")
# The listing index: partition GSI3PK (a tenant), sort GSI3SK (creation time +
# id), newest first. Sparse: only records that carry GSI3PK are listed.
LISTING_INDEX = "GSI3"
TABLES: tuple[str, ...] = (
    "sessions", "documents", "executions", "execution_state", "api_keys", "audit_log",
)  # fmt: skip


@dataclass(frozen=True)
class Condition:
    """Conditions a write must meet; all given parts must hold.

    exists: the item must exist (updates always require it).
    version: the item's current `version` must equal this.
    attr_in: (attribute, allowed values): e.g. a status transition's sources.
    lease_free_for: (owner, now_epoch): the item's lease is unset, expired at
        `now_epoch`, or already held by `owner`.
    lease_held: (owner, fencing token): the item's lease is held by `owner`
        under exactly this token (a takeover raises the token, so a stale
        holder's write fails whatever the clocks say).
    equals: (attribute, value) pairs the item must carry.
    """

    version: int | None = None
    attr_in: tuple[str, tuple[Any, ...]] | None = None
    lease_free_for: tuple[str, float] | None = None
    lease_held: tuple[str, int] | None = None
    equals: tuple[tuple[str, Any], ...] = ()

    def holds(self, item: Item | None) -> bool:
        if item is None:
            return False
        if self.version is not None and item.get("version") != self.version:
            return False
        if self.attr_in is not None and item.get(self.attr_in[0]) not in self.attr_in[1]:
            return False
        if self.lease_free_for is not None:
            owner, now = self.lease_free_for
            holder, until = item.get("lease_owner"), item.get("lease_until")
            if holder and holder != owner and until is not None and until > now:
                return False
        if self.lease_held is not None:
            owner, token = self.lease_held
            if item.get("lease_owner") != owner or item.get("lease_token") != token:
                return False
        return all(item.get(attr) == value for attr, value in self.equals)


@dataclass(frozen=True)
class Put:
    """A transaction's whole-item write (version 1, like `ItemStore.put`);
    with `if_absent` the transaction fails (CONFLICT) when the item exists."""

    table: str
    item: Item
    if_absent: bool = False


@dataclass(frozen=True)
class Update:
    """A transaction's conditional update of an existing item (version + 1)."""

    table: str
    pk: str
    sk: str
    changes: Item
    condition: Condition


@dataclass(frozen=True)
class Check:
    """A transaction's condition on an item it does not write."""

    table: str
    pk: str
    sk: str
    condition: Condition


Write = Put | Update | Check


def conflict(message: str) -> RlmError:
    """A failed conditional write. It carries no storage keys (PK/SK, object
    keys): the error can reach a caller, and internal keys are not theirs."""
    return RlmError("CONFLICT", message)


class ItemStore(Protocol):
    """Tables of JSON items keyed by (PK, SK); `version` starts at 1."""

    def put(self, table: str, item: Item, *, if_absent: bool = False) -> Item: ...

    def get(self, table: str, pk: str, sk: str) -> Item | None: ...

    def query(self, table: str, pk: str, sk_prefix: str = "") -> list[Item]: ...

    def query_index(self, table: str, value: str, index: str = "GSI1") -> list[Item]: ...

    def update(
        self, table: str, pk: str, sk: str, changes: Item, *, condition: Condition | None = None
    ) -> Item: ...

    def delete(self, table: str, pk: str, sk: str) -> None: ...

    def query_newest(self, table: str, value: str, *, before: str = "", limit: int) -> list[Item]:
        """At most `limit` items with GSI3PK == `value` and GSI3SK < `before`
        ("": no bound), by GSI3SK descending (the LISTING_INDEX; on DynamoDB
        eventually consistent)."""

    def transact(self, writes: list[Write]) -> None:
        """All of `writes` or none (at most one per item): CONFLICT when a
        Check's or an Update's condition does not hold."""
        ...

    def create_tables(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    etag: str


class BlobStore(Protocol):
    """Immutable objects: a second put of a key with other bytes is a CONFLICT."""

    bucket: str

    def put(self, key: str, data: bytes, content_type: str = "") -> BlobInfo: ...

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "") -> BlobInfo:
        """Store the concatenated `chunks` under a new key without holding
        them whole in memory. When the iterator raises, the error propagates
        and nothing is left behind (no object, no temporary file, no open
        multipart upload)."""
        ...

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, start: int, end: int) -> bytes: ...

    def head(self, key: str) -> BlobInfo | None: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> Iterable[str]: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix` (a folder: it
        must end with "/"); returns how many were deleted. Idempotent."""
        ...

    def local_path(self, key: str) -> Path | None: ...

    def create_bucket(self) -> None: ...

    def uri(self, key: str) -> str: ...


def validate_key(key: str) -> str:
    """Object keys: relative, no empty/'.'/'..' segments, no NUL."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\x00" in key or any(part in ("", ".", "..") for part in parts):
        raise RlmError("VALIDATION_ERROR", f"invalid object key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A folder prefix for listing or deleting: a valid key followed by "/"
    (never "" or "/": nothing may delete a whole bucket by accident)."""
    if not prefix.endswith("/"):
        raise RlmError("VALIDATION_ERROR", f"a prefix must end with '/': {prefix!r}")
    validate_key(prefix[:-1])
    return prefix


def split_s3_uri(uri: str) -> tuple[str, str]:
    """("bucket", "key") of "s3://bucket/key"."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise RlmError("VALIDATION_ERROR", f"not an s3:// URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, validate_key(key)
