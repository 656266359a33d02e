"""Attacks on the inline-call channel (a worker's CALL frames to the pool front).

Two walls, each proven alone:
* the policy layer (`sandbox/_inline.py`, hardened pool): step code only has
  llm_query/llm_query_batched/rlm_query, which count their calls
  (max_inline_calls_per_step), check every argument and size, and never name a
  key, execution or tenant;
* the pool front (`sandbox/pool/server.py`, with the policy layers OFF so the
  step writes raw frames on fd 3): it relays only well-formed InlineCall
  frames numbered 1, 2, ... within MAX_CALL_BYTES and the step's call limit,
  clears any key, stops reading at the RESULT, and kills the worker for
  anything else (LAMBDA_ERROR with details.cause inline_channel_*, or
  BUDGET_EXCEEDED with layer "pool"). After each attack the pool answers the
  next step normally.
Every test checks what the relay saw: the attack was attempted, and stopped
before the control plane (the relay) was reached.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest

from rlm_rs.sandbox.client import PoolSandbox
from rlm_rs.sandbox.pool import _wire
from rlm_rs.sandbox.v1.sandbox_pb2 import (
    InlineCall,
    InlineReply,
    StepLimits,
    StepRequest,
    StepResult,
)

pytestmark = pytest.mark.root

# Step code (policy layers off) that writes frames on the worker's socket.
FRAMES = (
    "import os, struct\n"
    "from rlm_rs.sandbox.v1.sandbox_pb2 import InlineCall\n"
    "from rlm_rs.v1.common_pb2 import LlmRequest\n"
    "def frame(kind, req_id, payload):\n"
    "    os.write(3, struct.pack('!IBQH', len(payload), kind, req_id, 0) + payload)\n"
    "def call(call_id, prompt, key=''):\n"
    "    return InlineCall(call_id=call_id, llm=LlmRequest(prompt=prompt, key=key)).SerializeToString()\n"
)


class Relay:
    """The control plane's side, recording every call that reached it."""

    def __init__(self, text: str = "ok") -> None:
        self.calls: list[InlineCall] = []
        self.text = text
        self.lock = threading.Lock()

    def __call__(self, call: InlineCall, timeout: float) -> InlineReply:
        with self.lock:
            self.calls.append(call)
        return InlineReply(texts=[self.text])


def run(
    pool: PoolSandbox,
    code: str,
    relay: Callable[[InlineCall, float], InlineReply],
    *,
    unsafe: bool,
    execution_id: str = "e",
    **limits: float,
) -> StepResult:
    request = StepRequest(
        tenant_id="t",
        execution_id=execution_id,
        code=code,
        state_json="{}",
        limits=StepLimits(max_step_seconds=5.0, enable_llm=True, enable_rlm=True, **limits),  # type: ignore[arg-type]
        unsafe_disable_policy_layers=unsafe,
    )
    return pool.run_step(request, inline=relay)


def details(result: StepResult) -> dict[str, object]:
    return dict(json.loads(result.error.details_json or "{}"))


def still_healthy(pool: PoolSandbox) -> None:
    relay = Relay("fine")
    after = run(pool, "print(llm_query('next'))", relay, unsafe=False)
    assert after.success and after.stdout == "fine\n" and len(relay.calls) == 1


# --- the pool front (policy layers off) ---------------------------------------------
@pytest.mark.parametrize(
    ("name", "attack", "cause"),
    [
        ("oversized", f"frame(13, 1, b'x' * ({_wire.MAX_CALL_BYTES} + 1))", "inline_channel_oversized"),
        ("garbage", "frame(13, 1, b'\\xff\\xff\\xff')", "inline_channel_malformed"),
        ("no_call", "frame(13, 1, InlineCall(call_id=1).SerializeToString())", "inline_channel_malformed"),
        ("forged_call_id", "frame(13, 7, call(7, 'skip ahead'))", "inline_channel_malformed"),
        ("ids_disagree", "frame(13, 1, call(2, 'x'))", "inline_channel_malformed"),
        (
            "not_a_call",
            "frame(_k, 1, b'{}')".replace("_k", str(_wire.CALL_REPLY)),
            "inline_channel_unexpected_frame",
        ),
        (
            "worker_frame",
            "frame(_k, 1, b'')".replace("_k", str(_wire.WORKER)),
            "inline_channel_unexpected_frame",
        ),
    ],
)
def test_forged_frames_end_the_step_at_the_front(
    os_only_pool: PoolSandbox, name: str, attack: str, cause: str
) -> None:
    relay = Relay()
    code = FRAMES + attack + "\nos.read(3, 1)\nprint('not stopped')"
    result = run(os_only_pool, code, relay, unsafe=True)
    assert not result.success and result.error.code == "LAMBDA_ERROR", result
    assert details(result)["cause"] == cause and details(result)["layer"] == "pool"
    assert relay.calls == []  # nothing reached the control plane
    still_healthy(os_only_pool)


def test_a_flood_of_frames_stops_at_the_call_limit_in_the_front(os_only_pool: PoolSandbox) -> None:
    relay = Relay()
    flood = FRAMES + "for i in range(1, 1001):\n    frame(13, i, call(i, 'flood'))\nos.read(3, 1 << 20)"
    result = run(os_only_pool, flood, relay, unsafe=True, max_inline_calls_per_step=3)
    assert not result.success and result.error.code == "BUDGET_EXCEEDED"
    assert details(result)["layer"] == "pool" and details(result)["limit"] == "max_inline_calls_per_step"
    assert len(relay.calls) == 3  # the front relayed the allowed calls, then stopped reading
    still_healthy(os_only_pool)


def test_frames_after_the_result_are_never_relayed(os_only_pool: PoolSandbox) -> None:
    relay = Relay()
    code = (
        FRAMES + "from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult\n"
        "frame(3, 1, StepResult(success=True, stdout='done').SerializeToString())\n"
        "for i in range(1, 4):\n    frame(13, i, call(i, 'late'))\n"
        "os.read(3, 1)"
    )
    result = run(os_only_pool, code, relay, unsafe=True)
    assert result.success and result.stdout == "done"
    assert relay.calls == []  # the step was over: the late calls went nowhere
    still_healthy(os_only_pool)


def test_a_worker_reaches_no_other_executions_calls(os_only_pool: PoolSandbox) -> None:
    """A step that names someone else's key reaches only its own relay, with
    the key cleared; it holds no descriptor but its own socket (and no
    document), so another step's channel is out of reach."""
    victim_relay, attacker_relay = Relay("victim"), Relay("attacker")
    gate = threading.Event()

    def victim_calls(call: InlineCall, timeout: float) -> InlineReply:
        gate.wait(10)  # the victim's step waits on its call while the attacker runs
        return victim_relay(call, timeout)

    victim: list[StepResult] = []
    waiting = threading.Thread(
        target=lambda: victim.append(
            run(os_only_pool, "print(llm_query('mine'))", victim_calls, unsafe=False, execution_id="victim")
        )
    )
    waiting.start()
    code = FRAMES + (
        "open_fds = []\n"
        "for fd in range(4, 256):\n"
        "    try:\n"
        "        os.fstat(fd)\n"
        "        open_fds.append(fd)\n"
        "    except OSError:\n"
        "        pass\n"
        "print('fds', open_fds)\n"
        "frame(13, 1, call(1, 'steal', key='victim-key'))\n"
        "n = struct.unpack('!IBQH', os.read(3, 15))[0]\n"
        "print('reply', len(os.read(3, n)) > 0)\n"
    )
    attack = run(os_only_pool, code, attacker_relay, unsafe=True, execution_id="attacker")
    gate.set()
    waiting.join(15)
    assert attack.success and attack.stdout == "fds []\nreply True\n", attack
    (stolen,) = attacker_relay.calls
    assert stolen.llm.prompt == "steal" and stolen.llm.key == ""  # the front clears keys
    assert [c.llm.prompt for c in victim_relay.calls] == ["mine"]
    assert victim and victim[0].success and victim[0].stdout == "victim\n"


# --- the policy layer (hardened pool: layers on) ------------------------------------
def test_a_flood_of_calls_from_step_code_stops_at_the_policy_limit(hardened_pool: PoolSandbox) -> None:
    relay = Relay()
    result = run(
        hardened_pool,
        "for i in range(10**6):\n    llm_query('q')",
        relay,
        unsafe=False,
        max_inline_calls_per_step=5,
    )
    assert not result.success and result.error.code == "BUDGET_EXCEEDED"
    assert details(result)["limit"] == "max_inline_calls_per_step" and details(result)["layer"] == "budget"
    assert len(relay.calls) == 5


@pytest.mark.parametrize(
    "code",
    [
        "sorted(range(10**6), key=lambda i: llm_query('k' + str(i)))",
        "max(range(10**6), key=lambda i: llm_query('k'))",
        "list(map(llm_query, ['m'] * 1000))",
        "re.sub('x', lambda m: llm_query(m.group(0)), 'x' * 10000)",
    ],
)
def test_calls_from_a_sort_key_or_a_callback_are_counted_like_any_other(
    hardened_pool: PoolSandbox, code: str
) -> None:
    """Host code calling back into step code (sorted's key, max's key, map)
    reaches the same function, with the same count and limit."""
    relay = Relay()
    result = run(hardened_pool, code, relay, unsafe=False, max_inline_calls_per_step=4)
    assert not result.success and result.error.code == "BUDGET_EXCEEDED", result
    assert len(relay.calls) == 4


def test_a_sort_key_calling_inline_works_within_the_limit(hardened_pool: PoolSandbox) -> None:
    relay = Relay()
    result = run(
        hardened_pool, "print(sorted(['b', 'a'], key=lambda w: llm_query(w) + w))", relay, unsafe=False
    )
    assert result.success and result.stdout == "['a', 'b']\n"
    assert sorted(c.llm.prompt for c in relay.calls) == ["a", "b"]


def test_oversized_and_ill_typed_calls_never_leave_the_step(hardened_pool: PoolSandbox) -> None:
    relay = Relay()
    code = (
        "out = []\n"
        "for bad in [lambda: llm_query('x' * 300000), lambda: llm_query(7), lambda: llm_query('x', max_tokens=10**9),\n"
        "            lambda: llm_query_batched(['x'] * 101), lambda: rlm_query('')]:\n"
        "    try:\n"
        "        bad()\n"
        "    except ValueError:\n"
        "        out.append('ValueError')\n"
        "print(out)"
    )
    result = run(hardened_pool, code, relay, unsafe=False)
    assert result.success and result.stdout.count("ValueError") == 5, result
    assert relay.calls == []
