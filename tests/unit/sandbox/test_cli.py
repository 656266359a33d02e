"""`rlm-rs sandbox run --in-process`: one JSON object, exit 0 on step failure, 2 on bad usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm_rs.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["sandbox", "run", "--in-process", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_step_over_a_plain_text_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "report.txt"
    doc.write_bytes("Revenue grew 12%.\r\nCafe\u0301 in Zu\u0308rich.\n".encode())
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    (meta_dir / "report.txt.meta.json").write_text(
        json.dumps({"pages": [{"page_num": 1, "start_char": 0, "end_char": 10}]})
    )
    code_file = tmp_path / "step.py"
    code_file.write_text(
        "hit = context[0].find('Café')[0]\n"
        "state['hit'] = hit['text']\nstate['pages'] = context[0].page_spans()\n"
        "print(context[0][:7])\ntool.queue_llm('k', 'x', metadata={'a': 1})\ntool.YIELD('wait')\n"
    )
    status, out, _ = _run(
        capsys, "--code", str(code_file), "--doc", str(doc), "--meta-dir", str(meta_dir),
        "--state", '{"keep": true}',
    )  # fmt: skip
    assert status == 0
    data = json.loads(out)
    assert data["success"] is True and data["isolation"] == "in-process"
    assert data["state"] == {
        "keep": True,
        "hit": "Café",
        "pages": [{"page_num": 1, "start_char": 0, "end_char": 10}],
    }
    assert data["stdout"] == "Revenue\n"
    assert data["span_log"][0] == {"doc_index": 0, "start_char": 18, "end_char": 22, "tag": ""}
    assert data["tool_requests"]["llm"][0]["metadata"] == {"a": 1}
    assert data["yield_reason"] == "wait" and data["error"] is None


def test_failed_step_still_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code_file = tmp_path / "step.py"
    code_file.write_text("import os\n")
    status, out, _ = _run(capsys, "--code", str(code_file))
    assert status == 0
    data = json.loads(out)
    assert data["success"] is False
    assert data["error"]["code"] == "SANDBOX_AST_REJECTED"
    assert data["error"]["details"]["line"] == 1


def test_bad_usage_exits_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code_file = tmp_path / "step.py"
    code_file.write_text("x = 1\n")
    assert _run(capsys, "--code", str(code_file), "--state", "[1]")[0] == 2
    assert _run(capsys, "--code", str(tmp_path / "missing.py"))[0] == 2
    assert _run(capsys, "--code", str(code_file), "--limits", '{"no_such_field": 1}')[0] == 2
