"""Token usage reported by the providers, in plain and streamed responses, and requested output caps.

This module should move into the per-provider modules under ``providers/`` once they
exist (each provider then reports its own usage); it is kept in one place here so the
lead can reconcile it in one step.

What each provider reports (field names from the providers' API references):

* OpenAI chat and completions: ``usage.prompt_tokens`` / ``usage.completion_tokens``; when
  streaming, only with ``stream_options.include_usage``, in the final chunk.
* OpenAI Responses: ``usage.input_tokens`` / ``usage.output_tokens``; streamed in the
  ``response.completed`` event's ``response.usage``.
* Anthropic Messages: ``usage.input_tokens`` / ``usage.output_tokens``; streamed in
  ``message_start`` (``message.usage``) and ``message_delta`` (``usage``, cumulative).
* Gemini: ``usageMetadata.promptTokenCount`` / ``candidatesTokenCount`` (+ ``thoughtsTokenCount``,
  billed as output); every streamed chunk carries the running totals.
* Ollama: ``prompt_eval_count`` / ``eval_count``, streamed in the final ``done`` line.
* Bedrock Converse: ``usage.inputTokens`` / ``usage.outputTokens``; Cohere:
  ``usage.billed_units`` (v2) or ``meta.billed_units`` (v1) ``input_tokens`` / ``output_tokens``.

When a response carries no usage, the completion text is collected so the caller can
count it with the tokenizer.  Only counts ever leave this module's callers; the text
is used for counting and dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

#: Most completion text kept for counting when a response has no usage (characters).
MAX_TEXT_CHARS: Final = 1_000_000
_PROMPT_KEYS: Final = ("prompt_tokens", "input_tokens", "promptTokenCount", "inputTokens")
_COMPLETION_KEYS: Final = ("completion_tokens", "output_tokens", "candidatesTokenCount", "outputTokens")
_STREAM_TYPES: Final = ("event-stream", "ndjson", "jsonl")


@dataclass
class Usage:
    """Token counts found in a response (None: not reported) and the completion text otherwise."""

    prompt: int | None = None
    completion: int | None = None
    text: list[str] = field(default_factory=list)
    _chars: int = 0

    def add_text(self, value: object) -> None:
        if isinstance(value, str) and value and self._chars < MAX_TEXT_CHARS:
            piece = value[: MAX_TEXT_CHARS - self._chars]
            self.text.append(piece)
            self._chars += len(piece)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _usage_block(obj: dict[str, Any]) -> dict[str, Any] | None:
    for holder in (obj, obj.get("response"), obj.get("message"), obj.get("meta")):
        if not isinstance(holder, dict):
            continue
        for key in ("usage", "usageMetadata", "billed_units"):
            block = holder.get(key)
            if isinstance(block, dict):
                billed = block.get("billed_units")
                return billed if isinstance(billed, dict) else block
    return None


def _read_object(obj: object, usage: Usage) -> None:
    """Update ``usage`` from one JSON object of a response (a whole body or one stream event)."""
    if isinstance(obj, list):  # Gemini's streamGenerateContent without alt=sse: a JSON array
        for item in obj[:10_000]:
            _read_object(item, usage)
        return
    if not isinstance(obj, dict):
        return
    block = _usage_block(obj)
    if block is not None:
        prompt = next((c for k in _PROMPT_KEYS if (c := _count(block.get(k))) is not None), None)
        completion = next((c for k in _COMPLETION_KEYS if (c := _count(block.get(k))) is not None), None)
        thoughts = _count(block.get("thoughtsTokenCount"))
        if completion is not None and thoughts:
            completion += thoughts
        usage.prompt = prompt if prompt is not None else usage.prompt
        usage.completion = completion if completion is not None else usage.completion
    if _count(obj.get("eval_count")) is not None:  # Ollama
        usage.completion = obj["eval_count"]
        usage.prompt = _count(obj.get("prompt_eval_count")) or usage.prompt
    _read_text(obj, usage)


def _read_text(obj: dict[str, Any], usage: Usage) -> None:
    """Collect completion text from the shapes the providers use (plain and streamed)."""
    for choice in obj.get("choices") or ():
        if isinstance(choice, dict):
            usage.add_text(choice.get("text"))
            for key in ("message", "delta"):
                part = choice.get(key)
                if isinstance(part, dict):
                    usage.add_text(part.get("content"))
    if obj.get("type") == "response.output_text.delta" or isinstance(obj.get("delta"), dict):
        delta = obj.get("delta")
        usage.add_text(delta.get("text") if isinstance(delta, dict) else delta)
    for block in _content_blocks(obj):
        usage.add_text(block.get("text"))
    for cand in obj.get("candidates") or ():
        parts = cand.get("content", {}).get("parts") if isinstance(cand, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict):
                usage.add_text(part.get("text"))
    message = obj.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):  # Ollama chat
        usage.add_text(message["content"])
    if isinstance(obj.get("response"), str):  # Ollama generate
        usage.add_text(obj["response"])


def _content_blocks(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Anthropic ``content`` blocks, Responses ``output[].content`` blocks, Cohere v2 ``message.content``."""
    sources: list[object] = [obj.get("content")]
    message = obj.get("message")
    if isinstance(message, dict):
        sources.append(message.get("content"))
    for item in obj.get("output") or ():
        if isinstance(item, dict):
            sources.append(item.get("content"))
    for source in sources:
        for block in source if isinstance(source, list) else ():
            if isinstance(block, dict):
                yield block


def _stream_objects(body: bytes) -> Iterator[object]:
    """The JSON objects of an SSE (``data:`` lines) or newline-delimited JSON body."""
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line.startswith((b"{", b"[")):
            continue
        try:
            yield json.loads(line)
        except ValueError:
            continue


def from_response(body: bytes, content_type: str) -> Usage:
    """Usage (and, for counting, completion text) of a whole response body, plain or streamed."""
    usage = Usage()
    if any(t in content_type for t in _STREAM_TYPES):
        for obj in _stream_objects(body):
            _read_object(obj, usage)
        return usage
    try:
        data = json.loads(body)
    except ValueError:
        for obj in _stream_objects(body):  # a stream sent without its content type
            _read_object(obj, usage)
        return usage
    _read_object(data, usage)
    return usage


def max_output_tokens(data: object) -> int | None:
    """The output cap a request asks for (``max_tokens`` and its per-provider names), if any."""
    if not isinstance(data, dict):
        return None
    candidates: list[object] = [data.get(k) for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")]
    for holder, key in (
        ("generationConfig", "maxOutputTokens"),
        ("options", "num_predict"),
        ("parameters", "max_new_tokens"),
        ("inferenceConfig", "maxTokens"),
    ):
        inner = data.get(holder)
        if isinstance(inner, dict):
            candidates.append(inner.get(key))
    return next((c for c in map(_count, candidates) if c is not None), None)
