"""Writes the demo corpus (rlm_rs/appliance/demo_corpus/) once; the files are committed.

Run `uv run python -m rlm_rs.appliance.gen_demo_corpus` only to change the corpus. The text
is this project's own (a fictional lighthouse). Needs fpdf2 (a dev dependency); the
appliance itself never imports this module.
"""

from __future__ import annotations

import datetime
from pathlib import Path

OUT = Path(__file__).with_name("demo_corpus")

LOG = """Harrow Point Light: keeper's notes

The Harrow Point light was first lit on 1 March 1874, after two winters of building on the granite shelf.
The tower stands 31 metres above high water and its beam reaches 19 nautical miles in clear weather.
Ships rounding the point had struck the Cinder Ledge eleven times in the ten years before the light.
"""

HTML = """<!doctype html>
<html><head><title>The lamp room</title></head>
<body>
<h1>The lamp room</h1>
<p>Until 1921 the lamp burned paraffin, carried up the 142 steps in brass cans every evening.</p>
<p>In 1921 an acetylene plant replaced the paraffin burner, and in 1958 the light was electrified.</p>
<h2>The lens</h2>
<p>The first-order lens was ground in Birmingham and turns once every twenty seconds.</p>
</body></html>
"""

DOCX_PARAGRAPHS = [
    ("Keepers of Harrow Point", "Heading 1"),
    ("The first principal keeper was Agnes Morrow, who kept the light from 1874 to 1902.", None),
    ("She recorded every passing vessel in a ledger that survives in the county archive.", None),
    ("Automation", "Heading 1"),
    ("The last keeper left the station in 1989, when the light was automated.", None),
]

PDF_LINES = [
    "Harrow Point: a visitor's leaflet",
    "The station is open to visitors on Saturdays from April to September.",
    "The fog signal, a compressed-air horn, sounds two blasts every thirty seconds.",
    "Please keep to the path: the cliff edge above the Cinder Ledge is unstable.",
]


def main() -> None:
    import docx
    from fpdf import FPDF

    OUT.mkdir(exist_ok=True)
    (OUT / "keepers_log.txt").write_text(LOG, encoding="utf-8")
    (OUT / "lamp_room.html").write_text(HTML, encoding="utf-8")
    document = docx.Document()
    for text, style in DOCX_PARAGRAPHS:
        document.add_paragraph(text, style=style) if style else document.add_paragraph(text)
    document.core_properties.created = datetime.datetime(2026, 1, 1)
    document.save(str(OUT / "keepers.docx"))
    pdf = FPDF()
    pdf.set_creation_date(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    for line in PDF_LINES:
        pdf.multi_cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(OUT / "visitor_leaflet.pdf"))


if __name__ == "__main__":
    main()
