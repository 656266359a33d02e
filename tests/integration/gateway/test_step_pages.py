"""GET /v1/executions/{id}/steps pages (page_size, page_token ->
next_page_token) through the real gateway and control plane; a token the
service never issued is a 422 envelope, not a 500."""

from __future__ import annotations

from tests.integration.gateway.conftest import Stack


def test_steps_page_through_the_gateway(stack: Stack) -> None:
    with stack.client() as c:
        eid = c.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={}).json()["execution_id"]
        for n in range(3):
            assert c.post(f"/v1/executions/{eid}/steps", json={"code": f"print({n})"}).status_code == 200
        first = c.get(f"/v1/executions/{eid}/steps", params={"page_size": 2}).json()
        assert [s["stdout"].strip() for s in first["steps"]] == ["0", "1"] and first["next_page_token"] == "2"
        rest = c.get(
            f"/v1/executions/{eid}/steps", params={"page_size": 2, "page_token": first["next_page_token"]}
        ).json()
        assert [s["turn_index"] for s in rest["steps"]] == [2] and rest["next_page_token"] == ""
        everything = c.get(f"/v1/executions/{eid}/steps").json()
        assert len(everything["steps"]) == 3 and everything["next_page_token"] == ""
        for token in ("²", "-1", "abc"):
            bad = c.get(f"/v1/executions/{eid}/steps", params={"page_token": token})
            assert bad.status_code == 422, bad.text
            assert bad.json()["error"]["code"] == "VALIDATION_ERROR"
