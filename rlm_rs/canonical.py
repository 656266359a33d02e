"""Canonical forms shared by ingestion, the sandbox and the control plane.

Canonical text (docs/api.md#citations): UTF-8, NFC, `\\n` line endings, no BOM. Its
offsets.json maps character positions to byte positions every
`CHECKPOINT_INTERVAL` characters so a reader can slice an mmapped file without
holding the text as one str. Canonical JSON: sorted keys, no spaces, no NaN.
Standard library only: the sandbox worker imports this module.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

CHECKPOINT_INTERVAL = 10_000
OFFSETS_VERSION = 1


def canonicalize_text(raw: str) -> str:
    """NFC, `\\n` line endings, no leading BOM. Idempotent."""
    text = raw[1:] if raw.startswith("\ufeff") else raw
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text)


def checksum_text(text: str) -> str:
    """The SpanRef checksum: "sha256:" + hex(sha256(utf8(NFC(text))))."""
    normalized = unicodedata.normalize("NFC", text)
    return "sha256:" + hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def checksum_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_offsets(text: str, doc_id: str, interval: int = CHECKPOINT_INTERVAL) -> dict[str, Any]:
    """offsets.json for `text` (docs/ingestion.md): a {char, byte} checkpoint every `interval` chars."""
    checkpoints = []
    byte_pos = 0
    for char_pos in range(0, len(text), interval):
        checkpoints.append({"char": char_pos, "byte": byte_pos})
        byte_pos += len(text[char_pos : char_pos + interval].encode("utf-8"))
    if not checkpoints:
        checkpoints.append({"char": 0, "byte": 0})
    return {
        "version": OFFSETS_VERSION,
        "doc_id": doc_id,
        "char_length": len(text),
        "byte_length": byte_pos,
        "encoding": "utf-8",
        "checkpoints": checkpoints,
        "checkpoint_interval": interval,
    }


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, compact separators, UTF-8, no NaN/Infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
