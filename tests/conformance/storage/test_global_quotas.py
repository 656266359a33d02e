"""Quotas hold across nodes: two control planes' Quotas (each with its own
connection to one real store: a SQLite file, or a moto server over HTTP)
admitting at the same moment never exceed a tenant's running executions or
live sessions together, a place given back is taken again, and a place left
behind by an execution that ended without giving it back is pruned."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.control.quotas import RUNNING_EXECUTIONS, Quotas, QuotaTable
from rlm_rs.errors import RlmError
from rlm_rs.storage import Storage, open_storage
from tests.conformance.storage.conftest import make_settings

LIMIT = 3
TABLE = QuotaTable({"default": {"running_executions": LIMIT, "live_sessions": LIMIT}})


@pytest.fixture(params=["embedded", "aws"])
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, Storage]]:
    endpoint = request.getfixturevalue("atomic_moto_endpoint") if request.param == "aws" else None
    settings = make_settings(request.param, tmp_path, endpoint)
    first, second = open_storage(settings), open_storage(settings)
    first.init()
    yield first, second
    first.close()
    second.close()


def _execution(tenant: str = "t1") -> dict[str, Any]:
    return {"tenant_id": tenant, "session_id": "s1", "execution_id": f"exec_{uuid.uuid4().hex[:12]}",
            "status": "RUNNING", "mode": "RUNTIME"}  # fmt: skip


def _session(tenant: str = "t1") -> dict[str, Any]:
    return {"tenant_id": tenant, "session_id": f"sess_{uuid.uuid4().hex[:12]}", "status": "READY",
            "ttl_epoch": 4_000_000_000, "options": {}}  # fmt: skip


def _race(attempts: Sequence[Callable[[], object]]) -> int:
    """Run every attempt at once (a barrier); how many were admitted."""
    admitted = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(len(attempts))

    def one(attempt: Callable[[], object]) -> None:
        barrier.wait()
        try:
            attempt()
        except RlmError as exc:
            assert exc.code == "RATE_LIMITED", exc
            return
        with lock:
            admitted[0] += 1

    threads = [threading.Thread(target=one, args=(a,)) for a in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return admitted[0]


ROUNDS = 3  # each a fresh tenant: a race lost once is enough to fail


def test_two_nodes_together_never_exceed_running_executions(two_nodes: tuple[Storage, Storage]) -> None:
    nodes = [(Quotas(TABLE, store), store) for store in two_nodes]
    for tenant in (f"t{n}" for n in range(ROUNDS)):
        attempts = [
            functools.partial(quotas.create_execution, _execution(tenant), store.metadata.put_execution)
            for quotas, store in nodes
            for _ in range(4)
        ]
        admitted = _race(attempts)
        running = [
            e for e in two_nodes[0].metadata.executions_with_status("RUNNING") if e["tenant_id"] == tenant
        ]
        assert 1 <= admitted <= LIMIT and len(running) == admitted, (admitted, len(running))
        assert len(two_nodes[1].metadata.quota_ticket(tenant, RUNNING_EXECUTIONS).holders) == admitted


def test_two_nodes_together_never_exceed_live_sessions(two_nodes: tuple[Storage, Storage]) -> None:
    nodes = [Quotas(TABLE, store) for store in two_nodes]
    for tenant in (f"t{n}" for n in range(ROUNDS)):
        attempts = [
            functools.partial(quotas.create_session, _session(tenant)) for quotas in nodes for _ in range(4)
        ]
        admitted = _race(attempts)
        assert 1 <= admitted <= LIMIT and len(two_nodes[0].metadata.list_sessions(tenant)) == admitted


def test_a_place_given_back_or_left_behind_is_taken_again(two_nodes: tuple[Storage, Storage]) -> None:
    (a, store_a), (b, store_b) = ((Quotas(TABLE, store), store) for store in two_nodes)
    records = [a.create_execution(_execution(), store_a.metadata.put_execution) for _ in range(LIMIT)]
    with pytest.raises(RlmError) as full:
        b.create_execution(_execution(), store_b.metadata.put_execution)
    assert full.value.details["quota"] == RUNNING_EXECUTIONS and full.value.details["current"] == LIMIT
    b.create_execution(_execution("t2"), store_b.metadata.put_execution)  # another tenant is not affected
    store_a.metadata.update_execution("s1", records[0]["execution_id"], {"status": "CANCELLED"})
    a.release_execution(records[0])  # given back: node b takes the place
    b.create_execution(_execution(), store_b.metadata.put_execution)
    # ended without giving its place back (a crash between the two writes): pruned when full
    store_a.metadata.update_execution("s1", records[1]["execution_id"], {"status": "COMPLETED"})
    b.create_execution(_execution(), store_b.metadata.put_execution)
    holders = store_a.metadata.quota_ticket("t1", RUNNING_EXECUTIONS).holders
    assert len(holders) == LIMIT and records[1]["execution_id"] not in holders
