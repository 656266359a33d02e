"""Caller-supplied values checked against rlm_rs/limits.py before any work starts.

A Runtime caller's ResolveTools requests get the bounds the sandbox's tool API
(rlm_rs/sandbox/_tools.py) applies to a step's, and model names the bound the
gateway advertises, so a gRPC caller cannot pass what REST refuses. Every
failure is VALIDATION_ERROR naming the field; nothing here touches storage.
"""

from __future__ import annotations

from rlm_rs.errors import RlmError
from rlm_rs.limits import (
    MAX_BATCH_PROMPTS,
    MAX_MODEL_NAME_CHARS,
    MAX_QUESTION_CHARS,
    MAX_RLM_PIECES,
    MAX_SEARCH_K,
    MAX_SEARCH_QUERY_CHARS,
    MAX_SPAN_TAG_CHARS,
    MAX_SUBCALL_MAX_TOKENS,
    MAX_TEMPERATURE,
    MAX_TOOL_KEY_CHARS,
    MAX_TOOL_REQUESTS_PER_RESOLVE,
)
from rlm_rs.v1.common_pb2 import Models, RlmRequest, ToolRequests


def _refuse(field: str, rule: str) -> RlmError:
    return RlmError("VALIDATION_ERROR", f"{field} {rule}", {"field": field})


def check_models(models: Models, where: str = "models") -> None:
    """Model names within MAX_MODEL_NAME_CHARS."""
    for name in ("root_model", "sub_model"):
        if len(getattr(models, name)) > MAX_MODEL_NAME_CHARS:
            raise _refuse(f"{where}.{name}", f"must be at most {MAX_MODEL_NAME_CHARS} characters")


def _check_call(field: str, model_hint: str, max_tokens: int, temperature: float) -> None:
    if len(model_hint) > MAX_MODEL_NAME_CHARS:
        raise _refuse(f"{field}.model_hint", f"must be at most {MAX_MODEL_NAME_CHARS} characters")
    if not 0 <= max_tokens <= MAX_SUBCALL_MAX_TOKENS:
        raise _refuse(f"{field}.max_tokens", f"must be 0..{MAX_SUBCALL_MAX_TOKENS} (0: the default)")
    if not 0 <= temperature <= MAX_TEMPERATURE:  # NaN fails too
        raise _refuse(f"{field}.temperature", f"must be 0..{MAX_TEMPERATURE:g}")


def check_tool_requests(requests: ToolRequests) -> None:
    """Unique keys within MAX_TOOL_KEY_CHARS, at most MAX_TOOL_REQUESTS_PER_RESOLVE
    requests, and each request's arguments within the tool API's bounds."""
    _check_keys(requests)
    for index, llm in enumerate(requests.llm):
        _check_call(f"tool_requests.llm[{index}]", llm.model_hint, llm.max_tokens, llm.temperature)
    for index, batch in enumerate(requests.llm_batch):
        field = f"tool_requests.llm_batch[{index}]"
        if not 1 <= len(batch.prompts) <= MAX_BATCH_PROMPTS:
            raise _refuse(f"{field}.prompts", f"must hold 1..{MAX_BATCH_PROMPTS} prompts")
        _check_call(field, batch.model_hint, batch.max_tokens, batch.temperature)
    for index, search in enumerate(requests.search):
        field = f"tool_requests.search[{index}]"
        if len(search.query) > MAX_SEARCH_QUERY_CHARS:
            raise _refuse(f"{field}.query", f"must be at most {MAX_SEARCH_QUERY_CHARS} characters")
        if not 0 <= search.k <= MAX_SEARCH_K:
            raise _refuse(f"{field}.k", f"must be 0..{MAX_SEARCH_K} (0: the default)")
    for index, rlm in enumerate(requests.rlm):
        _check_rlm(f"tool_requests.rlm[{index}]", rlm)


def _check_keys(requests: ToolRequests) -> None:
    named: list[tuple[str, list[str]]] = [
        (name, [r.key for r in getattr(requests, name)]) for name in ("llm", "search", "llm_batch", "rlm")
    ]
    keys = [key for _, group in named for key in group]
    if not keys or any(not k for k in keys) or len(set(keys)) != len(keys):
        raise RlmError("VALIDATION_ERROR", "tool_requests need unique, non-empty keys")
    if len(keys) > MAX_TOOL_REQUESTS_PER_RESOLVE:
        raise _refuse("tool_requests", f"must hold at most {MAX_TOOL_REQUESTS_PER_RESOLVE} requests")
    for name, group in named:
        for index, key in enumerate(group):
            if len(key) > MAX_TOOL_KEY_CHARS:
                raise _refuse(
                    f"tool_requests.{name}[{index}].key", f"must be 1..{MAX_TOOL_KEY_CHARS} characters"
                )


def _check_rlm(field: str, rlm: RlmRequest) -> None:
    if len(rlm.question) > MAX_QUESTION_CHARS:
        raise _refuse(f"{field}.question", f"must be at most {MAX_QUESTION_CHARS} characters")
    if len(rlm.doc_indices) > MAX_RLM_PIECES or len(rlm.spans) > MAX_RLM_PIECES:
        raise _refuse(field, f"may name at most {MAX_RLM_PIECES} doc_indices or spans")
    if any(len(span.tag) > MAX_SPAN_TAG_CHARS for span in rlm.spans):
        raise _refuse(f"{field}.spans", f"tags must be at most {MAX_SPAN_TAG_CHARS} characters")
