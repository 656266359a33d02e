"""`rlm-rs gateway serve` and `rlm-rs mcp serve`: the HTTP API and the MCP server.

Only argument parsing and process start-up live here; the behaviour is in
gateway.app and gateway.mcp_server. Must not import control-plane internals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlm_rs.cli import add_grpc_address

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gw = subparsers.add_parser("gateway", help="the REST gateway (docs/api.md#rest-api)")
    gw_sub = gw.add_subparsers(dest="gateway_command", required=True, metavar="COMMAND")
    serve = gw_sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default=None, help="listen host (default RLM_HTTP_HOST)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default RLM_HTTP_PORT)")
    add_grpc_address(serve, "the control plane", "--grpc-target")
    serve.set_defaults(func=_serve_gateway)
    spec = gw_sub.add_parser("openapi", help="print the OpenAPI document (or write it with --output)")
    spec.add_argument(
        "--output",
        default="-",
        help=f"a file to write instead of stdout (the committed copy: {OPENAPI_PATH})",
    )
    spec.set_defaults(func=_write_openapi)

    mcp = subparsers.add_parser("mcp", help="the MCP server (docs/api.md#mcp)")
    mcp_sub = mcp.add_subparsers(dest="mcp_command", required=True, metavar="COMMAND")
    mserve = mcp_sub.add_parser(
        "serve",
        help="serve the MCP tools over the HTTP API",
        description="Serve the RLM-RS MCP tools, each one call of the REST API.",
        epilog=(
            "environment: RLM_BASE_URL, the gateway's URL (default http://127.0.0.1:8080); "
            "RLM_API_KEY, the API key the tools call with (stdio). Over --transport http every "
            "request carries its caller's own 'Authorization: Bearer' key instead."
        ),
    )
    mserve.add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or streamable HTTP"
    )
    mserve.add_argument(
        "--host", default="127.0.0.1", help="listen host for --transport http (default 127.0.0.1)"
    )
    mserve.add_argument(
        "--port", type=int, default=8090, help="listen port for --transport http (default 8090)"
    )
    mserve.set_defaults(func=_serve_mcp)


def openapi_text() -> str:
    """The OpenAPI document as committed in gateway/openapi.json."""
    from gateway.app import create_app
    from rlm_rs.settings import Settings

    app = create_app(Settings())
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _write_openapi(args: argparse.Namespace) -> int:
    text = openapi_text()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _serve_gateway(args: argparse.Namespace) -> int:
    from rlm_rs.observability import configure_logging, serve_metrics
    from rlm_rs.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, component="gateway")
    import uvicorn

    from gateway.app import create_app
    from gateway.http_protocol import TimedH11Protocol

    serve_metrics(settings.metrics_port)
    from rlm_rs.tracing import configure_tracing

    configure_tracing("gateway", settings)
    app = create_app(settings, args.grpc_address or settings.grpc_address)
    uvicorn.run(
        app,
        host=args.host or settings.http_host,
        port=args.port if args.port is not None else settings.http_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through the JSON pipeline (rlm_rs/logs.py)
        access_log=False,  # the gateway logs one http_request line per request itself
        http=TimedH11Protocol.configured(
            settings.http_header_timeout_seconds, settings.http_body_timeout_seconds
        ),
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        limit_concurrency=settings.http_max_connections,
        timeout_keep_alive=5,
    )
    return 0


def _serve_mcp(args: argparse.Namespace) -> int:
    from rlm_rs.observability import configure_logging
    from rlm_rs.settings import get_settings

    # first: the MCP SDK's own logging set-up (basicConfig) then finds our handler
    configure_logging(get_settings().log_level, component="mcp")
    from gateway.mcp_server import serve

    serve(args.transport, host=args.host, port=args.port)
    return 0
