"""Fenced execution leases on both back ends: a takeover raises the token, and
every write under a stale fence (renewal, update, a turn's commit
transaction, an event) fails and writes nothing."""

from __future__ import annotations

import time

import pytest

from rlm_rs.errors import ConflictError
from rlm_rs.storage import Storage
from rlm_rs.storage.interfaces import Check, Condition, Put, Update, Write
from rlm_rs.storage.metadata import Fence


def _running(storage: Storage, execution_id: str = "e1") -> dict[str, object]:
    return storage.metadata.put_execution(
        {
            "tenant_id": "t1",
            "session_id": "s1",
            "execution_id": execution_id,
            "status": "RUNNING",
            "next_turn": 0,
        }
    )


def _fence(taken: dict[str, object] | None, owner: str) -> Fence:
    assert taken is not None and taken["lease_owner"] == owner
    return Fence("s1", "e1", owner, int(taken["lease_token"]))  # type: ignore[call-overload]


def _step(turn: int, owner: str) -> dict[str, object]:
    return {"PK": "EXEC#e1", "SK": f"STEP#{turn:06d}", "turn_index": turn, "by": owner}


def test_a_takeover_raises_the_token_and_fences_out_the_stale_holder(storage: Storage) -> None:
    meta = storage.metadata
    record = _running(storage)
    first = _fence(meta.take_execution_lease(record, "A", 0.3), "A")
    assert meta.take_execution_lease(meta.read_execution("s1", "e1") or {}, "B", 30) is None  # live lease
    meta.commit_turn(first, 0, {"next_turn": 1}, [_step(0, "A")])
    meta.put_event("e1", "000000.0000", {"by": "A"}, first)
    time.sleep(0.4)  # A is "paused" past its lease
    second = _fence(meta.take_execution_lease(meta.read_execution("s1", "e1") or {}, "B", 30), "B")
    assert second.token > first.token

    # every write of the stale holder fails, whatever it is
    with pytest.raises(ConflictError):
        meta.renew_execution_lease(first, 30)
    with pytest.raises(ConflictError):
        meta.fenced_update_execution(first, {"answer": "stale"})
    waiting = [{"event_id": f"000001.000{n}", "by": "A"} for n in range(3)]  # a turn's outbox
    with pytest.raises(ConflictError):
        meta.commit_turn(first, 1, {"next_turn": 2}, [_step(1, "A")], waiting)
    with pytest.raises(ConflictError):
        meta.put_events(first, waiting)
    with pytest.raises(ConflictError):
        meta.put_event("e1", "000001.0000", {"by": "A"}, first)
    # ... and wrote nothing: no step, no event, the counters as they were
    items = meta.items
    assert items.get("execution_state", "EXEC#e1", "STEP#000001") is None
    assert not [i for i in meta.list_events("e1") if i["SK"] > "EVENT#000001"]
    current = meta.read_execution("s1", "e1") or {}
    assert current["next_turn"] == 1 and current.get("answer") is None and current["lease_owner"] == "B"

    # the new holder commits; a commit for a turn that is not the current one fails
    meta.commit_turn(second, 1, {"next_turn": 2}, [_step(1, "B")])
    with pytest.raises(ConflictError):
        meta.commit_turn(second, 1, {"next_turn": 2}, [_step(1, "B")])
    assert (items.get("execution_state", "EXEC#e1", "STEP#000001") or {})["by"] == "B"
    meta.renew_execution_lease(second, 30)
    # the same owner taking again (a second loop in one process) also fences out its first take
    again = _fence(meta.take_execution_lease(meta.read_execution("s1", "e1") or {}, "B", 30), "B")
    assert again.token > second.token
    with pytest.raises(ConflictError):
        meta.fenced_update_execution(second, {"answer": "stale"})


def test_an_ended_execution_refuses_the_holders_running_writes(storage: Storage) -> None:
    meta = storage.metadata
    fence = _fence(meta.take_execution_lease(_running(storage), "A", 30), "A")
    meta.update_execution("s1", "e1", {"status": "CANCELLED"}, from_statuses=("RUNNING",))
    with pytest.raises(ConflictError):
        meta.commit_turn(fence, 0, {"next_turn": 1}, [_step(0, "A")])
    with pytest.raises(ConflictError):
        meta.renew_execution_lease(fence, 30)
    assert meta.items.get("execution_state", "EXEC#e1", "STEP#000000") is None
    # the holder may still write what is not a RUNNING write (the closing event)
    meta.put_event("e1", "000000.9999", {"by": "A"}, fence)


def test_a_transaction_is_all_or_nothing(storage: Storage) -> None:
    items = storage.metadata.items
    items.put("documents", {"PK": "SESSION#s1", "SK": "DOC#a", "n": 0})
    refused: list[Write] = [
        Put("documents", {"PK": "SESSION#s1", "SK": "DOC#b", "n": 1}),
        Update("documents", "SESSION#s1", "DOC#a", {"n": 2}, Condition(version=1)),
        Check("documents", "SESSION#s1", "DOC#missing", Condition()),
    ]
    with pytest.raises(ConflictError):
        items.transact(refused)
    assert items.get("documents", "SESSION#s1", "DOC#b") is None
    assert (items.get("documents", "SESSION#s1", "DOC#a") or {})["n"] == 0
    items.transact(refused[:2])
    assert (items.get("documents", "SESSION#s1", "DOC#b") or {})["version"] == 1
    updated = items.get("documents", "SESSION#s1", "DOC#a") or {}
    assert updated["n"] == 2 and updated["version"] == 2
    with pytest.raises(ConflictError):  # the version moved on
        items.transact([Update("documents", "SESSION#s1", "DOC#a", {"n": 3}, Condition(version=1))])
