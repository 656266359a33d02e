"""rlm_rs.client is what a remote caller installs: it must not reach into the server side.

Importing it loads no module of the control plane, storage, sandbox, gateway, settings
or providers, and no import statement in it (lazy ones included) names one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[3] / "rlm_rs" / "client"
# The wire contract a caller shares with the server: the messages, the error
# codes, the JSON shape (codec and its canonical JSON) and the error details.
ALLOWED_PROJECT_MODULES = (
    "rlm_rs.client", "rlm_rs.v1", "rlm_rs.errors", "rlm_rs.codec", "rlm_rs.canonical", "rlm_rs.error_details",
)  # fmt: skip


def _allowed(module: str) -> bool:
    return module == "rlm_rs" or any(
        module == m or module.startswith(m + ".") for m in ALLOWED_PROJECT_MODULES
    )


def test_importing_the_client_loads_nothing_of_the_server_side() -> None:
    code = (
        "import json, sys, rlm_rs.client; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('rlm_rs', 'gateway'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout)
    assert "rlm_rs.client" in loaded
    assert [m for m in loaded if not _allowed(m)] == []


def test_no_import_statement_names_the_server_side() -> None:
    offending = []
    for path in sorted(CLIENT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("rlm_rs", "gateway") and not _allowed(name):
                    offending.append(f"{path.name}:{getattr(node, 'lineno', 0)}: {name}")
    assert offending == []
