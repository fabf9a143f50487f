"""The provider formats llmwall knows, in the order discovery tries them.

Adding a format: write its module (a :class:`~llmwall.providers.base.Provider`
subclass, see ``providers/base.py``), add an instance here, add a request/response
sample to ``tests/provider_samples.py`` and its unit tests (README: "Adding a provider").

The order matters only for bodies that fit several formats: chat bodies
(``{"messages": [...]}``) tie-break in this order, then each ``body_key`` format is
tried in this order, then the completion formats (``{"prompt": ...}``).
"""

from __future__ import annotations

from typing import Final

from llmwall.providers import anthropic, bedrock, cohere, gemini, ollama, openai, tgi
from llmwall.providers.base import Provider

PROVIDERS: Final[tuple[Provider, ...]] = (
    openai.ChatCompletions(),
    anthropic.Messages(),
    ollama.Chat(),
    cohere.Chat(),
    bedrock.Converse(),
    gemini.Generate(),
    tgi.Generate(),
    openai.Responses(),
    openai.Completions(),
    ollama.Generate(),
)

BY_NAME: Final[dict[str, Provider]] = {p.name: p for p in PROVIDERS}
#: What an unknown or force-included ("custom") endpoint's bodies are read as.
DEFAULT_FORMAT: Final = "openai.chat"
#: Formats recognised from a ``messages`` list, a ``prompt`` or a key of their own.
CHAT: Final = tuple(p for p in PROVIDERS if p.chat is not None)
COMPLETION: Final = tuple(p for p in PROVIDERS if p.completion is not None)
OWN_KEY: Final = tuple(p for p in PROVIDERS if p.body_key is not None)
#: The top-level keys some format carries its prompt under (discovery.unrecognised_prompt).
PROMPT_KEYS: Final = frozenset(
    ["messages"] * bool(CHAT) + ["prompt"] * bool(COMPLETION) + [p.body_key for p in OWN_KEY if p.body_key]
)
#: Every family's first format: block errors are shaped per family.
_BY_FAMILY: Final[dict[str, Provider]] = {}
for _p in PROVIDERS:
    _BY_FAMILY.setdefault(_p.family, _p)


def get(fmt: str | None) -> Provider | None:
    """The provider of a format name, or None (unknown, ``custom``, None)."""
    return BY_NAME.get(fmt) if isinstance(fmt, str) else None


def for_format(fmt: str | None) -> Provider:
    """The provider of a format name; OpenAI Chat's for an unknown or ``custom`` one (the most
    common shape, which force-included endpoints are read as)."""
    return BY_NAME.get(fmt or "") or BY_NAME[DEFAULT_FORMAT]


def family(name: str) -> Provider | None:
    """A provider of the family ``name`` ("openai", "anthropic"...), or None."""
    return _BY_FAMILY.get(name)
