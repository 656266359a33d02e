"""Typed access to the six tables (docs/api.md#storage): the only place keys are built.

Every read that a tenant can trigger takes the tenant id and checks it: a
record of another tenant is reported exactly like a missing one. Status
transitions and leases are conditional writes, so two processes can never
both win. Timestamps are RFC 3339 UTC strings; `ttl_epoch` follows the
session's expiry.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from rlm_rs.domain import (
    DocumentRecord,
    ExecutionRecord,
    ExecutionStatus,
    IngestStatus,
    SessionRecord,
    SessionStatus,
)
from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.storage.interfaces import Check, Condition, Item, ItemStore, Put, Update, Write

API_KEY_PREFIX = "rlm_key_"
API_KEYS_LISTING = "APIKEYS"  # the listing index (GSI3) partition of every API key
# Tenant ids name storage namespaces (`raw/{tenant_id}/`, `parsed/{tenant_id}/`,
# ...): one path segment, so no tenant's folder can contain another's.
TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
# Sessions whose data has been removed leave this GSI2 value, so the sweeps
# (sessions_with_status) never walk them again.
PURGED = "PURGED"

SESSION_STATUSES = tuple(SessionStatus)
INGEST_STATUSES = tuple(IngestStatus)
EXECUTION_STATUSES = tuple(ExecutionStatus)


_KEY_ATTRIBUTES = frozenset({"PK", "SK", "GSI1PK", "GSI2PK", "GSI3PK", "GSI3SK"})
# A listing reads at most this many records per page it answers: a filter
# that matches little ends the page early (with a cursor), never scans on.
LISTING_SCAN_LIMIT = 1_000
# Conditional writes a rate-limit take tries before it reports the bucket busy.
RATE_BUCKET_ATTEMPTS = 4
# The id pointers (`<KIND>#<id>` / POINTER) that make a look-up by id a
# consistent GetItem on the base table: an id -> key cache of this size
# spares the pointer read (an id never changes its session or tenant).
POINTER_SK = "POINTER"
ID_CACHE_SIZE = 100_000


def now_iso(epoch: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def validate_tenant_id(tenant_id: str) -> str:
    """A tenant id that is safe as one storage path segment, or VALIDATION_ERROR."""
    if not TENANT_ID.match(tenant_id):
        raise RlmError(
            "VALIDATION_ERROR",
            "a tenant id is 1-128 characters: letters, digits, '.', '_', '@', '-' "
            "(starting with a letter or digit)",
        )
    return tenant_id


def _listed(tenant_id: str, created_at: str, record_id: str) -> Item:
    """The listing index's keys (GSI3): by tenant, newest first."""
    return {"GSI3PK": f"TENANT#{tenant_id}", "GSI3SK": f"{created_at}#{record_id}"}


def step_sk(turn: int) -> str:
    """The sort key of one committed turn's step record (execution_state)."""
    return f"STEP#{turn:06d}"


def execution_key(session_id: str, execution_id: str) -> tuple[str, str, str]:
    """(table, PK, SK) of an execution record: what acquire_lease/release_lease take."""
    return ("executions", f"SESSION#{session_id}", f"EXEC#{execution_id}")


def document_key(session_id: str, doc_id: str) -> tuple[str, str, str]:
    """(table, PK, SK) of a document record: what acquire_lease/release_lease take."""
    return ("documents", f"SESSION#{session_id}", f"DOC#{doc_id}")


@dataclass(frozen=True)
class Fence:
    """An execution's lease as its holder took it: the owner and the fencing
    token. A takeover raises the token (it is the record's version after the
    taking write), so every write conditional on a Fence fails for a stale
    holder, whatever the clocks say."""

    session_id: str
    execution_id: str
    owner: str
    token: int

    def condition(self, *, running: bool = False, turn: int | None = None) -> Condition:
        return Condition(
            lease_held=(self.owner, self.token),
            attr_in=("status", (ExecutionStatus.RUNNING,)) if running else None,
            equals=(("next_turn", turn),) if turn is not None else (),
        )


@dataclass(frozen=True)
class QuotaTicket:
    """A tenant's quota partition (`QUOTA#<tenant>#<quota>`: a VERSION item
    and one HOLDER#<id> item per place held) as one consistent read found
    it. The write it admits is conditional on VERSION's `version`, so two
    nodes that counted the same state cannot both admit; `joining` is the
    holder the admitted write adds."""

    tenant_id: str
    quota: str
    version: int
    holders: tuple[str, ...] = ()
    joining: str = ""

    def writes(self) -> list[Write]:
        pk = f"QUOTA#{self.tenant_id}#{self.quota}"
        writes: list[Write] = [Update("api_keys", pk, "VERSION", {}, Condition(version=self.version))]
        if self.joining:
            holder = {"PK": pk, "SK": f"HOLDER#{self.joining}", "tenant_id": self.tenant_id}
            writes.append(Put("api_keys", holder, if_absent=True))
        return writes


class _IdCache:
    """id -> the key part it names (a session id's tenant, an execution id's
    session); bounded, LRU."""

    def __init__(self, size: int = ID_CACHE_SIZE) -> None:
        self._map: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._map.get(key)
            if value is not None:
                self._map.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._map[key] = value
            self._map.move_to_end(key)
            if len(self._map) > self._size:
                self._map.popitem(last=False)


def _status_indexed(changes: Item) -> Item:
    """`changes`, with the status index's key when they set a status."""
    if "status" not in changes:
        return changes
    return {**changes, "GSI2PK": f"STATUS#{changes['status']}"}


def _public(item: Item | None) -> Item | None:
    """The record without storage keys."""
    if item is None:
        return None
    return {k: v for k, v in item.items() if k not in _KEY_ATTRIBUTES}


class MetadataStore:
    def __init__(self, items: ItemStore, api_key_pepper: bytes) -> None:
        self.items = items
        self._pepper = api_key_pepper
        self._ids = _IdCache()

    # --- sessions ---------------------------------------------------------------
    def put_session(self, record: Item, admitted: QuotaTicket | None = None) -> Item:
        """A new session and its id pointer, in one transaction; with a quota
        ticket only while the tenant's quota item is as it was read (CONFLICT
        otherwise: another node admitted meanwhile)."""
        tenant, session_id = record["tenant_id"], record["session_id"]
        item = {
            **record,
            "PK": f"TENANT#{tenant}",
            "SK": f"SESSION#{session_id}",
            "GSI1PK": f"SESSION#{session_id}",
            "GSI2PK": f"STATUS#{record['status']}",
            **_listed(tenant, record.get("created_at", ""), session_id),
        }
        return self._create("sessions", item, f"SESSION#{session_id}", ("tenant_id", tenant), admitted)

    def sessions_with_status(self, status: str) -> list[Item]:
        """Every tenant's sessions in `status` (internal: ingestion, expiry sweeps)."""
        return [_public(i) or {} for i in self.items.query_index("sessions", f"STATUS#{status}", "GSI2")]

    def get_session(self, tenant_id: str, session_id: str) -> SessionRecord:
        item = self.items.get("sessions", f"TENANT#{tenant_id}", f"SESSION#{session_id}")
        if item is None:
            raise RlmError("SESSION_NOT_FOUND", "session not found", {"session_id": session_id})
        return cast(SessionRecord, _public(item))

    def find_session(self, session_id: str) -> SessionRecord | None:
        """A session by id alone (internal: workers that hold no tenant): a
        consistent read through its id pointer (the id index only for a
        session written before pointers existed)."""
        tenant = self._pointed("sessions", f"SESSION#{session_id}")
        if tenant is not None:
            item = self.items.get("sessions", f"TENANT#{tenant}", f"SESSION#{session_id}")
            return cast(SessionRecord, _public(item)) if item else None
        found = self.items.query_index("sessions", f"SESSION#{session_id}")
        return cast(SessionRecord, _public(found[0])) if found else None

    def _pointed(self, table: str, pk: str, attribute: str = "tenant_id") -> str | None:
        """What the id pointer `pk` names (cached), or None without a pointer."""
        known = self._ids.get(pk)
        if known is None:
            pointer = self.items.get(table, pk, POINTER_SK)
            if pointer is None:
                return None
            known = str(pointer[attribute])
            self._ids.put(pk, known)
        return known

    def list_sessions(self, tenant_id: str, status: str | None = None) -> list[Item]:
        items = self.items.query("sessions", f"TENANT#{tenant_id}", "SESSION#")
        return [_public(i) or {} for i in items if status is None or i.get("status") == status]

    def update_session(
        self,
        tenant_id: str,
        session_id: str,
        changes: Item,
        *,
        from_statuses: tuple[str, ...] | None = None,
        expected_version: int | None = None,
    ) -> Item:
        condition = Condition(
            version=expected_version,
            attr_in=("status", from_statuses) if from_statuses else None,
        )
        changes = _status_indexed(changes)
        return _public(
            self.items.update(
                "sessions", f"TENANT#{tenant_id}", f"SESSION#{session_id}", changes,
                condition=condition,
            )
        ) or {}  # fmt: skip

    def mark_session_purged(self, tenant_id: str, session_id: str, changes: Item | None = None) -> None:
        """Take a session whose data is gone out of every status listing (GSI2)."""
        self.items.update(
            "sessions", f"TENANT#{tenant_id}", f"SESSION#{session_id}",
            {**(changes or {}), "GSI2PK": f"STATUS#{PURGED}"},
        )  # fmt: skip

    def delete_session_records(self, tenant_id: str, session_id: str) -> None:
        """Remove a purged session's own records: the session, its documents
        and its executions (DynamoDB's TTL does the same on AWS; the embedded
        back end has no TTL, so its sweeper calls this)."""
        for doc in self.list_documents(session_id):
            self.items.delete("documents", f"SESSION#{session_id}", f"DOC#{doc['doc_id']}")
        for execution in self.list_executions(session_id):
            self.items.delete("executions", f"SESSION#{session_id}", f"EXEC#{execution['execution_id']}")
            self.items.delete("executions", f"EXEC#{execution['execution_id']}", POINTER_SK)
        self.items.delete("sessions", f"TENANT#{tenant_id}", f"SESSION#{session_id}")
        self.items.delete("sessions", f"SESSION#{session_id}", POINTER_SK)

    # --- documents ----------------------------------------------------------------
    def put_document(self, record: Item) -> Item:
        item = {**record, "PK": f"SESSION#{record['session_id']}", "SK": f"DOC#{record['doc_id']}"}
        return _public(self.items.put("documents", item, if_absent=True)) or {}

    def list_documents(self, session_id: str) -> list[DocumentRecord]:
        docs = [_public(i) or {} for i in self.items.query("documents", f"SESSION#{session_id}", "DOC#")]
        return cast(list[DocumentRecord], sorted(docs, key=lambda d: int(d.get("doc_index", 0))))

    def get_document(self, session_id: str, doc_id: str) -> DocumentRecord | None:
        item = self.items.get("documents", f"SESSION#{session_id}", f"DOC#{doc_id}")
        return cast(DocumentRecord | None, _public(item))

    def update_document(
        self,
        session_id: str,
        doc_id: str,
        changes: Item,
        *,
        from_statuses: tuple[str, ...] | None = None,
    ) -> Item:
        condition = Condition(attr_in=("ingest_status", from_statuses) if from_statuses else None)
        return _public(
            self.items.update(
                "documents", f"SESSION#{session_id}", f"DOC#{doc_id}", changes,
                condition=condition,
            )
        ) or {}  # fmt: skip

    # --- executions ----------------------------------------------------------------
    def put_execution(self, record: Item, admitted: QuotaTicket | None = None) -> Item:
        """A new execution and its id pointer, in one transaction; with a
        quota ticket (the tenant's running executions, this one among its
        holders) only while the quota item is as it was read."""
        execution_id, session_id = record["execution_id"], record["session_id"]
        item = {
            **record,
            "PK": f"SESSION#{session_id}",
            "SK": f"EXEC#{execution_id}",
            "GSI1PK": f"EXEC#{execution_id}",
            "GSI2PK": f"STATUS#{record['status']}",
        }
        if not record.get("parent_execution_id"):  # children are listed in their parent's tree
            item.update(_listed(record["tenant_id"], record.get("started_at", ""), execution_id))
        return self._create("executions", item, f"EXEC#{execution_id}", ("session_id", session_id), admitted)

    def _create(
        self, table: str, item: Item, pointer_pk: str, link: tuple[str, str], admitted: QuotaTicket | None
    ) -> Item:
        """`item` and its id pointer (`pointer_pk` -> the `link` field that
        finds the item), both new, in one transaction with the quota ticket's
        writes; the pointer is then known to this process."""
        pointer = {"PK": pointer_pk, "SK": POINTER_SK, link[0]: link[1], "ttl_epoch": item.get("ttl_epoch")}
        writes: list[Write] = [Put(table, item, if_absent=True), Put(table, pointer, if_absent=True)]
        self.items.transact([*writes, *admitted.writes()] if admitted else writes)
        self._ids.put(pointer_pk, link[1])
        return _public({**item, "version": 1}) or {}

    def get_execution(self, tenant_id: str, execution_id: str) -> ExecutionRecord:
        """An execution by id alone (a caller's request), tenant-checked: a
        strongly consistent GetItem through its id pointer, so a record just
        written or changed is read as it is (the id index, which may lag,
        only for an execution written before pointers existed)."""
        session_id = self._pointed("executions", f"EXEC#{execution_id}", "session_id")
        if session_id is not None:
            found = self.items.get("executions", f"SESSION#{session_id}", f"EXEC#{execution_id}")
        else:
            found = next(iter(self.items.query_index("executions", f"EXEC#{execution_id}")), None)
        if not found or found.get("tenant_id") != tenant_id:
            raise RlmError("EXECUTION_NOT_FOUND", "execution not found", {"execution_id": execution_id})
        return cast(ExecutionRecord, _public(found))

    def read_execution(self, session_id: str, execution_id: str) -> Item | None:
        """An execution by its base-table key: a strongly consistent GetItem
        (what a loop reads back; an index read may lag behind a commit)."""
        return _public(self.items.get("executions", f"SESSION#{session_id}", f"EXEC#{execution_id}"))

    def list_executions(self, session_id: str) -> list[ExecutionRecord]:
        """Every execution of a session, children included (internal: lifecycle)."""
        items = self.items.query("executions", f"SESSION#{session_id}", "EXEC#")
        return [cast(ExecutionRecord, _public(i)) for i in items]

    def delete_execution_data(self, execution_id: str) -> int:
        """Delete an execution's state, step records and events (everything
        under `EXEC#<id>` in execution_state); returns the count."""
        items = self.items.query("execution_state", f"EXEC#{execution_id}")
        for item in items:
            self.items.delete("execution_state", item["PK"], item["SK"])
        return len(items)

    # --- steps and events (execution_state; the state itself: storage/state.py) ---------
    def list_steps(self, execution_id: str) -> list[Item]:
        """The execution's step records (SK step_sk(turn)), unordered, state not read."""
        return self.items.query("execution_state", f"EXEC#{execution_id}", "STEP#")

    def put_event(self, execution_id: str, event_id: str, record: Item, fence: Fence | None = None) -> None:
        """An event; with the holder's fence, written only while its lease is
        held (one transaction: a check of the lease and the put)."""
        item = {**record, "PK": f"EXEC#{execution_id}", "SK": f"EVENT#{event_id}"}
        if fence is None:
            self.items.put("execution_state", item)
            return
        _, pk, sk = execution_key(fence.session_id, fence.execution_id)
        check = Check("executions", pk, sk, fence.condition())
        self.items.transact([check, Put("execution_state", item)])

    def put_events(self, fence: Fence, records: Sequence[Item]) -> None:
        """Events of the fence's execution, written only while its lease is
        held: one transaction (a check of the lease and a put per event)."""
        _, pk, sk = execution_key(fence.session_id, fence.execution_id)
        self.items.transact(
            [Check("executions", pk, sk, fence.condition()), *self._event_puts(fence, records)]
        )

    @staticmethod
    def _event_puts(fence: Fence, records: Sequence[Item]) -> list[Write]:
        key = f"EXEC#{fence.execution_id}"
        return [Put("execution_state", {**r, "PK": key, "SK": f"EVENT#{r['event_id']}"}) for r in records]

    def list_events(self, execution_id: str) -> list[Item]:
        """The execution's events, in event id order."""
        return self.items.query("execution_state", f"EXEC#{execution_id}", "EVENT#")

    def ping(self) -> None:
        """One cheap read; raises when the store does not answer (health checks)."""
        self.items.get("sessions", "HEALTH", "CHECK")

    def executions_with_status(self, status: str) -> list[Item]:
        """Every tenant's executions in `status` (internal: lease takeover sweeps)."""
        return [_public(i) or {} for i in self.items.query_index("executions", f"STATUS#{status}", "GSI2")]

    def update_execution(
        self,
        session_id: str,
        execution_id: str,
        changes: Item,
        *,
        from_statuses: tuple[str, ...] | None = None,
        expected_version: int | None = None,
        lease_owner: str | None = None,
    ) -> Item:
        condition = Condition(
            version=expected_version,
            attr_in=("status", from_statuses) if from_statuses else None,
            lease_free_for=(lease_owner, time.time()) if lease_owner else None,
        )
        changes = _status_indexed(changes)
        return _public(
            self.items.update(
                "executions", f"SESSION#{session_id}", f"EXEC#{execution_id}", changes,
                condition=condition,
            )
        ) or {}  # fmt: skip

    # --- listings (newest first, by tenant) --------------------------------------------
    def list_sessions_page(
        self, tenant_id: str, *, limit: int, after: str = "", status: str = ""
    ) -> tuple[list[Item], str]:
        """The tenant's sessions newest first (GSI3: created_at), at most
        `limit`, continuing after the cursor `after` ("" from the newest);
        returns (records, the next cursor or "" at the end). DELETING
        sessions are left out. Eventually consistent on DynamoDB."""
        return self._page(
            "sessions", tenant_id, limit, after,
            lambda i: i.get("status") != SessionStatus.DELETING and (not status or i.get("status") == status),
        )  # fmt: skip

    def list_executions_page(
        self, tenant_id: str, *, limit: int, after: str = "", session_id: str = "", status: str = ""
    ) -> tuple[list[Item], str]:
        """The tenant's top-level executions newest first (GSI3: started_at),
        optionally of one session and/or in one status; as list_sessions_page."""
        return self._page(
            "executions", tenant_id, limit, after,
            lambda i: (not session_id or i.get("session_id") == session_id)
            and (not status or i.get("status") == status),
        )  # fmt: skip

    def _page(
        self, table: str, tenant_id: str, limit: int, after: str, keep: Callable[[Item], bool]
    ) -> tuple[list[Item], str]:
        page: list[Item] = []
        cursor, scanned = after, 0
        while len(page) < limit and scanned < LISTING_SCAN_LIMIT:
            batch = self.items.query_newest(
                table, f"TENANT#{tenant_id}", before=cursor, limit=min(max(limit, 25), LISTING_SCAN_LIMIT)
            )
            for item in batch:
                scanned += 1
                cursor = str(item["GSI3SK"])
                if item.get("tenant_id") == tenant_id and keep(item):
                    page.append(_public(item) or {})
                    if len(page) == limit:
                        break
            if len(batch) < min(max(limit, 25), LISTING_SCAN_LIMIT) and len(page) < limit:
                return page, ""  # the index is exhausted
        return page, cursor

    # --- execution leases: fenced by a token ------------------------------------------------
    def take_execution_lease(self, execution: Item, owner: str, seconds: float) -> Item | None:
        """Take the lease of a RUNNING execution unchanged since `execution`
        was read (its `version`), free or expired or `owner`'s; the record
        with its new `lease_token` (= the new version), else None."""
        now = time.time()
        version = execution.get("version")
        condition = Condition(
            version=version,
            attr_in=("status", (ExecutionStatus.RUNNING,)),
            lease_free_for=(owner, now),
        )
        changes = {"lease_owner": owner, "lease_until": now + seconds, "lease_token": int(version or 0) + 1}
        try:
            return _public(self._update_execution(execution, changes, condition))
        except ConflictError:
            return None

    def renew_execution_lease(self, fence: Fence, seconds: float) -> Item:
        """Extend a held lease; CONFLICT when it is no longer held (taken
        over) or the execution stopped RUNNING."""
        changes = {"lease_until": time.time() + seconds}
        item = self.items.update(
            "executions", f"SESSION#{fence.session_id}", f"EXEC#{fence.execution_id}", changes,
            condition=fence.condition(running=True),
        )  # fmt: skip
        return _public(item) or {}

    def release_execution_lease(self, fence: Fence) -> None:
        """Let the lease go (the token stays: a later holder raises it)."""
        with contextlib.suppress(ConflictError):
            self.items.update(
                "executions", f"SESSION#{fence.session_id}", f"EXEC#{fence.execution_id}",
                {"lease_owner": "", "lease_until": 0}, condition=fence.condition(),
            )  # fmt: skip

    def fenced_update_execution(self, fence: Fence, changes: Item, *, running: bool = False) -> Item:
        """An update only the lease's holder can make (CONFLICT otherwise)."""
        changes = _status_indexed(changes)
        item = self.items.update(
            "executions", f"SESSION#{fence.session_id}", f"EXEC#{fence.execution_id}", changes,
            condition=fence.condition(running=running),
        )  # fmt: skip
        return _public(item) or {}

    def commit_turn(
        self, fence: Fence, turn: int, changes: Item, state_items: list[Item], events: Sequence[Item] = ()
    ) -> None:
        """One transaction: the execution's `changes`, the execution_state
        items (step record, state) and the turn's pending `events`, only
        while the holder's lease is held, the execution RUNNING and still at
        `turn`; CONFLICT otherwise."""
        self._fenced_transaction(
            fence, changes, fence.condition(running=True, turn=turn), state_items, events
        )

    def end_execution(self, fence: Fence, changes: Item, events: Sequence[Item] = ()) -> None:
        """One transaction: the execution's final `changes` (a status out of
        RUNNING) and its waiting `events`, the status event among them, only
        while the holder's lease is held and the execution RUNNING; CONFLICT
        otherwise, with nothing written."""
        self._fenced_transaction(fence, changes, fence.condition(running=True), [], events)

    def _fenced_transaction(
        self,
        fence: Fence,
        changes: Item,
        condition: Condition,
        state_items: list[Item],
        events: Sequence[Item],
    ) -> None:
        writes: list[Write] = [
            Update(
                "executions", f"SESSION#{fence.session_id}", f"EXEC#{fence.execution_id}",
                _status_indexed(changes), condition,
            ),
            *(Put("execution_state", item) for item in state_items),
            *self._event_puts(fence, events),
        ]  # fmt: skip
        self.items.transact(writes)

    def _update_execution(self, execution: Item, changes: Item, condition: Condition) -> Item:
        return self.items.update(
            "executions", f"SESSION#{execution['session_id']}", f"EXEC#{execution['execution_id']}", changes,
            condition=condition,
        )  # fmt: skip

    # --- leases (on any record: documents, executions) ------------------------------------
    def acquire_lease(self, table: str, pk: str, sk: str, owner: str, ttl_seconds: float) -> Item | None:
        """Take or renew the record's lease; None when another owner holds a live one."""
        now = time.time()
        try:
            return self.items.update(
                table, pk, sk,
                {"lease_owner": owner, "lease_until": now + ttl_seconds},
                condition=Condition(lease_free_for=(owner, now)),
            )  # fmt: skip
        except ConflictError:
            return None

    def release_lease(self, table: str, pk: str, sk: str, owner: str) -> bool:
        try:
            self.items.update(
                table, pk, sk, {"lease_owner": "", "lease_until": 0},
                condition=Condition(lease_free_for=(owner, time.time())),
            )  # fmt: skip
        except ConflictError:
            return False
        return True

    # --- API keys -------------------------------------------------------------------
    def hash_api_key(self, plaintext: str) -> str:
        return hmac.new(self._pepper, plaintext.encode("utf-8"), hashlib.sha256).hexdigest()

    def keyed_digest(self, purpose: str, data: bytes) -> str:
        """HMAC-SHA256 under the server's pepper, separated by `purpose`, for
        names a caller must not be able to compute (sub-call cache keys)."""
        key = hmac.new(self._pepper, f"rlm-rs:{purpose}".encode(), hashlib.sha256).digest()
        return hmac.new(key, data, hashlib.sha256).hexdigest()

    def create_api_key(
        self,
        tenant_id: str,
        name: str = "",
        scopes: tuple[str, ...] = ("*",),
        expires_at: str | None = None,
    ) -> tuple[str, Item]:
        """(plaintext key, record). Only the keyed hash is stored."""
        validate_tenant_id(tenant_id)
        plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key_hash = self.hash_api_key(plaintext)
        record = {
            "PK": f"KEY#{key_hash}", "SK": f"KEY#{key_hash}", "key_hash": key_hash,
            "tenant_id": tenant_id, "key_prefix": plaintext[:12], "name": name,
            "scopes": list(scopes), "created_at": now_iso(), "expires_at": expires_at,
            "revoked": False, "last_used_at": None,
            "GSI3PK": API_KEYS_LISTING, "GSI3SK": f"{now_iso()}#{key_hash}",
        }  # fmt: skip
        self.items.put("api_keys", record, if_absent=True)
        return plaintext, _public(record) or {}

    def authenticate(self, plaintext: str) -> Item | None:
        """The key's record when it is valid (known, not revoked, not expired)."""
        if not plaintext.startswith(API_KEY_PREFIX) or len(plaintext) > 200:
            return None
        key_hash = self.hash_api_key(plaintext)
        item = self.items.get("api_keys", f"KEY#{key_hash}", f"KEY#{key_hash}")
        if item is None or not hmac.compare_digest(str(item.get("key_hash", "")), key_hash):
            return None
        if item.get("revoked"):
            return None
        expires = item.get("expires_at")
        if expires and expires <= now_iso():
            return None
        return _public(item)

    def revoke_api_key(self, key_hash: str) -> None:
        self.items.update("api_keys", f"KEY#{key_hash}", f"KEY#{key_hash}", {"revoked": True})

    def list_api_keys(self, tenant_id: str | None = None, limit: int = 10_000) -> list[Item]:
        """API key records (no secret: the hash, prefix, tenant, name, times,
        revoked), newest first; keys created before the listing index are
        not listed."""
        items = self.items.query_newest("api_keys", API_KEYS_LISTING, limit=limit)
        return [item for item in items if tenant_id is None or item.get("tenant_id") == tenant_id]

    # --- rate limits (one token bucket per tenant, shared by every node) ----------------
    def take_rate_tokens(
        self, tenant_id: str, want: int, rate: float, burst: float, *, now: float | None = None
    ) -> tuple[int, float]:
        """Take up to `want` whole tokens from the tenant's shared bucket
        (refilled at `rate` per second up to `burst`): (taken, 0.0), or
        (0, seconds until a token is there). A conditional write on the
        bucket's version, retried on a lost race; never more than it holds."""
        pk, sk = f"RATE#{tenant_id}", "BUCKET"
        for _ in range(RATE_BUCKET_ATTEMPTS):
            moment = time.time() if now is None else now
            bucket = self.items.get("api_keys", pk, sk)
            if bucket is None:
                with contextlib.suppress(ConflictError):
                    self.items.put(
                        "api_keys",
                        {"PK": pk, "SK": sk, "tenant_id": tenant_id, "tokens": burst, "at": moment},
                        if_absent=True,
                    )
                continue
            elapsed = max(0.0, moment - float(bucket.get("at", moment)))
            tokens = min(burst, float(bucket.get("tokens", 0.0)) + elapsed * rate)
            taken = min(want, int(tokens))
            if taken < 1:
                return 0, (1 - tokens) / rate
            try:
                self.items.update(
                    "api_keys", pk, sk, {"tokens": tokens - taken, "at": max(moment, float(bucket["at"]))},
                    condition=Condition(version=bucket["version"]),
                )  # fmt: skip
            except ConflictError:
                continue
            return taken, 0.0
        # every attempt lost a race: other nodes are draining this bucket
        return 0, 1 / rate

    # --- quotas (one item per tenant and quota, shared by every node) --------------------
    def quota_ticket(self, tenant_id: str, quota: str) -> QuotaTicket:
        """The tenant's quota partition as it is now (one consistent Query;
        its VERSION item created when absent): what an admitted write is
        conditional on, and the places held."""
        pk = f"QUOTA#{tenant_id}#{quota}"
        for _ in range(2):
            items = self.items.query("api_keys", pk)
            version = next((i["version"] for i in items if i["SK"] == "VERSION"), None)
            if version is not None:
                holders = tuple(
                    str(i["SK"])[len("HOLDER#") :] for i in items if str(i["SK"]).startswith("HOLDER#")
                )
                return QuotaTicket(tenant_id, quota, int(version), holders)
            with contextlib.suppress(ConflictError):  # another node created it first: read theirs
                self.items.put(
                    "api_keys", {"PK": pk, "SK": "VERSION", "tenant_id": tenant_id}, if_absent=True
                )
        raise RlmError("INTERNAL_ERROR", "the quota could not be read")

    def release_quota(self, tenant_id: str, quota: str, holder: str) -> None:
        """Give `holder`'s place back (one delete: it only lowers the count, so
        it needs no condition; idempotent)."""
        self.items.delete("api_keys", f"QUOTA#{tenant_id}#{quota}", f"HOLDER#{holder}")

    # --- audit log ------------------------------------------------------------------
    def append_audit(self, tenant_id: str, request_id: str, record: Item) -> None:
        timestamp = now_iso()
        self.items.put(
            "audit_log",
            {
                **record, "PK": f"TENANT#{tenant_id}", "SK": f"TS#{timestamp}#REQ#{request_id}",
                "tenant_id": tenant_id, "request_id": request_id, "timestamp": timestamp,
            },
        )  # fmt: skip

    def list_audit(self, tenant_id: str) -> list[Item]:
        return [_public(i) or {} for i in self.items.query("audit_log", f"TENANT#{tenant_id}", "TS#")]


__all__ = [
    "API_KEY_PREFIX",
    "EXECUTION_STATUSES",
    "INGEST_STATUSES",
    "PURGED",
    "SESSION_STATUSES",
    "TENANT_ID",
    "Fence",
    "MetadataStore",
    "QuotaTicket",
    "new_id",
    "now_iso",
    "validate_tenant_id",
]  # fmt: skip
