"""Prompt text from each provider format, with the exact JSON path of every string.

Default: the latest user turn only, i.e. the last user message that carries
user-written text (a user message holding only tool results is not a user turn).
``whole_conversation=True``: every user, assistant and tool-result text, in order.

Never extracted: system prompts and instructions, images/audio/files, tool schemas,
tool-call arguments, model reasoning. Tool *results* (and Cohere's RAG
``documents``) are untrusted input that often carries indirect prompt injection, so
whole-conversation mode includes them with role ``tool``.

Each format's reader (``Provider.turns`` in ``providers/<family>.py``) yields
candidate parts per turn; the turn selection here is the same for all. Each
TextPart's ``path`` leads from the parsed body to the very string it holds;
``redact.redact_body`` relies on that to rewrite the literal in the raw body.
Nothing here raises on odd shapes: a wrong type anywhere just yields fewer parts.
"""

from __future__ import annotations

from llmwall.detectors.base import Prompt, TextPart
from llmwall.providers import registry
from llmwall.providers.base import Turn, strings


def _select(turns: list[Turn], whole_conversation: bool) -> list[TextPart]:
    """All non-empty parts, or those of the last turn holding user-written text."""
    if whole_conversation:
        chosen = [part for turn in turns for part in turn]
    else:
        chosen = []
        for turn in reversed(turns):
            users = [part for part in turn if part[2] == "user" and part[1]]
            if users:
                chosen = users
                break
    return [TextPart(path=p, text=t, role=r) for p, t, r in chosen if t]


def extract(fmt: str, data: object, whole_conversation: bool = False) -> Prompt:
    """The screened text of a classified request body (see the module docstring)."""
    if not isinstance(data, dict):
        return Prompt(format=fmt, parts=())
    provider = registry.get(fmt)
    turns = provider.turns(data, not whole_conversation) if provider else []
    parts = _select(turns, whole_conversation)
    model = data.get("model")
    stream = provider.stream_requested(data) if provider else data.get("stream") is True
    return Prompt(
        format=fmt,
        parts=tuple(parts),
        model=model if isinstance(model, str) and model else None,
        stream=stream,
    )


def extract_all_strings(data: object, fmt: str = "unknown", max_parts: int = 1000) -> Prompt:
    """Every string value in the body (keys excluded), for force-included unknown endpoints."""
    parts = tuple(TextPart(path=p, text=s, role="unknown") for p, s in strings(data, (), limit=max_parts))
    return Prompt(format=fmt, parts=parts)
