"""The log pipeline (rlm_rs/logs.py) in a real child process, reading its real stderr.

Each case runs a short program under a fresh interpreter, the way a component
starts: loggers created at import time, then configure_logging(), then lines from
structlog, the stdlib (as httpx, uvicorn and grpc log), a thread that crashes and an
exception whose frame holds an API key. Every line must be JSON, carry the bound
context, and hold no key, no frame locals and no unbounded value.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
KEY = "rlm_key_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefg"


def run_program(body: str, timeout: float = 60.0) -> tuple[list[dict[str, Any]], list[str], float]:
    """Runs `body` in a child; returns its stderr's JSON records, its non-JSON lines,
    and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    records, other = [], []
    for line in result.stderr.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            other.append(line)
    assert result.stdout == "", result.stdout  # logs never go to stdout
    return records, other, elapsed


def test_a_module_level_logger_made_before_configuration_renders_json_without_locals() -> None:
    records, other, _ = run_program(
        f"""
        from rlm_rs.observability import get_logger
        log = get_logger(component="early")          # as rlm_rs/control/_rpc.py does at import
        bound = log.bind(stage="import")              # bound before configuration, too
        from rlm_rs.observability import configure_logging, log_scope
        configure_logging("INFO", component="control")

        def handler(metadata):
            authorization = metadata["authorization"]
            raise ValueError("bad page token")

        with log_scope(request_id="req-1", tenant_id="t-1", method="ListSessions"):
            try:
                handler({{"authorization": "Bearer {KEY}"}})
            except ValueError:
                log.error("rpc_failed", exc_info=True)
                bound.error("rpc_failed_again", exc_info=True)
        """
    )
    assert other == []
    text = json.dumps(records)
    assert KEY not in text and "AbCd" + "EfGh" not in text
    assert "locals" not in text and "authorization" not in text
    failures = [r for r in records if r["event"].startswith("rpc_failed")]
    assert len(failures) == 2
    for failure in failures:
        assert failure["request_id"] == "req-1" and failure["tenant_id"] == "t-1"
        frames = failure["exception"][0]["frames"]
        assert frames[-1]["name"] == "handler"  # the traceback is there, as data
        assert set(frames[-1]) == {"filename", "lineno", "name"}


def test_third_party_lines_are_json_through_the_same_pipeline() -> None:
    records, other, _ = run_program(
        f"""
        import logging, threading, warnings
        from rlm_rs.observability import configure_logging, log_scope
        configure_logging("INFO", component="gateway")
        with log_scope(request_id="req-2", tenant_id="t-2"):
            logging.getLogger("httpx").info('HTTP Request: POST %s "HTTP/1.1 200 OK"', "http://x/v1/chat")
            logging.getLogger("httpx").warning("connection pool is full: %s", "x")
            logging.getLogger("uvicorn.error").info("Started server process", extra={{"color_message": "x"}})
            logging.getLogger("grpc._server").error("Exception calling application", exc_info=ValueError("boom"))
            logging.getLogger("asyncio").warning("Task was destroyed: headers %s", {{"authorization": "Bearer {KEY}"}})
            warnings.warn("a deprecation")

        def crash():
            secret = "{KEY}"
            raise RuntimeError("thread died")

        thread = threading.Thread(target=crash, name="worker-1")
        thread.start(); thread.join()
        """
    )
    assert other == []
    by_logger = {r.get("logger"): r for r in records}
    assert by_logger["httpx"]["request_id"] == "req-2" and by_logger["httpx"]["tenant_id"] == "t-2"
    # the HTTP clients' per-request INFO lines are dropped (one per provider call), their warnings kept
    assert by_logger["httpx"]["level"] == "warning"
    assert not any("HTTP Request" in str(r.get("event")) for r in records)
    assert "color_message" not in by_logger["uvicorn.error"]
    assert by_logger["grpc._server"]["level"] == "error"
    assert by_logger["py.warnings"]["level"] == "warning"
    crash = next(r for r in records if r["event"] == "thread_crashed")
    assert crash["thread"] == "worker-1" and crash["exception"][0]["exc_type"] == "RuntimeError"
    assert all(r["component"] == "gateway" for r in records)
    assert KEY not in json.dumps(records)


def test_secrets_are_redacted_by_field_name_and_by_shape() -> None:
    records, other, _ = run_program(
        f"""
        from rlm_rs.observability import configure_logging, get_logger
        configure_logging("INFO", component="control")
        get_logger().info(
            "settings_loaded",
            authorization="Bearer {KEY}",
            api_key="{KEY}",
            openai_api_key="sk-live-0123456789abcdef",
            api_key_pepper="pepper-value",
            headers={{"Authorization": "Bearer abc.def.ghi", "x-request-id": "r"}},
            note="caller sent {KEY} and Bearer tok_123456 and sk-proj-ABCDEFGHIJKL",
            key_prefix="rlm_key_AbCd",
        )
        """
    )
    assert other == []
    (record,) = records
    for field in ("authorization", "api_key", "openai_api_key", "api_key_pepper"):
        assert record[field] == "[redacted]"
    assert record["headers"] == {"Authorization": "[redacted]", "x-request-id": "r"}
    assert "AbCdEfGh" not in record["note"] and "tok_123456" not in record["note"]
    assert "ABCDEFGHIJKL" not in record["note"] and "rlm_key_AbCd" in record["note"]
    assert record["key_prefix"] == "rlm_key_AbCd…[redacted]"  # the public prefix survives


def test_huge_values_are_bounded_and_cheap() -> None:
    records, other, elapsed = run_program(
        f"""
        from rlm_rs.observability import configure_logging, get_logger
        configure_logging("INFO", component="control")
        request = "p" * 3_000_000 + " {KEY}"
        log = get_logger()
        log.info("big_value", prompt=request, items=list(range(100_000)))
        log.info("big_line", request_id="r-9", nested={{"a": {{"b": {{"c": [request] * 50}}}}}})
        try:
            raise ValueError(request)
        except ValueError:
            log.error("big_exception", exc_info=True)
        log.info("huge_int", value=10 ** 5000)
        """
    )
    assert other == []
    assert elapsed < 15, f"logging 3 MB values took {elapsed:.1f} s"
    big, line, failure, huge = records
    assert len(big["prompt"]) < 2100 and len(big["items"]) <= 51
    assert line["request_id"] == "r-9" and line["line_clipped_chars"] > 32_000 and "nested" not in line
    assert len(json.dumps(failure)) < 32_000
    assert huge["value"].startswith("<int of")
    assert KEY not in json.dumps(records)


def test_unconfigured_processes_still_write_json_warnings_to_stderr() -> None:
    records, other, _ = run_program(
        """
        from rlm_rs.observability import get_logger
        get_logger().info("not shown: below the default WARNING")
        get_logger().warning("shown", detail="x")
        """
    )
    assert other == []
    assert [r["event"] for r in records] == ["shown"]
