"""`rlm-rs grpc list|describe|call`: argument parsing and output of the reflection client.

    rlm-rs grpc list [SERVICE]
    rlm-rs grpc describe SYMBOL
    rlm-rs grpc call SERVICE/METHOD [-d JSON | -d @FILE | -d @-] [-H 'name: value']...

The target is --grpc-address (HOST:PORT or unix:PATH; --target still works),
default RLM_GRPC_ADDRESS; plaintext
unless --tls. The key comes from -H 'authorization: Bearer ...', --api-key or RLM_API_KEY.
A failed call prints `CODE: message` and the error's reason and details, then exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from rlm_rs.cli import add_grpc_address


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_grpc_address(common, "HOST:PORT or unix:PATH", "--target")
    common.add_argument("--tls", action="store_true", help="TLS instead of plaintext")
    common.add_argument("--ca-file", type=Path, help="CA certificate for --tls (default: the system's)")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    grpc_parser = subparsers.add_parser(
        "grpc", help="call the control plane (or pool) over gRPC, by reflection: no grpcurl needed"
    )
    commands = grpc_parser.add_subparsers(dest="grpc_command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", parents=[common], help="services, or one service's methods")
    listing.add_argument("service", nargs="?", help="a service's full name, to list its methods")
    listing.set_defaults(func=_list)
    describing = commands.add_parser(
        "describe", parents=[common], help="a service, method or message as proto text"
    )
    describing.add_argument("symbol", help="a service, method or message full name")
    describing.set_defaults(func=_describe)
    call = commands.add_parser("call", parents=[common], help="call a method with a JSON request")
    call.add_argument("method", help="package.Service/Method, e.g. rlm_rs.v1.SessionService/GetSession")
    call.add_argument("-d", "--data", default="{}", help="the request as JSON; @FILE reads a file, @- stdin")
    call.add_argument(
        "-H", "--header", action="append", default=[], help="metadata 'name: value' (repeatable)"
    )
    call.add_argument("--api-key", help="adds 'authorization: Bearer KEY' (default RLM_API_KEY)")
    call.set_defaults(func=_call)


@contextmanager
def _channel(args: argparse.Namespace) -> Iterator[grpc.Channel]:
    from rlm_rs.settings import get_settings

    target = args.grpc_address or get_settings().grpc_address
    if args.tls:
        root = args.ca_file.read_bytes() if args.ca_file else None
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root))
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        yield channel


def _fail(message: str) -> int:
    print(f"rlm-rs grpc: {message}", file=sys.stderr)
    return 1


def _rpc_failure(error: grpc.RpcError, target: str) -> int:
    """`CODE: message`, plus the google.rpc ErrorInfo reason and metadata when present."""
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    code = error.code() if isinstance(error, grpc.Call) else None
    if code == grpc.StatusCode.UNAVAILABLE:
        return _fail(f"UNAVAILABLE: nothing answers at {target} ({error.details()})")
    line = f"{code.name if code else 'ERROR'}: {error.details() if isinstance(error, grpc.Call) else error}"
    status: status_pb2.Status | None = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            extra = f", details {json.dumps(dict(info.metadata), sort_keys=True)}" if info.metadata else ""
            line += f" (reason {info.reason}{extra})"
    return _fail(line)


def _run(args: argparse.Namespace, action: Any) -> int:
    from rlm_rs.grpc_client.reflection import ClientError, Reflected

    with _channel(args) as channel:
        try:
            return int(action(Reflected(channel)))
        except ClientError as exc:
            return _fail(str(exc))
        except grpc.RpcError as exc:
            from rlm_rs.settings import get_settings

            return _rpc_failure(exc, args.grpc_address or get_settings().grpc_address)


def _list(args: argparse.Namespace) -> int:
    def action(server: Any) -> int:
        if args.service:
            service = server.service(args.service)
            for method in service.methods:
                print(f"{service.full_name}/{method.name}")
        else:
            for name in server.services():
                print(name)
        return 0

    return _run(args, action)


def _describe(args: argparse.Namespace) -> int:
    from rlm_rs.grpc_client.reflection import describe

    def action(server: Any) -> int:
        item = server.symbol(args.symbol)
        print(describe(item))
        method = getattr(item, "input_type", None)
        if method is not None:  # a method: its request too, the thing a caller writes
            print(describe(item.input_type))
        return 0

    return _run(args, action)


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]] | str:
    out: list[tuple[str, str]] = []
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            return f"-H {header!r}: write it as 'name: value'"
        out.append((name.strip().lower(), value.strip()))
    key = args.api_key or os.environ.get("RLM_API_KEY", "")
    if key and not any(name == "authorization" for name, _ in out):
        out.append(("authorization", f"Bearer {key}"))
    return out


def _body(data: str) -> str:
    if data == "@-":
        return sys.stdin.read()
    if data.startswith("@"):
        return Path(data[1:]).read_text(encoding="utf-8")
    return data


def _call(args: argparse.Namespace) -> int:
    metadata = _metadata(args)
    if isinstance(metadata, str):
        return _fail(metadata)
    try:
        body = _body(args.data)
    except OSError as exc:
        return _fail(f"cannot read the body: {exc}")

    def action(server: Any) -> int:
        method = server.method(args.method)
        for reply in server.invoke(method, body, metadata, args.timeout):
            print(json.dumps(reply, indent=2, ensure_ascii=False), flush=True)
        return 0

    return _run(args, action)
