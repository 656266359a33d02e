"""The sandbox policy's defaults: the one place every limit's default lives.

`SandboxPolicy` (proto/rlm_rs/sandbox/v1/sandbox.proto) is the pool's
configuration (RLM_SANDBOX_POLICY_JSON): every cap and hardening knob. It never
travels with a step. A step carries `StepLimits`, the per-step budgets its
execution grants; zero numeric fields mean "default" and are filled here
(`with_defaults`), and the pool runs each at the lower of it and its policy's
cap (`cap_limits`), naming every limit it lowered (never silently).

Builtins beyond the spec's allowlist (docs/api.md#step-api), each harmless (no object graph, module,
frame or file is reachable through it; the step's wrappers are in
rlm_rs/sandbox/_restricted.py):
- any, all: reduce an iterable to a bool, iterating through the ticking guard.
- divmod, pow: arithmetic; pow without a modulus goes through the same size
  check as `**` (no 10**10**9 bombs); with a modulus the result is bounded.
- chr, ord, hex, bin, oct: int <-> text conversions; output size is linear in
  the input's.
- repr: text of a value; steps cannot define classes, so no step-written
  __repr__ runs (it shows builtin values and function addresses only).
- callable: a bool.
- frozenset: like set (constructor iterates through the ticking guard).
- slice: a plain slice object, for `doc[slice(a, b)]` style helpers.
- iter, next: `iter(x)` returns the ticking iterator of x (the two-argument
  callable/sentinel form is not accepted); `next(it[, default])` advances an
  iterator by one item and so cannot loop on its own.
- True, False, None and the ordinary exception classes (Exception,
  ValueError, ... MemoryError) so that `except ValueError:` and
  `raise ValueError(...)` work. BaseException, SystemExit, KeyboardInterrupt
  and GeneratorExit are not here (and are rejected names): the step's stop
  signal is a BaseException no step can name.
Never added: getattr, type, object, vars, dir, open, eval, exec, compile,
globals, locals, breakpoint, memoryview, format (format-spec traversal),
hash, id. The control plane may send a narrower allowlist; a name outside
the table in _restricted.Guards.builtins is ignored, never looked up.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from rlm_rs.limits import BUDGET_CEILINGS, MAX_CODE_CHARS
from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy, StepLimits

# The spec's builtins allowlist (docs/api.md#step-api) plus harmless additions: none of
# them reaches an object graph, a module, a frame or the file system; the
# iterating ones iterate through the step's ticking guard (see
# rlm_rs/sandbox/_restricted.py for each one's justification). Never added:
# getattr, type, object, vars, dir, open, eval, exec, compile, globals,
# locals, breakpoint, memoryview, format (format-spec traversal), hash, id.
SPEC_BUILTINS: tuple[str, ...] = (
    "len", "range", "enumerate", "zip", "map", "filter", "sorted", "reversed",
    "min", "max", "sum", "abs", "round", "int", "float", "str", "bool", "list",
    "dict", "set", "tuple", "isinstance", "print",
)  # fmt: skip
EXTRA_BUILTINS: tuple[str, ...] = (
    "any", "all", "divmod", "pow", "chr", "ord", "hex", "bin", "oct", "repr",
    "callable", "frozenset", "slice", "iter", "next",
    "True", "False", "None",
    "Exception", "ValueError", "TypeError", "KeyError", "IndexError",
    "ZeroDivisionError", "AttributeError", "RuntimeError", "StopIteration",
    "ArithmeticError", "LookupError", "NameError", "NotImplementedError",
    "OverflowError", "AssertionError", "UnicodeError", "MemoryError",
)  # fmt: skip

# Syscalls a running, fully pre-imported CPython step needs (measured census in
# docs/sandbox-pool.md plus what fd passing and exit need). Everything else is
# denied; see rlm_rs/sandbox/pool/_seccomp.py for which denials kill and which EPERM.
SECCOMP_ALLOWLIST: tuple[str, ...] = (
    "read", "write", "close", "lseek", "fstat", "newfstatat", "brk", "mmap",
    "munmap", "mremap", "mprotect", "madvise", "futex", "rt_sigreturn",
    "rt_sigaction", "rt_sigprocmask", "sigaltstack", "getpid", "gettid",
    "getrandom", "clock_gettime", "clock_nanosleep", "nanosleep",
    "recvmsg", "sendmsg", "exit", "exit_group", "pread64", "sched_yield",
    "getrusage", "clock_getres",
)  # fmt: skip


def default_policy() -> SandboxPolicy:
    return SandboxPolicy(
        max_step_seconds=30.0,
        max_instructions=2_000_000,
        max_stdout_chars=15_000,
        max_spans_per_step=200,
        max_tool_requests_per_step=500,
        max_state_chars=500_000,
        max_code_chars=MAX_CODE_CHARS,
        max_hits_per_call=200,
        max_regex_seconds=1.0,
        max_llm_prompt_chars=200_000,
        max_step_wait_seconds=300.0,
        max_inline_calls_per_step=100,
        enable_search=False,
        enable_llm=True,
        enable_rlm=True,
        builtins_allowlist=[*SPEC_BUILTINS, *EXTRA_BUILTINS],
        address_space_mib=1024,
        cpu_seconds=35,
        max_open_files=64,
        max_processes=0,
        file_size_bytes=0,
        cgroup_memory_mib=512,
        cgroup_pids_max=4,
        clone_newnet=True,
        clone_newns=True,
        clone_newpid=True,
        clone_newipc=True,
        clone_newuts=True,
        clone_newuser=True,
        sandbox_uid=65534,
        sandbox_gid=65534,
        seccomp_enabled=True,
        seccomp_allowlist=list(SECCOMP_ALLOWLIST),
        pool_size=4,
        warm_workers=2,
    )


# StepLimits' numeric fields: each also a SandboxPolicy field of the same
# name and number, whose value in the pool's policy is the cap.
_BOOL = StepLimits.DESCRIPTOR.fields_by_name["enable_llm"].type
NUMERIC_STEP_FIELDS: tuple[str, ...] = tuple(
    f.name for f in StepLimits.DESCRIPTOR.fields if f.type != _BOOL and not f.is_repeated
)
_GRANT_FIELDS = ("enable_search", "enable_llm", "enable_rlm")


def default_step_limits() -> StepLimits:
    """The defaults of every step limit (those of default_policy())."""
    return _step_part(default_policy())


def _step_part(policy: SandboxPolicy) -> StepLimits:
    limits = StepLimits(builtins_allowlist=list(policy.builtins_allowlist))
    for name in (*NUMERIC_STEP_FIELDS, *_GRANT_FIELDS):
        setattr(limits, name, getattr(policy, name))
    return limits


# The pool's own caps on the step limits a request may ask for, before
# RLM_SANDBOX_POLICY_JSON: the budgets' ceilings (rlm_rs/limits.py), except the
# step's seconds, which stay below the CPU rlimit (cpu_seconds, 35) that backs
# the wall clock; an operator raises both together. The control plane reads
# the same setting and refuses a budget above one of these (docs/api.md#budgets).
POOL_STEP_CEILINGS: Mapping[str, float] = {
    "max_step_seconds": 30.0,
    "max_spans_per_step": BUDGET_CEILINGS["max_spans_per_step"],
    "max_tool_requests_per_step": BUDGET_CEILINGS["max_tool_requests_per_step"],
    "max_stdout_chars": BUDGET_CEILINGS["max_stdout_chars"],
    "max_state_chars": BUDGET_CEILINGS["max_state_chars"],
    "max_llm_prompt_chars": BUDGET_CEILINGS["max_llm_prompt_chars"],
}


def configured_pool_policy(overrides: Mapping[str, Any] | None = None) -> SandboxPolicy:
    """The pool's policy: the defaults with the step limits at
    POOL_STEP_CEILINGS, then `overrides` (RLM_SANDBOX_POLICY_JSON; a list
    replaces the default list)."""
    policy = default_policy()
    for name, ceiling in POOL_STEP_CEILINGS.items():
        setattr(policy, name, type(getattr(policy, name))(ceiling))
    for name, value in (overrides or {}).items():
        if isinstance(value, list):
            policy.ClearField(name)  # type: ignore[arg-type]
    json_format.ParseDict(dict(overrides or {}), policy)
    return policy_with_defaults(policy)


def policy_with_defaults(policy: SandboxPolicy | None) -> SandboxPolicy:
    """A copy of the pool's `policy` with every zero numeric step limit and an
    empty builtins allowlist replaced by the default. Booleans are taken as given."""
    defaults = default_policy()
    merged = SandboxPolicy()
    merged.CopyFrom(policy if policy is not None else defaults)
    for name in NUMERIC_STEP_FIELDS:
        if not getattr(merged, name):
            setattr(merged, name, getattr(defaults, name))
    if not merged.builtins_allowlist:
        merged.builtins_allowlist.extend(defaults.builtins_allowlist)
    return merged


@functools.cache
def _defaults() -> StepLimits:
    """default_step_limits(), built once; never handed out (callers copy it)."""
    return default_step_limits()


def with_defaults(limits: StepLimits | None) -> StepLimits:
    """A step's complete limits: a copy of `limits` with every zero numeric
    field and an empty builtins allowlist replaced by the default. Booleans
    are taken as given; no limits at all means every default."""
    merged = StepLimits()
    merged.CopyFrom(_defaults())
    if limits is not None:
        merged.MergeFrom(limits)  # proto3: only the nonzero numbers replace a default
        for name in _GRANT_FIELDS:
            setattr(merged, name, getattr(limits, name))
        if limits.builtins_allowlist:
            del merged.builtins_allowlist[:]
            merged.builtins_allowlist.extend(limits.builtins_allowlist)
    return merged


class StepCaps:
    """The pool's caps on a step's limits, read once from its policy (which
    is complete: policy_with_defaults). Grants are the execution's, not capped."""

    def __init__(self, pool: SandboxPolicy) -> None:
        self._ceilings = {name: getattr(pool, name) for name in NUMERIC_STEP_FIELDS if getattr(pool, name)}
        self._allowed = frozenset(pool.builtins_allowlist)

    def apply(self, requested: StepLimits | None) -> tuple[StepLimits, list[str]]:
        """`requested` with defaults (with_defaults), each numeric field at
        most its cap, builtins narrowed to the pool's allowlist; and the names
        of the fields lowered."""
        limits = with_defaults(requested)
        limits.DiscardUnknownFields()  # an old client's hardening fields: never forwarded
        capped = [name for name, ceiling in self._ceilings.items() if getattr(limits, name) > ceiling]
        for name in capped:
            setattr(limits, name, self._ceilings[name])
        names = limits.builtins_allowlist
        if not self._allowed.issuperset(names):
            kept = [n for n in names if n in self._allowed]
            del names[:]
            names.extend(kept)
            capped.append("builtins_allowlist")
        return limits, capped


def cap_limits(requested: StepLimits | None, pool: SandboxPolicy) -> tuple[StepLimits, list[str]]:
    """StepCaps(pool).apply(requested): the limits a step runs under in the pool."""
    return StepCaps(pool).apply(requested)
