"""The `openai` provider: the official SDK, any OpenAI-compatible endpoint.

OPENAI_BASE_URL points it at vLLM, llama.cpp server, Ollama or a test server;
timeout and retries come from settings (the SDK retries 429/5xx/connection
errors with backoff). Usage tokens are read from the response.
"""

from __future__ import annotations

from typing import Any

import openai

from rlm_rs.providers.base import CallContext, Completion, ProviderError
from rlm_rs.secrets import provider_api_key
from rlm_rs.settings import Settings


class OpenAIProvider:
    name = "openai"

    def __init__(self, settings: Settings) -> None:
        secret = provider_api_key(settings)  # LLM_PROVIDER_SECRET_ARN or OPENAI_API_KEY
        key = secret.get_secret_value() if secret else "unused"
        self.client = openai.OpenAI(
            api_key=key,
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
        )

    def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        context: CallContext,
    ) -> Completion:
        try:
            response = self.client.chat.completions.create(
                model=model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=temperature,
            )
        except openai.APIStatusError as exc:
            raise ProviderError(
                f"provider returned HTTP {exc.status_code}",
                retryable=exc.status_code >= 500 or exc.status_code == 429,
                status=exc.status_code,
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ProviderError(f"provider unreachable: {type(exc).__name__}", retryable=True) from None
        except openai.OpenAIError as exc:
            raise ProviderError(f"provider error: {type(exc).__name__}") from None
        if not response.choices or response.choices[0].message.content is None:
            raise ProviderError("provider returned no message content")
        usage: Any = response.usage
        return Completion(
            text=response.choices[0].message.content,
            model=response.model or model,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            raw={"id": response.id, "finish_reason": response.choices[0].finish_reason},
        )
