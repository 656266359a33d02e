"""How the control plane runs a step: one small interface, two implementations.

`SandboxClient.run_step(StepRequest) -> StepResult` never raises for a step's
own failure (that is in StepResult.error); it raises RlmError("LAMBDA_ERROR")
only when the sandbox itself is unavailable. `InProcessSandbox` runs the
executor in this process (debugging, tests of the policy layers only);
`PoolSandbox` (rlm_rs/sandbox/pool/) is the hardened default.
"""

from __future__ import annotations

from typing import Protocol

from rlm_rs.v1.sandbox_pb2 import PoolStatus, StepRequest, StepResult


class SandboxClient(Protocol):
    def run_step(self, request: StepRequest) -> StepResult: ...

    def status(self) -> PoolStatus: ...

    def close(self) -> None: ...


class InProcessSandbox:
    """Runs steps in the calling process: policy layers only, no OS isolation."""

    def run_step(self, request: StepRequest) -> StepResult:
        from rlm_rs.sandbox.executor import run_step

        return run_step(request)

    def status(self) -> PoolStatus:
        return PoolStatus()

    def close(self) -> None:
        return None
