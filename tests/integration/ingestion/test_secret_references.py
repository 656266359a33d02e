"""Secret references resolved through AWS Secrets Manager (boto3 against
moto's server over real HTTP): the parser service's bearer token
(PARSER_SERVICE_AUTH_SECRET_ARN) and the model provider's key
(LLM_PROVIDER_SECRET_ARN). The parser service refuses a caller without the
token before it reads or writes anything; the worker sends it; no secret
value reaches a log line or an error."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from rlm_rs.ingestion.service import create_app
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.providers.base import CallContext, ProviderError
from rlm_rs.providers.openai_provider import OpenAIProvider
from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.secrets import SecretError, parser_auth_token, provider_api_key
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from tests.integration.ingestion.conftest import register_session, serve, statuses

PARSER_TOKEN = "parser-token-7f3a9c2e51d04b8b"
PROVIDER_KEY = "sk-test-provider-key-0c1d2e3f4a5b"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        os.environ.setdefault(name, value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def arns(moto_endpoint: str) -> dict[str, str]:
    client: Any = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_endpoint)
    parser = client.create_secret(Name="rlm/parser-auth", SecretString=f'{{"token": "{PARSER_TOKEN}"}}')
    provider = client.create_secret(Name="rlm/provider-key", SecretString=PROVIDER_KEY)
    return {"parser": parser["ARN"], "provider": provider["ARN"]}


def _with_secrets(settings: Settings, moto_endpoint: str, **update: Any) -> Settings:
    return settings.model_copy(
        update={"aws_endpoint_url": moto_endpoint, "aws_region": "us-east-1", **update}
    )


def test_the_parser_service_answers_only_holders_of_its_secret(
    storage: Storage, settings: Settings, moto_endpoint: str, arns: dict[str, str],
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    secured = _with_secrets(settings, moto_endpoint, parser_service_auth_secret_arn=arns["parser"])
    token = parser_auth_token(secured)
    assert token is not None and token.get_secret_value() == PARSER_TOKEN
    storage.blobs.put("raw/t9/a.txt", b"hello world")
    body = {"request_id": "r1", "source": {"s3_uri": storage.blobs.uri("raw/t9/a.txt")},
            "output": {"s3_prefix": "parsed/t9/s9/d9"}}  # fmt: skip
    caplog.set_level(logging.DEBUG)
    with serve(create_app(storage.blobs, token)) as url:
        attempts = {
            "none": {},
            "wrong": {"authorization": "Bearer parser-token-guess"},
            "not bearer": {"authorization": PARSER_TOKEN},
        }
        for name, headers in attempts.items():
            refused = httpx.post(f"{url}/parse", json=body, headers=headers)
            assert refused.status_code == 401, name
            assert refused.json()["error"]["code"] == "UNAUTHORIZED"
        assert storage.blobs.head("parsed/t9/s9/d9/text.txt") is None  # stopped before any parse
        assert httpx.get(f"{url}/health/live").status_code == 200
        # the worker holds the secret: it parses through the service
        register_session(storage, [("notes.txt", b"some notes", "text/plain")])
        remote = secured.model_copy(update={"parser_service_url": url})
        assert IngestionWorker(storage, remote).run_once() == 1
        assert statuses(storage) == ["PARSED"]
        # ...and without it, the same worker's document fails (the service refused it)
        register_session(storage, [("more.txt", b"more notes", "text/plain")], session_id="s2")
        anonymous = settings.model_copy(update={"parser_service_url": url})
        IngestionWorker(storage, anonymous).run_once()
        assert statuses(storage, "s2") == ["FAILED"]
    output = caplog.text + "".join(capsys.readouterr())
    assert PARSER_TOKEN not in output


def test_the_provider_key_comes_from_its_secret(
    settings: Settings, moto_endpoint: str, arns: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    context = CallContext(role="root")
    with OpenAICompatibleServer(lambda messages: "hello") as model:
        model.required_api_key = PROVIDER_KEY
        base = settings.model_copy(update={"openai_base_url": model.base_url, "llm_max_retries": 0})
        secured = _with_secrets(base, moto_endpoint, llm_provider_secret_arn=arns["provider"])
        assert provider_api_key(secured) is not None
        answer = OpenAIProvider(secured).complete(
            "gpt-4o", [{"role": "user", "content": "hi"}], max_tokens=10, temperature=0, context=context
        )
        assert answer.text == "hello"
        with pytest.raises(ProviderError):  # the environment's key is not the secret's
            OpenAIProvider(base.model_copy(update={"openai_api_key": None})).complete(
                "gpt-4o", [{"role": "user", "content": "hi"}], max_tokens=10, temperature=0, context=context
            )
    assert PROVIDER_KEY not in caplog.text


def test_an_unresolvable_reference_names_it_and_no_value(
    settings: Settings, moto_endpoint: str, arns: dict[str, str]
) -> None:
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rlm/none-AbCdEf"
    with pytest.raises(SecretError, match="ResourceNotFoundException") as caught:
        parser_auth_token(_with_secrets(settings, moto_endpoint, parser_service_auth_secret_arn=missing))
    assert missing in str(caught.value)
    client: Any = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_endpoint)
    two = client.create_secret(
        Name="rlm/two-fields", SecretString='{"a": "first-value", "b": "second-value"}'
    )
    with pytest.raises(SecretError) as ambiguous:
        parser_auth_token(_with_secrets(settings, moto_endpoint, parser_service_auth_secret_arn=two["ARN"]))
    assert "first-value" not in str(ambiguous.value) and "second-value" not in str(ambiguous.value)
