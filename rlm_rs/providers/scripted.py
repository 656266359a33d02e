"""The `scripted` provider: deterministic replies from a JSON script.

Script shape (RLM_SCRIPTED_PROVIDER_FILE, or a dict in tests):
  {"executions": [{"match": "<substring of the question>", "root": ["<reply turn 0>", ...]}],
   "sub": [{"match": "<substring of the prompt>", "text": "<answer>"}],
   "default_sub": "<answer when nothing matches>",
   "fail_sub": ["<substring>"]}   # prompts that raise a provider error
A root turn past the end of its list repeats the last reply. Token counts are
whitespace word counts, so cost accounting has numbers to work with offline.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from rlm_rs.providers.base import CallContext, Completion, ProviderError
from rlm_rs.settings import Settings

DEFAULT_SCRIPT: dict[str, Any] = {
    "executions": [
        {
            "match": "",
            "root": [
                "```repl\n"
                "doc = context[0]\n"
                "print(len(context), len(doc))\n"
                "head = doc.slice(0, min(len(doc), 400), tag='context:opening')\n"
                "state['work']['opening'] = head\n"
                "tool.FINAL('The corpus opens with: ' + head[:200])\n"
                "```"
            ],
        }
    ],
    "sub": [],
    "default_sub": "I could not find that in the text.",
}


class ScriptedProvider:
    name = "scripted"

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        # the most recent calls (bounded: a long-running appliance must not grow)
        self.calls: collections.deque[dict[str, Any]] = collections.deque(maxlen=1_000)

    @classmethod
    def from_settings(cls, settings: Settings) -> ScriptedProvider:
        path: Path | None = settings.scripted_provider_file
        if path is None:
            return cls(DEFAULT_SCRIPT)
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        context: CallContext,
    ) -> Completion:
        prompt = "\n".join(m.get("content", "") for m in messages)
        self.calls.append({"role": context.role, "model": model, "key": context.key, "prompt": prompt})
        if context.role == "root":
            text = self._root(context)
        else:
            if any(marker in prompt for marker in self.script.get("fail_sub", [])):
                raise ProviderError("scripted failure", retryable=False, status=500)
            text = next(
                (entry["text"] for entry in self.script.get("sub", []) if entry["match"] in prompt),
                self.script.get("default_sub", ""),
            )
        return Completion(
            text=text, model=model,
            input_tokens=len(prompt.split()), output_tokens=len(text.split()),
        )  # fmt: skip

    def _root(self, context: CallContext) -> str:
        for entry in self.script.get("executions", []):
            if entry.get("match", "") in context.question:
                replies: list[str] = entry["root"]
                return replies[min(context.turn_index, len(replies) - 1)]
        raise ProviderError("no scripted root replies match this question")
