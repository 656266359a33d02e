"""Root-model replies: exactly one ```repl fenced block and nothing else.

Answerer mode requires the whole reply to be one block opened with three
backticks + `repl` and closed with three backticks; prose or a second block
outside it is rejected before anything runs (SANDBOX_AST_REJECTED with
details.reason = "reply_format"). Runtime mode also accepts bare code.
"""

from __future__ import annotations

from rlm_rs.errors import RlmError

_OPEN = "```repl"
_FENCE = "```"


def _reject(message: str) -> RlmError:
    return RlmError("SANDBOX_AST_REJECTED", message, {"reason": "reply_format"})


def extract_repl_block(reply: str) -> str:
    """The code inside the reply's single ```repl block, or RlmError."""
    lines = reply.strip().split("\n")
    if not lines or lines[0].strip() != _OPEN:
        if _OPEN in reply:
            raise _reject("the reply has text before its ```repl block; send only the block")
        raise _reject("the reply must be exactly one ```repl fenced block")
    if len(lines) < 2 or lines[-1].strip() != _FENCE:
        raise _reject("the ```repl block is not closed by ``` on the reply's last line")
    body = lines[1:-1]
    for number, line in enumerate(body, start=2):
        if line.lstrip().startswith(_FENCE):
            raise _reject(
                f"line {number}: a second fence inside or after the ```repl block; "
                "send exactly one block and nothing outside it"
            )
    return "\n".join(body)


def code_from_submission(text: str, *, require_block: bool) -> str:
    """Runtime mode: bare code or one ```repl block; Answerer mode: the block only."""
    if require_block or text.lstrip().startswith(_FENCE):
        return extract_repl_block(text)
    return text
