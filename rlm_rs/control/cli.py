"""`rlm-rs server` (the control plane) and `rlm-rs executions tail`."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from rlm_rs.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    server = subparsers.add_parser("server", help="run the gRPC control plane")
    server.add_argument("--grpc-address", help="HOST:PORT (default RLM_GRPC_ADDRESS)")
    server.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="execution lease; another control plane takes over after it expires",
    )
    server.add_argument(
        "--sweep-seconds", type=float, default=5.0, help="how often to look for orphaned executions"
    )
    server.set_defaults(func=_serve)

    executions = subparsers.add_parser("executions", help="follow executions")
    commands = executions.add_subparsers(dest="executions_command", required=True)
    tail = commands.add_parser("tail", help="print an execution's turns as they happen")
    tail.add_argument("execution_id")
    tail.add_argument("--grpc-target", help="HOST:PORT of the control plane (default RLM_GRPC_ADDRESS)")
    tail.add_argument("--api-key", help="API key (default RLM_API_KEY)")
    tail.add_argument("--poll-seconds", type=float, default=0.5)
    tail.add_argument("--timeout-seconds", type=float, default=3600.0)
    tail.set_defaults(func=_tail)


def _serve(args: argparse.Namespace) -> int:
    from rlm_rs.control.server import start_control_plane
    from rlm_rs.observability import configure_logging, get_logger, serve_metrics

    settings = get_settings()
    configure_logging(settings.log_level, component="control")
    serve_metrics(settings.metrics_port)
    from rlm_rs.tracing import configure_tracing

    configure_tracing("control-plane", settings)
    address = args.grpc_address or settings.grpc_address
    plane = start_control_plane(
        settings, address, lease_seconds=args.lease_seconds, sweep_seconds=args.sweep_seconds
    )
    get_logger().info("control_plane_serving", address=address, provider=settings.llm_provider)
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    plane.stop()
    return 0


def _tail(args: argparse.Namespace) -> int:
    """Polls ListSteps/GetExecution and prints each new turn, then the outcome."""
    import os
    import sys
    import time

    import grpc

    from rlm_rs.v1 import execution_pb2, execution_pb2_grpc

    key = args.api_key or os.environ.get("RLM_API_KEY", "")
    if not key:
        print("rlm-rs executions tail: pass --api-key or set RLM_API_KEY", file=sys.stderr)
        return 2
    target = args.grpc_target or get_settings().grpc_address
    metadata = [("authorization", f"Bearer {key}")]
    terminal = ("COMPLETED", "FAILED", "TIMEOUT", "BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED", "CANCELLED")
    seen = 0
    deadline = time.monotonic() + args.timeout_seconds
    with grpc.insecure_channel(target) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        try:
            while True:
                execution = stub.GetExecution(
                    execution_pb2.GetExecutionRequest(execution_id=args.execution_id), metadata=metadata
                )
                steps = stub.ListSteps(
                    execution_pb2.ListStepsRequest(execution_id=args.execution_id), metadata=metadata
                ).steps
                for step in steps[seen:]:
                    outcome = "ok" if step.success else f"{step.error.code}: {step.error.message}"
                    tools = (
                        len(step.tool_requests.llm)
                        + len(step.tool_requests.search)
                        + len(step.tool_requests.llm_batch)
                    )
                    print(f"turn {step.turn_index}: {outcome}; spans {len(step.span_log)}; tools {tools}")
                    for line in step.stdout.splitlines()[:20]:
                        print(f"  | {line}")
                    if step.final.is_final:
                        print(f"  FINAL: {step.final.answer[:500]}")
                seen = len(steps)
                if execution.status in terminal or time.monotonic() > deadline:
                    answer = execution.answer if execution.HasField("answer") else ""
                    print(f"{execution.status}: {answer[:500]}")
                    return 0 if execution.status in terminal else 1
                time.sleep(args.poll_seconds)
        except grpc.RpcError as error:
            print(f"rlm-rs executions tail: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
