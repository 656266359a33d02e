"""Raw uploads: the tenant-owned namespace `raw/{tenant_id}/` of the blob store.

The only blob keys a caller may name are raw documents (a session's
`raw_s3_uri`), and only its own: an object in this bucket under
`raw/{caller's tenant}/`, or under a prefix the operator granted that tenant
(RLM_RAW_PREFIXES_JSON). Internal objects (parsed/, state/, traces/, cache/,
contexts/) and other tenants' uploads are never readable as input. This module
must never tell a foreign or internal key from a missing one: every refusal is
the same error after the same single HEAD request (docs/storage.md).

Uploads over the API (`stream_upload`: POST /v1/uploads, gRPC Upload) are
streamed into the blob store chunk by chunk, never held whole; their type
must be one the parsers read, their size at most RLM_MAX_UPLOAD_BYTES, and a
refused or broken upload leaves no object behind.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from rlm_rs.errors import RlmError
from rlm_rs.ingestion.parsers import EXTENSIONS, MIME_TYPES
from rlm_rs.storage.interfaces import BlobStore, split_s3_uri, validate_key, validate_prefix
from rlm_rs.storage.keys import INTERNAL_PREFIXES, RAW_PREFIX
from rlm_rs.storage.metadata import now_iso, validate_tenant_id

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ ()+,=@-]")


def tenant_namespace(tenant_id: str) -> str:
    """`raw/{tenant_id}/`: everything below it is that tenant's upload."""
    return f"{RAW_PREFIX}{validate_tenant_id(tenant_id)}/"


def upload_key(tenant_id: str, upload_id: str, file_name: str) -> str:
    """`raw/{tenant}/{upload_id}/{name}`: upload_id is the uploader's choice
    (the CLI: the first 16 hex digits of the content's SHA-256; an upload API:
    its upload id); the name is reduced to a safe base name."""
    name = _UNSAFE_NAME.sub("_", file_name.rsplit("/", 1)[-1]).strip(" .") or "file"
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", upload_id):
        raise RlmError("VALIDATION_ERROR", "an upload id is 1-64 letters, digits, '_' or '-'")
    return validate_key(f"{tenant_namespace(tenant_id)}{upload_id}/{name[:200]}")


def store_upload(
    blobs: BlobStore, tenant_id: str, file_name: str, data: bytes, content_type: str = ""
) -> str:
    """Store a raw document in the tenant's namespace, content addressed (the
    same bytes twice are one object); returns its s3:// URI."""
    key = upload_key(tenant_id, hashlib.sha256(data).hexdigest()[:16], file_name)
    blobs.put(key, data, content_type)
    return blobs.uri(key)


# What an upload's Content-Type may be: the types the parsers read (parameters
# such as "; charset=utf-8" are ignored).
UPLOAD_MIME_TYPES = frozenset(MIME_TYPES)
MAX_UPLOAD_FILE_NAME_CHARS = 512
# Leading bytes every file of a binary type starts with ("%PDF-" may follow
# up to 1 KiB of junk, as PDF readers allow); a text type may hold no NUL.
_MAGIC = {"pdf": b"%PDF-", "docx": b"PK\x03\x04"}
_SNIFF_BYTES = 1024


@dataclass(frozen=True)
class StoredUpload:
    upload_id: str
    raw_s3_uri: str
    file_name: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: str


def upload_media_type(content_type: str, file_name: str = "") -> str:
    """The upload's MIME type without parameters, or UNSUPPORTED_MEDIA_TYPE.
    No type, or application/octet-stream: the one the file name's extension
    implies (the parsers' own table)."""
    base = content_type.split(";")[0].strip().lower()
    if base in ("", "application/octet-stream"):
        kind = EXTENSIONS.get("." + file_name.rsplit(".", 1)[-1].lower()) if "." in file_name else None
        base = next((mime for mime, k in MIME_TYPES.items() if k == kind), base)
    if base not in UPLOAD_MIME_TYPES:
        raise RlmError(
            "UNSUPPORTED_MEDIA_TYPE",
            "the content type is not one the parsers read",
            {"content_type": content_type[:200], "supported": ", ".join(sorted(UPLOAD_MIME_TYPES))},
        )
    return base


def stream_upload(
    blobs: BlobStore,
    tenant_id: str,
    file_name: str,
    content_type: str,
    chunks: Iterable[bytes],
    max_bytes: int,
) -> StoredUpload:
    """Stream `chunks` to `raw/{tenant}/{upload_id}/{name}` (upload_id:
    `upl_` + 24 random hex digits), hashing as they pass. Refuses an
    unsupported type before reading (UNSUPPORTED_MEDIA_TYPE), a body over
    `max_bytes` as soon as it passes it (PAYLOAD_TOO_LARGE), a body that does
    not look like its type or is empty (VALIDATION_ERROR); on any error,
    including one raised by `chunks`, no object remains."""
    if not file_name or len(file_name) > MAX_UPLOAD_FILE_NAME_CHARS:
        raise RlmError("VALIDATION_ERROR", f"file_name must be 1..{MAX_UPLOAD_FILE_NAME_CHARS} characters")
    media_type = upload_media_type(content_type, file_name)
    upload_id = f"upl_{secrets.token_hex(12)}"
    key = upload_key(tenant_id, upload_id, file_name)
    digest = hashlib.sha256()

    def checked() -> Iterator[bytes]:
        size, head = 0, b""
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise RlmError("PAYLOAD_TOO_LARGE", "upload too large", {"max_upload_bytes": max_bytes})
            if len(head) < _SNIFF_BYTES:
                head = (head + chunk)[:_SNIFF_BYTES]
                if len(head) == _SNIFF_BYTES:
                    _check_content(media_type, head)
            digest.update(chunk)
            yield chunk
        if size == 0:
            raise RlmError("VALIDATION_ERROR", "an upload may not be empty")
        if len(head) < _SNIFF_BYTES:
            _check_content(media_type, head)

    info = blobs.put_stream(key, checked(), media_type)
    return StoredUpload(
        upload_id=upload_id,
        raw_s3_uri=blobs.uri(key),
        file_name=key.rsplit("/", 1)[-1],
        content_type=media_type,
        size_bytes=info.size,
        sha256=digest.hexdigest(),
        created_at=now_iso(),
    )


def _check_content(media_type: str, head: bytes) -> None:
    kind = MIME_TYPES[media_type]
    magic = _MAGIC.get(kind)
    looks_right = (
        (magic in head if kind == "pdf" else head.startswith(magic))
        if magic is not None
        else b"\x00" not in head
    )
    if not looks_right:
        raise RlmError(
            "VALIDATION_ERROR",
            f"the body is not {media_type} (it does not start like one)",
            {"content_type": media_type},
        )


@dataclass(frozen=True)
class RawGrants:
    """The operator's extra raw prefixes per tenant (RLM_RAW_PREFIXES_JSON,
    `{"tenant": ["shared/reference/", ...]}`): folders in S3_BUCKET that the
    tenant may name besides its own namespace. A grant may not reach into an
    internal prefix or into raw/ (the tenants' namespaces)."""

    prefixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, config: Mapping[str, object]) -> RawGrants:
        grants: dict[str, tuple[str, ...]] = {}
        for tenant, value in config.items():
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ValueError(f"RLM_RAW_PREFIXES_JSON[{tenant!r}] must be a list of prefixes")
            for prefix in value:
                try:
                    validate_prefix(prefix)
                except RlmError:
                    raise ValueError(f"RLM_RAW_PREFIXES_JSON: {prefix!r} is not a folder prefix") from None
                if prefix.startswith((RAW_PREFIX, *INTERNAL_PREFIXES)):
                    raise ValueError(f"RLM_RAW_PREFIXES_JSON: {prefix!r} may not grant raw/ or internal keys")
            grants[tenant] = tuple(value)
        return cls(grants)

    def for_tenant(self, tenant_id: str) -> Iterable[str]:
        return self.prefixes.get(tenant_id, ())


def caller_may_name(tenant_id: str, key: str, grants: RawGrants) -> bool:
    """Whether `key` is in the caller's namespace or one of its granted folders."""
    try:
        own = tenant_namespace(tenant_id)
    except RlmError:
        return False
    if key.startswith(own) and len(key) > len(own):
        return True
    return any(key.startswith(prefix) and len(key) > len(prefix) for prefix in grants.for_tenant(tenant_id))


def readable_raw_key(blobs: BlobStore, tenant_id: str, uri: str, grants: RawGrants) -> str | None:
    """The key of `uri` when the caller may read it and it exists, else None.

    Exactly one HEAD request on every path: of the key when the caller may
    name it, of a key in the caller's own namespace that is never written
    otherwise. So neither the answer nor its cost depends on whether a
    foreign or internal object exists. A malformed URI is the caller's
    syntax error (VALIDATION_ERROR from split_s3_uri), not an existence fact."""
    bucket, key = split_s3_uri(uri)
    allowed = bucket == blobs.bucket and caller_may_name(tenant_id, key, grants)
    probe = key if allowed else f"{RAW_PREFIX}{_safe_segment(tenant_id)}/.absent"
    found = blobs.head(probe) is not None
    return key if allowed and found else None


def _safe_segment(tenant_id: str) -> str:
    try:
        return validate_tenant_id(tenant_id)
    except RlmError:
        return "_"
