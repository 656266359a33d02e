"""Budgets over REST against the real gateway and control plane: every budget
can be set on an execution and in a session's budgets_default and comes back
in `budgets_effective` as a JSON number; a budget above the sandbox pool's
ceiling (or the service's) is refused with 422 naming budget and ceiling."""

from __future__ import annotations

from typing import Any

import httpx

from rlm_rs.domain import BUDGETS
from tests.integration.gateway.conftest import Stack, rlm, wait_until

WANTED: dict[str, Any] = {
    name: field.unit(field.default / 2) if field.default else field.unit(1) for name, field in BUDGETS.items()
}


def _effective(c: httpx.Client, execution_id: str) -> dict[str, Any]:
    view = c.get(f"/v1/executions/{execution_id}")
    assert view.status_code == 200, view.text
    return dict(view.json()["budgets_effective"])


def test_every_budget_through_an_execution_and_a_sessions_defaults(stack: Stack) -> None:
    with stack.client() as c:
        created = c.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={"budgets": WANTED})
        assert created.status_code == 201, created.text
        effective = _effective(c, created.json()["execution_id"])
        assert effective == WANTED
        assert all(type(effective[name]) is type(value) for name, value in WANTED.items())  # no int64 strings
        c.post(f"/v1/executions/{created.json()['execution_id']}/cancel")

        doc = {"source_name": "report.txt", "mime_type": "text/plain", "raw_s3_uri": stack.raw_uri}
        session = c.post("/v1/sessions", json={"docs": [doc], "budgets_default": WANTED})
        assert session.status_code == 201, session.text
        session_id = session.json()["session_id"]
        rlm(stack.env, "ingest", "worker", "--once", "--data-dir", str(stack.data_dir))
        wait_until(lambda: c.get(f"/v1/sessions/{session_id}").json()["status"] == "READY", "READY")
        inherited = c.post(f"/v1/sessions/{session_id}/executions/runtime", json={})
        assert inherited.status_code == 201, inherited.text
        assert _effective(c, inherited.json()["execution_id"]) == WANTED
        c.post(f"/v1/executions/{inherited.json()['execution_id']}/cancel")


def test_a_budget_above_the_pools_ceiling_is_refused_naming_budget_and_ceiling(stack: Stack) -> None:
    over = {"max_step_seconds": 60}  # under the service's 300, over the pool's 30
    doc = {"source_name": "report.txt", "mime_type": "text/plain", "raw_s3_uri": stack.raw_uri}
    with stack.client() as c:
        for path, body in (
            (f"/v1/sessions/{stack.session_id}/executions/runtime", {"budgets": over}),
            (f"/v1/sessions/{stack.session_id}/executions", {"question": "q", "budgets": over}),
            ("/v1/sessions", {"docs": [doc], "budgets_default": over}),
        ):
            refused = c.post(path, json=body)
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "VALIDATION_ERROR"
            assert "max_step_seconds" in error["message"] and "ceiling 30" in error["message"]
            assert error["details"]["budget"] == "max_step_seconds"
            assert float(error["details"]["ceiling"]) == 30.0


def test_a_budget_above_the_services_ceiling_is_refused_by_name(stack: Stack) -> None:
    with stack.client() as c:
        refused = c.post(
            f"/v1/sessions/{stack.session_id}/executions/runtime",
            json={
                "budgets": {
                    "max_tool_requests_per_step": int(BUDGETS["max_tool_requests_per_step"].ceiling) + 1
                }
            },
        )
        assert refused.status_code == 422, refused.text
        assert "body.budgets.max_tool_requests_per_step" in refused.json()["error"]["message"]
