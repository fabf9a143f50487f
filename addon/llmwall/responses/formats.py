"""Provider text of responses, located in their JSON, and stream endings in each provider's format.

What an event or a body *says* (its text, tool-call arguments, usage) is the provider
module's business; this module only finds *where* each piece lives, so a redaction can
rewrite exactly that string literal: the provider's text is matched against the
string values of the event's JSON. A piece that cannot be located gets no path;
redacting it fails closed (the stream is cut) rather than guessing.

A cut stream ends the way its provider ends a filtered or failed stream, so the
official SDKs stop or raise cleanly instead of waiting for more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from llmwall.providers.base import Provider, ResponseText
from llmwall.responses.framing import AWS_EVENTSTREAM, JSON_ARRAY, NDJSON, Frame, aws_message
from llmwall.responses.window import Delta, Segment

Path = tuple[str | int, ...]
#: At most this many string values of one event or body are considered.
MAX_LEAVES: Final = 10_000
TEXT_CHANNEL: Final = "text"
RECAP_CHANNEL: Final = "recap"
#: Keys under which stream events carry model text outside their deltas.
RECAP_KEYS: Final = frozenset({"text", "generated_text", "arguments", "content", "output_text", "refusal", "input"})


#: What response screening needs of a provider: its response readers (``event_text``,
#: ``response_text``, ``event_usage``, ``usage``) and ``name``.
ResponseProvider = Provider
#: What a provider read from an answer or one stream event.
ResponseTextLike = ResponseText


def leaves(data: object, limit: int = MAX_LEAVES) -> Iterator[tuple[Path, str]]:
    """Every non-empty string value in ``data`` with its path, in document order (iterative)."""
    stack: list[tuple[Path, object]] = [((), data)]
    found = 0
    while stack and found < limit:
        path, node = stack.pop()
        if isinstance(node, str):
            if node:
                found += 1
                yield path, node
        elif isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in reversed(list(enumerate(node))))


def locate(data: object, text: str, channel: object) -> list[Segment]:
    """Segments of ``text`` as string values of ``data``: one value equal to it, or several
    values that, in document order, join into it (choices and parts are joined by newlines)."""
    if not text:
        return []
    values = list(leaves(data))
    for path, value in values:
        if value == text:
            return [Segment(path, text, channel)]
    parts = [(p, v) for p, v in values if v in text]
    for sep in ("", "\n"):
        if parts and sep.join(v for _, v in parts) == text:
            return [Segment(p, v, channel) for p, v in parts]
    return [Segment(None, text, channel)]


def segments(data: object, said: ResponseTextLike, recap: bool = False) -> tuple[Segment, ...]:
    """The located segments of what a provider read from ``data`` (text, then each tool call).

    With ``recap`` (stream events), text the provider does not count as a delta is screened
    too: some streams repeat the whole answer at the end (OpenAI Responses'
    ``response.output_text.done`` and ``response.completed``, TGI's ``generated_text``), and
    a redaction that missed the recap would be no redaction.
    """
    out = locate(data, said.text, TEXT_CHANNEL)
    for index, arguments in said.tool_arguments:
        out += locate(data, arguments, ("tool", index))
    if recap:
        taken = {seg.path for seg in out}
        out += [
            Segment(path, value, (RECAP_CHANNEL, n), counted=False)
            for n, (path, value) in enumerate(leaves(data))
            if path not in taken and path and path[-1] in RECAP_KEYS
        ]
    return tuple(out)


def completion_tokens(usage: object) -> int | None:
    value = getattr(usage, "completion_tokens", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class StreamReader:
    """Parses the events of one stream for the screener; remembers what an ending needs."""

    provider: ResponseProvider
    ids: dict[str, object] = field(default_factory=dict)  # id / model / created of the last event
    items: int = 0  # events with a payload seen (JSON-array endings need to know)

    def __call__(self, frame: Frame) -> Delta:
        if frame.data is None:
            return Delta()
        payload = frame.data.strip()
        if frame.kind != AWS_EVENTSTREAM and payload == b"[DONE]":
            return Delta()
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):
            return Delta()
        self.items += 1
        if isinstance(event, dict):
            for key in ("id", "model", "created"):
                if key in event and isinstance(event[key], (str, int)):
                    self.ids[key] = event[key]
        payload_json = event
        if frame.kind == AWS_EVENTSTREAM:  # providers read Bedrock events as {event type: payload}
            event = {frame.event or "": payload_json}
        said = self.provider.event_text(event)
        return Delta(segments(payload_json, said, recap=True), completion_tokens(self.provider.event_usage(event)))


def stream_ending(fmt: str, framing: str, message: str, reader: StreamReader, released_items: int) -> bytes:
    """The bytes that end a cut stream in ``fmt``'s own way (see docs/architecture.md)."""
    family = fmt.split(".", 1)[0]
    if framing == AWS_EVENTSTREAM:
        return aws_message(
            {
                ":message-type": "exception",
                ":exception-type": "validationException",
                ":content-type": "application/json",
            },
            json.dumps({"message": message}).encode(),
        )
    if family == "gemini":
        item = {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "SAFETY", "index": 0}
            ],
            "llmwall": message,
        }
        if framing == JSON_ARRAY:
            return (b"[" if released_items == 0 else b",") + json.dumps(item).encode() + b"]"
        return _sse(None, item)
    if framing == NDJSON or family == "ollama":
        return json.dumps({"error": message}).encode() + b"\n"
    if fmt == "openai.responses":
        return _sse("error", {"type": "error", "code": "llmwall_blocked", "message": message, "param": None})
    if family == "anthropic":
        return _sse("error", {"type": "error", "error": {"type": "permission_error", "message": message}})
    if family == "tgi":
        return _sse(None, {"error": message, "error_type": "llmwall_blocked"})
    if family == "cohere":
        return _sse("message-end", {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": message}})
    ids = {
        "id": reader.ids.get("id", "llmwall-cut"),
        "created": reader.ids.get("created", int(time.time())),
        "model": reader.ids.get("model", ""),
    }
    if fmt == "openai.completions":
        chunk = {
            **ids,
            "object": "text_completion",
            "choices": [{"index": 0, "text": "", "finish_reason": "content_filter", "logprobs": None}],
            "llmwall": message,  # the completions chunk has no field for a reason
        }
    else:
        chunk = {
            **ids,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"refusal": message}, "finish_reason": "content_filter"}],
        }
    return _sse(None, chunk) + b"data: [DONE]\n\n"


def _sse(event: str | None, data: object) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data).encode() + b"\n\n"
