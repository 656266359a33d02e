"""Ingestion: raw documents -> canonical text, meta.json, offsets.json (docs/ingestion.md).

`parsers` turns bytes into a ParsedDocument (or a ParseFailure with a spec
code), `service` implements POST /parse over the blob store, `worker` moves
registered documents through REGISTERED -> PARSING -> PARSED|FAILED and marks
sessions READY.
"""
