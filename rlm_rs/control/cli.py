"""`rlm-rs control serve` (the control plane) and `rlm-rs executions tail`.

`rlm-rs server` is the old spelling of `control serve`: accepted for one
release, hidden from help, and it logs `deprecated_command` when it starts.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from rlm_rs.cli import add_grpc_address
from rlm_rs.settings import get_settings


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    add_grpc_address(serve, "listen on this address")
    serve.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="execution lease, renewed every third of it; another control plane takes over "
        "after it expires (default 30, at least 1)",
    )
    serve.add_argument(
        "--sweep-seconds",
        type=float,
        default=5.0,
        help="how often to look for orphaned executions (default 5)",
    )
    serve.add_argument(
        "--dev-unsandboxed",
        action="store_true",
        help="development only: without a pool (LAMBDA_FUNCTION_NAME), run model code in this "
        "process (RLM_DEV_UNSANDBOXED=1); readiness then reports the sandbox NOT_HARDENED",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    control = subparsers.add_parser("control", help="the gRPC control plane")
    control_commands = control.add_subparsers(dest="control_command", required=True, metavar="COMMAND")
    serve = control_commands.add_parser("serve", help="serve the control plane's gRPC services")
    _serve_arguments(serve)
    serve.set_defaults(func=_serve)
    old = subparsers.add_parser("server")  # no help: hidden (the old spelling, one release)
    _serve_arguments(old)
    old.set_defaults(func=_serve, deprecated="rlm-rs server")

    executions = subparsers.add_parser("executions", help="follow executions")
    commands = executions.add_subparsers(dest="executions_command", required=True, metavar="COMMAND")
    tail = commands.add_parser("tail", help="print an execution's turns as they happen (WatchExecution)")
    tail.add_argument("execution_id", help="the execution to follow")
    add_grpc_address(tail, "the control plane", "--grpc-target")
    tail.add_argument("--api-key", help="API key (default RLM_API_KEY)")
    tail.add_argument("--after", default="", help="resume after this event id (e.g. 000002.0003)")
    tail.add_argument(
        "--timeout-seconds", type=float, default=3600.0, help="give up after this long (default 3600)"
    )
    tail.set_defaults(func=_tail)


def _serve(args: argparse.Namespace) -> int:
    from rlm_rs.observability import configure_logging, get_logger, serve_metrics

    settings = get_settings()
    configure_logging(settings.log_level, component="control")
    if getattr(args, "deprecated", None):
        get_logger().warning("deprecated_command", command=args.deprecated, use="rlm-rs control serve")
    from rlm_rs.control.server import SandboxRequired, start_control_plane

    if args.dev_unsandboxed:
        settings = settings.model_copy(update={"dev_unsandboxed": True})
    serve_metrics(settings.metrics_port)
    from rlm_rs.tracing import configure_tracing

    configure_tracing("control-plane", settings)
    address = args.grpc_address or settings.grpc_address
    try:
        plane = start_control_plane(
            settings, address, lease_seconds=args.lease_seconds, sweep_seconds=args.sweep_seconds
        )
    except (SandboxRequired, ValueError) as exc:  # no pool; a lease too short (leases.check_lease)
        get_logger().error("control_plane_refused", reason=str(exc))  # one JSON line on stderr
        return 1
    except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
        get_logger().error("control_plane_refused", reason=f"cannot listen on {address} (in use?): {exc}")
        return 1
    get_logger().info(
        "control_plane_serving",
        address=address,
        provider=settings.llm_provider,
        sandbox="pool" if settings.sandbox_socket else "in-process (NOT HARDENED)",
    )
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    plane.stop()
    return 0


class _TurnPrinter:
    """Prints each turn of a watched execution as it lands. A turn's line is
    printed at its step_result; its tool count comes with the tool_requests
    event right after it, so the line waits for the next event."""

    def __init__(self) -> None:
        self.say = functools.partial(print, flush=True)  # each line as it lands, also into a pipe
        self.pending: dict[str, Any] | None = None  # a step_result waiting for its tool count

    def flush(self, tools: int = 0) -> None:
        if self.pending is None:
            return
        turn, data, self.pending = self.pending["turn"], self.pending["data"], None
        error = data.get("error") or {}
        outcome = "ok" if data.get("success") else f"{error.get('code')}: {error.get('message')}"
        self.say(f"turn {turn}: {outcome}; spans {data.get('spans', 0)}; tools {tools}")
        for line in (data.get("stdout") or "").splitlines()[:20]:
            self.say(f"  | {line}")
        if data.get("final") is not None:
            self.say(f"  FINAL: {str(data['final'])[:500]}")

    def event(self, kind: str, turn: int, data: dict[str, Any]) -> bool:
        """Print one event; True at the status event (the stream's last)."""
        if kind == "tool_requests" and self.pending is not None:
            self.flush(sum(len(keys) for keys in data.values()))
            return False
        self.flush()
        if kind == "step_result":
            self.pending = {"turn": turn, "data": data}
        elif kind in ("child_started", "child_finished"):
            what = data.get("status") or "started"
            self.say(f"  child {data.get('key')} ({data.get('execution_id')}): {what}")
        elif kind == "compaction":
            turns = data.get("turns") or ["?", "?"]
            self.say(f"  history of turns {turns[0]}-{turns[-1]} summarised")
        elif kind == "status":
            self.say(f"{data.get('status')}: {(data.get('answer') or '')[:500]}")
            return True
        return False


def _tail(args: argparse.Namespace) -> int:
    """Follows WatchExecution and prints each turn as it lands, then the outcome.

    A dropped stream is resumed after the last event seen until
    --timeout-seconds; `--after` starts after an event id. A control plane
    that cannot be reached at the start (CONNECT_SECONDS), or stays
    unreachable for RECONNECT_SECONDS once followed, is a clear error and
    exit status 2, never a hang.
    """
    import grpc

    from rlm_rs import codec
    from rlm_rs.v1 import execution_pb2, execution_pb2_grpc

    key = args.api_key or os.environ.get("RLM_API_KEY", "")
    if not key:
        print("rlm-rs executions tail: pass --api-key or set RLM_API_KEY", file=sys.stderr)
        return 2
    target = args.grpc_address or get_settings().grpc_address
    metadata = (("authorization", f"Bearer {key}"),)
    deadline = time.monotonic() + args.timeout_seconds
    last = args.after or ""
    printer = _TurnPrinter()
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_SECONDS)
        except grpc.FutureTimeoutError:
            return _unreachable(target, CONNECT_SECONDS)
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        unavailable_since: float | None = None
        while True:
            request = execution_pb2.WatchExecutionRequest(execution_id=args.execution_id, after_event_id=last)
            timeout = max(deadline - time.monotonic(), 0.1)
            try:
                for event in stub.WatchExecution(request, metadata=metadata, timeout=timeout):
                    unavailable_since = None
                    last = event.event_id
                    kind = codec.enum_json(execution_pb2.EventType, event.type) or ""  # a newer type: shown
                    if printer.event(kind, event.turn_index, json.loads(event.data_json or "{}")):
                        return 0
                printer.flush()
                return 0  # resumed after the status event: nothing more to print
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                    now = time.monotonic()
                    unavailable_since = unavailable_since or now
                    if now - unavailable_since > RECONNECT_SECONDS:
                        printer.flush()
                        return _unreachable(target, RECONNECT_SECONDS)
                    time.sleep(1.0)  # the control plane restarts: resume after the last event
                    continue
                printer.flush()
                return _tail_failed(args, code, error)


CONNECT_SECONDS = 5.0  # reaching the control plane at the start
RECONNECT_SECONDS = 30.0  # a restart of the control plane while an execution is followed


def _unreachable(target: str, seconds: float) -> int:
    print(
        f"rlm-rs executions tail: cannot reach the control plane at {target} (no answer within "
        f"{seconds:g}s); is it running? Set --grpc-address or RLM_GRPC_ADDRESS",
        file=sys.stderr,
    )
    return 2


def _tail_failed(args: argparse.Namespace, code: Any, error: Any) -> int:
    if code.name == "DEADLINE_EXCEEDED":
        print(f"rlm-rs executions tail: still running after {args.timeout_seconds:g}s", flush=True)
        return 1
    print(f"rlm-rs executions tail: {code.name}: {error.details()}", file=sys.stderr)
    return 1
