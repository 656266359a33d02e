"""POST /v1/uploads over real HTTP (gateway process -> control plane process):
streamed in chunks, tenant-scoped, size and type checked, nothing left behind
on failure; the answer's raw_s3_uri makes a session that becomes READY."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.integration.gateway.conftest import UPLOAD_LIMIT, Stack, rlm, wait_until


def _raw_files(stack: Stack, tenant: str) -> set[str]:
    """Every file under the tenant's raw namespace, temporary files included."""
    folder = stack.data_dir / "blobs"
    return {str(p.relative_to(folder)) for p in folder.glob(f"*/raw/{tenant}/**/*") if p.is_file()}


def _envelope(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    error: dict[str, object] = resp.json()["error"]
    assert error["code"] == code and error["request_id"] == resp.headers["x-request-id"]
    return error


def test_an_upload_streams_past_the_message_limit_and_makes_a_ready_session(stack: Stack) -> None:
    # 1 MiB of text: four times RLM_MAX_REQUEST_BYTES, which is also the control
    # plane's largest gRPC message, so it can only arrive in chunks.
    line = b"The lighthouse at Harrow Point was first lit in 1873.\n"
    body = line * (1024 * 1024 // len(line) + 1)

    def pieces() -> Iterator[bytes]:  # no Content-Length: a chunked body
        for start in range(0, len(body), 50_000):
            yield body[start : start + 50_000]

    with stack.client() as client:
        resp = client.post(
            "/v1/uploads",
            params={"file_name": "light house.txt"},
            content=pieces(),
            headers={"content-type": "text/plain; charset=utf-8"},
        )
        assert resp.status_code == 201, resp.text
        upload = resp.json()
        assert upload["size_bytes"] == len(body) and upload["sha256"] == hashlib.sha256(body).hexdigest()
        assert upload["content_type"] == "text/plain" and upload["file_name"] == "light house.txt"
        assert upload["upload_id"].startswith("upl_")
        assert upload["raw_s3_uri"].endswith(f"/raw/t1/{upload['upload_id']}/light house.txt")
        created = client.post(
            "/v1/sessions",
            json={"docs": [{"source_name": "light.txt", "mime_type": "text/plain", "raw_s3_uri": upload["raw_s3_uri"]}]},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        rlm(stack.env, "ingest", "worker", "--once", "--data-dir", str(stack.data_dir))
        wait_until(lambda: client.get(f"/v1/sessions/{session_id}").json()["status"] == "READY", "READY")
        assert (
            client.get(f"/v1/sessions/{session_id}").json()["total_chars"] == len(body) - 1
        )  # canonical text: no final newline
    # another tenant cannot name it: the same answer as a key that was never written
    with stack.client(stack.other_key) as other:
        refused = other.post(
            "/v1/sessions",
            json={"docs": [{"source_name": "x.txt", "mime_type": "text/plain", "raw_s3_uri": upload["raw_s3_uri"]}]},
        )  # fmt: skip
    assert _envelope(refused, 422, "VALIDATION_ERROR")["message"] == (
        "docs[0].raw_s3_uri does not exist among this tenant's uploads"
    )


def test_the_content_type_may_come_from_the_file_name(stack: Stack) -> None:
    with stack.client(stack.other_key) as client:
        resp = client.post(
            "/v1/uploads",
            params={"file_name": "notes.md"},
            content=b"# Notes\n",
            headers={"content-type": "application/octet-stream"},
        )
    assert resp.status_code == 201, resp.text
    assert resp.json()["content_type"] == "text/markdown" and "/raw/t2/" in resp.json()["raw_s3_uri"]


def test_bad_uploads_are_envelopes_and_store_nothing(stack: Stack) -> None:
    before = _raw_files(stack, "t1")
    too_big = b"x" * (UPLOAD_LIMIT + 1)

    def chunked_too_big() -> Iterator[bytes]:
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start : start + 64 * 1024]

    with stack.client() as client:
        post = client.post
        big = _envelope(
            post("/v1/uploads", params={"file_name": "a.txt"}, content=too_big, headers={"content-type": "text/plain"}),
            413, "PAYLOAD_TOO_LARGE",
        )  # fmt: skip
        assert big["details"] == {"max_upload_bytes": UPLOAD_LIMIT}
        streamed = _envelope(
            post("/v1/uploads", params={"file_name": "a.txt"}, content=chunked_too_big(),
                 headers={"content-type": "text/plain"}),
            413, "PAYLOAD_TOO_LARGE",
        )  # fmt: skip
        assert streamed["details"] == {"max_upload_bytes": UPLOAD_LIMIT}
        exe = _envelope(
            post("/v1/uploads", params={"file_name": "a.exe"}, content=b"MZ\x90\x00",
                 headers={"content-type": "application/x-msdownload"}),
            415, "UNSUPPORTED_MEDIA_TYPE",
        )  # fmt: skip
        assert "application/pdf" in str(exe["details"])
        _envelope(
            post("/v1/uploads", params={"file_name": "a.pdf"}, content=b"<html>not a pdf</html>",
                 headers={"content-type": "application/pdf"}),
            422, "VALIDATION_ERROR",
        )  # fmt: skip
        _envelope(
            post("/v1/uploads", params={"file_name": "a.bin"}, content=b"x", headers={"content-type": ""}),
            415, "UNSUPPORTED_MEDIA_TYPE",
        )  # fmt: skip
        _envelope(
            post("/v1/uploads", content=b"x", headers={"content-type": "text/plain"}), 422, "VALIDATION_ERROR"
        )
        _envelope(
            post("/v1/uploads", params={"file_name": "empty.txt"}, content=b"", headers={"content-type": "text/plain"}),
            422, "VALIDATION_ERROR",
        )  # fmt: skip
    anonymous = httpx.post(
        f"{stack.base_url}/v1/uploads", params={"file_name": "a.txt"}, content=b"hello",
        headers={"content-type": "text/plain"},
    )  # fmt: skip
    _envelope(anonymous, 401, "UNAUTHORIZED")
    assert _raw_files(stack, "t1") == before


def test_a_body_cut_off_mid_way_stores_nothing(stack: Stack) -> None:
    """The caller promises 1 MiB, sends 300 KB and hangs up: the gateway ends
    the gRPC stream without its `last` chunk and the control plane discards
    what it had written (no object, no temporary file)."""
    before = _raw_files(stack, "t1")
    address = urlsplit(stack.base_url)
    head = (
        f"POST /v1/uploads?file_name=cut.txt HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Authorization: Bearer {stack.api_key}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {1024 * 1024}\r\n\r\n"
    ).encode()
    with socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(10):
            sock.sendall(b"y" * 30_000)
        time.sleep(0.5)  # the control plane has begun writing
        partial = _raw_files(stack, "t1") - before
    deadline = time.monotonic() + 10
    while _raw_files(stack, "t1") != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _raw_files(stack, "t1") == before, partial
    assert all(Path(name).name.startswith(".tmp-") for name in partial)  # only ever a temporary file
