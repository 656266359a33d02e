"""The container's own seccomp profile (sandbox_image/seccomp.json) and deployment
files: valid Docker/ECS structure, network syscalls denied, dangerous syscalls
absent, and the deployment keeps network none, read-only root and a non-root user.

Docker's semantics are applied by a small evaluator: a syscall gets the action of
the first rule naming it whose argument conditions all hold, else defaultAction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyseccomp
import pytest
import yaml

IMAGE = Path(__file__).resolve().parents[2] / "sandbox_image"
PROFILE = json.loads((IMAGE / "seccomp.json").read_text())
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK = 1, 2, 10, 16, 17, 40
CLONE_NEWNET, SIGCHLD = 0x40000000, 17
_OPS = {
    "SCMP_CMP_EQ": lambda arg, rule: arg == rule["value"],
    "SCMP_CMP_NE": lambda arg, rule: arg != rule["value"],
    "SCMP_CMP_MASKED_EQ": lambda arg, rule: (arg & rule["value"]) == rule["valueTwo"],
}


def action_for(name: str, args: tuple[int, ...] = ()) -> str:
    for rule in PROFILE["syscalls"]:
        if name not in rule["names"]:
            continue
        conditions = rule.get("args") or []
        if all(_OPS[c["op"]](args[c["index"]], c) for c in conditions):
            return str(rule["action"])
    return str(PROFILE["defaultAction"])


def test_profile_structure_is_docker_compatible() -> None:
    assert PROFILE["defaultAction"] in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS")
    assert {a["architecture"] for a in PROFILE["archMap"]} >= {"SCMP_ARCH_X86_64"}
    for rule in PROFILE["syscalls"]:
        assert set(rule) <= {"names", "action", "args", "comment", "errnoRet"}
        assert rule["action"].startswith("SCMP_ACT_")
        for condition in rule.get("args", []):
            assert condition["op"] in _OPS
            assert set(condition) <= {"index", "value", "valueTwo", "op"}


def test_every_syscall_name_exists_on_x86_64() -> None:
    arch = pyseccomp.Arch.X86_64
    for rule in PROFILE["syscalls"]:
        for name in rule["names"]:
            assert pyseccomp.resolve_syscall(arch, name) >= 0, name


@pytest.mark.parametrize("family", [AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK])
def test_network_sockets_are_denied(family: int) -> None:
    assert action_for("socket", (family, 1, 0)) == "SCMP_ACT_ERRNO"


def test_unix_sockets_stay_allowed_for_grpc_over_the_socket_volume() -> None:
    assert action_for("socket", (AF_UNIX, 1, 0)) == "SCMP_ACT_ALLOW"


@pytest.mark.parametrize(
    "name",
    [
        "io_uring_setup", "io_uring_enter", "userfaultfd", "keyctl", "add_key", "request_key",
        "bpf", "perf_event_open", "kexec_load", "ptrace", "process_vm_readv",
        "process_vm_writev", "init_module", "finit_module", "open_by_handle_at", "iopl",
        "ioperm", "swapon", "reboot", "acct", "quotactl", "lookup_dcookie",
    ],
)  # fmt: skip
def test_dangerous_syscalls_are_denied(name: str) -> None:
    assert action_for(name, (0, 0, 0, 0, 0, 0)) == "SCMP_ACT_ERRNO"


def test_clone_may_not_create_namespaces() -> None:
    assert action_for("clone", (SIGCHLD,)) == "SCMP_ACT_ALLOW"
    assert action_for("clone", (SIGCHLD | CLONE_NEWNET,)) == "SCMP_ACT_ERRNO"


def test_deployments_run_without_network_read_only_and_non_root() -> None:
    compose: dict[str, Any] = yaml.safe_load((IMAGE / "compose.sandbox.yaml").read_text())
    service = compose["services"]["sandbox-pool"]
    assert service["network_mode"] == "none"
    assert service["read_only"] is True
    assert not service["user"].startswith("0")
    assert "seccomp=sandbox_image/seccomp.json" in service["security_opt"]
    task = json.loads((IMAGE / "ecs-task-definition.json").read_text())
    assert task["networkMode"] == "none"
    (container,) = task["containerDefinitions"]
    assert container["readonlyRootFilesystem"] is True
    assert not container["user"].startswith("0")
    assert container["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    dockerfile = (IMAGE / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
