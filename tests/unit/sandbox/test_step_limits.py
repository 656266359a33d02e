"""StepLimits on the wire and the pool's caps (rlm_rs/sandbox/policy.py): zero
means the default, grants are taken as given, every cap the pool applies is
named, and nothing of the pool's configuration travels with a step."""

from __future__ import annotations

from google.protobuf.unknown_fields import UnknownFieldSet

from rlm_rs.control.budgets import step_limits
from rlm_rs.domain.budgets import default_budgets
from rlm_rs.sandbox.policy import (
    StepCaps,
    configured_pool_policy,
    default_policy,
    default_step_limits,
    with_defaults,
)
from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy, StepLimits


def test_zero_means_the_default_and_grants_are_taken_as_given() -> None:
    limits = with_defaults(StepLimits(max_stdout_chars=5, enable_llm=False))
    defaults = default_step_limits()
    assert limits.max_stdout_chars == 5
    assert limits.max_instructions == defaults.max_instructions
    assert list(limits.builtins_allowlist) == list(defaults.builtins_allowlist)
    assert (limits.enable_llm, limits.enable_rlm, limits.enable_search) == (False, False, False)
    assert with_defaults(None) == defaults
    assert (defaults.enable_llm, defaults.enable_rlm) == (True, True)


def test_the_defaults_are_never_shared_with_a_caller() -> None:
    first = with_defaults(None)
    first.max_step_seconds = 1.0
    first.builtins_allowlist.append("eval")
    assert with_defaults(None) == default_step_limits()


def test_the_pool_caps_every_limit_and_names_each_one_it_lowered() -> None:
    pool = configured_pool_policy({"max_stdout_chars": 100, "builtins_allowlist": ["print", "len"]})
    limits, capped = StepCaps(pool).apply(
        StepLimits(max_stdout_chars=1_000, max_spans_per_step=3, builtins_allowlist=["print", "eval"])
    )
    assert limits.max_stdout_chars == 100 and limits.max_spans_per_step == 3
    assert list(limits.builtins_allowlist) == ["print"]
    assert capped == ["max_stdout_chars", "builtins_allowlist"]
    unset, capped_unset = StepCaps(pool).apply(None)
    assert unset.max_stdout_chars == 100  # the default (15,000) is above this pool's cap
    assert list(unset.builtins_allowlist) == ["len", "print"]  # the defaults' order
    assert "max_stdout_chars" in capped_unset


def test_an_old_clients_hardening_fields_are_dropped_not_forwarded() -> None:
    requested = StepLimits()
    requested.MergeFromString(SandboxPolicy(max_step_seconds=2, sandbox_uid=1).SerializeToString())
    assert len(UnknownFieldSet(requested)) == 1
    limits, _ = StepCaps(configured_pool_policy()).apply(requested)
    assert limits.max_step_seconds == 2
    assert len(UnknownFieldSet(limits)) == 0


def test_a_turn_sends_only_its_budgets_a_few_dozen_bytes() -> None:
    limits = step_limits(default_budgets(), enable_search=False)
    assert len(limits.SerializeToString()) < 64
    assert len(default_policy().SerializeToString()) > 900  # what each step used to carry
    assert not limits.builtins_allowlist and not limits.max_instructions
