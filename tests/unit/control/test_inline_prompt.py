"""The default root prompt teaches inline calls, with the queued form as the
spec-compatible alternative, and only the calls this run may make."""

from __future__ import annotations

from rlm_rs.control.prompts import system_prompt


def _prompt(subcalls: bool, rlm: bool) -> str:
    return system_prompt(
        doc_count=1, subcalls=subcalls, search=False, contexts=False, max_stdout_chars=100, rlm=rlm
    )


def test_the_root_prompt_teaches_inline_calls_first() -> None:
    text = _prompt(subcalls=True, rlm=True)
    assert "`answers = llm_query_batched(chunks)`" in text and "rlm_query(question" in text
    assert text.index("Inline calls") < text.index("spec-compatible") < text.index("tool.queue_llm(")


def test_only_the_calls_this_run_may_make_are_taught() -> None:
    assert "rlm_query" not in _prompt(subcalls=True, rlm=False)
    no_subcalls = _prompt(subcalls=False, rlm=False)
    assert "llm_query" not in no_subcalls and "Inline calls" not in no_subcalls
