"""The client's uploads (`files=`, `uploads.upload`) and listings against the real
appliance, over both transports, sync and asyncio; examples/client/files.py as a
user runs it (local files only: no `rlm-rs upload`)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_rs.appliance.demo import corpus_files
from rlm_rs.client import AsyncClient, Client, UploadProgress, ValidationError
from tests.e2e.client.conftest import Appliance, _cli
from tests.e2e.conftest import REPO

QUESTION = "When was the Harrow Point light first lit?"


def _new_key(appliance: Appliance, tenant: str) -> str:
    return _cli("keys", "create", "--tenant", tenant, data_dir=appliance.up.data_dir)[-1]


def test_files_example_uploads_asks_and_lists(appliance: Appliance, transport: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    env["RLM_API_KEY"] = _new_key(appliance, f"files-{transport}")
    files = [str(p) for p in corpus_files()]
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "client" / "files.py"), "--url", appliance.url(transport), *files],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    uploaded = re.findall(r"^uploaded (\S+) \((\d)/4, (\d+) bytes\)$", out, re.M)
    assert [(name, int(size)) for name, _, size in uploaded] == [
        (Path(f).name, os.path.getsize(f)) for f in files
    ]
    assert re.search(r"READY \(4/4 documents parsed\)", out), out
    assert len(re.findall(r"^\[\d+\] \S+ verified$", out, re.M)) >= 1
    session_id = re.findall(r"^session (sess_\w+): READY", out, re.M)[-1]
    listed = re.findall(r"^  (sess_\w+) (\w+) (\d+) documents$", out, re.M)
    assert listed == [(session_id, "READY", "4")]  # a fresh tenant: only its own session
    assert re.findall(r"^  (exec_\w+) (\w+)$", out, re.M)[0][1] == "COMPLETED"


def test_upload_create_and_list_sync(appliance: Appliance, transport: str, tmp_path: Path) -> None:
    key = _new_key(appliance, f"sync-{transport}")
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\nThe Harrow Point light was first lit on 1 March 1874.\n")
    events: list[object] = []
    with Client(appliance.url(transport), key) as client:
        info = client.uploads.upload(b"Keeper: Ada Grey.\n", file_name="keeper.txt")
        assert (
            info.content_type == "text/plain" and info.size_bytes == 18 and info.upload_id.startswith("upl_")
        )
        assert f"/raw/sync-{transport}/{info.upload_id}/keeper.txt" in info.raw_s3_uri
        first = client.sessions.create(files=[notes], docs=[info.document()], progress=events.append)
        uploads = [e for e in events if isinstance(e, UploadProgress)]
        assert uploads[-1] == UploadProgress(
            "notes.md", 0, 1, notes.stat().st_size, notes.stat().st_size, True
        )
        assert first.status == "READY" and [d.source_name for d in first.docs] == ["notes.md", "keeper.txt"]
        second = client.sessions.create(files=[str(notes)], wait=False)
        assert [s.session_id for s in client.sessions.list()] == [second.session_id, first.session_id]
        assert [s.session_id for s in client.sessions.list(page_size=1, limit=5)] == [
            second.session_id, first.session_id,
        ]  # fmt: skip
        assert [s.session_id for s in client.sessions.list(status="READY")][-1] == first.session_id
        answer = first.ask(QUESTION)
        runtime = first.runtime()
        listed = list(client.executions.list())
        assert [e.execution_id for e in listed] == [runtime.execution_id, answer.execution.execution_id]
        done = list(client.executions.list(session_id=first.session_id, status="COMPLETED"))
        assert [e.execution_id for e in done] == [answer.execution.execution_id]
        runtime.cancel()
        with pytest.raises(ValidationError) as refused:
            client.uploads.upload(b"MZ\x90\x00", file_name="tool.exe")
        assert refused.value.code == "UNSUPPORTED_MEDIA_TYPE" and refused.value.request_id
    with Client(appliance.url(transport), appliance.api_key) as other:  # another tenant sees none of it
        theirs = {s.session_id for s in other.sessions.list()}
        assert not theirs & {first.session_id, second.session_id}
        assert answer.execution.execution_id not in {e.execution_id for e in other.executions.list()}


def test_upload_create_and_list_async(appliance: Appliance, transport: str, tmp_path: Path) -> None:
    key = _new_key(appliance, f"async-{transport}")
    log = tmp_path / "log.txt"
    log.write_bytes(b"1 March 1874: the light was first lit.\n" * 50_000)  # ~2 MB: several pieces

    async def scenario() -> None:
        seen: list[UploadProgress] = []

        async def progress(event: object) -> None:
            if isinstance(event, UploadProgress):
                seen.append(event)

        async with AsyncClient(appliance.url(transport), key) as client:
            with log.open("rb") as handle:
                session = await client.sessions.create(files=[handle], progress=progress)
            assert session.status == "READY" and session.docs[0].source_name == "log.txt"
            size = log.stat().st_size
            assert [e.sent_bytes for e in seen] == [1024 * 1024, size, size]
            assert seen[-1].done and seen[-1].total_bytes is None  # a file object's size is not asked
            listed = [s.session_id async for s in client.sessions.list()]
            assert listed == [session.session_id]
            runtime = await session.runtime()
            assert [e.execution_id async for e in client.executions.list(session_id=session.session_id)] == [
                runtime.execution_id
            ]
            await runtime.cancel()

    asyncio.run(scenario())
