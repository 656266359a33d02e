"""Two full nodes on one moto server (DynamoDB + S3 on loopback), as an operator
runs them: each node is the four real processes of `rlm-rs up` (sandbox pool,
control plane, ingestion worker, gateway) on its own ports, socket and data
directory, started through the supervisor's own code; the root model is the
OpenAI-compatible fake server. The pair starts once for the module; the tests run
in file order (the SIGKILL failover is last, it leaves node A without a control
plane). Leases are short (LEASE_SECONDS, sweep SWEEP_SECONDS) so failover is quick.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from rlm_rs.appliance.supervisor import Appliance
from rlm_rs.client import Client
from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage, open_storage
from rlm_rs.storage.uploads import store_upload
from rlm_rs.v1 import common_pb2, execution_pb2, execution_pb2_grpc

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3.0
SWEEP_SECONDS = 0.5
SLOW_ROOT_CALL = 2.5 * LEASE_SECONDS
TENANT = "t-mn"
LIMITED = "t-mn-limited"  # the one tenant with a low rate limit: RATE, BURST for all nodes together
RATE, BURST = 5.0, 5.0
DOC = b"Lisbon is where the office is."

READ = "```repl\nprint(context[0][:6])\n```"
FINAL_CITED = (
    "```repl\nplace = context[0].slice(0, 6, tag='mn:place')\ntool.FINAL('the office is in ' + place)\n```"
)
STALE = "```repl\nstate['work']['who'] = 'STALE'\ntool.queue_llm('k', 'STALE sub-call')\ntool.YIELD()\n```"
NEW_1 = "```repl\nstate['work']['who'] = 'new owner'\nprint(context[0][:6])\n```"
NEW_2 = "```repl\ntool.FINAL('done by ' + state['work']['who'])\n```"
FINISHED = {"COMPLETED", "FAILED", "TIMEOUT", "BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RootModel:
    """The fake root model's script: the question's `[mn:NAME]` marker picks the scenario."""

    calls: dict[tuple[str, int], int] = field(default_factory=dict)
    events: dict[str, threading.Event] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def reply(self, messages: list[dict[str, str]]) -> str:
        if messages[0]["role"] != "system":
            return "a sub-call answer"
        text = json.dumps(messages)
        marker = re.search(r"\[mn:([a-z-]+)\]", text)
        turn_match = re.search(r"Turn (\d+) of", messages[-1]["content"])
        scenario = marker.group(1) if marker else "plain"
        turn = int(turn_match.group(1)) if turn_match else 0
        with self.lock:
            self.calls[(scenario, turn)] = count = self.calls.get((scenario, turn), 0) + 1
        if scenario == "slow" and turn == 1:
            self.event("slow-asked").set()
            time.sleep(SLOW_ROOT_CALL)
            return READ
        if scenario == "stale":
            if turn == 1 and count == 1:  # the first owner, held until it is paused
                self.event("stale-asked").set()
                self.event("stale-paused").wait(60)
                return STALE
            if turn == 1:
                return NEW_1
            self.event("new-waits").set()  # the new owner's turn 2 waits for the stale one's resume
            self.event("release-new").wait(60)
            return NEW_2
        if scenario == "kill" and turn == 2:
            if count == 1:  # the owner that is SIGKILLed while it waits for this reply
                self.event("kill-asked").set()
                self.event("killed").wait(60)
                return FINAL_CITED
            self.times.setdefault("taken-over", time.monotonic())
        return READ if turn == 1 else FINAL_CITED


class Node:
    """One node: the supervisor's four components, started in its order, health-waited."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.app = Appliance(data_dir, _free_port(), _free_port(), ready_timeout=120.0)
        self.app.env.update(env)
        self.url = self.app.base_url

    def start(self, init_storage: bool) -> None:
        for sub in ("run", "logs"):
            (self.app.data_dir / sub).mkdir(parents=True, exist_ok=True)
        if init_storage:
            self.app._init_storage()
        for component in self.app._plan():
            if component.name == "control plane":
                component.argv += [
                    "--lease-seconds",
                    str(LEASE_SECONDS),
                    "--sweep-seconds",
                    str(SWEEP_SECONDS),
                ]
            self.app._start(component)

    def pid(self, component: str) -> int:
        for each in self.app.components:
            if each.name == component and each.process is not None:
                return each.process.pid
        raise AssertionError(f"node {self.name} has no {component}")

    def log(self, component: str) -> str:
        return next(c.log_tail(400) for c in self.app.components if c.name == component)

    def stop(self) -> None:
        for each in self.app.components:  # a paused process cannot take its SIGTERM
            if each.process is not None and each.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(each.process.pid, signal.SIGCONT)
        self.app.stop()


@dataclass
class Cluster:
    a: Node
    b: Node
    model: RootModel
    llm: OpenAICompatibleServer
    storage: Storage
    key: str
    session_id: str = ""

    def http(self, node: Node) -> httpx.Client:
        return httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)

    def start(self, node: Node, question: str) -> str:
        with self.http(node) as client:
            response = client.post(f"/v1/sessions/{self.session_id}/executions", json={"question": question})
        assert response.status_code in (200, 201, 202), f"StartExecution on {node.name}: {response.text}"
        return str(response.json()["execution_id"])

    def wait(self, node: Node, execution_id: str, seconds: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        with self.http(node) as client:
            while True:
                left = max(1, min(20, int(deadline - time.monotonic())))
                response = client.post(f"/v1/executions/{execution_id}/wait", json={"timeout_seconds": left})
                assert response.status_code == 200, f"WaitExecution on {node.name}: {response.text}"
                view: dict[str, Any] = response.json()
                if view["status"] in FINISHED or time.monotonic() > deadline:
                    return view

    def record(self, execution_id: str) -> dict[str, Any]:
        return dict(self.storage.metadata.get_execution(TENANT, execution_id) or {})

    def steps(self, execution_id: str) -> list[int]:
        written = self.storage.metadata.items.query("execution_state", f"EXEC#{execution_id}")
        return sorted(int(i["turn_index"]) for i in written if str(i["SK"]).startswith("STEP#"))

    def written(self, execution_id: str) -> str:
        return json.dumps(
            self.storage.metadata.items.query("execution_state", f"EXEC#{execution_id}"), default=str
        )


def _wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
    root = tmp_path_factory.mktemp("mn")
    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    unique = uuid.uuid4().hex[:8]
    storage_env = {
        "RLM_STORAGE_BACKEND": "aws", "API_KEY_PEPPER": "pepper", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "DDB_TABLE_PREFIX": f"mn{unique}_rlm_", "S3_BUCKET": f"rlm-mn-{unique}",
    }  # fmt: skip
    model = RootModel()
    patch = pytest.MonkeyPatch()
    nodes: list[Node] = []
    storage: Storage | None = None
    try:
        for name, value in storage_env.items():  # this process's own storage client
            if name.startswith("AWS_"):
                patch.setenv(name, value)
        with OpenAICompatibleServer(model.reply) as llm:
            env = {
                **storage_env, "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": llm.base_url,
                "OPENAI_API_KEY": "sk-test", "RLM_LLM_MAX_RETRIES": "0",
                "RATE_LIMITS_JSON": json.dumps({"tenants": {LIMITED: {"rate_per_second": RATE, "burst": BURST}}}),
            }  # fmt: skip
            a, b = Node("A", root / "a", env), Node("B", root / "b", env)
            nodes += [a, b]
            a.start(init_storage=True)
            b.start(init_storage=False)
            settings = Settings(
                RLM_STORAGE_BACKEND="aws", RLM_DATA_DIR=root / "test", API_KEY_PEPPER="pepper",
                AWS_ENDPOINT_URL=storage_env["AWS_ENDPOINT_URL"], AWS_REGION="us-east-1",
                DDB_TABLE_PREFIX=storage_env["DDB_TABLE_PREFIX"], S3_BUCKET=storage_env["S3_BUCKET"],
            )  # fmt: skip
            storage = open_storage(settings)
            key, _ = storage.metadata.create_api_key(TENANT)
            yield Cluster(a, b, model, llm, storage, key)
    finally:
        for event in list(model.events.values()):
            event.set()  # nothing stays held in the fake model
        for node in nodes:
            node.stop()
        if storage is not None:
            storage.close()
        moto.stop()
        patch.undo()


def test_a_session_made_on_a_serves_an_execution_on_b_and_events_cross_nodes(cluster: Cluster) -> None:
    uri = store_upload(cluster.storage.blobs, TENANT, "office.txt", DOC)
    with cluster.http(cluster.a) as client:
        made = client.post(
            "/v1/sessions",
            json={
                "ttl_minutes": 60,
                "docs": [{"source_name": "office.txt", "mime_type": "text/plain", "raw_s3_uri": uri}],
            },
        )
        assert made.status_code in (200, 201), made.text
        cluster.session_id = made.json()["session_id"]

        def ready() -> bool:
            return bool(client.get(f"/v1/sessions/{cluster.session_id}").json()["status"] == "READY")

        assert _wait_for(ready, 90), "the session made on node A never became READY"
    on_b = cluster.start(cluster.b, "Where is the office? [mn:cross-b]")
    on_a = cluster.start(cluster.a, "Where is the office? [mn:cross-a]")
    seen: dict[str, list[str]] = {}

    def watch(node: Node, execution_id: str) -> None:
        with Client(node.url, cluster.key) as client:
            seen[execution_id] = [event.type for event in client.executions.events(execution_id)]

    watchers = [
        threading.Thread(target=watch, args=(cluster.b, on_a), daemon=True),  # B watches A's execution
        threading.Thread(target=watch, args=(cluster.a, on_b), daemon=True),
    ]
    for thread in watchers:
        thread.start()
    views = {on_b: cluster.wait(cluster.b, on_b), on_a: cluster.wait(cluster.a, on_a)}
    for thread in watchers:
        thread.join(60)
    owners = {cluster.record(on_b)["lease_owner"], cluster.record(on_a)["lease_owner"]}
    assert len(owners) == 2, f"both executions ran on one control plane: {owners}"
    for execution_id, view in views.items():
        assert view["status"] == "COMPLETED", view
        assert view["answer"] == "the office is in Lisbon", view
        assert view["citations"], "no citation"
        for node in (cluster.a, cluster.b):  # citations verify on both nodes
            with cluster.http(node) as client:
                for ref in view["citations"]:
                    verified = client.post("/v1/citations/verify", json={"ref": ref}).json()
                    assert verified.get("valid") and verified.get("text") == "Lisbon", (node.name, verified)
        assert execution_id in seen, "a watcher on the other node saw no stream"
        types = seen[execution_id]
        assert types and types[-1] == "status" and len(types) >= 3, types
        assert cluster.steps(execution_id) == [0, 1]


SEARCH_DOCS = {
    "harbour.txt": b"The harbour light at Lisbon burns colza oil every night of the year.",
    "keeper.txt": b"The keeper logs the colza oil and the weather at the harbour each morning.",
}


def _search_everywhere(cluster: Cluster, execution_id: str) -> dict[str, Any]:
    """The same search through each node's gateway and through node B's control plane (gRPC)."""
    body = {"tool_requests": {"search": [{"key": "q", "query": "colza oil harbour", "k": 5}]}}
    answers: dict[str, Any] = {}
    for node in (cluster.a, cluster.b):
        with cluster.http(node) as client:
            response = client.post(f"/v1/executions/{execution_id}/tools/resolve", json=body)
        assert response.status_code == 200, f"ResolveTools on {node.name}: {response.text}"
        answers[f"gateway {node.name}"] = response.json()
    request = execution_pb2.ResolveToolsRequest(
        execution_id=execution_id,
        tool_requests=common_pb2.ToolRequests(
            search=[common_pb2.SearchRequest(key="q", query="colza oil harbour", k=5)]
        ),
    )
    with grpc.insecure_channel(cluster.b.app.grpc_address) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        reply = stub.ResolveTools(request, metadata=(("authorization", f"Bearer {cluster.key}"),), timeout=30)
    hits = reply.tool_results.search["q"].hits
    answers["control plane B"] = {
        "statuses": dict(reply.statuses),
        "hits": [[h.doc_index, h.start_char, h.end_char, h.preview] for h in hits],
    }
    return answers


def test_search_answers_the_same_hits_on_both_nodes(cluster: Cluster) -> None:
    """A search session made and ingested through node A (either node's worker
    may parse each document) answers the same hits through node B's gateway and
    control plane: the index is the session's artifact in S3, not a node's file."""
    uris = [store_upload(cluster.storage.blobs, TENANT, name, data) for name, data in SEARCH_DOCS.items()]
    docs = [{"source_name": name, "mime_type": "text/plain", "raw_s3_uri": uri}
            for name, uri in zip(SEARCH_DOCS, uris, strict=True)]  # fmt: skip
    with cluster.http(cluster.a) as client:
        made = client.post("/v1/sessions", json={"ttl_minutes": 60, "docs": docs,
                                                 "options": {"enable_search": True}})  # fmt: skip
        assert made.status_code in (200, 201), made.text
        session_id = made.json()["session_id"]
    with cluster.http(cluster.b) as client:

        def ready() -> bool:
            return bool(client.get(f"/v1/sessions/{session_id}").json()["readiness"]["search_ready"])

        assert _wait_for(ready, 90), "the search session never became search_ready on node B"
        runtime = client.post(f"/v1/sessions/{session_id}/executions/runtime", json={})
        assert runtime.status_code in (200, 201), runtime.text
    answers = _search_everywhere(cluster, runtime.json()["execution_id"])
    hits = {where: [[h["doc_index"], h["start_char"], h["end_char"], h["preview"]]
                    for h in answer["tool_results"]["search"]["q"]["hits"]]
            for where, answer in answers.items() if where.startswith("gateway")}  # fmt: skip
    hits["control plane B"] = answers["control plane B"]["hits"]
    print(f"\nsearch hits per node: { {where: len(found) for where, found in hits.items()} }")
    assert hits["gateway A"], f"no hits on node A: {answers['gateway A']}"
    assert hits["gateway A"] == hits["gateway B"] == hits["control plane B"], hits
    assert {h[0] for h in hits["gateway A"]} == {0, 1}  # both documents, whichever worker parsed each
    assert answers["control plane B"]["statuses"] == {"q": execution_pb2.TOOL_STATUS_RESOLVED}


def test_a_tenant_rate_limit_holds_across_both_nodes(cluster: Cluster) -> None:
    key, _ = cluster.storage.metadata.create_api_key(LIMITED)
    statuses: dict[str, list[int]] = {"A": [], "B": []}
    started = time.monotonic()
    stop_at = started + 3.0

    def hammer(node: Node) -> None:
        with httpx.Client(
            base_url=node.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            while time.monotonic() < stop_at:
                statuses[node.name].append(client.get("/v1/sessions").status_code)

    threads = [threading.Thread(target=hammer, args=(node,), daemon=True) for node in (cluster.a, cluster.b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    admitted = sum(codes.count(200) for codes in statuses.values())
    allowed = BURST + RATE * elapsed + 1  # one bucket for both nodes (+1: clock rounding); per-process
    # buckets would allow twice BURST + RATE * elapsed
    print(f"\nrate limit across nodes: {admitted} admitted in {elapsed:.1f} s (at most {allowed:.1f}); "
          f"A {statuses['A'].count(200)}/{len(statuses['A'])}, B {statuses['B'].count(200)}/{len(statuses['B'])}")  # fmt: skip
    assert {code for codes in statuses.values() for code in codes} <= {200, 429}, statuses
    assert BURST <= admitted <= allowed, (
        f"{admitted} calls admitted in {elapsed:.1f} s, at most {allowed:.1f}"
    )
    assert 429 in statuses["A"] and 429 in statuses["B"], "a node never refused a call"


def test_a_root_call_longer_than_the_lease_keeps_it_while_the_other_node_sweeps(cluster: Cluster) -> None:
    execution_id = cluster.start(cluster.a, "Where? [mn:slow]")
    assert cluster.model.event("slow-asked").wait(60), "the slow root call never came"
    before = cluster.record(execution_id)
    view = cluster.wait(cluster.a, execution_id)
    after = cluster.record(execution_id)
    assert view["status"] == "COMPLETED" and view["answer"] == "the office is in Lisbon", view
    assert cluster.model.calls[("slow", 1)] == 1, "turn 1 ran twice: the lease was lost mid-call"
    assert after["lease_owner"] == before["lease_owner"] and after["lease_token"] == before["lease_token"]
    assert cluster.steps(execution_id) == [0, 1] and view["budgets_consumed"]["turns"] == 2


def test_a_stale_owner_paused_past_its_lease_writes_nothing_after_b_takes_over(cluster: Cluster) -> None:
    model, a = cluster.model, cluster.a
    execution_id = cluster.start(a, "Where? [mn:stale]")
    assert model.event("stale-asked").wait(60), "node A never asked for the first turn"
    first_owner = cluster.record(execution_id)["lease_owner"]
    next_turns: list[int] = []
    polling = threading.Event()

    def poll() -> None:
        while not polling.is_set():
            next_turns.append(int(cluster.record(execution_id).get("next_turn", 0)))
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    control_a = a.pid("control plane")
    os.kill(control_a, signal.SIGSTOP)
    try:
        model.event("stale-paused").set()  # A's reply waits in its socket until it resumes
        assert model.event("new-waits").wait(60), "node B never took the execution over"
    finally:
        os.kill(control_a, signal.SIGCONT)
    assert _wait_for(lambda: "lease_lost" in a.log("control plane"), 15), "node A never logged lease_lost"
    time.sleep(1.0)  # anything the stale owner still did would land now
    model.event("release-new").set()
    view = cluster.wait(cluster.b, execution_id)
    polling.set()
    poller.join(5)
    record = cluster.record(execution_id)
    assert view["status"] == "COMPLETED" and view["answer"] == "done by new owner", view
    assert record["lease_owner"] != first_owner and record["next_turn"] == 2
    assert view["budgets_consumed"]["turns"] == 2 and view["budgets_consumed"]["llm_subcalls"] == 0
    assert cluster.steps(execution_id) == [0, 1], "a step was recorded twice"
    assert "STALE" not in cluster.written(execution_id), "the stale owner wrote"
    assert next_turns == sorted(next_turns), f"next_turn went back: {next_turns}"
    assert not any("STALE sub-call" in json.dumps(r["messages"]) for r in cluster.llm.requests)
    assert _wait_for(lambda: httpx.get(f"{a.url}/health/ready").status_code == 200, 30), "node A unhealthy"


def test_sigkill_of_a_control_plane_mid_execution_fails_over_to_the_other_node(cluster: Cluster) -> None:
    model, a = cluster.model, cluster.a
    execution_id = cluster.start(a, "Where? [mn:kill]")
    assert model.event("kill-asked").wait(60), "node A never asked for the second turn"
    os.kill(a.pid("control plane"), signal.SIGKILL)
    killed_at = time.monotonic()
    model.event("killed").set()
    view = cluster.wait(cluster.b, execution_id)
    failover = model.times["taken-over"] - killed_at
    print(f"\nfailover (SIGKILL -> node B's first root call): {failover:.2f} s "
          f"(lease {LEASE_SECONDS:g} s, sweep {SWEEP_SECONDS:g} s)")  # fmt: skip
    assert view["status"] == "COMPLETED" and view["answer"] == "the office is in Lisbon", view
    assert cluster.steps(execution_id) == [0, 1], "a step was recorded twice"
    assert model.calls[("kill", 1)] == 1, "a committed turn ran again"
    assert view["budgets_consumed"]["turns"] == 2
    assert failover < LEASE_SECONDS + SWEEP_SECONDS + 10, f"failover took {failover:.1f} s"
