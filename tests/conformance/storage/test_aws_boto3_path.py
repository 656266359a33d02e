"""The aws item store on its lean path and without it (as when a proxy
applies to the endpoint: `_dynamo_wire.wire_for` gives None, and boto3
carries every item operation): the same answers - numbers and nesting
decoded, conditional failures as CONFLICT, a query past one page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_rs.errors import RlmError
from rlm_rs.storage import Storage, open_storage
from rlm_rs.storage._dynamo_wire import wire_for
from rlm_rs.storage.interfaces import Condition, Put, Update
from tests.conformance.storage.conftest import make_settings


@pytest.fixture(params=["lean", "boto3"])
def boto3_only(request: pytest.FixtureRequest, moto_endpoint: str, tmp_path: Path) -> Iterator[Storage]:
    store = open_storage(make_settings("aws", tmp_path, moto_endpoint))
    store.init()
    items = store.metadata.items
    assert getattr(items, "_wire", None) is not None  # the lean path is on by default
    if request.param == "boto3":
        items._wire = None  # type: ignore[attr-defined]
    yield store
    store.close()


def test_every_item_operation_answers_the_same_on_both_paths(boto3_only: Storage) -> None:
    items = boto3_only.metadata.items
    items.put("executions", {"PK": "P", "SK": "A", "n": 1.5, "nested": {"l": [1, None, True, "x"]}})
    assert items.get("executions", "P", "A") == {
        "PK": "P", "SK": "A", "n": 1.5, "nested": {"l": [1, None, True, "x"]}, "version": 1,
    }  # fmt: skip
    updated = items.update("executions", "P", "A", {"n": 2}, condition=Condition(version=1))
    assert updated["n"] == 2 and updated["version"] == 2
    with pytest.raises(RlmError) as stale:
        items.update("executions", "P", "A", {"n": 3}, condition=Condition(version=1))
    assert stale.value.code == "CONFLICT"
    with pytest.raises(RlmError) as refused:
        items.transact([Update("executions", "P", "A", {"n": 4}, Condition(version=1)),
                        Put("executions", {"PK": "P", "SK": "B"})])  # fmt: skip
    assert refused.value.code == "CONFLICT" and items.get("executions", "P", "B") is None
    big = "x" * 300_000  # four of these pass DynamoDB's 1 MB page: the query pages
    for index in range(4):
        items.put("execution_state", {"PK": "E", "SK": f"S#{index}", "blob": big})
    assert [i["SK"] for i in items.query("execution_state", "E", "S#")] == [f"S#{i}" for i in range(4)]
    items.delete("executions", "P", "A")
    assert items.get("executions", "P", "A") is None


def test_a_proxy_for_the_endpoint_turns_the_lean_path_off(
    boto3_only: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = boto3_only.metadata.items.client  # type: ignore[attr-defined]
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert wire_for(client, 5, 30) is None
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert wire_for(client, 5, 30) is not None
