"""The important escapes, run twice: through the in-process executor (policy
layers: AST policy, RestrictedPython guards, step limits) and through a pool
with the policy layers OFF (test-only mode), where the OS layers must stop the
same payload on their own. Each case asserts the exact outcome of both runs
and names the layer that stopped it.

Every payload ends in something the OS must refuse (a process, a socket, a
host file), so "the policy layer was bypassed" still ends in a denial.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from rlm_rs.sandbox.client import InProcessSandbox, PoolSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import StepLimits, StepRequest, StepResult

pytestmark = pytest.mark.root

SPAWN = "system('id')"


@dataclass(frozen=True)
class Escape:
    name: str
    technique: str
    code: str
    policy_code: str  # error code from the policy layers (in-process)
    policy_layer: str
    os_outcome: str  # "SIGSYS" (seccomp kill), "STEP_TIMEOUT", or expected stdout
    os_layer: str


ESCAPES = [
    Escape(
        "subclasses_walk", "object graph",
        "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
        f".__init__.__globals__['{SPAWN[:6]}']('id')",
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "generator_frame_walk", "frames (gi_frame/f_back, CVE-2023-37271)",
        "def gen():\n    yield 1\ng = gen()\nb = g.gi_frame.f_globals['__builtins__']\n"
        "imp = b['__import__'] if isinstance(b, dict) else b.__import__\n"
        f"imp('os').{SPAWN}",
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "format_string_traversal", "format strings (CVE-2023-41039)",
        "s = '{0.__class__.__base__.__subclasses__}'.format(())\nimport os\nos." + SPAWN,
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "format_map_traversal", "format_map",
        "s = '{x.__class__}'.format_map({'x': 1})\nimport socket\nsocket.socket()",
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "unicode_identifier_eval", "unicode identifiers (NFKC: ｅｖａｌ -> eval)",
        "ｅｖａｌ(\"__import__('os').system('id')\")",
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "exception_traceback_frames", "exceptions (__traceback__ -> tb_frame)",
        "try:\n    1 / 0\nexcept Exception as e:\n"
        "    g = e.__traceback__.tb_frame.f_globals\n"
        "import os\nos." + SPAWN,
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "closure_cells", "closures (__closure__ cell_contents)",
        "def outer():\n    x = open\n    def inner():\n        return x\n    return inner\n"
        "f = outer().__closure__[0].cell_contents\nprint(f('/etc/passwd').read())",
        "SANDBOX_AST_REJECTED", "ast_policy", "EPERM", "seccomp",
    ),
    Escape(
        "getattr_dunder_string", "getattr with a computed dunder name",
        "name = '_' * 2 + 'class' + '_' * 2\nk = getattr((), name)\nimport os\nos." + SPAWN,
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "import_os", "import statement",
        "import os\nos." + SPAWN,
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "dunder_import_socket", "__import__ name",
        "__import__('socket').socket()",
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "eval_exec", "eval/exec",
        "exec(\"import subprocess; subprocess.run(['id'])\")",
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "hook_shadowing", "hook shadowing def f(_getattr_=..., /) (CVE-2026-55830)",
        "def f(_getattr_=getattr, /):\n    return _getattr_\nimport os\nos." + SPAWN,
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "except_star", "except* type confusion (CVE-2025-22153)",
        "try:\n    pass\nexcept* Exception:\n    pass\nimport os\nos." + SPAWN,
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "globals_vars_dir", "globals()/vars()/dir()",
        "g = globals()\nimport os\nos." + SPAWN,
        "SANDBOX_AST_REJECTED", "ast_policy", "SIGSYS", "seccomp",
    ),
    Escape(
        "open_host_file", "open()",
        "print(open('/etc/passwd').read())",
        "SANDBOX_AST_REJECTED", "ast_policy", "EPERM", "seccomp",
    ),
]  # fmt: skip


def _request(code: str, *, unsafe: bool, seconds: float = 5.0) -> StepRequest:
    return StepRequest(
        tenant_id="t",
        session_id="s",
        execution_id="e",
        code=code,
        state_json="{}",
        limits=StepLimits(max_step_seconds=seconds),
        unsafe_disable_policy_layers=unsafe,
    )


def _signal(result: StepResult) -> str:
    return str(json.loads(result.error.details_json or "{}").get("exit", {}).get("signal", ""))


@pytest.mark.parametrize("escape", ESCAPES, ids=lambda e: e.name)
def test_policy_layers_stop_the_escape(escape: Escape) -> None:
    result = InProcessSandbox().run_step(_request(escape.code, unsafe=False))
    assert not result.success, escape.policy_layer
    assert result.error.code == escape.policy_code, (escape.policy_layer, result.error)
    assert "uid=" not in result.stdout and "root:" not in result.stdout


@pytest.mark.parametrize("escape", ESCAPES, ids=lambda e: e.name)
def test_os_layers_alone_stop_the_escape(os_only_pool: PoolSandbox, escape: Escape) -> None:
    result = os_only_pool.run_step(_request(escape.code, unsafe=True))
    assert not result.success, escape.os_layer
    assert "uid=" not in result.stdout and "root:" not in result.stdout
    if escape.os_outcome == "SIGSYS":
        assert result.error.code == "LAMBDA_ERROR", (escape.os_layer, result.error)
        assert _signal(result) == "SIGSYS"
    elif escape.os_outcome == "EPERM":
        # open() gets EPERM from the filter; the executor reports the exception.
        assert result.error.code == "SANDBOX_RUNTIME_ERROR", escape.os_layer
        assert "PermissionError: [Errno 1]" in result.error.message
    else:
        assert result.error.code == escape.os_outcome


@pytest.mark.parametrize("escape", ESCAPES[:4], ids=lambda e: e.name)
def test_hardened_pool_stops_the_escape_with_the_policy_layer(
    hardened_pool: PoolSandbox, escape: Escape
) -> None:
    result = hardened_pool.run_step(_request(escape.code, unsafe=False))
    assert result.error.code == escape.policy_code
    assert result.isolation == "pool"


@dataclass(frozen=True)
class Bomb:
    name: str
    code: str
    policy_code: str  # "" = the step succeeds (bounded) in-process
    policy_layer: str
    os_code: str
    os_layer: str
    seconds: float = 2.0


BOMBS = [
    Bomb("cpu_loop", "while True:\n    pass",
         "SANDBOX_LINE_LIMIT", "instruction budget", "STEP_TIMEOUT", "wall_clock_kill"),
    Bomb("bigint_pow", "x = 10 ** 10 ** 10",
         "SANDBOX_RUNTIME_ERROR", "guarded operators", "STEP_TIMEOUT", "wall_clock_kill"),
    Bomb("memory_bytearray", "x = bytearray(1536 * 2**20)\nprint(len(x))",
         "SANDBOX_AST_REJECTED", "ast_policy", "SANDBOX_RUNTIME_ERROR", "rlimits (RLIMIT_AS)"),
    Bomb("memory_string", "x = 'a' * (2**40)",
         "SANDBOX_RUNTIME_ERROR", "guarded operators", "SANDBOX_RUNTIME_ERROR",
         "rlimits (RLIMIT_AS)"),
    Bomb("recursion", "def f(n):\n    return f(n + 1)\nf(0)",
         "SANDBOX_RUNTIME_ERROR", "recursion limit", "SANDBOX_RUNTIME_ERROR", "recursion limit"),
    Bomb("state_bomb", "state['x'] = 'a' * 600000",
         "STATE_TOO_LARGE", "state limits", "STATE_TOO_LARGE", "state limits"),
    Bomb("compile_bomb_length", "1" + "+1" * 100000,
         "SANDBOX_AST_REJECTED", "code length cap", "SANDBOX_AST_REJECTED", "code length cap"),
    Bomb("system_exit", "raise SystemExit(3)",
         "SANDBOX_AST_REJECTED", "ast_policy", "SANDBOX_RUNTIME_ERROR", "worker answers anyway"),
]  # fmt: skip


@pytest.mark.parametrize("bomb", BOMBS, ids=lambda b: b.name)
def test_bombs_are_bounded_by_the_policy_layers(bomb: Bomb) -> None:
    result = InProcessSandbox().run_step(_request(bomb.code, unsafe=False, seconds=bomb.seconds))
    assert result.error.code == bomb.policy_code, (bomb.policy_layer, result.error)


@pytest.mark.parametrize("bomb", BOMBS, ids=lambda b: b.name)
def test_bombs_are_bounded_by_the_os_layers_alone(os_only_pool: PoolSandbox, bomb: Bomb) -> None:
    result = os_only_pool.run_step(_request(bomb.code, unsafe=True, seconds=bomb.seconds))
    assert result.error.code == bomb.os_code, (bomb.os_layer, result.error)
    assert result.isolation == "pool"


def test_output_bomb_is_truncated_in_both_runs(os_only_pool: PoolSandbox) -> None:
    code = "for i in range(10**5):\n    print('x' * 1000)"
    for result in (
        InProcessSandbox().run_step(_request(code, unsafe=False)),
        os_only_pool.run_step(_request(code, unsafe=True)),
    ):
        assert result.success
        assert result.stdout_truncated
        assert len(result.stdout) == 15000
