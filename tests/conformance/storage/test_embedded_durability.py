"""Embedded backend: a writer killed with SIGKILL loses nothing it committed
and leaves no half-written record; several processes share one data dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlm_rs.settings import Settings
from rlm_rs.storage import open_storage

WRITER = """
import sys, json
from pathlib import Path
from rlm_rs.settings import Settings
from rlm_rs.storage import open_storage
store = open_storage(Settings(RLM_DATA_DIR=Path(sys.argv[1])))
for i in range(100000):
    store.metadata.put_session({"tenant_id": "t1", "session_id": f"s{i:06d}", "status": "CREATING",
                                "payload": "x" * 2000, "n": i})
    store.blobs.put(f"raw/{i:06d}.bin", bytes([i % 256]) * 50000)
    print(i, flush=True)
"""


def test_sigkilled_writer_loses_nothing_committed(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    committed = -1
    deadline = time.monotonic() + 60
    while committed < 30 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            committed = int(line)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert committed >= 30

    store = open_storage(Settings(RLM_DATA_DIR=tmp_path))
    sessions = store.metadata.list_sessions("t1")
    numbers = [s["n"] for s in sessions]
    assert numbers == list(range(len(numbers)))  # no gaps, nothing torn
    assert len(numbers) >= committed + 1
    assert all(s["payload"] == "x" * 2000 for s in sessions)
    blobs = list(store.blobs.list("raw/"))
    assert len(blobs) >= committed + 1
    for key in blobs:  # every visible object is whole: written to a temp file, then linked
        data = store.blobs.get(key)
        assert len(data) == 50000 and len(set(data)) == 1


def test_cli_upload_and_keys_share_one_data_dir(tmp_path: Path) -> None:
    document = tmp_path / "notes.txt"
    document.write_text("hello")
    run = [sys.executable, "-m", "rlm_rs.cli"]
    uris = subprocess.run([*run, "upload", "--tenant", "acme", "--data-dir", str(tmp_path / "d"), str(document),
                           str(document)], check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    assert len(uris) == 2 and uris[0] == uris[1] and uris[0].endswith("/notes.txt")
    assert uris[0].startswith("s3://rlm-rs/raw/acme/")
    created = subprocess.run([*run, "keys", "create", "--tenant", "acme", "--name", "ci", "--data-dir",
                              str(tmp_path / "d")], check=True, capture_output=True, text=True)  # fmt: skip
    key = created.stdout.strip().splitlines()[-1]
    store = open_storage(Settings(RLM_DATA_DIR=tmp_path / "d"))
    assert store.metadata.authenticate(key)["tenant_id"] == "acme"  # type: ignore[index]
    assert store.blobs.get(uris[0].split("/", 3)[3]) == b"hello"
    bad = subprocess.run([*run, "upload", "--tenant", "acme", "--data-dir", str(tmp_path / "d"),
                          str(tmp_path / "missing")], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "not a file" in bad.stderr
    for bad_tenant in ("a/b", "..", ""):  # a tenant id is one path segment: no namespace inside another
        refused = subprocess.run([*run, "upload", "--tenant", bad_tenant, "--data-dir", str(tmp_path / "d"),
                                  str(document)], capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 2 and "tenant id" in refused.stderr, bad_tenant
    assert json.loads(subprocess.run([*run, "storage", "init", "--data-dir", str(tmp_path / "d")],
                                     check=True, capture_output=True, text=True).stdout)["status"] == "ok"  # fmt: skip
