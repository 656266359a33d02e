"""The trace viewer rendered by a real headless Chromium against the real stack:
the page loads the execution with the key from the URL fragment and shows the
status, the answer, each turn and the cited span highlighted in its context."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx

from tests.integration.gateway.conftest import Stack, rlm, wait_until

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--virtual-time-budget=15000",
]  # fmt: skip


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Chromium is required (.ci/run installs Debian's chromium)"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip


def test_viewer_renders_turns_and_highlighted_citations(stack: Stack, tmp_path: Path) -> None:
    with stack.client() as client:
        created = client.post(
            f"/v1/sessions/{stack.session_id}/executions",
            json={"question": "How did revenue develop?", "options": {"synchronous": True}},
        )
        assert created.status_code == 201, created.text
        execution = created.json()
    assert execution["status"] == "COMPLETED"
    page = httpx.get(f"{stack.base_url}/v1/executions/{execution['execution_id']}/view")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    url = f"{stack.base_url}/v1/executions/{execution['execution_id']}/view#key={stack.api_key}"
    dom = _chromium("--dump-dom", url).stdout
    assert '<span id="status" class="status COMPLETED">COMPLETED</span>' in dom
    assert "Revenue grew 12% to $4.5M in 2024." in dom
    assert "<mark>Revenue grew 12% to $4.5M in 2024.</mark>" in dom  # the cited span, highlighted
    assert "Annual report 2024." in dom  # ...in its document context
    assert "Turn 0" in dom and "FINAL: Revenue grew" in dom
    assert "hit = context[0].find('Revenue')[0]" in dom  # the turn's code
    shot = Path(os.environ.get("RLM_VIEWER_SCREENSHOT", tmp_path / "viewer.png"))
    _chromium(f"--screenshot={shot}", "--window-size=1100,900", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_viewer_without_a_key_asks_for_one_and_shows_no_data(stack: Stack) -> None:
    dom = _chromium("--dump-dom", f"{stack.base_url}/v1/executions/exec_nope/view").stdout
    assert 'id="auth" style="display: block;"' in dom
    # it asks for the key, and says nothing is loading while it waits for one
    assert '<pre id="answer" class="muted">Enter an API key above to show this execution.</pre>' in dom
    bad = httpx.get(f"{stack.base_url}/v1/executions/..%2F..%2Fetc/view")
    assert bad.status_code in (404, 422) and "error" in bad.json()


def test_viewer_index_lists_the_callers_recent_executions_with_links(stack: Stack) -> None:
    with stack.client() as client:
        created = client.post(
            f"/v1/sessions/{stack.session_id}/executions",
            json={"question": "And the revenue, briefly?", "options": {"synchronous": True}},
        )
        assert created.status_code == 201, created.text
    execution_id = created.json()["execution_id"]
    page = httpx.get(f"{stack.base_url}/v1/view")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert execution_id not in page.text  # the page itself carries no data
    dom = _chromium("--dump-dom", f"{stack.base_url}/v1/view#key={stack.api_key}").stdout
    link = f'href="/v1/executions/{execution_id}/view#key={stack.api_key}"'
    assert link in dom and dom.index(execution_id) < dom.index("</tbody>")
    first_row = dom[dom.index("<tbody") :].split("</tr>")[0]
    assert execution_id in first_row and "COMPLETED" in first_row  # newest first
    assert "Revenue grew 12%" in first_row
    other = _chromium("--dump-dom", f"{stack.base_url}/v1/view#key={stack.other_key}").stdout
    assert execution_id not in other and stack.session_id not in other  # another tenant sees none of it
    asked = _chromium("--dump-dom", f"{stack.base_url}/v1/view").stdout
    assert 'id="auth" style="display: block;"' in asked and "exec_" not in asked


def test_viewer_labels_citations_by_file_and_cuts_context_at_words(stack: Stack, tmp_path: Path) -> None:
    """A citation in the middle of a long document: its label is the file's
    name, and the context around it starts and ends on whole words."""
    words = " ".join(f"word{i:03d}" for i in range(60))  # 479 chars, a word boundary every 8
    doc = tmp_path / "annual-report-2024.txt"
    doc.write_text(f"{words} Revenue grew 12% to $4.5M in 2024. {words}\n")
    uri = rlm(stack.env, "upload", "--tenant", "t1", "--data-dir", str(stack.data_dir), str(doc)).split()[-1]
    with stack.client() as client:
        body = {"docs": [{"source_name": doc.name, "mime_type": "text/plain", "raw_s3_uri": uri}]}
        session_id = client.post("/v1/sessions", json=body).json()["session_id"]
        rlm(stack.env, "ingest", "worker", "--once", "--data-dir", str(stack.data_dir))
        wait_until(lambda: client.get(f"/v1/sessions/{session_id}").json()["status"] == "READY", "READY")
        done = client.post(
            f"/v1/sessions/{session_id}/executions",
            json={"question": "How did revenue develop?", "options": {"synchronous": True}},
        ).json()
    assert done["status"] == "COMPLETED" and done["citations"], done
    url = f"{stack.base_url}/v1/executions/{done['execution_id']}/view#key={stack.api_key}"
    dom = _chromium("--dump-dom", url).stdout
    assert f"{doc.name} · chars " in dom and "doc 0" not in dom
    before, _, rest = dom.partition("<mark>Revenue grew 12% to $4.5M in 2024.</mark>")
    assert rest, dom
    context_before = before.rsplit("<pre>", 1)[-1]
    context_after = rest.split("</pre>", 1)[0]
    assert re.fullmatch(r"…word\d{3}( word\d{3})* ", context_before), context_before
    assert re.fullmatch(r" word\d{3}( word\d{3})*…", context_after), context_after
