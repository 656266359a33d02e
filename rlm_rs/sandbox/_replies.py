"""Root-model replies: the code of every ```repl or ```python block, in order.

A reply may carry prose around its code. Every fenced block opened with
three backticks + `repl`, `python` or `py` (any case) and closed by a line of
three backticks is code; the blocks run in order as one step (joined with
newlines). Fences with another language (```text, ```json, a bare ```) are
quoted material and never run. A reply with no code block, or with a code
block left open, is refused before anything runs (SANDBOX_AST_REJECTED with
details.reason = "reply_format") with a message the next turn shows the
model as a corrective note. Runtime mode also accepts bare code. Never runs
anything.
"""

from __future__ import annotations

from rlm_rs.errors import RlmError

_FENCE = "```"
CODE_LANGUAGES = frozenset({"repl", "python", "py", "python3"})
NO_CODE_NOTE = (
    "your reply had no ```repl block, so nothing ran. Put the step's Python in a "
    "```repl block (prose around it is fine; several blocks run in order as one step)"
)


def _reject(message: str) -> RlmError:
    return RlmError("SANDBOX_AST_REJECTED", message, {"reason": "reply_format", "layer": "reply_format"})


def _opener(line: str) -> str | None:
    """The fence's info string (lowercased) when `line` opens a fence, else None."""
    stripped = line.strip()
    if not stripped.startswith(_FENCE):
        return None
    return stripped.lstrip("`").strip().lower()


def code_blocks(reply: str) -> list[str]:
    """The bodies of the reply's code blocks, in order; other fenced blocks skipped."""
    blocks: list[str] = []
    lines = reply.split("\n")
    index = 0
    while index < len(lines):
        info = _opener(lines[index])
        index += 1
        if info is None:
            continue
        body: list[str] = []
        closed = False
        while index < len(lines):
            line = lines[index]
            index += 1
            if line.strip() == _FENCE:
                closed = True
                break
            body.append(line)
        is_code = info.split(maxsplit=1)[0] in CODE_LANGUAGES if info else False
        if is_code and not closed:
            raise _reject(
                f"the ```{info} block is not closed by a ``` line, so nothing ran "
                "(a reply cut off by its length limit? send a shorter step)"
            )
        if is_code:
            blocks.append("\n".join(body))
    return blocks


def extract_repl_block(reply: str) -> str:
    """The step's code: every code block of the reply, in order, or RlmError."""
    blocks = code_blocks(reply)
    if not blocks:
        raise _reject(NO_CODE_NOTE)
    return "\n".join(blocks)


def code_from_submission(text: str, *, require_block: bool) -> str:
    """Runtime mode: bare code or ```repl blocks; Answerer mode: the blocks only."""
    if require_block or text.lstrip().startswith(_FENCE):
        return extract_repl_block(text)
    return text
