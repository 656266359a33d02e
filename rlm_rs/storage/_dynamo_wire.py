"""DynamoDB's JSON protocol for the item store's hot path: one SigV4-signed
POST per call on a kept-alive connection per thread (signed by
botocore's SigV4Auth), the body decoded by
`json` (the attribute values are then `_aws.py`'s to convert).

Why: a boto3 client spends about two thirds of a request's CPU outside the
network (endpoint rules, event hooks, shape-driven serialising and
parsing, urllib3's pool): the control plane's CPU per turn was 3-5 times
the embedded back end's. Only the six item operations go through here
(GetItem, Query, UpdateItem, PutItem, DeleteItem, TransactWriteItems);
tables, waiters and S3 stay on boto3, whose resolved endpoint, region,
credentials (refreshed) and CA bundle this reuses. Errors are botocore
`ClientError`s of the same shape (Error.Code, CancellationReasons);
throttling, 5xx answers, a bad CRC32 and broken connections are retried
with exponential backoff like botocore's standard mode (5 attempts).
When a proxy applies to the endpoint, `wire_for` returns None and boto3
carries every call. Never: send a request unsigned or log its headers.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
import urllib.request
import zlib
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
MAX_ATTEMPTS = 5
RETRYABLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "TransactionInProgressException", "LimitExceededException", "InternalServerError", "ServiceUnavailable",
    "RequestTimeout", "RequestTimeoutException",
})  # fmt: skip
_BROKEN = (ConnectionError, http.client.HTTPException, TimeoutError, OSError)
_backoff = time.sleep  # between attempts (tests replace it)


class _Retry(Exception):
    """An answer worth another attempt (throttled, 5xx, a bad checksum)."""

    def __init__(self, error: ClientError | None = None) -> None:
        super().__init__("retry")
        self.error = error


class DynamoWire:
    """Signed DynamoDB JSON calls; thread-safe (one connection per thread)."""

    def __init__(
        self, endpoint_url: str, region: str, credentials: Any, verify: Any, timeouts: tuple[float, float]
    ) -> None:
        parts = urlsplit(endpoint_url)
        self.url = f"{parts.scheme}://{parts.netloc}/"
        self._host, self._https = parts.hostname or "", parts.scheme == "https"
        self._port = parts.port or (443 if self._https else 80)
        self.region = region
        host_header = parts.netloc if parts.port not in (None, 443 if self._https else 80) else self._host
        self._signing_url = f"{parts.scheme}://{host_header}/"  # the Host http.client sends
        self._credentials = credentials
        self._connect_timeout, self._read_timeout = timeouts
        self._ssl = self._context(verify) if self._https else None
        self._local = threading.local()

    @staticmethod
    def _context(verify: Any) -> ssl.SSLContext:
        if verify is False:  # the operator turned verification off for boto3 too
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """The decoded JSON answer of `operation`, or its ClientError."""
        body = json.dumps(params, separators=(",", ":")).encode("utf-8")
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self._once(operation, body)
            except _Retry as retry:
                if attempt == MAX_ATTEMPTS - 1 and retry.error is not None:
                    raise retry.error from None
            except _BROKEN:
                self._drop()
                if attempt == MAX_ATTEMPTS - 1:
                    raise
            _backoff(random.random() * min(20.0, 2.0**attempt))  # full jitter, as botocore's standard mode
        raise ClientError({"Error": {"Code": "RequestFailed", "Message": "no answer"}}, operation)

    def _once(self, operation: str, body: bytes) -> dict[str, Any]:
        status, headers, data = self._send(self._signed(operation, body), body)
        checksum = headers.get("x-amz-crc32")
        if checksum is not None and zlib.crc32(data) & 0xFFFFFFFF != int(checksum):
            raise _Retry()
        try:
            answer: dict[str, Any] = json.loads(data) if data else {}
        except ValueError:  # not DynamoDB's JSON: a proxy's or a failing server's page
            answer = {"__type": "InternalServerError" if status >= 500 else "SerializationException"}
            if status < 300:
                raise _Retry() from None
        if status < 300:
            return answer
        code = str(answer.get("__type", "")).rsplit("#", 1)[-1] or str(status)
        error: dict[str, Any] = {
            "Error": {"Code": code, "Message": str(answer.get("message") or answer.get("Message") or "")},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        if "CancellationReasons" in answer:
            error["CancellationReasons"] = answer["CancellationReasons"]
        failure = ClientError(error, operation)  # type: ignore[arg-type]
        if status >= 500 or code in RETRYABLE_CODES:
            raise _Retry(failure)
        raise failure

    def _signed(self, operation: str, body: bytes) -> dict[str, str]:
        """The request's headers, signed by botocore's SigV4 signer (about
        0.1 ms per request: signing is the library's job, not ours)."""
        credentials = self._credentials.get_frozen_credentials()
        headers = {"content-type": CONTENT_TYPE, "x-amz-target": TARGET_PREFIX + operation}
        request = AWSRequest(method="POST", url=self._signing_url, data=body, headers=headers)
        SigV4Auth(credentials, "dynamodb", self.region).add_auth(request)
        return dict(request.headers.items())

    def _send(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        connection = self._connection()
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.will_close:
            self._drop()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._https:
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._connect_timeout, context=self._ssl
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
            connection.connect()
            if connection.sock is not None:
                connection.sock.settimeout(self._read_timeout)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()


def wire_for(client: Any, connect_timeout: float, read_timeout: float) -> DynamoWire | None:
    """The lean path for a boto3 DynamoDB client (its endpoint, region,
    credentials and CA bundle), or None when a proxy applies or it has no
    credentials: boto3 then carries every call."""
    endpoint = str(client.meta.endpoint_url)
    host = urlsplit(endpoint).hostname or ""
    scheme = urlsplit(endpoint).scheme
    if urllib.request.getproxies().get(scheme) and not urllib.request.proxy_bypass(host):
        return None
    credentials = getattr(client, "_request_signer", None) and client._request_signer._credentials
    if credentials is None:
        return None
    verify = getattr(getattr(client, "_endpoint", None), "http_session", None)
    verify = getattr(verify, "_verify", True)
    return DynamoWire(endpoint, client.meta.region_name, credentials, verify, (connect_timeout, read_timeout))
