"""Inline calls from step code: `llm_query`, `llm_query_batched`, `rlm_query`.

Each call is checked here like its queued twin in `_tools.py` (types, prompt
size, tokens, temperature), becomes one typed InlineCall and blocks on the
channel the executor was given: a pool worker's socket to the front
(`pool/_worker.py`), or the control plane's resolver in-process. The step
names no key, execution or tenant; the control plane decides all three.
Time spent waiting is taken off the step's wall clock (max_step_seconds stays
a compute bound) and counted against max_step_wait_seconds instead. A failed
call comes back as text starting "Error:" (as in `rlms`); a channel that
refuses the whole call (cancel, the wait ceiling, a broken pool) ends the
step. This module must never reach anything but the channel it was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rlm_rs import limits
from rlm_rs.sandbox._runtime import StepRuntime, StepStop
from rlm_rs.sandbox._tools import _budgets, _check_call_options, _int_list, _seq, _span
from rlm_rs.sandbox.v1.sandbox_pb2 import InlineCall, InlineReply
from rlm_rs.v1.common_pb2 import LlmBatchRequest, LlmRequest, RlmRequest

# The channel: one call out, its reply back, within `timeout` seconds.
Channel = Callable[[InlineCall, float], InlineReply]
# One call's frame on the worker's socket (the pool refuses bigger ones too).
MAX_CALL_BYTES = 16 * 1024 * 1024
ERROR_PREFIX = "Error: "


class InlineCalls:
    """The three inline functions of one step, bound to its runtime and channel."""

    __slots__ = (
        "_calls",
        "_channel",
        "_llm_enabled",
        "_max_calls",
        "_max_prompt_chars",
        "_max_wait",
        "_rlm_enabled",
        "_rt",
        "_waited",
    )

    def __init__(
        self,
        runtime: StepRuntime,
        channel: Channel | None,
        *,
        max_calls: int,
        max_wait_seconds: float,
        max_prompt_chars: int,
        llm_enabled: bool,
        rlm_enabled: bool,
    ) -> None:
        self._rt = runtime
        self._channel = channel
        self._max_calls = max_calls
        self._max_wait = max_wait_seconds
        self._max_prompt_chars = max_prompt_chars
        self._llm_enabled = llm_enabled
        self._rlm_enabled = rlm_enabled
        self._calls = 0
        self._waited = 0.0

    @property
    def waited_seconds(self) -> float:
        return self._waited

    def llm_query(
        self, prompt: Any, model_hint: Any = "sub", max_tokens: Any = 1024, temperature: Any = 0
    ) -> str:
        """One sub-model call; returns its text ("Error: ..." when it failed)."""
        self._need(self._llm_enabled, "sub-calls are disabled for this execution")
        self._check_prompt(prompt, "prompt")
        _check_call_options(model_hint, max_tokens, temperature, None)
        request = LlmRequest(
            prompt=prompt, model_hint=model_hint, max_tokens=max_tokens, temperature=float(temperature)
        )
        return _texts(self._call(InlineCall(llm=request)), 1)[0]

    def llm_query_batched(
        self, prompts: Any, model_hint: Any = "sub", max_tokens: Any = 1024, temperature: Any = 0
    ) -> list[str]:
        """Several sub-model calls resolved concurrently; their texts in order."""
        self._need(self._llm_enabled, "sub-calls are disabled for this execution")
        if type(prompts) not in (list, tuple) or not 1 <= len(prompts) <= limits.MAX_BATCH_PROMPTS:
            raise ValueError(f"prompts must be a list of 1 to {limits.MAX_BATCH_PROMPTS} strs")
        for index, prompt in enumerate(prompts):
            self._rt.tick()
            self._check_prompt(prompt, f"prompts[{index}]")
        _check_call_options(model_hint, max_tokens, temperature, None)
        request = LlmBatchRequest(
            prompts=list(prompts),
            model_hint=model_hint,
            max_tokens=max_tokens,
            temperature=float(temperature),
        )
        return _texts(self._call(InlineCall(llm_batch=request)), len(prompts))

    def rlm_query(
        self, question: Any, doc_indices: Any = None, spans: Any = None, budgets: Any = None
    ) -> str:
        """A child execution over a sub-corpus (as tool.queue_rlm); returns its
        answer. What the child cites counts as this execution's citations."""
        self._need(self._rlm_enabled, "child executions (rlm_query) are disabled for this execution")
        if type(question) is not str or not question.strip() or len(question) > limits.MAX_QUESTION_CHARS:
            raise ValueError(f"question must be a non-empty str of <= {limits.MAX_QUESTION_CHARS} chars")
        if doc_indices is not None and spans is not None:
            raise ValueError("give doc_indices or spans, not both")
        indices = _int_list(doc_indices, "doc_indices") if doc_indices is not None else []
        pieces = [_span(s, i) for i, s in enumerate(_seq(spans, "spans"))] if spans is not None else []
        request = RlmRequest(question=question, doc_indices=indices, spans=pieces, budgets=_budgets(budgets))
        return _texts(self._call(InlineCall(rlm=request)), 1)[0]

    # ---------------------------------------------------------------------------------
    def _need(self, enabled: bool, reason: str) -> None:
        if not enabled:
            raise RuntimeError(reason)

    def _check_prompt(self, prompt: Any, name: str) -> None:
        if type(prompt) is not str or not prompt:
            raise ValueError(f"{name} must be a non-empty str")
        if len(prompt) > self._max_prompt_chars:
            raise ValueError(f"{name} is {len(prompt)} chars; the limit is {self._max_prompt_chars}")

    def _call(self, call: InlineCall) -> InlineReply:
        rt = self._rt
        rt.tick()
        if self._channel is None:
            raise RuntimeError("inline calls are not available here; use tool.queue_llm and tool.YIELD")
        self._calls += 1
        if self._calls > self._max_calls:
            rt.halt(
                StepStop(
                    "BUDGET_EXCEEDED",
                    f"step made more than {self._max_calls} inline calls",
                    {"limit": "max_inline_calls_per_step", "value": self._max_calls},
                )
            )
        call.call_id = self._calls
        if call.ByteSize() > MAX_CALL_BYTES:
            raise ValueError(f"the call is over {MAX_CALL_BYTES} bytes; split it")
        left = self._max_wait - self._waited
        if left <= 0:
            rt.halt(_wait_spent(self._max_wait))
        rt.pause()
        started = time.monotonic()
        try:
            reply = self._channel(call, left)
        except Exception:  # the resolver's failure is not the step's to catch
            reply = InlineReply(error_code="LAMBDA_ERROR", error="the inline call could not be resolved")
        finally:
            self._waited += time.monotonic() - started
            rt.resume()
        if reply.error or reply.call_id != call.call_id:
            code = reply.error_code or "LAMBDA_ERROR"
            if code == "STEP_TIMEOUT":
                rt.halt(_wait_spent(self._max_wait))
            rt.halt(StepStop(code, reply.error or "the inline call was not answered", {"layer": "inline"}))
        return reply

    def __repr__(self) -> str:
        return "<inline calls: llm_query, llm_query_batched, rlm_query>"


def _wait_spent(seconds: float) -> StepStop:
    return StepStop(
        "STEP_TIMEOUT",
        f"step waited more than {seconds:g} s on inline calls (max_step_wait_seconds)",
        {"max_step_wait_seconds": seconds},
    )


def _texts(reply: InlineReply, count: int) -> list[str]:
    """The reply's texts, a failed one as "Error: <why>"; always `count` of them."""
    texts = list(reply.texts)[:count]
    texts += [""] * (count - len(texts))
    errors = list(reply.errors)
    for index, error in enumerate(errors[:count]):
        if error:
            texts[index] = ERROR_PREFIX + error
    return texts
