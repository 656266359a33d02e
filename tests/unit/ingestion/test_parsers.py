"""Parsers: canonical text + meta per format, deterministic, clean failures."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest

from rlm_rs.ingestion import parsers
from rlm_rs.ingestion.parsers import PARSER_VERSION, ParseFailure, parse_document
from tests.unit.ingestion import hostile_parsers
from tests.unit.ingestion.conftest import make_pdf


@pytest.mark.parametrize("kind", ["pdf", "docx", "html", "text", "markdown"])
def test_same_input_gives_byte_identical_outputs(samples, kind: str) -> None:  # type: ignore[no-untyped-def]
    data, mime, name = samples[kind]
    first = parse_document(data, mime, name).outputs("doc-1")
    second = parse_document(data, mime, name).outputs("doc-1")
    assert first == second
    meta = json.loads(first["meta.json"])
    offsets = json.loads(first["offsets.json"])
    text = first["text.txt"].decode("utf-8")
    assert meta["parser_version"] == PARSER_VERSION and meta["doc_id"] == "doc-1"
    assert offsets["char_length"] == len(text) and offsets["byte_length"] == len(first["text.txt"])
    assert "\r" not in text and text == text.strip("\n")


def test_pdf_pages_map_to_text(samples) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_document(*samples["pdf"])
    assert [p["page_num"] for p in parsed.pages] == [1, 2, 3]
    first = parsed.pages[0]
    assert parsed.text[first["start_char"] : first["end_char"]] == "Page one: revenue grew 12%."


def test_docx_headings_become_sections_and_tables_are_recorded(samples) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_document(*samples["docx"])
    structure = parsed.meta("d")["structure"]
    assert structure["title"] == "Quarterly review"
    overview, risks = structure["children"]
    assert (overview["title"], risks["title"]) == ("Overview", "Risks")
    assert overview["children"][0]["title"] == "Regions"
    assert parsed.text[overview["start_char"] : overview["end_char"]].startswith("Overview\nRevenue")
    assert overview["end_char"] == risks["start_char"]
    (table,) = parsed.tables
    assert parsed.text[table["start_char"] : table["end_char"]] == "region\tgrowth\nLisbon\t12%"


def test_html_keeps_main_text_and_headings(samples) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_document(*samples["html"])
    assert "forty villages" in parsed.text and "menu | login" not in parsed.text
    assert [(s["title"], s["level"]) for s in parsed.meta("d")["structure"]["children"]] == [
        ("Field notes", 1)
    ]


def test_markdown_headings_and_canonical_whitespace(samples) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_document(*samples["markdown"])
    assert parsed.text == "# Guide\n\nIntro line.\n\n## Install\n\nRun it.\n\n## Use\n\nCall it."
    (guide,) = parsed.meta("d")["structure"]["children"]
    assert [c["title"] for c in guide["children"]] == ["Install", "Use"]


def test_text_is_nfc_with_newlines(samples) -> None:  # type: ignore[no-untyped-def]
    assert parse_document("cafe\u0301\r\nok".encode(), "text/plain", "x.txt").text == "caf\u00e9\nok"


def _bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<w>" + b" " * 300_000_000 + b"</w>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "mime", "code"),
    [
        ("truncated.pdf", make_pdf(["hello"])[:300], "application/pdf", "CORRUPT_DOCUMENT"),
        (
            "encrypted.pdf",
            make_pdf(["secret"], password="pw"),
            "application/pdf",
            "ENCRYPTED_DOCUMENT",
        ),
        ("bomb.docx", _bomb(), "", "DOCUMENT_TOO_LARGE"),
        ("not-a-zip.docx", b"plain bytes", "", "CORRUPT_DOCUMENT"),
        ("latin1.txt", "café".encode("latin-1"), "text/plain", "INVALID_ENCODING"),
        (
            "nested.html",
            b"<div>" * 100_000 + b"x" + b"</div>" * 100_000,
            "text/html",
            "EMPTY_DOCUMENT",
        ),
        ("blank.txt", b" \n\t\n", "text/plain", "EMPTY_DOCUMENT"),
        ("image.png", b"\x89PNG....", "image/png", "UNSUPPORTED_FORMAT"),
    ],
)
def test_bad_documents_fail_with_a_specific_code(name: str, data: bytes, mime: str, code: str) -> None:
    with pytest.raises(ParseFailure) as caught:
        parse_document(data, mime, name, timeout_seconds=60)
    assert caught.value.code == code, caught.value.message


def test_a_hanging_parser_times_out() -> None:
    started = time.monotonic()
    with pytest.raises(ParseFailure) as caught:
        parsers._run_isolated("pdf", b"%PDF", 1.0, target=hostile_parsers.hang)
    assert caught.value.code == "PARSE_TIMEOUT"
    assert time.monotonic() - started < 30  # the hung child was killed, not waited for


def test_a_crashing_parser_is_reported() -> None:
    with pytest.raises(ParseFailure) as caught:
        parsers._run_isolated("pdf", b"%PDF", 30.0, target=hostile_parsers.crash)
    assert caught.value.code == "PARSER_CRASHED"
    assert caught.value.details["exit_code"] == 9


def test_parsers_run_in_forkserver_children_not_forks_of_the_caller() -> None:
    # a plain fork of a multi-threaded caller can deadlock on a lock another thread held
    assert parsers._CONTEXT.get_start_method() == "forkserver"
    parsed = parse_document(make_pdf(["Isolated."]), "application/pdf", "ok.pdf")
    assert parsed.text.strip() == "Isolated."


def test_parse_children_are_limited_and_first_for_the_oom_killer() -> None:
    with pytest.raises(ParseFailure) as caught:
        parsers._run_isolated("text", b"x", 30.0, target=hostile_parsers.report_limits)
    assert caught.value.details == {"oom_score_adj": 1000, "rlimit_as": parsers.CHILD_ADDRESS_SPACE_BYTES}
