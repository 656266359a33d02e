"""What CI runs is what ECS gets: deploy/ecs/ agrees with compose.yaml.

scripts/containers-test.sh runs compose.yaml's services; ECS runs the task definitions
in deploy/ecs/. For every service that has an ECS container, both must give the same
environment names, user, mounts (container path and read-only flag), capabilities,
read-only root, no-new-privileges and network mode, apart from the differences listed
below with their reason. sandbox_image/ carries copies of the pool's definitions, which
must equal the shipped ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ECS = REPO / "deploy" / "ecs"
# compose service -> (task definition file, container name)
ECS_CONTAINER = {
    "gateway": ("api-task-definition.json", "gateway"),
    "control-plane": ("api-task-definition.json", "control-plane"),
    "volume-init": ("api-task-definition.json", "volume-init"),
    "sandbox-pool": ("sandbox-pool-task-definition.json", "sandbox-pool"),
    "parser": ("ingestion-task-definition.json", "parser"),
    "ingestion-worker": ("ingestion-task-definition.json", "ingestion-worker"),
}
COMPOSE_ONLY_SERVICES = {
    "localstack": "stands in for S3 + DynamoDB",
    "storage-init": "a one-off command on ECS (`rlm-rs storage init`, iam/storage-init-policy.json)",
}
COMPOSE_ONLY_ENV = {
    "AWS_ENDPOINT_URL": "LocalStack's address; ECS uses the AWS endpoints",
    "AWS_ACCESS_KEY_ID": "LocalStack credentials; ECS uses the task role",
    "AWS_SECRET_ACCESS_KEY": "LocalStack credentials; ECS uses the task role",
    "RLM_SCRIPTED_PROVIDER_FILE": "the offline demo provider; ECS runs LLM_PROVIDER=openai",
}
# Differences ECS cannot express, per service and check.
ECS_CANNOT = {
    ("sandbox-pool", "cgroup"): "no cgroup-namespace option; the pool remounts only its own cgroup",
    ("sandbox-pool", "seccomp"): "no per-task profile: the daemon default on the pool instances",
    ("volume-init", "network"): "networkMode is per task: the api task's awsvpc",
    ("parser", "no_new_privs"): "Fargate has no dockerSecurityOptions",
    ("ingestion-worker", "no_new_privs"): "Fargate has no dockerSecurityOptions",
}


def compose_services(path: Path = REPO / "compose.yaml") -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(data["services"])


def ecs(name: str, base: Path = ECS) -> dict[str, Any]:
    return dict(json.loads((base / name).read_text(encoding="utf-8")))


def ecs_container(service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    file, name = ECS_CONTAINER[service]
    task = ecs(file)
    return task, next(c for c in task["containerDefinitions"] if c["name"] == name)


def compose_mounts(service: dict[str, Any]) -> set[tuple[str, bool]]:
    mounts = set()
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        mounts.add((parts[1], len(parts) > 2 and parts[2] == "ro"))
    for tmpfs in service.get("tmpfs", []):
        mounts.add((tmpfs.split(":")[0], False))
    return mounts


def ecs_mounts(container: dict[str, Any]) -> set[tuple[str, bool]]:
    mounts = {(m["containerPath"], bool(m.get("readOnly"))) for m in container.get("mountPoints", [])}
    for tmpfs in container.get("linuxParameters", {}).get("tmpfs", []):
        mounts.add((tmpfs["containerPath"], False))
    return mounts


def test_every_service_and_container_is_paired() -> None:
    services = set(compose_services())
    assert services == set(ECS_CONTAINER) | set(COMPOSE_ONLY_SERVICES)
    for file in {f for f, _ in ECS_CONTAINER.values()}:
        names = {c["name"] for c in ecs(file)["containerDefinitions"]}
        assert names == {n for f, n in ECS_CONTAINER.values() if f == file}, file


@pytest.mark.parametrize("service", sorted(ECS_CONTAINER))
def test_environment_names_agree(service: str) -> None:
    _, container = ecs_container(service)
    in_compose = set(compose_services()[service].get("environment") or {}) - set(COMPOSE_ONLY_ENV)
    in_ecs = {e["name"] for e in container.get("environment", [])}
    in_ecs |= {s["name"] for s in container.get("secrets", [])}
    assert in_compose == in_ecs, {"compose only": in_compose - in_ecs, "ECS only": in_ecs - in_compose}


@pytest.mark.parametrize("service", sorted(ECS_CONTAINER))
def test_user_mounts_capabilities_and_root_agree(service: str) -> None:
    compose = compose_services()[service]
    _, container = ecs_container(service)
    assert compose.get("user") == container.get("user")
    assert compose_mounts(compose) == ecs_mounts(container)
    caps = container.get("linuxParameters", {}).get("capabilities", {})
    assert compose.get("cap_drop") == caps.get("drop") == ["ALL"]
    assert compose.get("cap_add", []) == caps.get("add", [])
    assert compose.get("read_only") is True and container.get("readonlyRootFilesystem") is True
    compose_nnp = "no-new-privileges:true" in compose.get("security_opt", [])
    ecs_nnp = "no-new-privileges" in container.get("dockerSecurityOptions", [])
    if (service, "no_new_privs") not in ECS_CANNOT:
        assert compose_nnp == ecs_nnp


@pytest.mark.parametrize("service", sorted(ECS_CONTAINER))
def test_network_mode_agrees(service: str) -> None:
    task, _ = ecs_container(service)
    compose_mode = compose_services()[service].get("network_mode", "bridge")
    if (service, "network") in ECS_CANNOT:
        return
    assert (compose_mode == "none") == (task["networkMode"] == "none"), (compose_mode, task["networkMode"])


def test_the_pool_and_the_control_plane_share_the_same_host_directories() -> None:
    # Different tasks on one EC2 host: the socket and the document cache must be the same
    # host directories at the same container paths, as compose's shared volumes are.
    pool_task, pool = ecs_container("sandbox-pool")
    api_task, control = ecs_container("control-plane")

    def host_paths(task: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        sources = {v["name"]: v["host"]["sourcePath"] for v in task["volumes"] if "host" in v}
        return {m["containerPath"]: sources[m["sourceVolume"]] for m in container["mountPoints"]}

    pool_paths, control_paths = host_paths(pool_task, pool), host_paths(api_task, control)
    for path in ("/run/rlm", "/var/lib/rlm/doc-cache"):
        assert pool_paths[path] == control_paths[path], path


def test_the_pool_keeps_its_file_capabilities_working() -> None:
    # The pool (uid 10001) gets its capabilities from file capabilities on its interpreter:
    # no-new-privileges would silently take them away and strict mode would refuse to start.
    compose = compose_services()["sandbox-pool"]
    _, container = ecs_container("sandbox-pool")
    assert not any("no-new-privileges" in opt for opt in compose.get("security_opt", []))
    assert "no-new-privileges" not in container.get("dockerSecurityOptions", [])
    assert "apparmor=unconfined" in compose["security_opt"]
    assert "apparmor:unconfined" in container["dockerSecurityOptions"]
    assert compose["environment"]["RLM_SANDBOX_STRICT"] in ("1", "${RLM_SANDBOX_STRICT:-1}")
    assert {e["name"]: e["value"] for e in container["environment"]}["RLM_SANDBOX_STRICT"] == "1"


def test_sandbox_image_copies_equal_the_shipped_definitions() -> None:
    assert ecs("ecs-task-definition.json", REPO / "sandbox_image") == ecs("sandbox-pool-task-definition.json")
    alone = compose_services(REPO / "sandbox_image" / "compose.sandbox.yaml")["sandbox-pool"]
    assert alone == compose_services()["sandbox-pool"]


def test_the_volume_init_owns_what_the_control_plane_writes() -> None:
    # The control plane (uid 10002) writes RLM_DATA_DIR and the document cache; engines and
    # ECS create those directories owned by root, so volume-init hands them over first.
    services = compose_services()
    control, init = services["control-plane"], services["volume-init"]
    uid, gid = control["user"].split(":")
    assert init["command"][:2] == ["chown", f"{uid}:{gid}"]
    # /tmp is a tmpfs; /run/rlm holds the pool's socket (the pool writes it, it only connects)
    writable = {path for path, ro in compose_mounts(control) if not ro} - {"/tmp", "/run/rlm"}
    assert set(init["command"][2:]) == writable
    assert control["depends_on"]["volume-init"]["condition"] == "service_completed_successfully"
    _, ecs_control = ecs_container("control-plane")
    _, ecs_init = ecs_container("volume-init")
    assert ecs_init["command"] == init["command"] and ecs_init["essential"] is False
    assert {"containerName": "volume-init", "condition": "SUCCESS"} in ecs_control["dependsOn"]


def test_the_parser_gets_storage_settings_and_no_pepper() -> None:
    # `rlm-rs parser serve` reads raw documents from storage.
    for names in (
        set(compose_services()["parser"]["environment"]),
        {e["name"] for e in ecs_container("parser")[1]["environment"]},
    ):
        assert {"RLM_STORAGE_BACKEND", "AWS_REGION", "S3_BUCKET", "DDB_TABLE_PREFIX"} <= names
        assert "API_KEY_PEPPER" not in names
