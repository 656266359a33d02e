"""The REST API shows the spec's strings for every status, mode and kind,
although gRPC carries them as enums (docs/api.md#grpc-services): a session
and its documents, Answerer and Runtime executions, a cancel, the live
events' types and the listing filters, over HTTP against a real appliance."""

from __future__ import annotations

from typing import Any

from tests.conformance.api.conftest import Appliance
from tests.conformance.api.test_spec_clauses import _answerer_with_subcall, _runtime


def _event_types(stream: str) -> list[str]:
    return [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]


def test_sessions_and_executions_show_the_spec_strings(appliance: Appliance) -> None:
    with appliance.client() as c:
        session = c.get(f"/v1/sessions/{appliance.session_id}").json()
        assert session["status"] == "READY"
        assert [d["ingest_status"] for d in session["docs"]] == ["INDEXED"]  # search on, STRICT
        view = _answerer_with_subcall(c, appliance)
        assert (view["mode"], view["output_mode"], view["status"]) == ("ANSWERER", "ANSWER", "COMPLETED")
        types = _event_types(c.get(f"/v1/executions/{view['execution_id']}/events").text)
        assert types[0] == "turn_started" and types[-1] == "status"
        assert {"root_reply", "step_result", "tool_requests", "tool_results"} <= set(types)
        runtime_id = _runtime(c, appliance)
        runtime: dict[str, Any] = c.get(f"/v1/executions/{runtime_id}").json()
        assert (runtime["mode"], runtime["status"]) == ("RUNTIME", "RUNNING")
        assert c.post(f"/v1/executions/{runtime_id}/cancel").json()["status"] == "CANCELLED"


def test_listing_filters_take_the_spec_strings_only(appliance: Appliance) -> None:
    with appliance.client() as c:
        runtime_id = _runtime(c, appliance)
        c.post(f"/v1/executions/{runtime_id}/cancel")
        listed = c.get("/v1/executions", params={"status": "CANCELLED", "page_size": 200}).json()
        assert runtime_id in [e["execution_id"] for e in listed["executions"]]
        assert {e["status"] for e in listed["executions"]} == {"CANCELLED"}
        ready = c.get("/v1/sessions", params={"status": "READY"}).json()["sessions"]
        assert appliance.session_id in [s["session_id"] for s in ready]
        for path, bad in (("/v1/executions", "cancelled"), ("/v1/executions", "EXECUTION_STATUS_CANCELLED"),
                          ("/v1/sessions", "SESSION_STATUS_READY"), ("/v1/sessions", "ready")):  # fmt: skip
            refused = c.get(path, params={"status": bad})
            assert refused.status_code == 422, (path, bad, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "VALIDATION_ERROR" and error["message"].startswith(
                "status must be one of "
            )
