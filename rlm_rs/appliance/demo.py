"""`rlm-rs demo`: the bundled corpus through a running appliance, over the REST API.

Uploads demo_corpus/ (text, HTML, DOCX, PDF) into the appliance's storage, creates a
session, waits for READY, runs one Answerer execution and prints the answer, every
citation with the text POST /v1/citations/verify returns for it, and the URL of the
trace viewer (an s3:// trace path cannot be opened on embedded storage).
It talks to the appliance only over HTTP, except for the upload and (when no key is
given) minting an API key, which go to the storage named by --data-dir / settings.
It must never print an API key other than the one it minted itself.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CORPUS_DIR = Path(__file__).with_name("demo_corpus")
SCRIPT_FILE = Path(__file__).with_name("demo_script.json")
DEFAULT_QUESTION = (
    "When was the Harrow Point light first lit, what did its lamp burn, and who was its first keeper?"
)
MIME_TYPES = {
    ".txt": "text/plain",
    ".html": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
FINISHED = {"COMPLETED", "FAILED", "TIMEOUT", "BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED", "CANCELLED"}


class DemoError(Exception):
    """A demo step failed; the message says which and why."""


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS_DIR.iterdir() if p.suffix in MIME_TYPES)


def _storage(data_dir: Path) -> Any:
    from rlm_rs.settings import get_settings
    from rlm_rs.storage import open_storage

    return open_storage(get_settings().model_copy(update={"data_dir": data_dir}))


def mint_api_key(data_dir: Path, tenant: str = "demo") -> str:
    plaintext, _record = _storage(data_dir).metadata.create_api_key(tenant, name="rlm-rs demo")
    return str(plaintext)


def upload_corpus(data_dir: Path, api_key: str) -> list[dict[str, str]]:
    """Upload into the namespace of the key's tenant (only it can name them)."""
    from rlm_rs.storage.cli import upload_file

    storage = _storage(data_dir)
    record = storage.metadata.authenticate(api_key)
    if record is None:
        raise DemoError(f"the API key is not valid for the storage in {data_dir}")
    return [
        {
            "source_name": path.name,
            "mime_type": MIME_TYPES[path.suffix],
            "raw_s3_uri": upload_file(storage, path, record["tenant_id"]),
        }
        for path in corpus_files()
    ]


def _call(client: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = client.request(method, path, json=body)
    if response.status_code >= 300:
        raise DemoError(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = width * done // max(total, 1)
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def wait_ready(client: httpx.Client, session_id: str, deadline: float, out: Any) -> dict[str, Any]:
    tty = bool(getattr(out, "isatty", lambda: False)())
    shown = ""
    while True:
        view = _call(client, "GET", f"/v1/sessions/{session_id}")
        docs = view.get("docs", [])
        done = sum(d.get("ingest_status") in {"PARSED", "INDEXING", "INDEXED"} for d in docs)
        line = f"  ingesting {_bar(done, len(docs))} {view['status']:<10}"
        if tty:
            out.write("\r" + line)
        elif line != shown:  # a log, not a terminal: one line per change
            out.write(("\n" if shown else "") + line)
        shown = line
        out.flush()
        if view["status"] == "READY" or (view.get("readiness") or {}).get("ready"):
            out.write("\n")
            return dict(view)
        if view["status"] in {"FAILED", "EXPIRED", "DELETING"}:
            out.write("\n")
            failed = {d.get("source_name") or d["doc_id"]: d.get("failure_reason") for d in docs}
            raise DemoError(f"session {session_id} is {view['status']}: {failed}")
        if time.monotonic() > deadline:
            out.write("\n")
            raise DemoError(f"session {session_id} not READY in time (status {view['status']})")
        time.sleep(0.3)


def wait_execution(client: httpx.Client, execution_id: str, deadline: float) -> dict[str, Any]:
    while True:
        remaining = max(1.0, min(30.0, deadline - time.monotonic()))
        view = _call(client, "POST", f"/v1/executions/{execution_id}/wait", {"timeout_seconds": remaining})
        if view["status"] in FINISHED:
            return dict(view)
        if time.monotonic() > deadline:
            raise DemoError(f"execution {execution_id} still {view['status']}")


def run_demo(
    *,
    base_url: str,
    api_key: str | None,
    data_dir: Path,
    question: str,
    timeout: float,
    as_json: bool = False,
    out: Any = None,
    model: str | None = None,
) -> int:
    out = out or sys.stdout
    try:
        result = demo_flow(base_url, api_key, data_dir, question, timeout, out, model=model)
    except (DemoError, httpx.HTTPError) as exc:
        print(f"rlm-rs demo: {exc}", file=sys.stderr)
        return 1
    if as_json:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    ok = (
        result["status"] == "COMPLETED"
        and result["citations"]
        and all(c["valid"] for c in result["citations"])
    )
    if result["status"] != "COMPLETED":
        print(
            f"rlm-rs demo: execution {result['execution_id']} ended {result['status']}: {result['error']}",
            file=sys.stderr,
        )
    return 0 if ok else 1


def check_ready(base_url: str) -> None:
    """DemoError naming what is not ready, before anything is uploaded or started."""
    try:
        response = httpx.get(f"{base_url}/health/ready", timeout=10.0)
    except httpx.TransportError:
        raise DemoError(
            f"no appliance answers at {base_url}; start one with `rlm-rs up --demo` "
            "(or `rlm-rs up`, then run the demo again)"
        ) from None
    if response.status_code == 200:
        return
    try:
        components = response.json()["error"]["details"]["components"]
    except (ValueError, KeyError, TypeError):
        components = {}
    down = {k: v for k, v in components.items() if v not in ("SERVING", "UNKNOWN", "NOT_HARDENED")}
    if down.get("provider"):
        raise DemoError(f"the appliance's model provider is not answering: {_provider_detail()}")
    shown = ", ".join(f"{k} {v}" for k, v in down.items()) or f"HTTP {response.status_code}"
    raise DemoError(f"the appliance at {base_url} is not ready: {shown}")


def _provider_detail() -> str:
    """What this shell's settings name as the provider, probed once (the appliance
    started from the same settings names the same URL and model)."""
    from rlm_rs.providers.probe import probe_provider
    from rlm_rs.settings import Settings

    return probe_provider(Settings()).detail


def error_line(error: Any) -> str:
    """An execution's error as one line: `CODE: message`."""
    if isinstance(error, dict):
        return f"{error.get('code', 'ERROR')}: {error.get('message', '')}".strip()
    return str(error)


def plural(count: int, noun: str) -> str:
    """`1 sub-call`, `2 sub-calls`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def viewer_url(base_url: str, execution_id: str, minted_key: str | None) -> str:
    """The trace viewer's page; with a key the demo minted itself in the URL
    fragment (never sent to a server), else the page asks for one."""
    url = f"{base_url.rstrip('/')}/v1/executions/{execution_id}/view"
    return f"{url}#key={minted_key}" if minted_key else url


def demo_flow(
    base_url: str,
    api_key: str | None,
    data_dir: Path,
    question: str,
    timeout: float,
    out: Any,
    *,
    model: str | None = None,
) -> dict[str, Any]:
    """`model`, when given, is the root and sub model of the execution."""
    deadline = time.monotonic() + timeout
    check_ready(base_url)
    minted = api_key is None
    if api_key is None:
        api_key = mint_api_key(data_dir)
    out.write(f"RLM-RS demo against {base_url}\n")
    if minted:
        out.write(f"  API key (tenant demo, just created): {api_key}\n")
    docs = upload_corpus(data_dir, api_key)
    out.write(f"  uploaded {len(docs)} documents: {', '.join(d['source_name'] for d in docs)}\n")
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60.0) as client:
        session = _call(client, "POST", "/v1/sessions", {"ttl_minutes": 120, "docs": docs})
        session_id = session["session_id"]
        out.write(f"  session {session_id}\n")
        wait_ready(client, session_id, deadline, out)
        body: dict[str, Any] = {"question": question}
        if model:
            body["models"] = {"root_model": model, "sub_model": model}
        started = _call(client, "POST", f"/v1/sessions/{session_id}/executions", body)
        execution_id = started["execution_id"]
        out.write(f"  execution {execution_id}: {question}\n")
        view = wait_execution(client, execution_id, deadline)
        _print_outcome(view, out)
        citations = _verify_citations(client, view, out)
        viewer = viewer_url(base_url, execution_id, api_key if minted else None)
        out.write(f"\nTrace viewer: {viewer}\n")
    return {
        "session_id": session_id,
        "execution_id": execution_id,
        "status": view["status"],
        "answer": view.get("answer") or "",
        "citations": citations,
        "trace_s3_uri": view.get("trace_s3_uri") or "",
        "viewer_url": viewer,
        "error": error_line(view["error"]) if view.get("error") else "",
    }


def _print_outcome(view: dict[str, Any], out: Any) -> None:
    """The execution's status, what it consumed, its error if any and its answer."""
    consumed = view.get("budgets_consumed") or {}
    out.write(
        f"\nStatus: {view['status']} ({plural(int(consumed.get('turns', 0)), 'turn')}, "
        f"{plural(int(consumed.get('llm_subcalls', 0)), 'sub-call')})\n"
    )
    if view.get("error"):
        out.write(f"Error: {error_line(view['error'])}\n")
    out.write(f"Answer: {view.get('answer') or ''}\n\nCitations:\n")


def _verify_citations(client: httpx.Client, view: dict[str, Any], out: Any) -> list[dict[str, Any]]:
    """Each citation verified through the API and printed with its text; the results."""
    citations = []
    for index, ref in enumerate(view.get("citations") or [], start=1):
        verified = _call(client, "POST", "/v1/citations/verify", {"ref": ref})
        mark = "verified" if verified.get("valid") else "NOT VERIFIED"
        span = verified.get("char_range") or {}
        out.write(
            f"  [{index}] {verified.get('source_name', '')} chars "
            f"{span.get('start_char', ref['start_char'])}-{span.get('end_char', ref['end_char'])} "
            f"({mark}): {verified.get('text', '')!r}\n"
        )
        citations.append({"ref": ref, "valid": bool(verified.get("valid")), "text": verified.get("text", "")})
    if not citations:
        out.write("  (none)\n")
    return citations
