"""Per-step runtime bookkeeping: counters, limits, the span log, stdout.

Limits end the step through `StepStop`, a BaseException the step cannot name
(BaseException is not a builtin here and bare `except:` is rewritten to
`except Exception:`), and the stop is sticky: once set, every later tick
raises again (GeneratorExit, equally unnameable), so a `finally:` block
cannot run on past a limit.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class StepStop(BaseException):
    """Ends the step: a limit (code set) or YIELD/FINAL (code empty)."""

    def __init__(self, code: str = "", message: str = "", details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


class YieldStop(StepStop):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class FinalStop(StepStop):
    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer


class StepRuntime:
    """Counters and logs of one step; the guards and views report into it."""

    def __init__(
        self,
        *,
        max_instructions: int,
        max_seconds: float,
        max_stdout_chars: int,
        max_spans: int,
    ) -> None:
        self.max_instructions = max_instructions
        self.max_stdout_chars = max_stdout_chars
        self.max_spans = max_spans
        self.deadline = time.monotonic() + max_seconds
        self.max_seconds = max_seconds
        self.instructions = 0
        self.stop: StepStop | None = None
        self.finished = False
        self._expire_lock = threading.Lock()
        self.spans: list[tuple[int, int, int, str]] = []
        self._stdout: list[str] = []
        self._stdout_chars = 0
        self.stdout_truncated = False
        self._paused_at: float | None = None

    # --- the instruction budget -------------------------------------------------

    def tick(self) -> None:
        if self.stop is not None:
            # Already stopped: a `finally:` or a suspended generator's cleanup
            # ends at once. GeneratorExit is as uncatchable as the stop (not a
            # builtin, bare except means Exception), and it lets the garbage
            # collector close a generator quietly; the executor reads the
            # stop from self.stop, not from what propagates.
            raise GeneratorExit
        self.instructions += 1
        if self.instructions > self.max_instructions:
            self.halt(
                StepStop(
                    "SANDBOX_LINE_LIMIT",
                    f"step exceeded {self.max_instructions} executed lines/iterations",
                    {"max_instructions": self.max_instructions},
                )
            )
        if not self.instructions & 0xFFF:
            self.check_deadline()

    def check_deadline(self) -> None:
        """STEP_TIMEOUT once the wall-clock budget is spent. Ticks check it every
        4096 instructions; slow host calls (regex) check it on every call."""
        if self.stop is not None:
            raise self.stop
        if time.monotonic() > self.deadline:
            self.halt(self._timeout())

    def expire(self) -> None:
        """Called by the watchdog thread at the deadline: the next tick ends the step.
        A step waiting on an inline call, or whose deadline moved by its waits,
        is looked at again later instead."""
        with self._expire_lock:
            if self.finished or self.stop is not None:
                return
            now = time.monotonic()
            if self._paused_at is not None or now < self.deadline:
                from rlm_rs.sandbox import _watchdog

                _watchdog.arm(max(self.deadline, now + 0.25), self)
                return
            self.stop = self._timeout()

    def pause(self) -> None:
        """The step starts waiting on an inline call: its wall clock stops."""
        with self._expire_lock:
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        """The wait is over: the deadline moves by the time waited."""
        with self._expire_lock:
            if self._paused_at is not None:
                self.deadline += time.monotonic() - self._paused_at
                self._paused_at = None

    def finish(self) -> None:
        """The step's code has returned: a late watchdog must not fail it."""
        with self._expire_lock:
            self.finished = True

    def _timeout(self) -> StepStop:
        return StepStop(
            "STEP_TIMEOUT",
            f"step exceeded {self.max_seconds:g} s of wall time",
            {"max_step_seconds": self.max_seconds},
        )

    def halt(self, stop: StepStop) -> None:
        if self.stop is None:
            self.stop = stop
        raise self.stop

    # --- span log -----------------------------------------------------------------

    def log_span(self, doc_index: int, start: int, end: int, tag: str | None) -> None:
        if self.stop is not None:
            raise self.stop
        if end <= start:
            return
        if len(self.spans) >= self.max_spans:
            self.halt(
                StepStop(
                    "BUDGET_EXCEEDED",
                    f"step read more than {self.max_spans} spans (max_spans_per_step)",
                    {"limit": "max_spans_per_step", "value": self.max_spans},
                )
            )
        self.spans.append((doc_index, start, end, tag or ""))

    # --- stdout -------------------------------------------------------------------

    def write(self, text: str) -> None:
        room = self.max_stdout_chars - self._stdout_chars
        if room <= 0:
            self.stdout_truncated = self.stdout_truncated or bool(text)
            return
        if len(text) > room:
            text = text[:room]
            self.stdout_truncated = True
        self._stdout.append(text)
        self._stdout_chars += len(text)

    def stdout(self) -> str:
        return "".join(self._stdout)
