"""Real steps in the shipped sandbox-pool container (scripts/containers-test.sh pipes
this file into `python -` inside it; not a pytest module).

Checks, each against the running pool over its Unix socket: both health services
SERVING, every isolation layer active, a print answered, an import refused by the
AST policy, a busy loop killed by the zygote's wall clock (across uids: the zygote
runs as 10001, the worker as 65534) and a memory bomb stopped, with the pool still
answering afterwards. Prints one JSON object; exits 1 when a check fails.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlm_rs.sandbox.client import PoolSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import StepLimits, StepRequest, StepResult

SOCKET = sys.argv[1] if len(sys.argv) > 1 else "/run/rlm/sandbox.sock"
MEMORY_BOMB = "x = []\nwhile True:\n    x.append('a' * 10**6)"


def step(pool: PoolSandbox, code: str, seconds: float = 5.0) -> StepResult:
    request = StepRequest(code=code, state_json="{}", limits=StepLimits(max_step_seconds=seconds))
    return pool.run_step(request)


def main() -> int:
    out: dict[str, Any] = {}
    checks: dict[str, bool] = {}
    with grpc.insecure_channel(f"unix:{SOCKET}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rlm_rs.sandbox.v1.SandboxService/hardened"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            out[f"health[{service}]"] = status
            checks[f"health[{service}]"] = status == "SERVING"
    pool = PoolSandbox(SOCKET)
    inactive = [layer.name for layer in pool.status().layers if not layer.active]
    out["inactive_layers"] = inactive
    checks["every_layer_active"] = not inactive

    printed = step(pool, "print(6 * 7)")
    out["print"] = {"success": printed.success, "stdout": printed.stdout.strip()}
    checks["print"] = printed.success and printed.stdout.strip() == "42"

    imported = step(pool, "import os\nprint(os.listdir('/'))")
    out["import_os"] = imported.error.code
    checks["import_refused"] = imported.error.code == "SANDBOX_AST_REJECTED" and not imported.stdout

    # 0.1 s: the zygote's SIGKILL comes long before the instruction budget.
    started = time.monotonic()
    loop = step(pool, "while True:\n    pass", seconds=0.1)
    out["busy_loop"] = {"code": loop.error.code, "message": loop.error.message,
                        "seconds": round(time.monotonic() - started, 2)}  # fmt: skip
    # Stopped at the deadline either by the worker's own tick check (it can win
    # the race at 0.1 s) or by the zygote's SIGKILL across uids; both are STEP_TIMEOUT.
    checks["busy_loop_killed"] = (
        loop.error.code == "STEP_TIMEOUT"
        and ("killed" in loop.error.message or "wall time" in loop.error.message)
        and time.monotonic() - started < 5
    )

    bomb = step(pool, MEMORY_BOMB, seconds=20)
    details = json.loads(bomb.error.details_json or "{}")
    out["memory_bomb"] = {"code": bomb.error.code, "message": bomb.error.message[:160]}
    checks["memory_bomb_stopped"] = not bomb.success and (
        (bomb.error.code == "SANDBOX_RUNTIME_ERROR" and "MemoryError" in bomb.error.message)
        or (bomb.error.code == "LAMBDA_ERROR" and details.get("oom") is True)
    )

    latencies = []
    for _ in range(20):
        started = time.perf_counter()
        step(pool, "x = 1 + 1")
        latencies.append((time.perf_counter() - started) * 1000)
    out["median_step_ms"] = round(statistics.median(latencies), 2)
    after = step(pool, "print('alive')")
    checks["pool_alive_after"] = after.stdout.strip() == "alive"

    out["failed_checks"] = [name for name, ok in checks.items() if not ok]
    print(json.dumps(out, indent=2))
    return 1 if out["failed_checks"] else 0


if __name__ == "__main__":
    sys.exit(main())
