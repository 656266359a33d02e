"""Settings read from the environment the way operators write it (.env files).

An empty JSON-object setting (`RATE_LIMITS_JSON=` as in .env.example) means
"unset": the default, never a crash of Settings() in every process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rlm_rs.settings import Settings

JSON_OBJECT_ALIASES = sorted(
    str(field.alias)
    for field in Settings.model_fields.values()
    if field.alias and (field.alias.endswith("_JSON") or field.alias == "SEARCH_BACKEND_CONFIG")
)


def test_every_json_setting_is_covered() -> None:
    # A new *_JSON setting must take the same path (JsonObject in settings.py).
    assert {"RATE_LIMITS_JSON", "DEFAULT_BUDGETS_JSON", "RLM_PRICE_TABLE_JSON",
            "RLM_SANDBOX_POLICY_JSON", "SEARCH_BACKEND_CONFIG"} <= set(JSON_OBJECT_ALIASES)  # fmt: skip


@pytest.mark.parametrize("alias", JSON_OBJECT_ALIASES)
@pytest.mark.parametrize("raw", ["", "   ", "\t"])
def test_empty_json_setting_means_default(monkeypatch: pytest.MonkeyPatch, alias: str, raw: str) -> None:
    monkeypatch.setenv(alias, raw)
    settings = Settings()
    name = next(n for n, f in Settings.model_fields.items() if f.alias == alias)
    assert getattr(settings, name) == {}


# A sample of each setting's own shape; the rest take any JSON object.
SAMPLES: dict[str, Any] = {"RLM_RAW_PREFIXES_JSON": {"demo": ["shared/demo/"]}}


@pytest.mark.parametrize("alias", JSON_OBJECT_ALIASES)
def test_json_setting_is_parsed(monkeypatch: pytest.MonkeyPatch, alias: str) -> None:
    sample = SAMPLES.get(alias, {"demo": {"requests_per_minute": 5}})
    monkeypatch.setenv(alias, json.dumps(sample))
    name = next(n for n, f in Settings.model_fields.items() if f.alias == alias)
    value: Any = getattr(Settings(), name)
    assert value == sample


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", "3"])
def test_bad_json_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("RATE_LIMITS_JSON", raw)
    with pytest.raises(ValidationError, match=r"rate_limits_json|RATE_LIMITS_JSON"):
        Settings()


def test_env_example_as_copied_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """`.env.example` copied to `.env` (as the README says) gives working Settings."""
    example = Path(__file__).resolve().parents[2] / ".env.example"
    for line in example.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.rate_limits_json == {}
