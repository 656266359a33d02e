"""`rlm-rs bench orchestrator`: control-plane overhead per Answerer turn.

A real control plane (gRPC on loopback, embedded storage in a temp dir, the
in-process sandbox, the scripted provider so model latency is ~0) runs
3-turn executions (read + sub-call/YIELD + FINAL). Reports the per-turn
overhead (everything but the root model call) median/p99 with its breakdown
(storage, prompt, sandbox, tools, plus trace/finalisation per execution),
and executions per second at concurrency 1 and 8 through StartExecution
(synchronous). Storage round-trips are counted too (_storage_calls.py):
per turn (the root model and tools aside), per execution's set-up and
finalisation, and on the RPC threads (creation, the synchronous wait).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE
from rlm_rs.bench._storage_calls import count_storage_calls, per_turn

DESCRIPTION = "control-plane overhead per turn and executions/s (scripted provider)"

SCRIPT = {
    "executions": [{"match": "", "root": [
        "```repl\nhits = context[0].find('Lisbon')\nstate['work']['hits'] = len(hits)\nprint(hits[:1])\n```",
        "```repl\ntool.queue_llm('city', 'Which office grew fastest? ' + context[0][:200])\n"
        "tool.YIELD()\n```",
        "```repl\ncontext[0].find('Lisbon')\ntool.FINAL(state['_tool_results']['llm']['city']['text'])\n```",
    ]}],
    "sub": [{"match": "office", "text": "Lisbon"}],
    "default_sub": "?",
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executions", type=int, default=40, help="executions per concurrency level")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from rlm_rs.control.server import start_control_plane
    from rlm_rs.ingestion.worker import IngestionWorker
    from rlm_rs.providers.scripted import ScriptedProvider
    from rlm_rs.sandbox.client import InProcessSandbox
    from rlm_rs.settings import Settings
    from rlm_rs.storage import open_storage
    from rlm_rs.storage.uploads import store_upload
    from rlm_rs.v1 import execution_pb2, execution_pb2_grpc, session_pb2, session_pb2_grpc
    from rlm_rs.wire_enums import EXECUTION_STATUS

    with tempfile.TemporaryDirectory(prefix="rlm-bench-orch-") as directory:
        settings = Settings(RLM_DATA_DIR=Path(directory), API_KEY_PEPPER="bench",
                            RATE_LIMITS_JSON=UNLIMITED_RATE, RLM_QUOTAS_JSON=UNLIMITED_QUOTAS)  # fmt: skip
        storage = open_storage(settings)
        calls = count_storage_calls(storage)
        plane = start_control_plane(settings, "127.0.0.1:0", storage=storage, sandbox=InProcessSandbox(),
                                    provider=ScriptedProvider(SCRIPT))  # fmt: skip
        key, _ = storage.metadata.create_api_key("bench")
        auth = (("authorization", f"Bearer {key}"),)
        text = ("The Lisbon office grew fastest. " * 400).encode()
        uri = store_upload(storage.blobs, "bench", "bench.txt", text)
        channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
        try:
            session = session_pb2_grpc.SessionServiceStub(channel).CreateSession(
                session_pb2.CreateSessionRequest(docs=[session_pb2.DocumentInput(
                    source_name="bench.txt", mime_type="text/plain", raw_s3_uri=uri)]),
                metadata=auth)  # fmt: skip
            IngestionWorker(storage, settings).run_once()
            stub = execution_pb2_grpc.ExecutionServiceStub(channel)
            request = execution_pb2.StartExecutionRequest(
                session_id=session.session_id,
                question="Which office grew fastest?",
                options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=120),
            )

            def one(_: int) -> str:
                return EXECUTION_STATUS.to_domain(stub.StartExecution(request, metadata=auth).status)

            one(0)  # warm-up (also fills the sub-call cache)
            plane.engine.turn_timings.clear()
            plane.engine.finish_timings_ms.clear()
            throughput: dict[str, Any] = {}
            for concurrency in (1, 8):
                calls.take()
                calls.enabled = concurrency == 1
                began = time.perf_counter()
                with ThreadPoolExecutor(max_workers=concurrency) as pool:
                    statuses = list(pool.map(one, range(args.executions)))
                seconds = time.perf_counter() - began
                throughput[f"c{concurrency}"] = {
                    "executions_per_s": round(args.executions / seconds, 2),
                    "completed": statuses.count("COMPLETED"), "executions": args.executions,
                }  # fmt: skip
                if concurrency == 1:
                    turn_timings = list(plane.engine.turn_timings)
                    finish_ms = list(plane.engine.finish_timings_ms)
                    storage_calls = per_turn(calls.take(), args.executions)
                    calls.enabled = False
        finally:
            channel.close()
            plane.stop(1)
    overhead = [sum(v for k, v in t.items() if k != "root_model_ms") for t in turn_timings]
    breakdown = {
        name: round(statistics.median(t[name] for t in turn_timings), 3)
        for name in ("storage_ms", "prompt_ms", "sandbox_ms", "tools_ms", "root_model_ms")
    }
    return {
        "turns_measured": len(turn_timings),
        "overhead_per_turn_ms": {
            "median": round(statistics.median(overhead), 3), "p99": round(_quantile(overhead, 0.99), 3),
        },
        "breakdown_median_ms": breakdown,
        "finalise_per_execution_ms": {"median": round(statistics.median(finish_ms), 3),
                                      "p99": round(_quantile(finish_ms, 0.99), 3)},
        "storage_calls": storage_calls,
        "three_turn_executions": throughput,
    }  # fmt: skip
