"""Retries with backoff (tenacity) for the client's calls.

What is repeated (docs/client.md, "Retries"):
- RATE_LIMITED, every call: the server's admission refuses before anything
  runs or is written, so repeating cannot do anything twice. The wait is the
  server's `retry_after_seconds` (Retry-After), else exponential backoff.
- SERVICE_UNAVAILABLE (gRPC UNAVAILABLE) and a broken connection: only calls
  whose repetition changes nothing (`Op.idempotent`), because the request may
  have run; a connection that was never made is repeated for every call.
The server does not deduplicate by request id, so nothing else is repeated.
Retries stop after `max_attempts`, or at once when the next wait would pass
`max_elapsed_seconds`: the caller then gets the error, Retry-After included.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception

from rlm_rs.client.errors import RateLimitedError, RlmConnectionError, ServiceUnavailableError

log = logging.getLogger("rlm_rs.client")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryEvent:
    """A retry about to happen: which call, which attempt failed, how, and the wait."""

    call: str
    attempt: int
    error: BaseException
    sleep_seconds: float


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are repeated; `RetryPolicy(max_attempts=1)` turns retries off."""

    max_attempts: int = 5
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0
    max_elapsed_seconds: float = 60.0
    on_retry: Callable[[RetryEvent], None] | None = None

    def should_retry(self, error: BaseException, idempotent: bool) -> bool:
        if isinstance(error, RateLimitedError):
            return True
        if isinstance(error, ServiceUnavailableError):
            return idempotent
        if isinstance(error, RlmConnectionError):
            return idempotent or not error.sent
        return False

    def delay(self, attempt: int, error: BaseException | None) -> float:
        """Seconds before attempt `attempt + 1`: the server's Retry-After when it gave one."""
        if isinstance(error, RateLimitedError) and error.retry_after_seconds is not None:
            return error.retry_after_seconds + random.uniform(0, 0.1)
        backoff = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2.0 ** (attempt - 1))
        return backoff * random.uniform(0.5, 1.0)

    def _kwargs(self, call: str, idempotent: bool) -> dict[str, object]:
        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            return self.delay(state.attempt_number, error)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.max_attempts:
                return True
            elapsed = state.seconds_since_start or 0.0
            return elapsed + (state.upcoming_sleep or 0.0) > self.max_elapsed_seconds

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            assert error is not None
            sleep = state.upcoming_sleep or 0.0
            log.info("retrying %s after attempt %d (%s) in %.2fs", call, state.attempt_number, error, sleep)
            if self.on_retry is not None:
                self.on_retry(RetryEvent(call, state.attempt_number, error, sleep))

        return {
            "retry": retry_if_exception(lambda e: self.should_retry(e, idempotent)),
            "wait": wait,
            "stop": stop,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def call(self, name: str, idempotent: bool, fn: Callable[[], T]) -> T:
        return Retrying(**self._kwargs(name, idempotent))(fn)  # type: ignore[arg-type]

    async def acall(self, name: str, idempotent: bool, fn: Callable[[], Awaitable[T]]) -> T:
        return await AsyncRetrying(**self._kwargs(name, idempotent))(fn)  # type: ignore[arg-type]
