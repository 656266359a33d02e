"""Is the configured provider answering? A cheap real request, for readiness.

`openai`: one `models.list()` through the SDK (no retries, a short timeout):
it fails on a dead or wrong base URL, a rejected key, or a model list that
lacks the default root or sub model. `scripted` always answers. The control
plane probes every PROBE_PERIOD_SECONDS and readiness reads the last result,
so checks cost at most one request per period. The one-line `detail` names
the URL and model; it must never contain the API key.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from rlm_rs.settings import Settings

PROBE_TIMEOUT_SECONDS = 3.0
PROBE_PERIOD_SECONDS = 5.0
_DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # one line: "<provider> at <url> (model <m>): <what happened>"


def _public_url(url: str) -> str:
    """The URL without user:password (some proxies take credentials there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", "")) or url


def describe(settings: Settings) -> str:
    """ "openai at URL (model M)" or "scripted (offline)": what a message names."""
    if settings.llm_provider != "openai":
        return f"{settings.llm_provider} (offline)"
    url = _public_url(settings.openai_base_url or _DEFAULT_OPENAI_URL)
    return f"openai at {url} (model {settings.default_root_model})"


def probe_provider(settings: Settings, timeout: float = PROBE_TIMEOUT_SECONDS) -> ProbeResult:
    """One real request to the provider; never raises."""
    if settings.llm_provider != "openai":
        return ProbeResult(True, describe(settings))
    import openai

    from rlm_rs.secrets import SecretError, provider_api_key

    url = settings.openai_base_url or _DEFAULT_OPENAI_URL
    where = describe(settings)
    try:
        secret = provider_api_key(settings)
    except SecretError as exc:
        return ProbeResult(False, f"{where}: {exc}")
    key = secret.get_secret_value() if secret else "unused"
    client = openai.OpenAI(api_key=key, base_url=url, timeout=timeout, max_retries=0)
    try:
        offered = [model.id for model in client.models.list().data]
    except openai.APITimeoutError:
        return ProbeResult(False, f"{where}: no answer within {timeout:g} s")
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        reason = str(getattr(cause, "args", [""])[0] if getattr(cause, "args", None) else cause)
        return ProbeResult(False, f"{where}: cannot connect ({reason[:120] or type(cause).__name__})")
    except openai.AuthenticationError as exc:
        return ProbeResult(False, f"{where}: the API key was rejected (HTTP {exc.status_code})")
    except openai.APIStatusError as exc:
        return ProbeResult(False, f"{where}: GET /models answered HTTP {exc.status_code}")
    except openai.OpenAIError as exc:
        return ProbeResult(False, f"{where}: {type(exc).__name__}")
    finally:
        client.close()
    wanted = [settings.default_root_model, settings.default_sub_model]
    missing = [m for m in wanted if offered and m not in offered]
    if missing:
        shown = ", ".join(offered[:8]) + (", ..." if len(offered) > 8 else "")
        return ProbeResult(False, f"{where}: model {missing[0]} is not offered (offers: {shown})")
    return ProbeResult(True, f"{where}: answering")
