"""Which provider reads the text of a response format.

Interim: the provider modules of the ``providers/`` split (branch issue-11) own
response text extraction; until that lands, the two formats the SDK tests drive are
read here with the same interface (``event_text``, ``response_text``, ``event_usage``,
``usage``), so the switch is one import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from llmwall.responses.formats import ResponseProvider


@dataclass(frozen=True)
class Text:
    text: str = ""
    tool_arguments: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def _dicts(value: object) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class OpenAIChat:
    name = "openai.chat"

    def event_text(self, event: object) -> Text:
        return self._text(event, "delta")

    def response_text(self, data: object) -> Text:
        return self._text(data, "message")

    @staticmethod
    def _text(data: object, key: str) -> Text:
        if not isinstance(data, dict):
            return Text()
        texts: list[str] = []
        tools: list[tuple[int, str]] = []
        for choice in _dicts(data.get("choices")):
            message = choice.get(key)
            if not isinstance(message, dict):
                continue
            for name in ("content", "refusal"):
                if isinstance(message.get(name), str):
                    texts.append(message[name])
            for pos, call in enumerate(_dicts(message.get("tool_calls"))):
                args = call.get("function", {}).get("arguments") if isinstance(call.get("function"), dict) else None
                if isinstance(args, str):
                    index = _int(call.get("index"))
                    tools.append((pos if index is None else index, args))
        return Text(("" if key == "delta" else "\n").join(t for t in texts if t), tuple(tools))

    def event_usage(self, event: object) -> Usage | None:
        return self.usage(event)

    def usage(self, data: object) -> Usage | None:
        usage = data.get("usage") if isinstance(data, dict) else None
        if not isinstance(usage, dict):
            return None
        return Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")))


class AnthropicMessages:
    name = "anthropic.messages"

    def event_text(self, event: object) -> Text:
        if not isinstance(event, dict) or event.get("type") != "content_block_delta":
            return Text()
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return Text()
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            return Text(delta["text"])
        if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            return Text("", ((_int(event.get("index")) or 0, delta["partial_json"]),))
        return Text()

    def response_text(self, data: object) -> Text:
        if not isinstance(data, dict):
            return Text()
        texts: list[str] = []
        tools: list[tuple[int, str]] = []
        for index, block in enumerate(_dicts(data.get("content"))):
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_use" and "input" in block:
                tools.append((index, json.dumps(block["input"], ensure_ascii=False)))
        return Text("\n".join(t for t in texts if t), tuple(tools))

    def event_usage(self, event: object) -> Usage | None:
        if not isinstance(event, dict) or event.get("type") != "message_delta":
            return None
        return self.usage(event)

    def usage(self, data: object) -> Usage | None:
        usage = data.get("usage") if isinstance(data, dict) else None
        if not isinstance(usage, dict):
            return None
        return Usage(_int(usage.get("input_tokens")), _int(usage.get("output_tokens")))


_PROVIDERS: Final[dict[str, ResponseProvider]] = {p.name: p for p in (OpenAIChat(), AnthropicMessages())}


def provider_for(fmt: str) -> ResponseProvider:
    """The provider that reads ``fmt``'s responses (OpenAI Chat for unknown formats)."""
    return _PROVIDERS.get(fmt) or _PROVIDERS["openai.chat"]
