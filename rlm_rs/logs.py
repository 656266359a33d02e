"""Structured logs for every RLM-RS process: one JSON object per line on stderr.

One pipeline for everything: structlog loggers and third-party stdlib loggers
(httpx, uvicorn, grpc, asyncio, warnings, uncaught exceptions) all end in the
root handler's `ProcessorFormatter`, which adds the bound context (request_id,
tenant_id, execution_id, turn_index, ...), redacts secrets and bounds sizes.
structlog is configured when this module is imported, so a logger created at
module level never sees structlog's default console renderer. It must never
render a frame's locals, write an API key or Bearer token, or write a value
without a size bound.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

import structlog
from structlog.tracebacks import ExceptionDictTransformer

# Size bounds: any one string value, any one container, nesting, a whole line.
MAX_VALUE_CHARS = 2000
MAX_ITEMS = 50
MAX_DEPTH = 8
MAX_LINE_CHARS = 32_000
MAX_TRACEBACK_FRAMES = 20

MAX_TRACEBACK_CHARS = 8000  # a field named "traceback" (plain-text frames, no locals)
T = TypeVar("T")

REDACTED = "[redacted]"
# Field names whose value is a secret whatever it holds (compared lowercased,
# with "-" read as "_"): authorization metadata, API keys, peppers, passwords.
_SECRET_FIELD = re.compile(
    r"(^|_)(authorization|api_?key|apikey|secret|password|passwd|pepper|cookie|set_cookie|credentials?|token)$"
)
# Secret shapes inside any string: RLM API keys keep their public 4-character
# prefix (the `key_prefix` of audit records); Bearer credentials and
# OpenAI-style keys lose everything after the scheme.
_SECRET_TEXT = (
    (re.compile(r"(rlm_key_[A-Za-z0-9_\-]{0,4})[A-Za-z0-9_\-]*"), r"\1" + "…" + REDACTED),
    (re.compile(r"(?i)\b(bearer)(\s+|%20)[^\s'\",;}\]]+"), r"\1 " + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-" + REDACTED),
)
_DROPPED_FIELDS = ("color_message",)  # uvicorn's ANSI copy of the message

_component = "rlm-rs"
_handler: logging.Handler | None = None


def scrub_text(text: str) -> str:
    """`text` with every API key and Bearer credential replaced."""
    if "rlm_key_" not in text and "sk-" not in text and "bearer" not in text.lower():
        return text
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _is_secret_field(name: str) -> bool:
    return bool(_SECRET_FIELD.search(name.lower().replace("-", "_")))


def _clip(text: str) -> str:
    # Clip before scrubbing (linear in the bound, not the input), then again
    # after: a key cut in half by the first clip still loses its tail.
    if len(text) > MAX_VALUE_CHARS + 64:
        text = f"{text[: MAX_VALUE_CHARS + 64]}…[{len(text) - MAX_VALUE_CHARS - 64} more chars]"
    text = scrub_text(text)
    if len(text) > MAX_VALUE_CHARS:
        text = f"{text[:MAX_VALUE_CHARS]}…[clipped]"
    return text


def bounded(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, size-bounded, secret-free copy of `value`."""
    if value is None or isinstance(value, bool | int | float):
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
            return f"<int of {value.bit_length()} bits>"  # str() of a huge int is quadratic
        return value
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if depth >= MAX_DEPTH:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return _bounded_mapping(value, depth)
    if isinstance(value, list | tuple | set | frozenset):
        items = value[:MAX_ITEMS] if isinstance(value, list | tuple) else list(value)[:MAX_ITEMS]
        out_list = [bounded(item, depth + 1) for item in items]
        if len(value) > MAX_ITEMS:
            out_list.append(f"… {len(value) - MAX_ITEMS} more items")
        return out_list
    return _described(value)


def _bounded_mapping(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    """The first MAX_ITEMS entries, keys clipped, secret-named fields redacted."""
    out: dict[str, Any] = {}
    for index, (key, item) in enumerate(value.items()):
        if index >= MAX_ITEMS:
            out["…"] = f"{len(value) - MAX_ITEMS} more items"
            break
        name = _clip(str(key)) if not isinstance(key, str) else _clip(key)
        out[name] = REDACTED if _is_secret_field(name) else bounded(item, depth + 1)
    return out


def _described(value: Any) -> str:
    """Any other object as clipped text: never a protobuf message's or a frame's contents."""
    if hasattr(value, "ByteSize") and hasattr(value, "DESCRIPTOR"):  # a protobuf message: never its text
        return f"<{type(value).__name__} {value.ByteSize()} bytes>"
    if isinstance(value, types.TracebackType | types.FrameType):
        return f"<{type(value).__name__}>"
    try:
        text = repr(value) if not isinstance(value, BaseException) else f"{type(value).__name__}: {value}"
    except Exception:  # a broken __repr__ must not break logging
        text = f"<{type(value).__name__}>"
    return _clip(text)


def _redact_and_bound(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    for name in _DROPPED_FIELDS:
        event_dict.pop(name, None)
    event_dict.setdefault("component", _component)
    out = {key: REDACTED if _is_secret_field(key) else bounded(value, 1) for key, value in event_dict.items()}
    if isinstance(event_dict.get("traceback"), str):
        text = scrub_text(event_dict["traceback"][: MAX_TRACEBACK_CHARS + 64])
        out["traceback"] = text[:MAX_TRACEBACK_CHARS]
    return out


def _render(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
    line = json.dumps(event_dict, sort_keys=True, ensure_ascii=False)
    if len(line) <= MAX_LINE_CHARS:
        return line
    kept = ("timestamp", "level", "component", "logger", "request_id", "tenant_id", "execution_id")
    keep: dict[str, Any] = {k: event_dict[k] for k in (*kept, "turn_index", "method") if k in event_dict}
    keep["event"] = str(event_dict.get("event", ""))[:200]
    keep["line_clipped_chars"] = len(line)
    return json.dumps(keep, sort_keys=True, ensure_ascii=False)


# Tracebacks as data: frames (file, line, function) and the exception's type
# and message; never locals (they hold request metadata, keys and documents).
_exceptions = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False, max_frames=MAX_TRACEBACK_FRAMES, use_rich=False)
)


def _formatter() -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _exceptions,
            _redact_and_bound,
            _render,
        ],
    )


def _install_handler(target: logging.Logger, level: int) -> None:
    global _handler
    if _handler is not None:
        for logger in (logging.getLogger(), logging.getLogger("rlm_rs")):
            logger.removeHandler(_handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter())
    target.addHandler(handler)
    target.setLevel(level)
    _handler = handler


_HTTP_CLIENTS = ("httpx", "httpx2", "httpcore", "httpcore2")


def configure_logging(level: str = "INFO", component: str = "rlm-rs") -> None:
    """Every log line of this process (ours and third-party) as JSON on stderr."""
    global _component
    _component = component
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    _install_handler(logging.getLogger(), numeric)
    logging.getLogger("rlm_rs").setLevel(logging.NOTSET)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "grpc", *_HTTP_CLIENTS, "asyncio"):
        noisy = logging.getLogger(name)
        noisy.handlers.clear()  # anything a library installed would bypass the pipeline
        noisy.propagate = True
    # The HTTP clients log a line per request at INFO: one per provider call, so
    # thousands for a sub-call fan-out (and ~6% of the control plane's CPU in
    # `bench workload`'s 5,000-call row). Provider calls are in our own metrics,
    # spans and events; the clients' warnings and errors still come through.
    for name in _HTTP_CLIENTS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_crash


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: types.TracebackType | None) -> None:
    get_logger().critical("uncaught_exception", exc_info=(kind, value, tb))


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else "?"
    get_logger().error(
        "thread_crashed", thread=thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def get_logger(**fields: Any) -> Any:
    """A lazy logger (safe at module level): it reads the configuration on first use."""
    return structlog.get_logger("rlm_rs", **fields)


@contextlib.contextmanager
def log_scope(**fields: Any) -> Iterator[None]:
    """A unit of work (an RPC, an HTTP request, an execution's loop) owns this
    thread's or task's log context while inside: it starts empty but for
    `fields`, and is emptied again on exit (pool threads are reused)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**fields)
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()


def start_log_scope(**fields: Any) -> None:
    """log_scope's entry, for code that cannot wrap its unit in a `with`."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**fields)


def end_log_scope() -> None:
    structlog.contextvars.clear_contextvars()


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Binds `fields` while inside and restores what was bound before on exit
    (a child execution run inside its parent's turn gives the ids back)."""
    before = structlog.contextvars.get_contextvars()
    saved = {k: before[k] for k in ("execution_id", "tenant_id", "turn_index", *fields) if k in before}
    structlog.contextvars.bind_contextvars(**fields)
    try:
        yield
    finally:
        structlog.contextvars.unbind_contextvars("execution_id", "tenant_id", "turn_index", *fields)
        structlog.contextvars.bind_contextvars(**saved)


def logged_execution(method: Callable[..., T]) -> Callable[..., T]:
    """For engine methods `(self, tenant_id, execution_id, ...)`: their lines
    carry both ids, and a parent's ids come back when a child's run returns."""

    @functools.wraps(method)
    def wrapper(self: Any, tenant_id: str, execution_id: str, *args: Any, **kwargs: Any) -> T:
        with log_context(tenant_id=tenant_id, execution_id=execution_id):
            return method(self, tenant_id, execution_id, *args, **kwargs)

    return wrapper


def bind_log_context(**fields: Any) -> None:
    """Adds `fields` to every later line of the current scope."""
    structlog.contextvars.bind_contextvars(**fields)


# Configured at import, before any module creates a logger: structlog hands
# every event to the stdlib logger "rlm_rs"; the formatter above renders it.
structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    wrapper_class=structlog.stdlib.BoundLogger,
    logger_factory=structlog.stdlib.LoggerFactory(),
    context_class=dict,
    cache_logger_on_first_use=True,
)
# Until a process calls configure_logging, our warnings and errors still go
# to stderr as JSON (never stdout: `rlm-rs bench ... --json` prints there).
if _handler is None:
    _install_handler(logging.getLogger("rlm_rs"), logging.WARNING)
