"""Execution state persistence (docs/api.md#state): inline up to 350 KB, else offloaded.

The canonical JSON is stored inline in the execution_state record when its
UTF-8 size is at most INLINE_LIMIT_BYTES; otherwise it is gzipped
(deterministically: mtime 0) to
`state/{tenant_id}/{execution_id}/state_{turn}.json.gz` and the record keeps
the pointer, the checksum and a summary. Loading returns the same text bit
for bit and checks the checksum.
"""

from __future__ import annotations

import gzip
from typing import Any

from rlm_rs.canonical import checksum_bytes
from rlm_rs.errors import RlmError
from rlm_rs.storage.interfaces import BlobStore, Item
from rlm_rs.storage.keys import key_of, state_key
from rlm_rs.storage.metadata import MetadataStore, now_iso

INLINE_LIMIT_BYTES = 350_000


def save_state(
    metadata: MetadataStore,
    blobs: BlobStore,
    *,
    tenant_id: str,
    execution_id: str,
    turn_index: int,
    state_json: str,
    ttl_epoch: int | None = None,
    sk: str = "STATE",
    extra: Item | None = None,
) -> Item:
    """Persist `state_json` for (execution, sk); returns the stored record."""
    record = state_record(
        blobs, tenant_id=tenant_id, execution_id=execution_id, turn_index=turn_index,
        state_json=state_json, ttl_epoch=ttl_epoch, sk=sk, extra=extra,
    )  # fmt: skip
    metadata.items.put("execution_state", record)
    return record


def state_record(
    blobs: BlobStore,
    *,
    tenant_id: str,
    execution_id: str,
    turn_index: int,
    state_json: str,
    ttl_epoch: int | None = None,
    sk: str = "STATE",
    extra: Item | None = None,
    token: int | None = None,
) -> Item:
    """The execution_state record for `state_json`, not yet written (a large
    state's blob is; with a lease's fencing `token` its key names the token,
    so a stale holder's blob never takes the key a new holder writes)."""
    data = state_json.encode("utf-8")
    record: dict[str, Any] = {
        "PK": f"EXEC#{execution_id}", "SK": sk, "tenant_id": tenant_id,
        "execution_id": execution_id, "turn_index": turn_index,
        "checksum": checksum_bytes(data), "updated_at": now_iso(), "ttl_epoch": ttl_epoch,
        "summary": {"byte_length": len(data), "char_length": len(state_json)},
        "state_json": None, "state_s3_uri": None, **(extra or {}),
    }  # fmt: skip
    if len(data) <= INLINE_LIMIT_BYTES:
        record["state_json"] = state_json
    else:
        key = state_key(tenant_id, execution_id, turn_index, token)
        blobs.put(key, gzip.compress(data, mtime=0), content_type="application/gzip")
        record["state_s3_uri"] = blobs.uri(key)
    return record


def load_state(
    metadata: MetadataStore, blobs: BlobStore, execution_id: str, sk: str = "STATE"
) -> tuple[str, Item] | None:
    """(state_json, record) or None when nothing was saved."""
    record = metadata.items.get("execution_state", f"EXEC#{execution_id}", sk)
    if record is None:
        return None
    return read_state_record(blobs, record), record


def read_state_record(blobs: BlobStore, record: Item) -> str:
    if record.get("state_json") is not None:
        text: str = record["state_json"]
    else:
        text = gzip.decompress(blobs.get(key_of(record["state_s3_uri"]))).decode("utf-8")
    if checksum_bytes(text.encode("utf-8")) != record["checksum"]:
        raise RlmError(
            "CHECKSUM_MISMATCH", "persisted state does not match its checksum",
            {"execution_id": record.get("execution_id")},
        )  # fmt: skip
    return text
