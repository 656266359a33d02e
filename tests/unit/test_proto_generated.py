"""The committed generated gRPC code matches proto/ (scripts/gen_proto.sh)."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True, cwd=ROOT)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.py*")}
    committed = {
        p.relative_to(ROOT): p.read_bytes()
        for directory in (ROOT / "rlm_rs" / "v1", ROOT / "rlm_rs" / "sandbox" / "v1")
        for p in directory.glob("*.py*")
    }
    assert fresh.keys() == committed.keys(), "run scripts/gen_proto.sh"
    stale = sorted(str(name) for name, data in fresh.items() if committed[name] != data)
    assert not stale, f"stale generated code, run scripts/gen_proto.sh: {stale}"
