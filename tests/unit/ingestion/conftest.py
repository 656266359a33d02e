"""Small generated documents of every format (no files shipped)."""

from __future__ import annotations

import io

import docx
import pytest
from fpdf import FPDF


def make_pdf(pages: list[str], password: str | None = None) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Quarterly review"
    document.add_heading("Overview", 1)
    document.add_paragraph("Revenue grew 12% in Lisbon.")
    document.add_heading("Regions", 2)
    document.add_paragraph("São Paulo doubled; Zürich was flat.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "region", "growth"
    table.cell(1, 0).text, table.cell(1, 1).text = "Lisbon", "12%"
    document.add_heading("Risks", 1)
    document.add_paragraph("Currency exposure.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


HTML = (
    b"<html><head><title>Field notes</title></head><body><nav>menu | login</nav><article>"
    b"<h1>Field notes</h1><p>" + b"The survey covered forty villages along the coast. " * 4 +
    b"</p><h2>Findings</h2><p>" + b"Water access improved in most of them since 2019. " * 4 +
    b"</p></article><footer>copyright</footer></body></html>"
)  # fmt: skip

MARKDOWN = b"# Guide\n\nIntro line.\r\n\n## Install\n\nRun it.   \n\n\n\n## Use\n\nCall it.\n"


@pytest.fixture
def samples() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, mime type, source name)"""
    return {
        "pdf": (make_pdf(["Page one: revenue grew 12%.", "Page two: risks.", "Page three."]),
                "application/pdf", "report.pdf"),
        "docx": (make_docx(), "", "review.docx"),
        "html": (HTML, "text/html", "notes.html"),
        "text": ("Plain café text\r\nline two\n".encode(), "text/plain", "a.txt"),
        "markdown": (MARKDOWN, "text/markdown", "guide.md"),
    }  # fmt: skip
