"""`rlm-rs up` and `rlm-rs demo`: argument parsing for the appliance commands.

The behaviour lives in rlm_rs.appliance.supervisor (up) and rlm_rs.appliance.demo
(demo). This module must stay import-light: no gRPC, no storage at import time.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_DATA_DIR = Path(".rlm")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    if "up" not in subparsers.choices:
        up = subparsers.add_parser("up", help="start the whole appliance on this machine")
        up.add_argument("--data-dir", type=Path, default=None, help="default RLM_DATA_DIR or ./.rlm")
        up.add_argument("--http-port", type=int, default=None, help="default RLM_HTTP_PORT (8080)")
        up.add_argument(
            "--grpc-port", type=int, default=None, help="default the port of RLM_GRPC_ADDRESS (50051)"
        )
        up.add_argument("--demo", action="store_true", help="run the demo once everything is up")
        up.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="Prometheus metrics: pool on N, control plane N+1, gateway N+2 (default off)",
        )
        up.add_argument(
            "--ready-timeout", type=float, default=120.0, help="seconds each component may take to start"
        )
        up.set_defaults(func=_up)
    if "demo" not in subparsers.choices:
        demo = subparsers.add_parser("demo", help="upload the bundled corpus and answer a question")
        demo.add_argument("--base-url", default=None, help="default http://127.0.0.1:$RLM_HTTP_PORT")
        demo.add_argument("--api-key", default=None, help="default: create one in --data-dir")
        demo.add_argument("--data-dir", type=Path, default=None, help="the appliance's data directory")
        demo.add_argument("--question", default=None, help="the question to ask (default: the demo's own)")
        demo.add_argument("--timeout", type=float, default=180.0, help="seconds for the whole demo")
        demo.add_argument("--json", action="store_true", help="also print the result as one JSON line")
        demo.add_argument(
            "--model", default=None, help="root and sub model of the execution (default: the appliance's)"
        )
        demo.set_defaults(func=_demo)


def data_dir_from(value: Path | None) -> Path:
    if value is not None:
        return value.resolve()
    return Path(os.environ.get("RLM_DATA_DIR") or DEFAULT_DATA_DIR).resolve()


def _up(args: argparse.Namespace) -> int:
    import sys

    from rlm_rs.appliance.supervisor import Appliance, ports_from_settings

    try:
        http_port, grpc_port = ports_from_settings(args.http_port, args.grpc_port)
    except ValueError as exc:
        print(f"rlm-rs up: {exc}", file=sys.stderr)
        return 2
    appliance = Appliance(
        data_dir=data_dir_from(args.data_dir),
        http_port=http_port,
        grpc_port=grpc_port,
        ready_timeout=args.ready_timeout,
        metrics_port=args.metrics_port,
    )
    return appliance.run(demo=args.demo)


def _demo(args: argparse.Namespace) -> int:
    from rlm_rs.appliance.demo import DEFAULT_QUESTION, run_demo

    base_url = args.base_url or f"http://127.0.0.1:{os.environ.get('RLM_HTTP_PORT') or '8080'}"
    return run_demo(
        base_url=base_url,
        api_key=args.api_key,
        data_dir=data_dir_from(args.data_dir),
        question=args.question or DEFAULT_QUESTION,
        timeout=args.timeout,
        as_json=args.json,
        model=args.model,
    )
