"""Static checks of the ECS examples in deploy/ecs/ (nothing is deployed here).

Every file is valid JSON, every environment name a container sets is a setting (or a
secret Settings reads), the pool runs with networkMode none as a DAEMON service, and
the sandbox role carries no permission at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.static.test_containers import settings_env_names

ECS = Path(__file__).resolve().parents[2] / "deploy" / "ecs"


def load(name: str) -> Any:
    return json.loads((ECS / name).read_text(encoding="utf-8"))


def test_every_file_is_json() -> None:
    files = sorted(ECS.rglob("*.json"))
    assert len(files) >= 10
    for path in files:
        json.loads(path.read_text(encoding="utf-8"))


def test_container_env_and_secrets_are_known_settings() -> None:
    known = settings_env_names()
    for path in ECS.glob("*-task-definition.json"):
        for container in json.loads(path.read_text(encoding="utf-8"))["containerDefinitions"]:
            names = {e["name"] for e in container.get("environment", [])}
            names |= {s["name"] for s in container.get("secrets", [])}
            assert not names - known, (path.name, sorted(names - known))


def test_pool_is_networkless_daemon_and_role_is_empty() -> None:
    pool = load("sandbox-pool-task-definition.json")
    assert pool["networkMode"] == "none"
    assert load("sandbox-pool-service.json")["schedulingStrategy"] == "DAEMON"
    role = load("iam/sandbox-pool-task-role.json")
    assert role["AttachedPolicies"] == [] and role["InlinePolicies"] == {}
    assert pool["taskRoleArn"].endswith("/" + role["RoleName"])


def test_provider_secret_only_in_the_control_plane() -> None:
    api = load("api-task-definition.json")
    by_name = {c["name"]: c for c in api["containerDefinitions"]}
    secrets = {s["name"] for s in by_name["control-plane"]["secrets"]}
    assert "OPENAI_API_KEY" in secrets
    assert "secrets" not in by_name["gateway"]
    plain = {e["name"] for c in api["containerDefinitions"] for e in c.get("environment", [])}
    assert "OPENAI_API_KEY" not in plain and "API_KEY_PEPPER" not in plain


def test_data_policies_are_scoped_to_the_prefix_and_bucket() -> None:
    for name in ("iam/control-plane-task-policy.json", "iam/ingestion-task-policy.json"):
        for statement in load(name)["Statement"]:
            resources = statement["Resource"]
            for resource in [resources] if isinstance(resources, str) else resources:
                assert resource != "*"
                scoped = ("table/rlm_*", ":s3:::rlm-rs-", ":secret:rlm/parser-service-token-")
                assert any(part in resource for part in scoped), resource
