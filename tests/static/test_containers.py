"""Static checks of the container files (no Docker engine runs here).

compose.yaml must parse, every build must name a Dockerfile that exists, every
environment variable a service, a Dockerfile or .env.example sets must be a setting
rlm_rs.settings.Settings reads (by its alias) or one listed below as external, and
every Dockerfile must run as a non-root USER and install from the lock file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlm_rs.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted([*REPO.glob("docker/Dockerfile.*"), REPO / "sandbox_image" / "Dockerfile"])
# Variables read by something other than Settings, and who reads them.
EXTERNAL_ENV = {
    "AWS_ACCESS_KEY_ID": "boto3 credentials",
    "AWS_SECRET_ACCESS_KEY": "boto3 credentials",
    "SERVICES": "LocalStack: which services to start",
    "PATH": "the shell",
    "PYTHONDONTWRITEBYTECODE": "CPython",
    "PYTHONUNBUFFERED": "CPython",
    "TMPDIR": "Python's tempfile",
    "UV_PYTHON_DOWNLOADS": "uv (build stage)",
    "UV_LINK_MODE": "uv (build stage)",
    "UV_COMPILE_BYTECODE": "uv (build stage)",
}
THIRD_PARTY_IMAGES = {"localstack"}


def settings_env_names() -> set[str]:
    return {field.alias or name.upper() for name, field in Settings.model_fields.items()}


def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_parses_and_runs_every_component() -> None:
    services = compose()["services"]
    for name in ("localstack", "storage-init", "sandbox-pool", "control-plane", "ingestion-worker",
                 "parser", "gateway"):  # fmt: skip
        assert name in services, name
    assert services["storage-init"]["command"][:3] == ["rlm-rs", "storage", "init"]


def test_every_build_references_an_existing_dockerfile() -> None:
    builds = [s["build"] for s in compose()["services"].values() if "build" in s]
    assert len(builds) >= 5
    for build in builds:
        context = (REPO / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).is_file(), build["dockerfile"]


def test_the_pool_has_no_network_and_shares_socket_and_document_cache() -> None:
    services = compose()["services"]
    pool, control = services["sandbox-pool"], services["control-plane"]
    assert pool["network_mode"] == "none"
    assert "ports" not in pool
    pool_volumes = {v.split(":")[0]: v.split(":")[1] for v in pool["volumes"]}
    control_volumes = {v.split(":")[0]: v.split(":")[1] for v in control["volumes"]}
    for volume in ("sandbox-socket", "document-cache"):
        # Same volume at the same path: manifest paths mean the same file on both sides.
        assert pool_volumes[volume] == control_volumes[volume]
    assert any(v.endswith(":ro") for v in pool["volumes"] if v.startswith("document-cache"))
    assert pool["environment"]["LAMBDA_FUNCTION_NAME"] == control["environment"]["LAMBDA_FUNCTION_NAME"]
    assert pool["read_only"] is True and pool["cap_drop"] == ["ALL"]


def test_every_compose_env_var_is_a_known_setting() -> None:
    known = settings_env_names() | set(EXTERNAL_ENV)
    for name, service in compose()["services"].items():
        if name in THIRD_PARTY_IMAGES:
            continue
        env = service.get("environment") or {}
        assert isinstance(env, dict), name
        unknown = set(env) - known
        assert not unknown, f"{name}: {sorted(unknown)}"


def test_env_example_names_are_known_settings() -> None:
    names = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert "API_KEY_PEPPER" in names
    assert not names - settings_env_names()


def test_compose_interpolations_are_known() -> None:
    text = (REPO / "compose.yaml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert used and not used - settings_env_names()


def test_every_env_example_name_reaches_a_container() -> None:
    # A name an operator sets in .env that compose.yaml never interpolates does nothing.
    text = (REPO / "compose.yaml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    names = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not names - used, sorted(names - used)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_is_multistage_locked_and_non_root(dockerfile: Path) -> None:
    lines = [ln.strip() for ln in dockerfile.read_text(encoding="utf-8").splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    assert sum(ln.startswith("FROM ") for ln in instructions) >= 2, "multi-stage"
    assert any("uv sync --frozen" in ln for ln in instructions)
    users = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert users, "no USER"
    final_user = users[-1].split(":")[0]
    assert final_user not in {"root", "0"}, final_user
    last_from = max(i for i, ln in enumerate(instructions) if ln.startswith("FROM "))
    assert any(ln.startswith("USER ") for ln in instructions[last_from:]), "USER in the final stage"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_env_is_known(dockerfile: Path) -> None:
    known = settings_env_names() | set(EXTERNAL_ENV)
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            names |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", line))
    assert not names - known, sorted(names - known)


def test_dockerfiles_copy_only_existing_paths() -> None:
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text(encoding="utf-8").splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), f"{dockerfile.name}: {source}"
