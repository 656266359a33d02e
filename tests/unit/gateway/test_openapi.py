"""The committed OpenAPI document is the app's; every operation declares the envelope."""

from __future__ import annotations

import json

from gateway.cli import OPENAPI_PATH, openapi_text


def test_committed_openapi_is_current() -> None:
    assert OPENAPI_PATH.read_text(encoding="utf-8") == openapi_text(), (
        "gateway/openapi.json is stale: run `uv run rlm-rs gateway openapi --output gateway/openapi.json`"
    )


def test_every_operation_declares_the_error_envelope() -> None:
    doc = json.loads(openapi_text())
    ops = [(p, meth, op) for p, item in doc["paths"].items() for meth, op in item.items()]
    # The spec's 13 operations (docs/api.md#rest-api) plus the trace viewer (GET /v1/executions/{id}/view),
    # the event stream (GET .../events), follow-ups (POST .../followups), uploads (POST /v1/uploads)
    # the listings (GET /v1/sessions, GET /v1/executions) and the viewer's index (GET /v1/view)
    assert len([p for p, _, _ in ops if p.startswith("/v1/")]) == 20
    for path, _method, op in ops:
        if path == "/health/live":
            continue
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert errors, path
        for resp in errors.values():
            ref = resp["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorEnvelope"), (path, ref)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
