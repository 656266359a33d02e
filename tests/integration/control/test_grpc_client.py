"""`rlm-rs grpc` (the reflection client) as a real child process against a real control plane.

It lists and describes what the server reflects, creates and reads a session with a
JSON body and `-H authorization: Bearer ...`, follows a server stream, and reports a
refused call as one line with the spec code, exit 1, without printing the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rlm_rs.storage.uploads import store_upload
from tests.integration.control.conftest import Api


def grpc_cli(api: Api, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RLM_API_KEY"}
    target = f"127.0.0.1:{api.plane.port}"
    return subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "grpc", args[0], "--target", target, *args[1:]],
        env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_list_and_describe_by_reflection(api: Api) -> None:
    services = grpc_cli(api, "list")
    assert services.returncode == 0, services.stderr
    assert {"rlm_rs.v1.SessionService", "rlm_rs.v1.ExecutionService", "rlm_rs.v1.CitationService",
            "grpc.health.v1.Health"} <= set(services.stdout.split())  # fmt: skip
    methods = grpc_cli(api, "list", "rlm_rs.v1.ExecutionService").stdout.split()
    assert "rlm_rs.v1.ExecutionService/WatchExecution" in methods
    described = grpc_cli(api, "describe", "rlm_rs.v1.SessionService/CreateSession").stdout
    assert "rpc CreateSession(rlm_rs.v1.CreateSessionRequest) returns (rlm_rs.v1.Session);" in described
    assert "repeated rlm_rs.v1.DocumentInput docs = 2;" in described
    unknown = grpc_cli(api, "describe", "rlm_rs.v1.Nope")
    assert unknown.returncode == 1 and unknown.stderr.startswith("rlm-rs grpc: no symbol")


def test_call_creates_and_reads_a_session_and_follows_a_stream(api: Api) -> None:
    storage = api.plane.storage
    owner = storage.metadata.authenticate(api.key)
    assert owner is not None
    uri = store_upload(storage.blobs, owner["tenant_id"], "a.txt", b"The lighthouse was first lit in 1874.")
    body = {"docs": [{"source_name": "a.txt", "mime_type": "text/plain", "raw_s3_uri": uri}]}
    auth = f"authorization: Bearer {api.key}"
    created = grpc_cli(
        api, "call", "rlm_rs.v1.SessionService/CreateSession", "-d", json.dumps(body), "-H", auth
    )
    assert created.returncode == 0, created.stderr
    session = json.loads(created.stdout)
    assert session["session_id"].startswith("sess_") and session["docs"][0]["source_name"] == "a.txt"
    assert api.key not in created.stdout + created.stderr

    read = grpc_cli(
        api, "call", "rlm_rs.v1.SessionService.GetSession", "-d", "@-", "-H", auth,
        stdin=json.dumps({"session_id": session["session_id"]}),
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["session_id"] == session["session_id"]

    health = grpc_cli(api, "call", "grpc.health.v1.Health/Check", "-d", '{"service": "sandbox_hardened"}')
    assert json.loads(health.stdout) == {"status": "NOT_SERVING"}  # the in-process sandbox of these tests


def test_a_refused_call_is_one_line_with_the_spec_code(api: Api) -> None:
    missing = grpc_cli(api, "call", "rlm_rs.v1.SessionService/GetSession", "-d", '{"session_id": "sess_nope"}',
                       "--api-key", api.key)  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        'rlm-rs grpc: NOT_FOUND: session not found (reason SESSION_NOT_FOUND, details {"session_id": "sess_nope"})'
    ]
    assert api.key not in missing.stdout + missing.stderr
    anonymous = grpc_cli(api, "call", "rlm_rs.v1.SessionService/ListSessions")
    assert anonymous.returncode == 1 and "UNAUTHENTICATED" in anonymous.stderr
    bad_body = grpc_cli(api, "call", "rlm_rs.v1.SessionService/GetSession", "-d", '{"session": 1}')
    assert bad_body.returncode == 1
    assert bad_body.stderr.startswith("rlm-rs grpc: the body is not a rlm_rs.v1.GetSessionRequest")
