"""Look-ups by id read the base table: an execution or a session named only
by its id is found through its id pointer by strongly consistent GetItems,
never through a secondary index (on DynamoDB a GSI read may lag behind a
write made a moment before, by this node or another). On the aws back end
the requests on the wire are checked (a botocore hook on the client)."""

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
    endpoint = request.getfixturevalue("moto_endpoint") if request.param == "aws" else None
    settings = make_settings(request.param, tmp_path, endpoint)
    first, second = open_storage(settings), open_storage(settings)
    first.init()
    yield first, second
    first.close()
    second.close()


def _wire(store: Storage) -> list[tuple[str, dict[str, Any]]]:
    """(operation, parameters) of every DynamoDB request `store` sends (aws only)."""
    sent: list[tuple[str, dict[str, Any]]] = []
    client = getattr(store.metadata.items, "client", None)
    if client is not None:
        client.meta.events.register(
            "provide-client-params.dynamodb.*",
            lambda params, model, **_: sent.append((model.name, dict(params))),
        )
    return sent


def _write(store: Storage) -> None:
    store.metadata.put_session({"tenant_id": "t1", "session_id": "s1", "status": "READY", "options": {}})
    store.metadata.put_execution(
        {"tenant_id": "t1", "session_id": "s1", "execution_id": "e1", "status": "RUNNING"}
    )


def test_reads_by_id_on_another_node_are_consistent_gets(two_nodes: tuple[Storage, Storage]) -> None:
    writer, reader = two_nodes
    _write(writer)
    calls = count_storage_calls(reader)
    wire = _wire(reader)
    calls.enabled = True
    assert reader.metadata.get_execution("t1", "e1")["status"] == "RUNNING"
    session = reader.metadata.find_session("s1")
    assert session is not None and session["tenant_id"] == "t1"
    writer.metadata.update_execution("s1", "e1", {"status": "CANCELLED"})
    assert reader.metadata.get_execution("t1", "e1")["status"] == "CANCELLED"  # the pointer is cached
    ops = [c.op for c in calls.take()]
    assert not [op for op in ops if op.startswith("items.query")], ops
    assert ops.count("items.get executions") == 3 and ops.count("items.get sessions") == 2, ops
    if wire:  # aws: GetItem with ConsistentRead on the base table, nothing else
        assert {name for name, _ in wire} == {"GetItem"}, wire
        assert all(params.get("ConsistentRead") is True for _, params in wire), wire


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
