"""The lean DynamoDB path (rlm_rs/storage/_dynamo_wire.py) against a local
HTTP server that records what reaches it: the request on the wire carries
exactly what SigV4 signed (re-signed here by botocore from the captured
request), errors arrive as botocore ClientErrors of boto3's shape, and
throttling, 5xx answers and a bad CRC32 are retried, a condition failure
never."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from rlm_rs.storage import _dynamo_wire
from rlm_rs.storage._dynamo_wire import DynamoWire

Answer = tuple[int, dict[str, Any] | bytes, bool]  # status, JSON body (or raw bytes), a wrong CRC32


class _Server:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.close_silently = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status, answer, bad_crc = server.answers.pop(0) if server.answers else (200, {}, False)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amz-crc32", str((zlib.crc32(data) + bad_crc) & 0xFFFFFFFF))
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = server.close_silently

            def log_message(self, *_: Any) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    monkeypatch.setattr(_dynamo_wire, "_backoff", lambda _: None)  # no waits between attempts
    running = _Server()
    thread = threading.Thread(target=running.http.serve_forever, daemon=True)
    thread.start()
    yield running
    running.http.shutdown()
    thread.join()


CREDENTIALS = Credentials("AKIDEXAMPLE", "secret", "token")


def _wire(server: _Server) -> DynamoWire:
    return DynamoWire(server.url, "eu-west-1", CREDENTIALS, True, (2.0, 5.0))


def test_the_request_on_the_wire_is_what_sigv4_signed(server: _Server) -> None:
    server.answers.append((200, {"Item": {"PK": {"S": "a"}}}, False))
    params = {"TableName": "t", "Key": {"PK": {"S": "a"}, "SK": {"S": "b"}}, "ConsistentRead": True}
    assert _wire(server).call("GetItem", params) == {"Item": {"PK": {"S": "a"}}}
    (headers, body), = server.seen  # fmt: skip
    assert json.loads(body) == params and headers["x-amz-target"] == "DynamoDB_20120810.GetItem"
    assert headers["x-amz-security-token"] == "token"
    again = AWSRequest(method="POST", url=server.url + "/", data=body, headers={
        "Content-Type": headers["content-type"], "X-Amz-Target": headers["x-amz-target"],
        "X-Amz-Date": headers["x-amz-date"], "X-Amz-Security-Token": headers["x-amz-security-token"],
    })  # fmt: skip
    again.context["timestamp"] = headers["x-amz-date"]  # botocore signs the captured request as it came
    signer = SigV4Auth(CREDENTIALS, "dynamodb", "eu-west-1")
    signature = signer.signature(signer.string_to_sign(again, signer.canonical_request(again)), again)
    scope = f"{headers['x-amz-date'][:8]}/eu-west-1/dynamodb/aws4_request"
    assert headers["authorization"] == (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, "
        f"SignedHeaders={';'.join(signer.signed_headers(signer.headers_to_sign(again)).split(';'))}, "
        f"Signature={signature}"
    )
    assert headers["host"] == server.url.split("//")[1]  # the host it signed is the one it sent


def test_errors_keep_boto3s_shape_and_a_failed_condition_is_not_retried(server: _Server) -> None:
    reasons = [
        {"Code": "None"},
        {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"},
    ]
    server.answers += [
        (400, {"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException", "message": "no"}, False),
        (400, {"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
               "CancellationReasons": reasons}, False),
    ]  # fmt: skip
    with pytest.raises(ClientError) as failed:
        _wire(server).call("UpdateItem", {"TableName": "t"})
    assert failed.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    with pytest.raises(ClientError) as cancelled:
        _wire(server).call("TransactWriteItems", {"TransactItems": []})
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert cancelled.value.response.get("CancellationReasons") == reasons
    assert len(server.seen) == 2  # one attempt each


def test_throttling_5xx_and_a_bad_checksum_are_retried(server: _Server) -> None:
    throttled = {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}
    page = b"<!doctype html><title>500 Internal Server Error</title>"  # a crashed server's page, not JSON
    server.answers += [
        (400, throttled, False),
        (500, page, False),
        (200, {}, True),
        (200, {"Count": 1}, False),
    ]
    assert _wire(server).call("Query", {"TableName": "t"}) == {"Count": 1}
    assert len(server.seen) == 4
    server.answers += [(400, throttled, False)] * _dynamo_wire.MAX_ATTEMPTS
    with pytest.raises(ClientError) as exhausted:
        _wire(server).call("Query", {"TableName": "t"})
    assert exhausted.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert len(server.seen) == 4 + _dynamo_wire.MAX_ATTEMPTS
    server.answers += [(500, page, False)] * _dynamo_wire.MAX_ATTEMPTS
    with pytest.raises(ClientError) as crashed:
        _wire(server).call("TransactWriteItems", {})
    assert crashed.value.response["Error"]["Code"] == "InternalServerError"


def test_a_kept_alive_connection_the_server_dropped_is_replaced(server: _Server) -> None:
    server.close_silently = True  # as an idle timeout does: no "Connection: close" first
    wire = _wire(server)
    assert wire.call("GetItem", {}) == {} and wire.call("GetItem", {}) == {}
    assert len(server.seen) == 2  # the second call found its socket closed and reconnected
