"""The command line's rough edges, run as a user runs it (`python -m
rlm_rs.cli`, real processes, real embedded storage): `executions tail`
against nothing gives up in seconds, `mcp serve --help` names its
environment, `gateway openapi` prints the document, tenant names are
checked, `keys list` and `keys revoke`, and `sandbox doctor`'s table."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from rlm_rs.appliance.demo import plural, viewer_url


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tail_without_a_control_plane_fails_fast_and_says_why() -> None:
    target = f"127.0.0.1:{_free_port()}"  # nobody listens
    started = time.monotonic()
    done = cli("executions", "tail", "exec_x", "--grpc-address", target, "--api-key", "rlm_key_x", timeout=30)
    assert done.returncode == 2
    assert time.monotonic() - started < 15
    assert f"cannot reach the control plane at {target}" in done.stderr and "RLM_GRPC_ADDRESS" in done.stderr


def test_mcp_serve_help_names_its_environment() -> None:
    out = cli("mcp", "serve", "--help").stdout
    assert "RLM_BASE_URL" in out and "RLM_API_KEY" in out


def test_gateway_openapi_prints_the_document() -> None:
    done = cli("gateway", "openapi")
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert document["openapi"].startswith("3.") and "/v1/sessions" in document["paths"]


def test_tenant_names_are_validated(tmp_path: Path) -> None:
    attempts = [("keys", "create", "--tenant=has space"), ("keys", "create", "--tenant=../etc"),
                ("keys", "create", "--tenant=" + "x" * 129), ("upload", "--tenant=t/1", str(tmp_path / "a.txt"))]  # fmt: skip
    for attempt in attempts:
        done = cli(*attempt, "--data-dir", str(tmp_path))
        assert done.returncode == 2, (attempt, done.stdout)
        assert "a tenant id is 1-128 characters" in done.stderr and "Traceback" not in done.stderr


def test_keys_list_and_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    key = cli("keys", "create", "--tenant", "acme", "--name", "ci", *data).stdout.strip().splitlines()[-1]
    other = cli("keys", "create", "--tenant", "other", *data).stdout.strip().splitlines()[-1]
    table = cli("keys", "list", *data).stdout
    assert key[:12] in table and other[:12] in table and "active" in table
    assert key not in table and other not in table  # never a whole key
    rows = [
        json.loads(line)
        for line in cli("keys", "list", "--tenant", "acme", "--json", *data).stdout.splitlines()
    ]
    assert [(r["key_prefix"], r["name"], r["revoked"]) for r in rows] == [(key[:12], "ci", False)]
    revoked = cli("keys", "revoke", key[:12], *data)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    rows = [json.loads(line) for line in cli("keys", "list", "--json", *data).stdout.splitlines()]
    assert {r["key_prefix"]: r["revoked"] for r in rows} == {key[:12]: True, other[:12]: False}
    again = cli("keys", "revoke", key, *data)  # the whole key, already revoked
    assert again.returncode == 1 and "no active key" in again.stderr
    assert cli("keys", "revoke", other, *data).returncode == 0  # a whole key works too


def test_sandbox_doctor_prints_a_table_and_json_on_request() -> None:
    table = cli("sandbox", "doctor", timeout=120)
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["layer", "status", "detail"]
    assert any(line.startswith("seccomp ") for line in lines)
    assert "layers active" in lines[-1] and "--json" in lines[-1]
    report = json.loads(cli("sandbox", "doctor", "--json", timeout=120).stdout)
    assert len(report["layers"]) == len(lines) - 3  # header, blank line, summary
    assert table.returncode == (0 if report["all_active"] else 1)


def test_demo_wording() -> None:
    assert [plural(n, "sub-call") for n in (0, 1, 2)] == ["0 sub-calls", "1 sub-call", "2 sub-calls"]
    assert (
        viewer_url("http://h:8080/", "exec_1", "rlm_key_k")
        == "http://h:8080/v1/executions/exec_1/view#key=rlm_key_k"
    )
    assert viewer_url("http://h:8080", "exec_1", None) == "http://h:8080/v1/executions/exec_1/view"
