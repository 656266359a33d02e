"""GET /v1/sessions and GET /v1/executions over real HTTP: the caller's own,
newest first, paged with opaque cursors; bad filters and cursors are envelope
errors; another tenant's session or cursor shows nothing of the owner's."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.gateway.conftest import Stack, rlm


def _key(stack: Stack, tenant: str) -> str:
    return (
        rlm(stack.env, "keys", "create", "--tenant", tenant, "--data-dir", str(stack.data_dir))
        .strip()
        .splitlines()[-1]
    )


def _session(client: httpx.Client, text: str) -> str:
    upload = client.post("/v1/uploads", params={"file_name": "n.txt"}, content=text.encode(),
                         headers={"content-type": "text/plain"})  # fmt: skip
    assert upload.status_code == 201, upload.text
    doc = {"source_name": "n.txt", "mime_type": "text/plain", "raw_s3_uri": upload.json()["raw_s3_uri"]}
    created = client.post("/v1/sessions", json={"docs": [doc]})
    assert created.status_code == 201, created.text
    return str(created.json()["session_id"])


def _error(resp: httpx.Response) -> tuple[int, str]:
    body: dict[str, Any] = resp.json()
    return resp.status_code, str(body["error"]["code"])


def test_listings_are_newest_first_paged_and_per_tenant(stack: Stack) -> None:
    mine = stack.client(_key(stack, "lister-a"))
    theirs = stack.client(_key(stack, "lister-b"))
    with mine, theirs:
        ids = [_session(mine, f"text {i}") for i in range(3)]
        other = _session(theirs, "theirs")
        first = mine.get("/v1/sessions", params={"page_size": 2}).json()
        assert [s["session_id"] for s in first["sessions"]] == [ids[2], ids[1]] and first["next_page_token"]
        rest = mine.get(
            "/v1/sessions", params={"page_size": 2, "page_token": first["next_page_token"]}
        ).json()
        assert [s["session_id"] for s in rest["sessions"]] == [ids[0]] and rest["next_page_token"] == ""
        # another tenant's cursor only ever pages through the caller's own records
        borrowed = theirs.get("/v1/sessions", params={"page_size": 2, "page_token": first["next_page_token"]})
        assert {s["session_id"] for s in borrowed.json()["sessions"]} <= {other}
        assert [s["session_id"] for s in theirs.get("/v1/sessions").json()["sessions"]] == [other]

        runtime = mine.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={})
        assert runtime.status_code == 404  # the stack's session is t1's, not lister-a's
        listed = mine.get("/v1/executions", params={"session_id": ids[0]})
        assert listed.status_code == 200 and listed.json() == {"executions": [], "next_page_token": ""}
        assert _error(theirs.get("/v1/executions", params={"session_id": ids[0]})) == (
            404,
            "SESSION_NOT_FOUND",
        )
        for params in ({"status": "ready"}, {"page_token": "not-a-cursor"}, {"page_size": 201},
                       {"page_token": first["next_page_token"], "status": "READY"}):  # fmt: skip
            assert _error(mine.get("/v1/sessions", params=params)) == (422, "VALIDATION_ERROR"), params
        assert _error(mine.get("/v1/executions", params={"status": "DONE"})) == (422, "VALIDATION_ERROR")
        assert _error(httpx.get(f"{stack.base_url}/v1/sessions")) == (401, "UNAUTHORIZED")


def test_executions_are_listed_newest_first_with_filters(stack: Stack) -> None:
    with stack.client() as client:
        started = []
        for _ in range(2):
            resp = client.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={})
            assert resp.status_code == 201, resp.text
            started.append(resp.json()["execution_id"])
        client.post(f"/v1/executions/{started[0]}/cancel")
        listed = client.get("/v1/executions", params={"session_id": stack.session_id, "page_size": 2}).json()
        assert [e["execution_id"] for e in listed["executions"]] == [started[1], started[0]]
        assert all("children" not in e or e["children"] == [] for e in listed["executions"])
        cancelled = client.get(
            "/v1/executions", params={"session_id": stack.session_id, "status": "CANCELLED"}
        )
        assert started[0] in [e["execution_id"] for e in cancelled.json()["executions"]]
        assert started[1] not in [e["execution_id"] for e in cancelled.json()["executions"]]
        client.post(f"/v1/executions/{started[1]}/cancel")
