"""Anthropic Messages: api.anthropic.com, and the same body through Bedrock InvokeModel or Vertex rawPredict."""

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
    add_counts,
    arguments_text,
    as_int,
    as_str,
    joined,
    messages,
    role_key,
    strings,
    text_at,
)

_KEYS: Final = frozenset(
    {"anthropic_version", "top_k", "thinking", "anthropic_beta", "mcp_servers", "container", "stop_sequences"}
)
_BLOCK_TYPES: Final = frozenset(
    {
        "tool_use",
        "tool_result",
        "document",
        "thinking",
        "redacted_thinking",
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "container_upload",
    }
)
_EVENTS: Final = frozenset(
    {
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
)
_TOOL_CALLS: Final = ("tool_use", "server_tool_use")


def anthropic_content(content: object, path: Path, role: str) -> Turn:
    """Text blocks, plain-text documents, tool_result blocks (as role tool) and tool_use inputs."""
    if isinstance(content, str):
        return [(path, content, role)]
    out: Turn = []
    if not isinstance(content, list):
        return out
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind, here = block.get("type"), path + (i,)
        if kind == "text":
            out += text_at(block, "text", here, role)
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                out += text_at(source, "data", here + ("source",), role)
            elif isinstance(source, dict) and source.get("type") == "content":
                out += anthropic_content(source.get("content"), here + ("source", "content"), role)
        elif kind == "tool_result":
            out += anthropic_content(block.get("content"), here + ("content",), "tool")
        elif kind in _TOOL_CALLS:  # an earlier call the client resends: the model reads its input
            out += [(p, s, role) for p, s in strings(block.get("input"), here + ("input",))]
    return out


class Messages(Provider):
    system_keys = ("system",)
    name = "anthropic.messages"
    description = "Anthropic Messages (also via Bedrock InvokeModel / Vertex rawPredict)"
    chat: ClassVar[ChatEvidence | None] = ChatEvidence(
        keys=_KEYS, roles=frozenset({"user", "assistant"}), paths=("/messages",), block_types=_BLOCK_TYPES
    )

    def chat_body_score(self, data: dict) -> int:
        score = 0
        system = data.get("system")
        if isinstance(system, str):
            score += 1
        elif isinstance(system, list) and system and isinstance(system[0], dict) and "type" in system[0]:
            score += 2  # typed system blocks; untyped ones are Bedrock's
        choice = data.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"):
            score += 1
        return score

    def chat_block_score(self, block: dict, kind: str | None) -> int:
        return int(kind == "image" and "source" in block)  # OpenAI's images are "image_url"

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        return messages(data.get("messages"), ("messages",), role_key, "content", anthropic_content, latest_only)

    def response_shape(self, data: dict) -> bool:
        return data.get("type") == "message" and isinstance(data.get("content"), list)

    def confirm_event(self, event: dict) -> bool:
        return as_str(event.get("type")) in _EVENTS

    def response_text(self, data: object) -> ResponseText:
        if not isinstance(data, dict):
            return EMPTY
        texts: list[str] = []
        tools: list[tuple[int, str]] = []
        content = data.get("content")
        for index, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") in _TOOL_CALLS and (args := arguments_text(block.get("input"))) is not None:
                tools.append((index, args))
        return ResponseText(joined(texts), tuple(tools))

    def event_text(self, event: object) -> ResponseText:
        if not isinstance(event, dict):
            return EMPTY
        index = as_int(event.get("index")) or 0
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                return ResponseText(block["text"])
            return EMPTY  # a tool_use block starts with "input": {}; its JSON arrives in deltas
        if kind != "content_block_delta" or not isinstance(delta := event.get("delta"), dict):
            return EMPTY
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            return ResponseText(delta["text"])
        if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            return ResponseText("", ((index, delta["partial_json"]),))
        return EMPTY  # thinking, signature and citation deltas

    def usage(self, data: object) -> Usage | None:
        usage = data.get("usage") if isinstance(data, dict) else None
        if not isinstance(usage, dict):
            return None
        # input_tokens excludes the prompt-cache reads and writes; all three are billed input
        prompt = add_counts(
            usage.get("input_tokens"), usage.get("cache_creation_input_tokens"), usage.get("cache_read_input_tokens")
        )
        completion = as_int(usage.get("output_tokens"))
        return None if prompt is None and completion is None else Usage(prompt, completion)

    def event_usage(self, event: object) -> Usage | None:
        if not isinstance(event, dict):
            return None
        if event.get("type") == "message_start":
            return self.usage(event.get("message"))
        if event.get("type") == "message_delta":
            return self.usage(event)  # output_tokens so far (and input counts on newer API versions)
        return None

    def error_body(
        self, message: str, status: int, extra: dict[str, object]
    ) -> tuple[dict[str, object], dict[str, str]]:
        return {"type": "error", "error": {"type": "permission_error", "message": message, **extra}}, {}
