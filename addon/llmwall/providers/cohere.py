"""Cohere Chat API v2 (``/v2/chat``); v1's ``{"message": ...}`` body is not recognised."""

from __future__ import annotations

from typing import ClassVar, Final

from llmwall.providers.base import (
    EMPTY,
    ChatEvidence,
    Path,
    Provider,
    ResponseText,
    Turn,
    Usage,
    arguments_text,
    as_int,
    as_str,
    dicts,
    dig,
    joined,
    messages,
    role_key,
    strings,
    text_at,
    usage_of,
)
from llmwall.providers.openai import assistant_extras

_KEYS: Final = frozenset(
    {
        # shared with OpenAI (seed...logprobs) and Anthropic (stop_sequences)
        "seed",
        "response_format",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
        "stop_sequences",
        "documents",
        "citation_options",
        "safety_mode",
        "k",
        "p",
        "strict_tools",
        "return_prompt",
        "tool_results",
        "priority",
    }
)
# Also Anthropic block types, which come first in the registry and so take these blocks' point.
_PART_TYPES: Final = frozenset({"document", "thinking"})
_EVENTS: Final = frozenset(
    {
        "message-start",
        "content-start",
        "content-delta",
        "content-end",
        "tool-plan-delta",
        "tool-call-start",
        "tool-call-delta",
        "tool-call-end",
        "citation-start",
        "citation-end",
        "message-end",
        "debug",
    }
)


def cohere_content(content: object, path: Path, role: str) -> Turn:
    """String or [{"type": "text"}, {"type": "document", "document": {"data": ...}}]."""
    if isinstance(content, str):
        return [(path, content, role)]
    out: Turn = []
    for i, part in enumerate(content if isinstance(content, list) else []):
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            out += text_at(part, "text", path + (i,), role)
        elif part.get("type") == "document" and isinstance(part.get("document"), dict):
            out += [(p, s, role) for p, s in strings(part["document"].get("data"), path + (i, "document", "data"))]
    return out


class Chat(Provider):
    name = "cohere.chat"
    description = "Cohere Chat API v2 (/v2/chat)"
    chat: ClassVar[ChatEvidence | None] = ChatEvidence(
        keys=_KEYS,
        roles=frozenset({"system", "user", "assistant", "tool"}),
        paths=("/v2/chat",),
        message_keys=frozenset({"tool_plan"}),
        block_types=_PART_TYPES,
    )

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        turns = messages(data.get("messages"), ("messages",), role_key, "content", cohere_content, latest_only)
        if not latest_only:
            turns += assistant_extras(data.get("messages"))
        docs = data.get("documents")
        if isinstance(docs, list) and not latest_only:  # RAG documents: untrusted, like tool results
            turns.insert(
                0, [(p, s, "tool") for p, s in strings(docs, ("documents",)) if not (len(p) == 3 and p[2] == "id")]
            )
        return turns

    def response_shape(self, data: dict) -> bool:
        return isinstance(data.get("message"), dict) and "finish_reason" in data

    def confirm_event(self, event: dict) -> bool:
        return as_str(event.get("type")) in _EVENTS

    def response_text(self, data: object) -> ResponseText:
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            return EMPTY
        content = message.get("content")
        texts = [content] if isinstance(content, str) else []
        texts += [p["text"] for p in dicts(content) if p.get("type") == "text" and isinstance(p.get("text"), str)]
        tools: list[tuple[int, str]] = []
        for index, call in enumerate(dicts(message.get("tool_calls"))):
            if (args := arguments_text(dig(call, "function", "arguments"))) is not None:
                tools.append((index, args))
        return ResponseText(joined(texts), tuple(tools))

    def event_text(self, event: object) -> ResponseText:
        if not isinstance(event, dict):
            return EMPTY
        kind = event.get("type")
        if kind in ("content-start", "content-delta"):
            text = dig(event, "delta", "message", "content", "text")
            return ResponseText(text) if isinstance(text, str) and text else EMPTY
        if kind in ("tool-call-start", "tool-call-delta"):
            args = dig(event, "delta", "message", "tool_calls", "function", "arguments")
            if isinstance(args, str) and args:
                return ResponseText("", ((as_int(event.get("index")) or 0, args),))
        return EMPTY  # the tool plan is the model's reasoning, left out like thinking

    def usage(self, data: object) -> Usage | None:
        # ``tokens`` (what the model read and wrote), else ``billed_units`` (what was billed)
        counts = [c for c in (dig(data, "usage", "tokens"), dig(data, "usage", "billed_units")) if isinstance(c, dict)]

        def first(key: str) -> int | None:
            return next((n for c in counts if (n := as_int(c.get(key))) is not None), None)

        return usage_of(first("input_tokens"), first("output_tokens"))

    def event_usage(self, event: object) -> Usage | None:
        if isinstance(event, dict) and event.get("type") == "message-end":
            return self.usage(event.get("delta"))
        return None

    def error_body(
        self, message: str, status: int, extra: dict[str, object]
    ) -> tuple[dict[str, object], dict[str, str]]:
        return {"message": message, **extra}, {}
