"""Every field a REST body carries reaches the control plane, and a field the
API does not define is refused by name, against the real gateway and control
plane (tests/unit/gateway/test_proto_parity.py checks the models against the
proto messages; this checks the behaviour they give)."""

from __future__ import annotations

import httpx

from tests.integration.gateway.conftest import Stack


def _runtime(c: httpx.Client, stack: Stack) -> str:
    created = c.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={})
    assert created.status_code == 201, created.text
    return str(created.json()["execution_id"])


def test_resolve_tools_resolves_an_llm_batch(stack: Stack) -> None:
    """POST .../tools/resolve once dropped `llm_batch` (the model lacked it)."""
    with stack.client() as c:
        eid = _runtime(c, stack)
        body = {"tool_requests": {"llm_batch": [{"key": "b", "prompts": ["summarize one", "summarize two"]}]}}
        resolved = c.post(f"/v1/executions/{eid}/tools/resolve", json=body)
        assert resolved.status_code == 200, resolved.text
        out = resolved.json()
        assert out["statuses"] == {"b": "resolved"}
        assert [r["text"] for r in out["tool_results"]["llm_batch"]["b"]["results"]] == ["a summary"] * 2
        consumed = c.get(f"/v1/executions/{eid}").json()["budgets_consumed"]
        assert consumed["llm_subcalls"] == 2  # each prompt counts
        c.post(f"/v1/executions/{eid}/cancel")


def test_an_unknown_field_is_refused_by_name_and_nothing_runs(stack: Stack) -> None:
    """A typo (`resolve_tool`) was silently ignored: the step ran without it."""
    with stack.client() as c:
        eid = _runtime(c, stack)
        resp = c.post(
            f"/v1/executions/{eid}/steps", json={"code": "print(1)", "options": {"resolve_tool": True}}
        )
        assert resp.status_code == 422, resp.text
        err = resp.json()["error"]
        assert err["code"] == "VALIDATION_ERROR"
        assert "body.options.resolve_tool" in err["message"]
        assert {tuple(e["loc"]) for e in err["details"]["errors"]} == {("body", "options", "resolve_tool")}
        assert c.get(f"/v1/executions/{eid}/steps").json()["steps"] == []  # refused before the control plane
        c.post(f"/v1/executions/{eid}/cancel")


def test_an_unknown_budget_is_refused_not_ignored(stack: Stack) -> None:
    with stack.client() as c:
        resp = c.post(
            f"/v1/sessions/{stack.session_id}/executions/runtime", json={"budgets": {"max_turn": 3}}
        )
        assert resp.status_code == 422, resp.text
        assert "body.budgets.max_turn" in resp.json()["error"]["message"]
