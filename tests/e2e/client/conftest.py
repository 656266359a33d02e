"""One real appliance for the client tests: `rlm-rs up` on free ports with the offline
scripted provider (tests/e2e/conftest.py's UpProcess), two tenants with keys, and the
demo corpus uploaded for each with `rlm-rs upload --tenant`.

Tenant `acme` has the default limits; tenant `slow` is rate limited to 1 call/s with
bursts of 2 (RATE_LIMITS_JSON), so the retry tests meet a real 429. The appliance is
started once for the package and always stopped, every descendant killed by pid.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.appliance.demo import corpus_files
from tests.e2e.conftest import REPO, UpProcess, free_port

SLOW_TENANT_LIMITS = {"tenants": {"slow": {"rate_per_second": 1, "burst": 2}}}


def _cli(*args: str, data_dir: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", *args, "--data-dir", str(data_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()


@dataclass
class Appliance:
    up: UpProcess
    api_key: str
    uris: list[str]
    slow_key: str
    slow_uris: list[str]

    @property
    def http_url(self) -> str:
        return self.up.base_url

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.up.grpc_port}"

    def url(self, transport: str) -> str:
        return self.http_url if transport == "http" else self.grpc_url

    def control_plane_log_line(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The control plane's log record of the call with this request id."""
        log = self.up.data_dir / "logs" / "control-plane.log"
        deadline = time.monotonic() + timeout
        while True:
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if request_id in line and line.startswith("{"):
                    record = json.loads(line)
                    if record.get("request_id") == request_id and record.get("event") == "rpc":
                        return dict(record)
            if time.monotonic() > deadline:
                raise AssertionError(f"no control-plane log line for {request_id}")
            time.sleep(0.2)


@pytest.fixture(scope="package")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    data_dir = tmp_path_factory.mktemp("client-appliance") / "data"
    up = UpProcess(
        data_dir, free_port(), free_port(), extra_env={"RATE_LIMITS_JSON": json.dumps(SLOW_TENANT_LIMITS)}
    )
    try:
        up.start()
        files = [str(p) for p in corpus_files()]
        yield Appliance(
            up=up,
            api_key=_cli("keys", "create", "--tenant", "acme", data_dir=data_dir)[-1],
            uris=_cli("upload", "--tenant", "acme", *files, data_dir=data_dir),
            slow_key=_cli("keys", "create", "--tenant", "slow", data_dir=data_dir)[-1],
            slow_uris=_cli("upload", "--tenant", "slow", *files, data_dir=data_dir),
        )
        assert up.stop() == 0
        assert up.alive_leftovers() == []
    finally:
        up.kill_all()


@pytest.fixture(params=["http", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)
