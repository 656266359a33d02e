"""One tenant's slow documents do not hold up another tenant's session.

The parser service here is the real one behind real HTTP, except that it holds
every request for a document named `slow-*.txt` until the test opens a gate:
a parse that takes exactly as long as the test wants, with no timing guess.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from rlm_rs.ingestion.scheduling import FairScheduler, PendingDocument
from rlm_rs.ingestion.service import ParseRequest, handle_parse
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from tests.integration.ingestion.conftest import register_session, serve, statuses


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a held request behind


@pytest.fixture
def slow_parser(storage: Storage, gate: threading.Event) -> Iterator[str]:
    app = FastAPI()

    @app.post("/parse")
    def parse(body: ParseRequest) -> dict[str, Any]:
        if body.source.source_name.startswith("slow-"):
            gate.wait(60)
        return handle_parse(storage.blobs, body)

    with serve(app) as url:
        yield url


def wait_for(storage: Storage, condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            docs = {s: [(d["ingest_status"], d.get("failure_reason")) for d in storage.metadata.list_documents(s)]
                    for s in ("s-hostile", "s-light")}  # fmt: skip
            raise AssertionError(f"timed out waiting for {what}: {docs}")
        time.sleep(0.05)


def test_a_slow_tenant_does_not_stall_another_tenants_session(
    storage: Storage, settings: Settings, slow_parser: str, gate: threading.Event
) -> None:
    remote = settings.model_copy(update={"parser_service_url": slow_parser})
    cap = remote.ingest_max_parses_per_tenant
    assert cap < remote.ingest_max_parses
    # The hostile tenant comes first, with more slow documents than there are slots.
    slow = [(f"slow-{i}.txt", b"slow text", "text/plain") for i in range(6)]
    register_session(storage, slow, tenant_id="hostile", session_id="s-hostile")
    worker = IngestionWorker(storage, remote)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.05))
    thread.start()
    try:
        wait_for(
            storage, lambda: statuses(storage, "s-hostile").count("PARSING") == cap, 30, "the slow parses"
        )
        time.sleep(0.5)  # ten more passes of the worker: the free slots stay free
        assert statuses(storage, "s-hostile").count("PARSING") == cap
        # Another tenant's small document arrives while those parses hang.
        register_session(storage, [("small.txt", b"small text", "text/plain")], tenant_id="light",
                         session_id="s-light")  # fmt: skip
        wait_for(
            storage,
            lambda: storage.metadata.get_session("light", "s-light")["status"] == "READY",
            30,
            "the light tenant's session",
        )
        hostile = statuses(storage, "s-hostile")
        assert hostile.count("PARSING") == cap and "PARSED" not in hostile, hostile
        gate.set()
        wait_for(
            storage,
            lambda: storage.metadata.get_session("hostile", "s-hostile")["status"] == "READY",
            60,
            "the hostile session once its parses are let go",
        )
    finally:
        gate.set()
        stop.set()
        thread.join(60)
    assert statuses(storage, "s-hostile") == ["PARSED"] * 6


def _doc(tenant: str, session: str, index: int) -> PendingDocument:
    return PendingDocument(tenant, session, f"d{index}", index)


def test_scheduler_shares_slots_across_tenants_then_sessions() -> None:
    scheduler = FairScheduler(slots=4, per_tenant=2)
    heavy = [_doc("a", "a1", i) for i in range(5)] + [_doc("a", "a2", i) for i in range(5)]
    light = [_doc("b", "b1", 0)]
    first = scheduler.take(heavy + light)
    # a's two slots go to its two sessions; b gets one; the fourth stays free for others
    assert [(d.tenant_id, d.session_id, d.doc_id) for d in first] == [
        ("a", "a1", "d0"), ("b", "b1", "d0"), ("a", "a2", "d0"),
    ]  # fmt: skip
    assert scheduler.free == 1
    assert scheduler.take(heavy) == []  # a is at its cap
    late = scheduler.take([_doc("c", "c1", 0)])
    assert [d.tenant_id for d in late] == ["c"]
    scheduler.release(first[0])  # a1/d0 is done
    assert [(d.session_id, d.doc_id) for d in scheduler.take(heavy[1:])] == [("a1", "d1")]
