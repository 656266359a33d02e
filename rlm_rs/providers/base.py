"""The provider interface and the factory that picks one from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rlm_rs.settings import Settings


@dataclass
class Completion:
    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """A provider call failed after retries; `retryable` tells what kind."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class CallContext:
    """Who is asking: lets the scripted provider answer per execution and turn."""

    role: str  # "root" or "sub"
    question: str = ""
    turn_index: int = 0
    key: str = ""


class Provider(Protocol):
    name: str

    def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        context: CallContext,
    ) -> Completion: ...


def make_provider(settings: Settings) -> Provider:
    if settings.llm_provider == "openai":
        from rlm_rs.providers.openai_provider import OpenAIProvider

        return OpenAIProvider(settings)
    if settings.llm_provider == "scripted":
        from rlm_rs.providers.scripted import ScriptedProvider

        return ScriptedProvider.from_settings(settings)
    raise ValueError(f"unknown LLM_PROVIDER {settings.llm_provider!r}")
