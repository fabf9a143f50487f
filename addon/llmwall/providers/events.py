"""Stream framing shared by every text-stream format: SSE, NDJSON and JSON arrays.

Providers stream in one of three text framings: Server-Sent Events (``data:`` lines,
events separated by a blank line), newline-delimited JSON (Ollama) or one JSON array
written out item by item (Gemini ``streamGenerateContent`` without ``alt=sse``).
Bedrock's binary AWS event-stream is decoded in ``providers/bedrock.py``.

These functions turn bytes into parsed events; what an event means is the provider
module's business. They never raise: a malformed event is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Final

_JSON_WS: Final = " \t\r\n"


def first_event(first_bytes: bytes) -> object:
    """The JSON of the first SSE event or NDJSON line (or first array item), else None."""
    text = first_bytes.decode("utf-8", errors="replace").lstrip("\ufeff" + _JSON_WS)
    decoder = json.JSONDecoder()
    if text.startswith("["):  # Gemini streamGenerateContent without alt=sse
        try:
            return decoder.raw_decode(text[1:].lstrip(_JSON_WS))[0]
        except (ValueError, RecursionError):
            return None
    if text.startswith("{"):  # NDJSON (Ollama)
        line = text.split("\n", 1)[0]
        try:
            return json.loads(line)
        except (ValueError, RecursionError):
            return None
    data_lines: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if data_lines:
                break  # end of the first event that had data
            continue
        if line.startswith("data:"):
            data_lines.append(line[5:].removeprefix(" "))
    if not data_lines:
        return None
    try:
        return json.loads("\n".join(data_lines))
    except (ValueError, RecursionError):
        return None


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def sse_events(text: str) -> Iterator[object]:
    """The parsed ``data:`` of each Server-Sent Event; non-JSON data (``[DONE]``) is skipped."""
    data_lines: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if data_lines:
                event = _loads("\n".join(data_lines))
                data_lines = []
                if event is not None:
                    yield event
            continue
        if line.startswith("data:"):
            data_lines.append(line[5:].removeprefix(" "))
    if data_lines:
        event = _loads("\n".join(data_lines))
        if event is not None:
            yield event


def ndjson_events(text: str) -> Iterator[object]:
    """One parsed object per non-empty line."""
    for line in text.splitlines():
        if line.strip():
            event = _loads(line)
            if event is not None:
                yield event


def array_events(text: str) -> Iterator[object]:
    """The items of a JSON array streamed item by item; stops at the first that does not parse."""
    decoder = json.JSONDecoder()
    pos = text.find("[") + 1
    while 0 < pos < len(text):
        while pos < len(text) and text[pos] in _JSON_WS + ",":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return
        yield item


def iter_events(body: bytes) -> Iterator[object]:
    """Every event of a text stream, whichever of the three framings it uses."""
    text = body.decode("utf-8", errors="replace").lstrip("\ufeff" + _JSON_WS)
    if text.startswith("["):
        return array_events(text)
    if text.startswith("{"):
        return ndjson_events(text)
    return sse_events(text)
