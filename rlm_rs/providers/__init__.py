"""Model providers behind one narrow interface (`Provider.complete`).

`openai`: the official SDK against any OpenAI-compatible base URL.
`scripted`: deterministic replies from a JSON file, for tests and the offline
demo. Provider secrets live only in the control plane; never log prompts.
"""

from __future__ import annotations

from rlm_rs.providers.base import Completion, Provider, ProviderError, make_provider

__all__ = ["Completion", "Provider", "ProviderError", "make_provider"]
