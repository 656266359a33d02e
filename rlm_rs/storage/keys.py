"""Every blob key of the store, named in one place (docs/storage.md).

Callers ask for "the trace of this execution" or "this session's parsed
folder"; only this module knows the layout. A static test
(tests/static/test_storage_keys.py) fails when code outside rlm_rs/storage
spells a key prefix itself. Must never take a caller-supplied key: raw
uploads are named by uploads.py, which checks who may name what.
"""

from __future__ import annotations

from rlm_rs.storage.interfaces import split_s3_uri

RAW_PREFIX = "raw/"
PARSED_PREFIX = "parsed/"
STATE_PREFIX = "state/"
TRACES_PREFIX = "traces/"
CONTEXTS_PREFIX = "contexts/"
CACHE_PREFIX = "cache/"
SEARCH_PREFIX = "search/"
# Written only by the appliance itself; never a caller's input.
INTERNAL_PREFIXES = (PARSED_PREFIX, STATE_PREFIX, TRACES_PREFIX, CACHE_PREFIX, CONTEXTS_PREFIX, SEARCH_PREFIX)
# What a node's document cache copies from S3, foldered `{prefix}{tenant}/{session}/`.
NODE_CACHED_PREFIXES = (PARSED_PREFIX, SEARCH_PREFIX)


def key_of(uri: str) -> str:
    """The object key of one of this store's `s3://bucket/key` URIs."""
    return split_s3_uri(uri)[1]


# --- parsed documents (the ingestion worker writes, the control plane reads) -----------
def parsed_document_prefix(tenant_id: str, session_id: str, doc_id: str) -> str:
    """The parser's output folder of one document (text.txt, meta.json, offsets.json)."""
    return f"{PARSED_PREFIX}{tenant_id}/{session_id}/{doc_id}"


def parsed_session_prefix(tenant_id: str, session_id: str) -> str:
    return f"{PARSED_PREFIX}{tenant_id}/{session_id}/"


# --- search artifacts (the ingestion worker writes, every node reads) --------------------
def search_session_prefix(tenant_id: str, session_id: str) -> str:
    """The folder of one session's search index artifacts (every version)."""
    return f"{SEARCH_PREFIX}{tenant_id}/{session_id}/"


def search_artifact_key(tenant_id: str, session_id: str, version: int, sha256: str) -> str:
    """One built index of a session (storage/search.py): versioned, and content
    addressed, so two builders racing never write one key with other bytes."""
    return f"{search_session_prefix(tenant_id, session_id)}v{version:06d}-{sha256}.sqlite3"


# --- executions ---------------------------------------------------------------------------
def state_key(tenant_id: str, execution_id: str, turn_index: int, token: int | None = None) -> str:
    """An offloaded state (storage/state.py); with the writer's fencing token
    (leases), so a stale lease holder's blob never takes the new holder's key."""
    suffix = "" if token is None else f"_t{token}"
    return f"{STATE_PREFIX}{tenant_id}/{execution_id}/state_{turn_index}{suffix}.json.gz"


def state_prefix(tenant_id: str, execution_id: str) -> str:
    return f"{STATE_PREFIX}{tenant_id}/{execution_id}/"


def trace_key(tenant_id: str, session_id: str, execution_id: str, token: int | None = None) -> str:
    """An execution's trace; with the finisher's fencing token (as state_key)."""
    suffix = "" if token is None else f".t{token}"
    return f"{TRACES_PREFIX}{tenant_id}/{session_id}/{execution_id}{suffix}.json.gz"


def contexts_key(tenant_id: str, session_id: str, execution_id: str) -> str:
    """CONTEXTS mode's contexts when they are too large to keep inline."""
    return f"{CONTEXTS_PREFIX}{tenant_id}/{session_id}/{execution_id}.json"


def session_prefixes(tenant_id: str, session_id: str) -> tuple[str, ...]:
    """The blob folders that belong to one session alone."""
    return (
        parsed_session_prefix(tenant_id, session_id),
        f"{TRACES_PREFIX}{tenant_id}/{session_id}/",
        f"{CONTEXTS_PREFIX}{tenant_id}/{session_id}/",
        search_session_prefix(tenant_id, session_id),
    )


def node_cached_prefixes(tenant_id: str, session_id: str) -> tuple[str, ...]:
    """The session's folders a node's document cache may hold copies of."""
    return (parsed_session_prefix(tenant_id, session_id), search_session_prefix(tenant_id, session_id))


# --- the sub-call cache ---------------------------------------------------------------------
def llm_cache_key(tenant_id: str, digest: str) -> str:
    """The blob key of one sub-call cache entry."""
    return f"{CACHE_PREFIX}{tenant_id}/llm/{digest}.json"


def session_cache_prefix(tenant_id: str, session_id: str) -> str:
    """Where the cache entries a session wrote are listed (one empty marker each)."""
    return f"{CACHE_PREFIX}{tenant_id}/sessions/{session_id}/"
