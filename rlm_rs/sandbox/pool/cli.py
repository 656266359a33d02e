"""`rlm-rs sandbox serve` and `rlm-rs sandbox doctor`: the pool's command line.

`register_into(sandbox_subparsers)` is called by rlm_rs/sandbox/cli.py. serve
runs the pool (gRPC front + zygote) until SIGTERM; doctor starts a zygote,
lets one worker harden itself, and prints a table of the layers and a
summary (`--json`: the whole report) (exit 0 when every layer is active, 1
otherwise). Must not import gRPC before serve runs.
"""

from __future__ import annotations

import argparse
import json
import os


def register_into(sandbox_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sandbox_subparsers.add_parser("serve", help="run the hardened sandbox pool")
    serve.add_argument(
        "--socket",
        default=None,
        help="Unix socket path (default: LAMBDA_FUNCTION_NAME, else $RLM_DATA_DIR/sandbox.sock)",
    )
    serve.add_argument("--strict", action="store_true", help="refuse to start when any layer is missing")
    serve.set_defaults(func=_serve)
    doctor = sandbox_subparsers.add_parser(
        "doctor", help="print a table of the isolation layers (exit 1 when one is missing)"
    )
    doctor.add_argument("--json", action="store_true", help="print the whole report as JSON instead")
    doctor.set_defaults(func=_doctor)


def _serve(args: argparse.Namespace) -> int:
    from rlm_rs.observability import configure_logging, serve_metrics
    from rlm_rs.sandbox.pool.server import UNSAFE_ENV, PoolUnavailable, pool_policy, serve
    from rlm_rs.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, component="sandbox-pool")
    serve_metrics(settings.metrics_port)
    from rlm_rs.tracing import configure_tracing

    configure_tracing("sandbox-pool", settings)
    socket_path = args.socket or settings.sandbox_socket
    if not socket_path:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        socket_path = str(settings.data_dir / "sandbox.sock")
    try:
        return serve(
            socket_path,
            pool_policy(settings),
            strict=args.strict or settings.sandbox_strict,
            allow_unsafe=os.environ.get(UNSAFE_ENV) == "1",
            document_root=str(settings.sandbox_document_root) if settings.sandbox_document_root else None,
        )
    except PoolUnavailable as exc:
        from rlm_rs.observability import get_logger

        get_logger().error("sandbox_pool_refused", reason=str(exc))  # one JSON line on stderr
        return 1


def _doctor(args: argparse.Namespace) -> int:
    from rlm_rs.sandbox.pool.doctor import run_doctor
    from rlm_rs.settings import get_settings

    report = run_doctor(get_settings())
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(doctor_table(report))
    return 0 if report["all_active"] else 1


def doctor_table(report: dict[str, object]) -> str:
    """The layers as a table (layer, status, what it does) and a one-line summary."""
    layers = [dict(layer) for layer in report["layers"]]  # type: ignore[attr-defined]
    width = max([len("layer"), *(len(str(layer["name"])) for layer in layers)])
    lines = [f"{'layer'.ljust(width)}  status   detail"]
    for layer in layers:
        status = "active" if layer["active"] else "MISSING"
        lines.append(f"{str(layer['name']).ljust(width)}  {status.ljust(7)}  {layer.get('detail', '')}")
    missing = list(report.get("missing") or [])  # type: ignore[call-overload]
    active = len(layers) - len(missing)
    verdict = "all layers active" if not missing else "missing: " + ", ".join(map(str, missing))
    lines.append("")
    lines.append(
        f"{active}/{len(layers)} layers active ({verdict}); uid {report.get('uid')}, "
        f"privileges: {report.get('privilege_path')}, strict: {report.get('strict')}. "
        "Full report: rlm-rs sandbox doctor --json"
    )
    return "\n".join(lines)
