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


def _serve(args: argparse.Namespace) -> int:
    from rlm_rs.control.server import start_control_plane
    from rlm_rs.observability import configure_logging, get_logger, serve_metrics

    settings = get_settings()
    configure_logging(settings.log_level, component="control")
    serve_metrics(settings.metrics_port)
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
