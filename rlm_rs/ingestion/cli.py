"""`rlm-rs ingest worker [--once]` and `rlm-rs parser serve`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from rlm_rs.settings import Settings, get_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = subparsers.add_parser("ingest", help="the ingestion worker")
    ingest_commands = ingest.add_subparsers(dest="ingest_command", required=True)
    worker = ingest_commands.add_parser("worker", help="parse registered documents")
    worker.add_argument("--once", action="store_true", help="one pass, then exit")
    worker.add_argument(
        "--poll-seconds", type=float, default=1.0, help="pause between passes that found nothing (default 1)"
    )
    worker.add_argument("--data-dir", type=Path, help="embedded data directory (default RLM_DATA_DIR)")
    worker.set_defaults(func=_worker)

    parser = subparsers.add_parser("parser", help="the parser service (POST /parse)")
    parser_commands = parser.add_subparsers(dest="parser_command", required=True)
    serve = parser_commands.add_parser("serve", help="serve POST /parse over HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="listen host (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8090, help="listen port (default 8090)")
    serve.add_argument("--data-dir", type=Path, help="embedded data directory (default RLM_DATA_DIR)")
    serve.set_defaults(func=_serve)


def _settings(args: argparse.Namespace) -> Settings:
    settings = get_settings()
    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    return settings


def _worker(args: argparse.Namespace) -> int:
    from rlm_rs.ingestion.worker import IngestionWorker
    from rlm_rs.observability import configure_logging
    from rlm_rs.secrets import SecretError, parser_auth_token
    from rlm_rs.storage import open_storage

    settings = _settings(args)
    configure_logging(settings.log_level, component="ingestion")
    if settings.parser_service_url:
        try:
            parser_auth_token(settings)  # a bad reference stops the worker here, not per document
        except SecretError as exc:
            print(f"rlm-rs ingest worker: {exc}", file=sys.stderr)
            return 2
    worker = IngestionWorker(open_storage(settings), settings)
    if args.once:
        print(json.dumps({"processed": worker.run_once()}))
        return 0
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run_forever(stop, args.poll_seconds)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rlm_rs.ingestion.service import create_app
    from rlm_rs.observability import configure_logging, get_logger
    from rlm_rs.secrets import SecretError, parser_auth_token
    from rlm_rs.storage import open_storage

    settings = _settings(args)
    configure_logging(settings.log_level, component="parser")
    try:
        token = parser_auth_token(settings)
    except SecretError as exc:
        print(f"rlm-rs parser serve: {exc}", file=sys.stderr)
        return 2
    if token is None:
        get_logger(component="parser").warning(
            "parser_service_unauthenticated",
            message="PARSER_SERVICE_AUTH_SECRET_ARN is not set: /parse answers any caller",
        )
    storage = open_storage(settings)
    uvicorn.run(
        create_app(storage.blobs, token),
        host=args.host,
        port=args.port,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the JSON pipeline (rlm_rs/logs.py)
    )
    return 0
