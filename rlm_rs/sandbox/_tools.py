"""The `tool` global: queue sub-model calls, child executions and searches, YIELD, FINAL.

The sandbox never calls a provider: it records tool requests, and the
orchestrator resolves them between steps into state._tool_results. A step
that fails queues nothing. Every argument is validated here so that only
JSON-clean requests leave the sandbox.
"""

from __future__ import annotations

from typing import Any

from rlm_rs import limits
from rlm_rs.canonical import canonical_json
from rlm_rs.errors import RlmError
from rlm_rs.sandbox._runtime import FinalStop, StepRuntime, StepStop, YieldStop
from rlm_rs.sandbox._state import check_json_value
from rlm_rs.v1.common_pb2 import (
    Budgets,
    LlmBatchRequest,
    LlmRequest,
    RlmRequest,
    SearchFilters,
    SearchRequest,
    Span,
    ToolRequests,
)

# Bounds shared with the control plane and the gateway (rlm_rs/limits.py).
_MAX_KEY_CHARS = limits.MAX_TOOL_KEY_CHARS
_MAX_QUERY_CHARS = limits.MAX_SEARCH_QUERY_CHARS
_MAX_TOKENS = limits.MAX_SUBCALL_MAX_TOKENS
_MAX_BATCH = limits.MAX_BATCH_PROMPTS
_MAX_QUESTION_CHARS = limits.MAX_QUESTION_CHARS
_MAX_PIECES = limits.MAX_RLM_PIECES
# The sandbox's own: canonical JSON of a request's metadata (a non-str FINAL
# answer is bounded by max_state_chars); both walks are budgeted, so a
# shared-reference bomb stops at the budget, never walked or serialised whole.
MAX_METADATA_CHARS = 16_000
_MAX_BUDGET_KEYS = 64
_MAX_REASON_CHARS = 500


class ToolAPI:
    __slots__ = (
        "_keys",
        "_llm_enabled",
        "_max_answer_chars",
        "_max_prompt_chars",
        "_max_requests",
        "_queued",
        "_requests",
        "_rlm_enabled",
        "_rt",
        "_search_enabled",
    )

    def __init__(
        self,
        runtime: StepRuntime,
        *,
        max_requests: int,
        max_prompt_chars: int,
        llm_enabled: bool,
        search_enabled: bool,
        rlm_enabled: bool = False,
        max_answer_chars: int = 500_000,
    ) -> None:
        self._rt = runtime
        self._max_answer_chars = max_answer_chars
        self._rlm_enabled = rlm_enabled
        self._max_requests = max_requests
        self._max_prompt_chars = max_prompt_chars
        self._llm_enabled = llm_enabled
        self._search_enabled = search_enabled
        self._requests = ToolRequests()
        self._keys: set[str] = set()
        self._queued = 0  # requests, a batch counting one per prompt

    def _new_key(self, key: object, weight: int = 1) -> str:
        if type(key) is not str or not key or len(key) > _MAX_KEY_CHARS:
            raise ValueError(f"key must be a non-empty str of <= {_MAX_KEY_CHARS} chars")
        if key in self._keys:
            raise ValueError(f"key {key!r} was already queued in this step")
        self._keys.add(key)
        self._queued += weight
        if self._queued > self._max_requests:
            self._rt.halt(
                StepStop(
                    "BUDGET_EXCEEDED",
                    f"step queued more than {self._max_requests} tool requests",
                    {"limit": "max_tool_requests_per_step", "value": self._max_requests},
                )
            )
        return key

    def queue_llm(
        self,
        key: object,
        prompt: Any,
        model_hint: Any = "sub",
        max_tokens: Any = 1024,
        temperature: Any = 0,
        metadata: Any = None,
    ) -> str:
        """Queue a sub-model call; its answer appears next step in
        state["_tool_results"]["llm"][key]["text"]."""
        if not self._llm_enabled:
            raise RuntimeError("sub-calls are disabled for this execution")
        if type(prompt) is not str or not prompt:
            raise ValueError("prompt must be a non-empty str")
        if len(prompt) > self._max_prompt_chars:
            raise ValueError(f"prompt is {len(prompt)} chars; the limit is {self._max_prompt_chars}")
        metadata_json = _check_call_options(model_hint, max_tokens, temperature, metadata)
        key = self._new_key(key)
        self._requests.llm.append(
            LlmRequest(
                key=key,
                prompt=prompt,
                model_hint=model_hint,
                max_tokens=max_tokens,
                temperature=float(temperature),
                metadata_json=metadata_json,
            )
        )
        return key

    def queue_llm_batch(
        self,
        key: object,
        prompts: Any,
        model_hint: Any = "sub",
        max_tokens: Any = 1024,
        temperature: Any = 0,
        metadata: Any = None,
    ) -> str:
        """Queue several sub-model calls under one key, resolved concurrently;
        next step state["_tool_results"]["llm_batch"][key]["results"] is one
        {text, meta} per prompt, in order. Each prompt counts as one request
        and one sub-call."""
        if not self._llm_enabled:
            raise RuntimeError("sub-calls are disabled for this execution")
        if type(prompts) not in (list, tuple) or not 1 <= len(prompts) <= _MAX_BATCH:
            raise ValueError(f"prompts must be a list of 1 to {_MAX_BATCH} strs")
        for index, prompt in enumerate(prompts):
            if type(prompt) is not str or not prompt:
                raise ValueError(f"prompts[{index}] must be a non-empty str")
            if len(prompt) > self._max_prompt_chars:
                raise ValueError(
                    f"prompts[{index}] is {len(prompt)} chars; the limit is {self._max_prompt_chars}"
                )
        metadata_json = _check_call_options(model_hint, max_tokens, temperature, metadata)
        key = self._new_key(key, weight=len(prompts))
        self._requests.llm_batch.append(
            LlmBatchRequest(
                key=key,
                prompts=list(prompts),
                model_hint=model_hint,
                max_tokens=max_tokens,
                temperature=float(temperature),
                metadata_json=metadata_json,
            )
        )
        return key

    def queue_rlm(
        self, key: object, question: Any, doc_indices: Any = None, spans: Any = None, budgets: Any = None
    ) -> str:
        """Queue a child execution (a recursive RLM) over a sub-corpus: whole
        documents (doc_indices), or spans given as [doc_index, start, end]
        (or dicts with doc_index/start_char/end_char); neither: every
        document. `budgets` lowers the child's budgets (never above what this
        execution has left). Next step: state["_tool_results"]["rlm"][key] =
        {text, citations, meta}."""
        if not self._rlm_enabled:
            raise RuntimeError("child executions (queue_rlm) are disabled for this execution")
        if type(question) is not str or not question.strip() or len(question) > _MAX_QUESTION_CHARS:
            raise ValueError(f"question must be a non-empty str of <= {_MAX_QUESTION_CHARS} chars")
        if doc_indices is not None and spans is not None:
            raise ValueError("give doc_indices or spans, not both")
        indices = _int_list(doc_indices, "doc_indices") if doc_indices is not None else []
        pieces = [_span(s, i) for i, s in enumerate(_seq(spans, "spans"))] if spans is not None else []
        overrides = _budgets(budgets)
        key = self._new_key(key)
        self._requests.rlm.append(
            RlmRequest(key=key, question=question, doc_indices=indices, spans=pieces, budgets=overrides)
        )
        return key

    def queue_search(self, key: object, query: Any, k: Any = 10, filters: Any = None) -> str:
        """Queue a search; hits appear next step in state["_tool_results"]["search"][key]."""
        if not self._search_enabled:
            raise RuntimeError("search is not enabled for this session")
        if type(query) is not str or not query or len(query) > _MAX_QUERY_CHARS:
            raise ValueError(f"query must be a non-empty str of <= {_MAX_QUERY_CHARS} chars")
        if type(k) is not int or not 1 <= k <= limits.MAX_SEARCH_K:
            raise ValueError(f"k must be an int from 1 to {limits.MAX_SEARCH_K}")
        doc_ids: list[str] = []
        if filters is not None:
            if type(filters) is not dict or set(filters) - {"doc_ids"}:
                raise ValueError('filters must be {"doc_ids": [...]}')
            doc_ids = filters.get("doc_ids") or []
            if type(doc_ids) not in (list, tuple) or len(doc_ids) > _MAX_PIECES:
                raise ValueError(f"filters.doc_ids must be a list of at most {_MAX_PIECES} str")
            doc_ids = list(doc_ids)
            if not all(type(d) is str for d in doc_ids):
                raise ValueError("filters.doc_ids must be a list of str")
        key = self._new_key(key)
        self._requests.search.append(
            SearchRequest(key=key, query=query, k=k, filters=SearchFilters(doc_ids=doc_ids))
        )
        return key

    def YIELD(self, reason: Any = None) -> None:
        """End this step so queued tools can be resolved."""
        if reason is not None and type(reason) is not str:
            raise TypeError("YIELD(reason): reason must be a str")
        self._rt.halt(YieldStop("" if reason is None else reason[:_MAX_REASON_CHARS]))

    def FINAL(self, answer: Any) -> None:
        """End the execution with `answer` (a str, or any JSON value), at most
        max_state_chars characters (canonical JSON for a non-str answer)."""
        if type(answer) is not str:
            answer = _bounded_json(answer, "answer", self._max_answer_chars)
        elif len(answer) > self._max_answer_chars:
            raise RlmError(
                "STATE_TOO_LARGE",
                f"FINAL answer is {len(answer)} chars; the limit is {self._max_answer_chars}",
                {"path": "answer"},
            )
        self._rt.halt(FinalStop(answer))

    def schema(self) -> dict[str, Any]:
        """The static tool spec."""
        return {
            "queue_llm": {
                "args": ["key", "prompt", "model_hint='sub'", "max_tokens=1024",
                         "temperature=0", "metadata=None"],
                "enabled": self._llm_enabled,
                "result": "state['_tool_results']['llm'][key] = {text, meta}",
            },
            "queue_llm_batch": {
                "args": ["key", "prompts", "model_hint='sub'", "max_tokens=1024",
                         "temperature=0", "metadata=None"],
                "enabled": self._llm_enabled,
                "result": "state['_tool_results']['llm_batch'][key] = {results: [{text, meta}, ...]}",
            },
            "queue_rlm": {
                "args": ["key", "question", "doc_indices=None", "spans=None", "budgets=None"],
                "enabled": self._rlm_enabled,
                "result": "state['_tool_results']['rlm'][key] = {text, citations, meta}",
            },
            "queue_search": {
                "args": ["key", "query", "k=10", "filters=None"],
                "enabled": self._search_enabled,
                "result": "state['_tool_results']['search'][key] = {hits, meta}",
            },
            "YIELD": {"args": ["reason=None"], "effect": "ends the step; tools resolve"},
            "FINAL": {"args": ["answer"], "effect": "ends the execution"},
            "status": "state['_tool_status'][key] in pending|resolved|error",
            "max_requests_per_step": self._max_requests,
            "max_prompt_chars": self._max_prompt_chars,
        }  # fmt: skip

    def __repr__(self) -> str:
        return "<tool: queue_llm, queue_llm_batch, queue_rlm, queue_search, YIELD, FINAL, schema>"


def _bounded_json(value: Any, name: str, max_chars: int) -> str:
    """Canonical JSON of `value`, walked within a budget of `max_chars`
    (STATE_INVALID_TYPE for a non-JSON value, STATE_TOO_LARGE past the budget)."""
    check_json_value(value, name, budget=[max_chars])
    text = canonical_json(value)
    if len(text) > max_chars:
        raise RlmError(
            "STATE_TOO_LARGE",
            f"{name} is {len(text)} chars of JSON; the limit is {max_chars}",
            {"path": name},
        )
    return text


def _check_call_options(model_hint: Any, max_tokens: Any, temperature: Any, metadata: Any) -> str:
    """The options queue_llm and queue_llm_batch share; returns the metadata's JSON."""
    if type(model_hint) is not str or len(model_hint) > limits.MAX_MODEL_NAME_CHARS:
        raise ValueError("model_hint must be a short str")
    if type(max_tokens) is not int or not 1 <= max_tokens <= _MAX_TOKENS:
        raise ValueError(f"max_tokens must be an int from 1 to {_MAX_TOKENS}")
    if type(temperature) not in (int, float) or not 0 <= temperature <= limits.MAX_TEMPERATURE:
        raise ValueError(f"temperature must be a number from 0 to {limits.MAX_TEMPERATURE:g}")
    return _bounded_json(metadata, "metadata", MAX_METADATA_CHARS)


def _budgets(value: Any) -> Budgets | None:
    """A child's budget overrides as the Budgets message (None: none). Names
    and number types are checked here (an int budget takes a whole number);
    the values against their ceilings and what the parent has left, by the
    control plane."""
    if value is None:
        return None
    if type(value) is not dict or len(value) > _MAX_BUDGET_KEYS:
        raise ValueError("budgets must be a dict of budget names to numbers")
    message = Budgets()
    for name, number in value.items():
        field = Budgets.DESCRIPTOR.fields_by_name.get(name) if type(name) is str else None
        if field is None or type(number) not in (int, float):
            raise ValueError(f"budgets must be a dict of budget names to numbers, not {name!r}")
        if field.cpp_type == field.CPPTYPE_DOUBLE:
            setattr(message, name, float(number))
            continue
        if type(number) is float and not number.is_integer():
            raise ValueError(f"budgets[{name!r}] must be a whole number")
        try:
            setattr(message, name, int(number))
        except ValueError:
            raise ValueError(f"budgets[{name!r}] is out of range") from None
    return message


def _seq(value: object, name: str) -> list[Any] | tuple[Any, ...]:
    if (
        not isinstance(value, list | tuple)
        or type(value) not in (list, tuple)
        or not 1 <= len(value) <= _MAX_PIECES
    ):
        raise ValueError(f"{name} must be a list of 1 to {_MAX_PIECES} items")
    return value


def _int_list(value: Any, name: str) -> list[int]:
    items = _seq(value, name)
    if not all(type(i) is int and 0 <= i < 2**31 for i in items):
        raise ValueError(f"{name} must hold ints >= 0")
    return list(items)


def _span(value: Any, index: int) -> Span:
    if type(value) is dict:
        value = [value.get("doc_index"), value.get("start_char"), value.get("end_char")]
    if type(value) not in (list, tuple) or len(value) != 3 or not all(type(v) is int for v in value):
        raise ValueError(f"spans[{index}] must be [doc_index, start, end] (ints)")
    doc_index, start, end = value
    if not (0 <= doc_index < 2**31 and 0 <= start < end < 2**62):
        raise ValueError(f"spans[{index}] must have 0 <= start < end")
    return Span(doc_index=doc_index, start_char=start, end_char=end)


def queued_requests(tool: ToolAPI) -> ToolRequests:
    """The requests a step queued (for the executor; never reachable by step
    code, which could otherwise append requests past every limit)."""
    return tool._requests
