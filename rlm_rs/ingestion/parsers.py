"""Format parsers: bytes -> canonical text + meta (docs/ingestion.md), deterministic.

Canonical text (rlm_rs/ingestion/canonical_text.py) is UTF-8, NFC, `\\n` line
endings, no BOM, with no trailing whitespace on lines and at most one blank
line in a row; pages (PDF) are joined by one blank line. The same input bytes
and PARSER_VERSION always give the same text.txt, meta.json and offsets.json
bytes. Changing any of this requires a new PARSER_VERSION. Failures are
ParseFailure with one of FAILURE_CODES, never an exception from a library.

Every format is parsed in a child process with an address-space limit and a
wall-clock timeout (PARSE_TIMEOUT): a hostile file can make the third-party
parsers (pdfminer.six, trafilatura/lxml, python-docx) hang or allocate without
bound, and plain text gets the same wall so that no format can hold a worker
slot longer than its timeout. Children come from a forkserver (a clean,
single-threaded process that preloads this module), never from a plain fork
of the caller: the worker and the parser service are multi-threaded, and a
fork taken while another thread held a lock (logging, an import, malloc)
left the child deadlocked until PARSE_TIMEOUT (seen as a 120 s hang with two
ingestion workers in one process).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import re
import resource
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm_rs.canonical import build_offsets, canonical_json, checksum_text
from rlm_rs.ingestion.canonical_text import canonical_block

# 2: trailing spaces come off the last line too, NUL is removed before NFC,
# and runs of more than 30 non-starters get a CGJ (see canonical_text.py).
PARSER_VERSION = "rlm-rs-parser/2"
META_VERSION = 1

FAILURE_CODES = {
    "UNSUPPORTED_FORMAT": "the mime type or file extension is not one this parser reads",
    "ENCRYPTED_DOCUMENT": "the PDF is encrypted",
    "CORRUPT_DOCUMENT": "the file is truncated or malformed",
    "EMPTY_DOCUMENT": "no text could be extracted",
    "INVALID_ENCODING": "a text document is not valid UTF-8",
    "DOCUMENT_TOO_LARGE": "the file or its uncompressed content exceeds the limit",
    "PARSE_TIMEOUT": "parsing took longer than options.timeout_seconds",
    "PARSER_CRASHED": "the parser process died (e.g. out of memory)",
}

MIME_TYPES = {
    "application/pdf": "pdf",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
}
EXTENSIONS = {
    ".pdf": "pdf", ".html": "html", ".htm": "html", ".docx": "docx", ".txt": "text",
    ".text": "text", ".md": "markdown", ".markdown": "markdown",
}  # fmt: skip

MAX_INPUT_BYTES = 512 * 1024 * 1024
MAX_DOCX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
MAX_DOCX_RATIO = 200
CHILD_ADDRESS_SPACE_BYTES = 4 * 1024 * 1024 * 1024


class ParseFailure(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass
class Heading:
    level: int
    title: str
    start_char: int
    page: int | None = None


@dataclass
class ParsedDocument:
    text: str
    pages: list[dict[str, int]] = field(default_factory=list)
    headings: list[Heading] = field(default_factory=list)
    tables: list[dict[str, int]] = field(default_factory=list)
    title: str = ""
    warnings: list[str] = field(default_factory=list)

    def meta(self, doc_id: str) -> dict[str, Any]:
        return {
            "version": META_VERSION,
            "doc_id": doc_id,
            "parser_version": PARSER_VERSION,
            "structure": {
                "type": "document",
                "title": self.title,
                "children": _tree(self.headings, len(self.text)),
            },
            "pages": self.pages,
            "tables": self.tables,
        }

    def outputs(self, doc_id: str) -> dict[str, bytes]:
        """The three output files, byte for byte."""
        return {
            "text.txt": self.text.encode("utf-8"),
            "meta.json": canonical_json(self.meta(doc_id)).encode("utf-8"),
            "offsets.json": canonical_json(build_offsets(self.text, doc_id)).encode("utf-8"),
        }

    @property
    def checksum(self) -> str:
        return checksum_text(self.text)


def _tree(headings: list[Heading], text_end: int) -> list[dict[str, Any]]:
    """Nested sections: each heading runs until the next one of the same or a higher level."""
    roots: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    for index, heading in enumerate(headings):
        end = text_end
        for later in headings[index + 1 :]:
            if later.level <= heading.level:
                end = later.start_char
                break
        node = {"type": "section", "title": heading.title, "level": heading.level,
                "start_char": heading.start_char, "end_char": end, "page": heading.page,
                "children": []}  # fmt: skip
        while stack and stack[-1]["level"] >= heading.level:
            stack.pop()
        (stack[-1]["children"] if stack else roots).append(node)
        stack.append(node)
    return roots


class _Builder:
    """Appends blocks and records where each starts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0

    def add(self, block: str, separator: str = "\n") -> int:
        if self.parts and block:
            self.parts.append(separator)
            self.length += len(separator)
        start = self.length
        self.parts.append(block)
        self.length += len(block)
        return start

    def text(self) -> str:
        return "".join(self.parts)


# --- formats -------------------------------------------------------------------------------


def detect_format(mime_type: str, source_name: str) -> str:
    base = (mime_type or "").split(";")[0].strip().lower()
    if base in MIME_TYPES:
        return MIME_TYPES[base]
    lowered = (source_name or "").lower()
    for extension, kind in EXTENSIONS.items():
        if lowered.endswith(extension):
            return kind
    raise ParseFailure(
        "UNSUPPORTED_FORMAT",
        f"cannot parse mime type {mime_type!r} ({source_name!r})",
        {"mime_type": mime_type, "source_name": source_name},
    )


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseFailure(
            "INVALID_ENCODING",
            f"not valid UTF-8 at byte {exc.start}",
            {"byte_offset": exc.start},
        ) from None


def _next_hash_line(text: str, position: int) -> int:
    """Start of the next line at or after `position` that begins with `#`, or -1."""
    if position == 0 and text.startswith("#"):
        return 0
    found = text.find("\n#", max(position - 1, 0))
    return -1 if found == -1 else found + 1


def markdown_headings(text: str) -> list[Heading]:
    """ATX headings: a line of 1-6 `#`, a space or tab, then the title (its
    closing `#`s and spaces dropped). One pass over the lines that start with
    `#` (a regex here backtracked quadratically on long runs of spaces)."""
    headings: list[Heading] = []
    start = _next_hash_line(text, 0)
    while start != -1:
        end = text.find("\n", start)
        line = text[start:] if end == -1 else text[start:end]
        level = len(line) - len(line.lstrip("#"))
        if 1 <= level <= 6 and line[level : level + 1] in (" ", "\t"):
            rest = line[level:]
            body = rest.lstrip(" \t")
            if body:
                headings.append(Heading(level, body[: max(1, len(body.rstrip(" \t#")))].strip(), start))
            elif len(rest) >= 2:  # only spaces after the marks: an empty title
                headings.append(Heading(level, "", start))
        start = -1 if end == -1 else _next_hash_line(text, end + 1)
    return headings


def parse_text(data: bytes, markdown: bool = False) -> ParsedDocument:
    text = canonical_block(_decode_text(data))
    return ParsedDocument(text=text, headings=markdown_headings(text) if markdown else [])


def parse_pdf(data: bytes) -> ParsedDocument:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTTextContainer
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect
    from pdfminer.pdfparser import PDFSyntaxError
    from pdfminer.psparser import PSException

    builder = _Builder()
    pages: list[dict[str, int]] = []
    try:
        for number, layout in enumerate(extract_pages(io.BytesIO(data), laparams=LAParams()), 1):
            page_text = canonical_block(
                "".join(el.get_text() for el in layout if isinstance(el, LTTextContainer))
            )
            start = builder.add(page_text, "\n\n") if page_text else builder.length
            pages.append({"page_num": number, "start_char": start, "end_char": builder.length})
    except (PDFEncryptionError, PDFPasswordIncorrect) as exc:
        raise ParseFailure("ENCRYPTED_DOCUMENT", f"encrypted PDF: {type(exc).__name__}") from None
    except (PDFSyntaxError, PSException, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise ParseFailure("CORRUPT_DOCUMENT", f"malformed PDF: {type(exc).__name__}") from None
    except Exception as exc:  # pdfminer raises many private error types
        if "encrypt" in type(exc).__name__.lower():
            raise ParseFailure("ENCRYPTED_DOCUMENT", "encrypted PDF") from None
        raise ParseFailure("CORRUPT_DOCUMENT", f"malformed PDF: {type(exc).__name__}") from None
    if not pages:
        raise ParseFailure("CORRUPT_DOCUMENT", "the PDF has no pages")
    return ParsedDocument(text=builder.text(), pages=pages)


def parse_html(data: bytes) -> ParsedDocument:
    import trafilatura

    extracted = trafilatura.extract(
        data, output_format="markdown", include_tables=True, include_comments=False,
        include_links=False, include_images=False, deduplicate=False, favor_recall=True,
    )  # fmt: skip
    if not extracted:
        raise ParseFailure("EMPTY_DOCUMENT", "no main text found in the HTML")
    parsed = parse_text(extracted.encode("utf-8"), markdown=True)
    # The title is the first top-level heading (a second metadata pass over
    # the HTML would double the parse time).
    parsed.title = next((h.title for h in parsed.headings if h.level == 1), "")
    return parsed


def _check_docx_archive(data: bytes) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ParseFailure("CORRUPT_DOCUMENT", "not a DOCX (zip) file") from None
    total = sum(info.file_size for info in archive.infolist())
    compressed = max(sum(info.compress_size for info in archive.infolist()), 1)
    if total > MAX_DOCX_UNCOMPRESSED_BYTES or total / compressed > MAX_DOCX_RATIO:
        raise ParseFailure(
            "DOCUMENT_TOO_LARGE",
            "the DOCX expands too much (zip bomb guard)",
            {"uncompressed_bytes": total, "ratio": round(total / compressed, 1)},
        )
    if "word/document.xml" not in archive.namelist():
        raise ParseFailure("CORRUPT_DOCUMENT", "the archive has no word/document.xml")


def parse_docx(data: bytes) -> ParsedDocument:
    _check_docx_archive(data)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise ParseFailure("CORRUPT_DOCUMENT", f"malformed DOCX: {type(exc).__name__}") from None
    builder = _Builder()
    headings: list[Heading] = []
    tables: list[dict[str, int]] = []
    # Paragraph.style resolves through the styles part on every call; map the
    # style ids once instead (a 3,000-paragraph document parsed 10x faster).
    style_names = {s.style_id: s.name or "" for s in document.styles}
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = canonical_block(block.text)
            if not text:
                continue
            style = style_names.get(block._p.style or "Normal", "")
            start = builder.add(text)
            match = re.match(r"Heading (\d)", style)
            if match or style == "Title":
                headings.append(Heading(int(match.group(1)) if match else 1, text, start))
        elif isinstance(block, Table):
            rows = ["\t".join(canonical_block(c.text) for c in row.cells) for row in block.rows]
            text = canonical_block("\n".join(rows))
            if text:
                start = builder.add(text)
                tables.append({"start_char": start, "end_char": builder.length, "page": 0,
                               "rows": len(block.rows), "cols": len(block.columns)})  # fmt: skip
    title = canonical_block(document.core_properties.title or "")
    return ParsedDocument(text=builder.text(), headings=headings, tables=tables, title=title)


def parse_markdown(data: bytes) -> ParsedDocument:
    return parse_text(data, markdown=True)


_PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    "pdf": parse_pdf, "html": parse_html, "docx": parse_docx, "text": parse_text,
    "markdown": parse_markdown,
}  # fmt: skip


def limit_child() -> None:
    """The parse child's own limits: address space, no core file, and first in
    line for the kernel's OOM killer (several parses run at once: if together
    they exhaust the node, a parse dies with PARSER_CRASHED, not a service)."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE_BYTES,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # raising one's own score needs no privilege
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as score:
        score.write("1000")


def _child_parse(kind: str, data: bytes, connection: Any) -> None:
    try:
        limit_child()
        connection.send(("ok", _PARSERS[kind](data)))
    except ParseFailure as failure:
        connection.send(("failed", (failure.code, failure.message, failure.details)))
    except MemoryError:
        connection.send(("failed", ("DOCUMENT_TOO_LARGE", "the parser ran out of memory", {})))
    except RecursionError:
        connection.send(("failed", ("CORRUPT_DOCUMENT", "the document is nested too deeply", {})))
    except BaseException as exc:
        connection.send(("failed", ("CORRUPT_DOCUMENT", f"{type(exc).__name__}", {})))
    finally:
        connection.close()


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def _run_isolated(
    kind: str, data: bytes, timeout_seconds: float, target: Callable[..., None] = _child_parse
) -> ParsedDocument:
    """Run `target(kind, data, connection)` in a fresh child (tests pass a
    module-level hostile target: a forkserver child cannot see monkeypatches)."""
    context = _CONTEXT
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(kind, data, sender), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout_seconds):
            raise ParseFailure(
                "PARSE_TIMEOUT",
                f"parsing took longer than {timeout_seconds:g} s",
                {"timeout_seconds": timeout_seconds},
            )
        try:
            status, payload = receiver.recv()
        except EOFError:
            process.join(5)
            raise ParseFailure(
                "PARSER_CRASHED", "the parser process died", {"exit_code": process.exitcode}
            ) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        receiver.close()
    if status == "failed":
        code, message, details = payload
        raise ParseFailure(code, message, details)
    parsed: ParsedDocument = payload
    return parsed


def parse_document(
    data: bytes, mime_type: str, source_name: str, timeout_seconds: float = 120.0
) -> ParsedDocument:
    """Parse raw bytes; ParseFailure on anything that is not a good document."""
    if len(data) > MAX_INPUT_BYTES:
        raise ParseFailure("DOCUMENT_TOO_LARGE", f"the file is over {MAX_INPUT_BYTES} bytes")
    kind = detect_format(mime_type, source_name)
    parsed = _run_isolated(kind, data, timeout_seconds)
    if not parsed.text.strip():
        raise ParseFailure("EMPTY_DOCUMENT", "no text could be extracted")
    return parsed


__all__ = [
    "FAILURE_CODES", "PARSER_VERSION", "ParseFailure", "ParsedDocument", "detect_format",
    "parse_document",
]  # fmt: skip
