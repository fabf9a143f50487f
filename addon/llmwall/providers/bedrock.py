"""Amazon Bedrock Converse and ConverseStream (``/model/{id}/converse[-stream]``).

Bedrock InvokeModel carries the model vendor's own body (Anthropic Messages, ...) and is
recognised as that format. ConverseStream answers in AWS's binary event-stream framing:
:func:`aws_events` decodes it into ``{event_type: payload}`` dicts, the shape boto3
yields, which is what :meth:`Converse.event_text` and ``event_usage`` read.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
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
    dicts,
    dig,
    joined,
    messages,
    role_key,
    strings,
    text_at,
)

_KEYS: Final = frozenset(
    {
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "performanceConfig",
        "requestMetadata",
    }
)
_BLOCKS: Final = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "toolUse",
        "toolResult",
        "guardContent",
        "reasoningContent",
        "cachePoint",
    }
)
_EVENTS: Final = frozenset(
    {
        b"messageStart",
        b"contentBlockStart",
        b"contentBlockDelta",
        b"contentBlockStop",
        b"messageStop",
        b"metadata",
    }
)


def bedrock_content(content: object, path: Path, role: str) -> Turn:
    """Converse blocks: {"text"}, {"guardContent": {"text": {"text"}}}, {"toolUse"} inputs, {"toolResult"}."""
    out: Turn = []
    if not isinstance(content, list):
        return out
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        here = path + (i,)
        if "text" in block:
            out += text_at(block, "text", here, role)
        elif isinstance(block.get("guardContent"), dict):
            inner = block["guardContent"].get("text")
            out += text_at(inner, "text", here + ("guardContent", "text"), role)
        elif isinstance(block.get("toolUse"), dict):  # an earlier call the client resends
            out += [(p, s, role) for p, s in strings(block["toolUse"].get("input"), here + ("toolUse", "input"))]
        elif isinstance(block.get("toolResult"), dict):
            results = block["toolResult"].get("content")
            rpath = here + ("toolResult", "content")
            for j, item in enumerate(results if isinstance(results, list) else []):
                if not isinstance(item, dict):
                    continue
                if "text" in item:
                    out += text_at(item, "text", rpath + (j,), "tool")
                elif "json" in item:
                    out += [(p, s, "tool") for p, s in strings(item["json"], rpath + (j, "json"))]
    return out


def _first_event_type(first_bytes: bytes) -> bytes | None:
    """``:event-type`` of the first AWS event-stream message; works on a truncated start."""
    if len(first_bytes) < 16:
        return None
    total, headers_len, prelude_crc = struct.unpack(">III", first_bytes[:12])
    if zlib.crc32(first_bytes[:8]) != prelude_crc or headers_len > total:
        return None
    pos, end = 12, min(12 + headers_len, len(first_bytes))
    while pos < end:
        name_len = first_bytes[pos]
        name = first_bytes[pos + 1 : pos + 1 + name_len]
        pos += 1 + name_len
        if pos >= end:
            return None
        value_type = first_bytes[pos]
        if value_type != 7 or pos + 3 > end:  # only string headers matter; others: give up rather than guess
            return None
        (value_len,) = struct.unpack(">H", first_bytes[pos + 1 : pos + 3])
        value = first_bytes[pos + 3 : pos + 3 + value_len]
        pos += 3 + value_len
        if name == b":event-type":
            return value
    return None


def aws_events(body: bytes) -> Iterator[dict[str, object]]:
    """Each complete, CRC-valid event-stream message as ``{event_type: parsed payload}``.

    Stops at the first damaged or incomplete message; messages whose payload is not a
    JSON object (exceptions, other encodings) are skipped.
    """
    pos = 0
    while pos + 16 <= len(body):
        total, headers_len, prelude_crc = struct.unpack(">III", body[pos : pos + 12])
        end = pos + total
        if zlib.crc32(body[pos : pos + 8]) != prelude_crc or total < 16 or headers_len > total - 16 or end > len(body):
            return
        if zlib.crc32(body[pos : end - 4]) != struct.unpack(">I", body[end - 4 : end])[0]:
            return
        event_type = _first_event_type(body[pos:end])
        try:
            payload = json.loads(body[pos + 12 + headers_len : end - 4])
        except (ValueError, RecursionError):
            payload = None
        if event_type is not None and isinstance(payload, dict):
            yield {event_type.decode("utf-8", errors="replace"): payload}
        pos = end


class Converse(Provider):
    system_keys = ("system",)
    name = "bedrock.converse"
    output_cap_paths = (("inferenceConfig", "maxTokens"),)
    description = "Amazon Bedrock Converse and ConverseStream"
    chat: ClassVar[ChatEvidence | None] = ChatEvidence(
        keys=_KEYS,
        roles=frozenset({"user", "assistant"}),
        paths=("/converse", "/converse-stream"),
        string_content=False,
        untyped_blocks=True,
        untyped_block_keys=_BLOCKS,
    )

    def chat_body_score(self, data: dict) -> int:
        system = data.get("system")
        untyped = isinstance(system, list) and system and isinstance(system[0], dict) and "type" not in system[0]
        return 2 if untyped else 0

    def streams_by_path(self, route: str, query: str) -> bool:
        return route.endswith("/converse-stream")

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        return messages(data.get("messages"), ("messages",), role_key, "content", bedrock_content, latest_only)

    def response_shape(self, data: dict) -> bool:
        return isinstance(data.get("output"), dict) and isinstance(data["output"].get("message"), dict)

    def confirm_stream(self, first_bytes: bytes) -> bool:
        return _first_event_type(first_bytes) in _EVENTS

    def response_text(self, data: object) -> ResponseText:
        texts: list[str] = []
        tools: list[tuple[int, str]] = []
        for index, block in enumerate(dicts(dig(data, "output", "message", "content"))):
            if isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif (args := arguments_text(dig(block, "toolUse", "input"))) is not None:
                tools.append((index, args))
        return ResponseText(joined(texts), tuple(tools))

    def event_text(self, event: object) -> ResponseText:
        delta = dig(event, "contentBlockDelta", "delta")
        if not isinstance(delta, dict):
            return EMPTY
        if isinstance(delta.get("text"), str):
            return ResponseText(delta["text"])
        args = dig(delta, "toolUse", "input")
        if isinstance(args, str) and args:
            return ResponseText("", ((as_int(dig(event, "contentBlockDelta", "contentBlockIndex")) or 0, args),))
        return EMPTY  # reasoningContent deltas

    def usage(self, data: object) -> Usage | None:
        usage = dig(data, "usage")
        if not isinstance(usage, dict):
            return None
        prompt = add_counts(
            usage.get("inputTokens"), usage.get("cacheReadInputTokens"), usage.get("cacheWriteInputTokens")
        )
        completion = as_int(usage.get("outputTokens"))
        return None if prompt is None and completion is None else Usage(prompt, completion)

    def event_usage(self, event: object) -> Usage | None:
        return self.usage(dig(event, "metadata"))

    def error_body(
        self, message: str, status: int, extra: dict[str, object]
    ) -> tuple[dict[str, object], dict[str, str]]:
        return {"message": message, **extra}, {"x-amzn-ErrorType": "AccessDeniedException"}
