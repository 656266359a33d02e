"""Benchmarks behind `rlm-rs bench NAME [--json]`.

One module per benchmark (`rlm_rs/bench/<name>.py`), each exposing
`DESCRIPTION`, `add_arguments(parser)` and `run(args) -> dict` returning the
numbers; the CLI prints them as a table or, with --json, as one JSON object.
Every comparison is measured in the same run (the machines are noisy).
"""
