"""Cross-tenant `raw_s3_uri` over real HTTP (gateway process -> control plane
process): another tenant's upload or parsed text, and internal keys, answer
POST /v1/sessions exactly like a key that does not exist."""

from __future__ import annotations

from typing import Any

from tests.integration.gateway.conftest import Stack


def _create(stack: Stack, key: str, uri: str) -> tuple[int, dict[str, Any]]:
    with stack.client(key) as client:
        resp = client.post(
            "/v1/sessions",
            json={"docs": [{"source_name": "x.txt", "mime_type": "text/plain", "raw_s3_uri": uri}]},
        )
    body = resp.json()
    if "error" in body:
        body["error"].pop("request_id")
    return resp.status_code, body


def test_other_tenants_objects_answer_like_missing_ones(stack: Stack) -> None:
    with stack.client() as owner:
        doc = owner.get(f"/v1/sessions/{stack.session_id}").json()["docs"][0]
    bucket = stack.raw_uri.split("/")[2]
    targets = {
        "t1_upload": stack.raw_uri,
        "t1_parsed_text": doc["text_s3_uri"],
        "t1_parsed_meta": doc["meta_s3_uri"],
        "t1_missing": f"s3://{bucket}/raw/t1/0000000000000000/never-uploaded.txt",
    }
    missing = _create(stack, stack.other_key, f"s3://{bucket}/raw/t2/0000000000000000/never-uploaded.txt")
    for name, uri in targets.items():
        assert _create(stack, stack.other_key, uri) == missing, name
    assert missing == (
        422,
        {
            "error": {
                "code": "VALIDATION_ERROR",
                "message": "docs[0].raw_s3_uri does not exist among this tenant's uploads",
                "details": {"doc": 0},
            }
        },
    ), missing
    # the owner may not name its own internal objects either
    assert _create(stack, stack.api_key, doc["text_s3_uri"]) == missing
    # and it may name its own upload
    assert _create(stack, stack.api_key, stack.raw_uri)[0] == 201
