"""Secret references: a setting that names an AWS Secrets Manager secret
(`PARSER_SERVICE_AUTH_SECRET_ARN`, `LLM_PROVIDER_SECRET_ARN`) instead of
holding the value (docs/deployment.md, "Secrets").

`resolve_secret` reads the secret once per process through boto3 (region
`AWS_REGION`, endpoint `AWS_ENDPOINT_URL`) and returns it as a SecretStr.
The secret is either a plain string or a JSON object; of an object, the
named field is used (or its only field). It must never log, print or put
into an error the secret's value: only the reference and a reason.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from pydantic import SecretStr

from rlm_rs.settings import Settings


class SecretError(RuntimeError):
    """A secret reference that could not be resolved; the message names the
    reference and the reason, never a value."""


_cache: dict[tuple[str, str, str | None, str], SecretStr] = {}
_lock = threading.Lock()


def _fetch(settings: Settings, arn: str) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client: Any = boto3.client(
        "secretsmanager", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url
    )
    try:
        answer = client.get_secret_value(SecretId=arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise SecretError(f"secret {arn!r} could not be read: {code}") from None
    except BotoCoreError as exc:
        raise SecretError(f"secret {arn!r} could not be read: {type(exc).__name__}") from None
    text = answer.get("SecretString")
    if not isinstance(text, str) or not text:
        raise SecretError(f"secret {arn!r} has no SecretString")
    return text


def _pick(arn: str, text: str, field: str) -> str:
    try:
        value: Any = json.loads(text)
    except ValueError:
        return text  # a plain string secret
    if not isinstance(value, dict):
        return text
    if field in value:
        picked = value[field]
    elif len(value) == 1:
        picked = next(iter(value.values()))
    else:
        raise SecretError(f"secret {arn!r} is a JSON object without a {field!r} field")
    if not isinstance(picked, str) or not picked:
        raise SecretError(f"secret {arn!r}: field {field!r} is not a non-empty string")
    return picked


def resolve_secret(settings: Settings, arn: str, field: str) -> SecretStr:
    """The secret `arn` names (of a JSON object secret: its `field`), read once per process."""
    key = (arn, settings.aws_region, settings.aws_endpoint_url, field)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    secret = SecretStr(_pick(arn, _fetch(settings, arn), field))
    with _lock:
        _cache[key] = secret
    return secret


def parser_auth_token(settings: Settings) -> SecretStr | None:
    """The parser service's shared bearer token, when PARSER_SERVICE_AUTH_SECRET_ARN is set."""
    arn = settings.parser_service_auth_secret_arn
    return resolve_secret(settings, arn, "token") if arn else None


def provider_api_key(settings: Settings) -> SecretStr | None:
    """The model provider's API key: LLM_PROVIDER_SECRET_ARN when set, else OPENAI_API_KEY."""
    arn = settings.llm_provider_secret_arn
    return resolve_secret(settings, arn, "api_key") if arn else settings.openai_api_key
