"""Both storage backends behind one fixture: embedded (SQLite + files) and aws
(boto3 against moto's server over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.settings import Settings
from rlm_rs.storage import Storage, open_storage


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        os.environ.setdefault(name, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


class _OneAtATime:
    """A WSGI app that lets one request through at a time. moto evaluates a
    conditional write without isolation (two requests at once can both pass
    one condition); DynamoDB evaluates each atomically. Races between nodes
    are tested against this, so what they prove holds on DynamoDB."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.recording = False
        self.log: list[tuple[str, dict[str, Any]]] = []  # (X-Amz-Target, JSON body) while recording

    def __call__(self, environ: Any, start_response: Any) -> Any:
        with self.lock:
            if self.recording and environ.get("HTTP_X_AMZ_TARGET"):
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                environ["wsgi.input"] = io.BytesIO(body)
                self.log.append((environ["HTTP_X_AMZ_TARGET"].split(".")[-1], json.loads(body or b"{}")))
            return list(self.app(environ, start_response))


@pytest.fixture(scope="session")
def atomic_moto(moto_endpoint: str) -> Iterator[tuple[str, _OneAtATime]]:
    """A moto server whose requests are applied one at a time (_OneAtATime),
    and its request log."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = _OneAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", _free_port(), app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join()


@pytest.fixture(scope="session")
def atomic_moto_endpoint(atomic_moto: tuple[str, _OneAtATime]) -> str:
    return atomic_moto[0]


def make_settings(backend: str, tmp_path: Path, endpoint: str | None) -> Settings:
    unique = uuid.uuid4().hex[:8]
    return Settings(
        RLM_STORAGE_BACKEND=backend,
        RLM_DATA_DIR=tmp_path / "data",
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION="us-east-1",
        DDB_TABLE_PREFIX=f"t{unique}_rlm_",
        S3_BUCKET=f"rlm-test-{unique}",
        API_KEY_PEPPER="test-pepper",
    )


@pytest.fixture(params=["embedded", "aws"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    endpoint = request.getfixturevalue("moto_endpoint") if request.param == "aws" else None
    store = open_storage(make_settings(request.param, tmp_path, endpoint))
    store.init()
    yield store
    store.close()
