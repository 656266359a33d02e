"""The client's API over both transports, sync and asyncio, against the real appliance:
the same calls give the same typed results whether they went over REST or gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from rlm_rs.client import (
    AsyncClient,
    Client,
    ExecutionError,
    Session,
    SessionNotFoundError,
    ValidationError,
)
from tests.e2e.client.conftest import Appliance

QUESTION = "When was the Harrow Point light first lit?"


@pytest.fixture
def client(appliance: Appliance, transport: str) -> Iterator[Client]:
    with Client(appliance.url(transport), appliance.api_key) as client:
        yield client


def test_create_waits_for_ready_and_reports_progress(client: Client, appliance: Appliance) -> None:
    seen: list[tuple[str, int, int]] = []
    session = client.sessions.create(
        docs=appliance.uris, ttl_minutes=30, progress=lambda s: seen.append((s.status, *s.ingest_progress))
    )
    assert isinstance(session, Session) and session.status == "READY" and session.readiness.ready
    assert sorted(d.source_name for d in session.docs) == [
        "keepers.docx", "keepers_log.txt", "lamp_room.html", "visitor_leaflet.pdf",
    ]  # fmt: skip
    assert all(
        d.ingest_status == "PARSED" and d.char_length > 0 and d.failure_reason is None for d in session.docs
    )
    assert seen[-1] == ("READY", 4, 4) and seen[0][0] == "CREATING"
    parsed = [count for _, count, _ in seen]
    assert parsed == sorted(parsed) and len(set(seen)) == len(seen)  # one call per change, never backwards
    assert session.expires_at is not None and session.created_at is not None
    assert (session.expires_at - session.created_at).total_seconds() == pytest.approx(30 * 60, abs=5)
    if client.transport == "grpc":  # fields only the gRPC view carries
        assert session.tenant_id == "acme"
    else:
        assert session.tenant_id is None


def test_ask_returns_the_answer_with_verified_citations(client: Client, appliance: Appliance) -> None:
    session = client.sessions.create(docs=appliance.uris)
    answer = session.ask(QUESTION)
    assert "1 March 1874" in answer.text and str(answer) == answer.text
    assert answer.execution.status == "COMPLETED" and answer.execution.finished
    assert answer.verified and len(answer.citations) == 4
    by_name = {c.source_name: c for c in answer.citations}
    log = by_name["keepers_log.txt"]
    assert "first lit on 1 March 1874" in log.text
    # the server's text is exactly the cited range of the document
    span = session.span(log.ref.doc_id, log.ref.start_char, log.ref.end_char)
    assert span.text == log.text and span.ref.checksum == log.ref.checksum
    steps = list(client.executions.steps(answer.execution.execution_id))
    assert [s.turn_index for s in steps] == [0, 1] and steps[-1].final is not None
    assert steps[0].tool_requests.keys == ["summary"] and steps[0].final is None


def test_a_changed_document_range_does_not_verify(client: Client, appliance: Appliance) -> None:
    session = client.sessions.create(docs=appliance.uris[:1])
    answer = session.ask(QUESTION)
    ref = answer.citations[0].ref
    from dataclasses import replace

    tampered = client.citations.verify(replace(ref, end_char=ref.end_char - 1))
    assert answer.citations[0].verified and not tampered.verified


def test_events_replay_after_an_id_and_follow_ups_continue(client: Client, appliance: Appliance) -> None:
    session = client.sessions.create(docs=appliance.uris)
    execution = client.executions.wait(session.start(QUESTION).execution_id)
    events = list(client.executions.events(execution.execution_id))
    assert events[-1].is_final and events[-1].data["status"] == "COMPLETED"
    middle = events[3].event_id
    assert [e.event_id for e in client.executions.events(execution.execution_id, after=middle)] == [
        e.event_id for e in events[4:]
    ]
    followup = client.executions.followup(execution.execution_id, "And what did the lamp burn?")
    assert followup.followup_of == execution.execution_id
    assert client.executions.wait(followup.execution_id).status == "COMPLETED"


def test_runtime_steps_tools_final_answer(client: Client, appliance: Appliance) -> None:
    session = client.sessions.create(docs=appliance.uris)
    with session.runtime(budgets={"max_turns": 6}) as rt:
        assert rt.execution.mode == "RUNTIME" and rt.execution.status == "RUNNING"
        failed = rt.run("1 / 0")
        assert (
            not failed.success and failed.error is not None and failed.error.code == "SANDBOX_RUNTIME_ERROR"
        )
        step = rt.run(
            'state["work"]["n"] = len(context)\ntool.queue_llm("s", "Summarise for the demo: x")\ntool.YIELD("wait")',
        )
        assert step.success and step.yield_reason == "wait" and step.tool_requests.keys == ["s"]
        resolved = rt.resolve(step.tool_requests)
        assert resolved.statuses == {"s": "resolved"} and "1874" in resolved.tool_results.llm["s"].text
        step = rt.run('print(state["work"]["n"], state["_tool_status"]["s"])', state={"work": {"n": 40}})
        assert step.stdout == "40 resolved\n"
        step = rt.run("tool.FINAL(context[1][36:141])")
        assert (
            step.is_final
            and step.final is not None
            and step.final.answer.startswith("The Harrow Point light")
        )
        answer = rt.answer()
        assert answer.verified and [c.source_name for c in answer.citations] == ["keepers_log.txt"]
        with pytest.raises(ValidationError) as ended:  # a step on a COMPLETED execution
            rt.run("print(1)")
        assert ended.value.code == "VALIDATION_ERROR"
    assert [s.turn_index for s in rt.steps()] == [0, 1, 2, 3]


def test_an_unfinished_runtime_execution_is_cancelled_on_exit(client: Client, appliance: Appliance) -> None:
    session = client.sessions.create(docs=appliance.uris[:1])
    with session.runtime() as rt:
        rt.run("print(1)")
    assert rt.execution.status == "CANCELLED"
    with pytest.raises(ExecutionError, match="ended CANCELLED"):
        rt.answer()


def test_bad_input_and_deleted_sessions_raise_the_same_classes(client: Client, appliance: Appliance) -> None:
    session = client.sessions.create(docs=appliance.uris[:1])
    with pytest.raises(ValidationError) as refused:
        session.start("   ")
    assert refused.value.request_id.startswith("req_")
    assert session.delete() == "DELETING"
    with pytest.raises(SessionNotFoundError):
        session.refresh()


def test_the_async_client_does_the_same(appliance: Appliance, transport: str) -> None:
    async def main() -> None:
        async with AsyncClient(appliance.url(transport), appliance.api_key) as client:
            seen: list[int] = []

            async def progress(session: object) -> None:
                seen.append(1)

            session = await client.sessions.create(docs=appliance.uris, progress=progress)
            assert session.status == "READY" and seen
            stream = await session.ask(QUESTION, stream=True)
            types = [event.type async for event in stream]
            answer = await stream.answer()
            assert types[0] == "turn_started" and types[-1] == "status"
            assert answer.verified and "1 March 1874" in answer.text
            async with await session.runtime() as rt:
                step = await rt.run("tool.FINAL(context[1][36:141])")
                assert step.is_final
                assert (await rt.answer()).verified
            steps = [s async for s in client.executions.steps(answer.execution.execution_id)]
            assert len(steps) == 2
            with pytest.raises(SessionNotFoundError):
                await client.sessions.get("sess_000000000000000000000000")

    asyncio.run(main())
