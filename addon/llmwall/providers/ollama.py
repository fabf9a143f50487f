"""Ollama's native API: ``/api/chat`` and ``/api/generate`` (its OpenAI-compatible ``/v1`` is openai.*).

Ollama streams unless the body says ``"stream": false``, as NDJSON: every line is a
chunk with the shape of the whole response, carrying the next piece of text.
"""

from __future__ import annotations

from typing import ClassVar, Final

from llmwall.providers.base import (
    EMPTY,
    ChatEvidence,
    CompletionEvidence,
    Provider,
    ResponseText,
    Turn,
    Usage,
    arguments_text,
    dicts,
    messages,
    prompt_turns,
    role_key,
    usage_of,
)
from llmwall.providers.openai import assistant_extras, openai_content

_CHAT_KEYS: Final = frozenset({"options", "keep_alive", "format", "think"})
_GENERATE_KEYS: Final = frozenset(
    {"options", "keep_alive", "context", "raw", "template", "system", "images", "format", "think"}
)
_GENERATE_PARAMS: Final = frozenset({"options", "raw", "template", "context", "system", "keep_alive", "stream"})


class _Ollama(Provider):
    output_cap_paths = (("options", "num_predict"),)

    def stream_requested(self, data: dict) -> bool:
        return data.get("stream") is not False  # Ollama streams unless told not to

    def event_text(self, event: object) -> ResponseText:
        return self.response_text(event)  # every NDJSON chunk has the response's shape

    def usage(self, data: object) -> Usage | None:
        # the final chunk ("done": true) or the whole response carries the counts
        return usage_of(data.get("prompt_eval_count"), data.get("eval_count")) if isinstance(data, dict) else None

    def event_usage(self, event: object) -> Usage | None:
        return self.usage(event)

    def error_body(
        self, message: str, status: int, extra: dict[str, object]
    ) -> tuple[dict[str, object], dict[str, str]]:
        return {"error": message, "error_type": "llmwall_blocked", **extra}, {}


class Chat(_Ollama):
    name = "ollama.chat"
    description = "Ollama /api/chat"
    chat: ClassVar[ChatEvidence | None] = ChatEvidence(
        keys=_CHAT_KEYS,
        roles=frozenset({"system", "user", "assistant", "tool"}),
        paths=("/api/chat",),
        list_content=False,  # Ollama content is always a string
        message_keys=frozenset({"images"}),
    )

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        turns = messages(data.get("messages"), ("messages",), role_key, "content", openai_content, latest_only)
        return turns if latest_only else turns + assistant_extras(data.get("messages"))

    def response_shape(self, data: dict) -> bool:
        return isinstance(data.get("message"), dict) and "done" in data

    def response_text(self, data: object) -> ResponseText:
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            return EMPTY
        tools: list[tuple[int, str]] = []
        for index, call in enumerate(dicts(message.get("tool_calls"))):
            function = call.get("function")
            args = arguments_text(function.get("arguments")) if isinstance(function, dict) else None
            if args is not None:
                tools.append((index, args))
        content = message.get("content")
        return ResponseText(content if isinstance(content, str) else "", tuple(tools))


class Generate(_Ollama):
    name = "ollama.generate"
    description = "Ollama /api/generate"
    # ``template`` replaces the model's prompt template: its text (around the {{ .Prompt }}
    # placeholders) is what the model reads first, so it is screened like a system prompt.
    system_keys = ("system", "template")
    completion: ClassVar[CompletionEvidence | None] = CompletionEvidence(
        keys=_GENERATE_KEYS,
        params=_GENERATE_PARAMS,
        paths=("/api/generate",),
        list_prompt=False,  # Ollama only takes a string prompt
    )

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        return prompt_turns(data, "prompt")

    def response_shape(self, data: dict) -> bool:
        return isinstance(data.get("response"), str) and "done" in data

    def response_text(self, data: object) -> ResponseText:
        text = data.get("response") if isinstance(data, dict) else None
        return ResponseText(text) if isinstance(text, str) else EMPTY
