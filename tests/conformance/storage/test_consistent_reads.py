"""Look-ups by id read the base table: an execution or a session named only
by its id is found through its id pointer by strongly consistent GetItems,
never through a secondary index (on DynamoDB a GSI read may lag behind a
write made a moment before, by this node or another). On the aws back end
the requests on the wire are checked (the moto server's request log)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.bench._storage_calls import count_storage_calls
from rlm_rs.errors import RlmError
from rlm_rs.storage import Storage, open_storage
from tests.conformance.storage.conftest import make_settings


@pytest.fixture(params=["embedded", "aws"])
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, Storage]]:
    server = request.getfixturevalue("atomic_moto") if request.param == "aws" else None
    settings = make_settings(request.param, tmp_path, server[0] if server else None)
    first, second = open_storage(settings), open_storage(settings)
    first.init()
    yield first, second
    first.close()
    second.close()


@pytest.fixture
def wire(request: pytest.FixtureRequest, two_nodes: tuple[Storage, Storage]) -> Iterator[Any]:
    """The moto server's log of DynamoDB requests (aws), or None (embedded)."""
    if "aws" not in request.node.name:
        yield None
        return
    server = request.getfixturevalue("atomic_moto")[1]
    server.log.clear()
    yield server
    server.recording = False


def _write(store: Storage) -> None:
    store.metadata.put_session({"tenant_id": "t1", "session_id": "s1", "status": "READY", "options": {}})
    store.metadata.put_execution(
        {"tenant_id": "t1", "session_id": "s1", "execution_id": "e1", "status": "RUNNING"}
    )


def test_reads_by_id_on_another_node_are_consistent_gets(
    two_nodes: tuple[Storage, Storage], wire: Any
) -> None:
    writer, reader = two_nodes
    _write(writer)
    calls = count_storage_calls(reader)
    calls.enabled = True
    if wire is not None:
        wire.recording = True
    assert reader.metadata.get_execution("t1", "e1")["status"] == "RUNNING"
    session = reader.metadata.find_session("s1")
    assert session is not None and session["tenant_id"] == "t1"
    if wire is not None:
        wire.recording = False
    writer.metadata.update_execution("s1", "e1", {"status": "CANCELLED"})
    assert reader.metadata.get_execution("t1", "e1")["status"] == "CANCELLED"  # the pointer is cached
    ops = [c.op for c in calls.take()]
    assert not [op for op in ops if op.startswith("items.query")], ops
    assert ops.count("items.get executions") == 3 and ops.count("items.get sessions") == 2, ops
    if wire is not None:  # aws: consistent GetItems of the base table reached the server, nothing else
        assert [name for name, _ in wire.log] == ["GetItem"] * 4, wire.log
        assert all(body.get("ConsistentRead") is True and "IndexName" not in body for _, body in wire.log)


def test_another_tenant_or_an_unknown_id_is_not_found(two_nodes: tuple[Storage, Storage]) -> None:
    writer, reader = two_nodes
    _write(writer)
    for tenant, execution_id in (("t2", "e1"), ("t1", "e-unknown")):
        with pytest.raises(RlmError) as missing:
            reader.metadata.get_execution(tenant, execution_id)
        assert missing.value.code == "EXECUTION_NOT_FOUND"
    assert reader.metadata.find_session("s-unknown") is None


def test_a_record_written_before_pointers_is_still_found(two_nodes: tuple[Storage, Storage]) -> None:
    writer, reader = two_nodes
    writer.metadata.items.put(
        "executions",
        {"PK": "SESSION#s0", "SK": "EXEC#e0", "GSI1PK": "EXEC#e0", "tenant_id": "t1", "session_id": "s0",
         "execution_id": "e0", "status": "RUNNING"},
    )  # fmt: skip
    assert reader.metadata.get_execution("t1", "e0")["session_id"] == "s0"
