"""A local OpenAI-compatible HTTP server for tests and benchmarks.

Implements POST /v1/chat/completions (with usage) on 127.0.0.1, answering
from a `reply(messages) -> str` function, and GET /v1/models (the readiness
probe's request) listing `models`; can be told to fail with a status or to
stall. Real HTTP, so the real `openai` SDK is what gets exercised.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when a fan-out opens
    # dozens at once (APIConnectionError in the client).
    request_queue_size = 256
    owner: OpenAICompatibleServer  # what the handlers answer from


class _Handler(BaseHTTPRequestHandler):
    """GET /v1/models and POST /v1/chat/completions, answered from the server's owner."""

    server: _Server

    def log_message(self, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        server = self.server.owner
        if not self.path.endswith("/models"):
            return self._send(404, {"error": {"message": "not found"}})
        server.model_list_requests += 1
        if server.delay_seconds:
            time.sleep(server.delay_seconds)
        if server.fail_status:
            return self._send(server.fail_status, {"error": {"message": "injected"}})
        listed = [{"id": m, "object": "model", "owned_by": "test"} for m in server.models]
        self._send(200, {"object": "list", "data": listed})

    def do_POST(self) -> None:
        server = self.server.owner
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        server.requests.append(body)
        if server.delay_seconds:
            time.sleep(server.delay_seconds)
        if not self.path.endswith("/chat/completions"):
            return self._send(404, {"error": {"message": "not found"}})
        refused = server.refusal(self.headers.get("authorization"))
        if refused:
            return self._send(refused, {"error": {"message": f"refused ({refused})"}})
        messages = body.get("messages", [])
        try:
            text = server.answer(str(body.get("model", "")), messages)
        except Exception as exc:  # a reply function may fail on purpose: HTTP 500
            return self._send(500, {"error": {"message": f"reply failed: {type(exc).__name__}"}})
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
        self._send(200, {
            "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
            "created": 0, "model": body.get("model", "test-model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_words + len(text.split())},
        })  # fmt: skip

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class OpenAICompatibleServer:
    def __init__(
        self,
        reply: Callable[[list[dict[str, str]]], str],
        models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini", "test-model"),
    ) -> None:
        self.reply = reply
        # when set, called instead of `reply` with the request's model too
        self.reply_with_model: Callable[[str, list[dict[str, str]]], str] | None = None
        self.models = models
        self.model_list_requests = 0  # GET /models (not in `requests`: those are completions)
        self.requests: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        self.delay_seconds = 0.0
        self.required_api_key: str | None = None  # when set, other bearer tokens get HTTP 401
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, model: str, messages: list[dict[str, str]]) -> str:
        if self.reply_with_model is not None:
            return self.reply_with_model(model, messages)
        return self.reply(messages)

    def refusal(self, authorization: str | None) -> int | None:
        """The HTTP status a completion request gets instead of an answer, if any."""
        if self.required_api_key is not None and authorization != f"Bearer {self.required_api_key}":
            return 401
        return self.fail_status

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> OpenAICompatibleServer:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
