"""Cutting a streamed response body into events, incrementally and byte-exactly.

mitmproxy hands a streamed body over in whatever pieces the network delivered; an
event (an SSE block, an NDJSON line, a JSON-array item, an AWS event-stream message)
may arrive split at any byte. A framer keeps only the bytes of the one incomplete
event and returns every complete one as a :class:`Frame` whose ``raw`` bytes, joined,
are exactly the input, so a stream nobody acts on leaves byte for byte unchanged.

An event larger than ``max_frame`` bytes raises :class:`FrameTooLarge`: the caller
decides (llmwall cuts the stream) instead of buffering without bound.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

#: The largest single event a framer buffers (1 MiB): far above any provider's events.
MAX_FRAME: Final = 1 << 20

SSE: Final = "sse"
NDJSON: Final = "ndjson"
JSON_ARRAY: Final = "json-array"
AWS_EVENTSTREAM: Final = "aws-eventstream"

_SSE_ENDS: Final = (b"\r\n\r\n", b"\n\n", b"\r\r")
_DATA: Final = b"data:"
_EVENT: Final = b"event:"


class FrameTooLarge(ValueError):
    """An event grew past the framer's limit before it ended."""


@dataclass
class Frame:
    """One event: its exact bytes, and where its JSON document lies inside them.

    ``data`` is the event's payload (an SSE event's ``data`` field, an NDJSON line, an
    array item, an event-stream message's payload), None for comments, blank lines and
    separators. ``span`` is the (start, end) of ``data`` in ``raw`` when it appears there
    verbatim, so a rewrite can splice it; ``event`` is the SSE ``event`` name, if any.
    """

    raw: bytes
    data: bytes | None = None
    span: tuple[int, int] | None = None
    event: str | None = None
    kind: str = SSE

    def with_data(self, new: bytes) -> bytes:
        """``raw`` with the payload replaced by ``new`` (every other byte kept)."""
        if self.kind == AWS_EVENTSTREAM:
            return _aws_rebuild(self.raw, new)
        if self.span is not None:
            start, end = self.span
            return self.raw[:start] + new + self.raw[end:]
        # SSE data spread over several lines: keep the other fields, one data line.
        kept = [line for line in _lines(self.raw) if line and not line.startswith(_DATA)]
        return b"".join(line + b"\n" for line in kept) + _DATA + b" " + new + b"\n\n"


def _lines(block: bytes) -> list[bytes]:
    return block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")


class Framer:
    """Base class: ``feed`` returns the complete frames; ``flush`` the rest at the end."""

    kind: str = SSE

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = self._frames()
        if len(self._buf) > self.max_frame:
            raise FrameTooLarge(f"{self.kind} event over {self.max_frame} bytes")
        return frames

    def flush(self) -> list[Frame]:
        """What is left when the stream ends: one last frame, parsed if it is complete enough."""
        rest, self._buf = bytes(self._buf), bytearray()
        return [self._last(rest)] if rest else []

    def _frames(self) -> list[Frame]:
        raise NotImplementedError

    def _last(self, rest: bytes) -> Frame:
        return Frame(rest, kind=self.kind)

    @property
    def buffered(self) -> int:
        return len(self._buf)


class SSEFramer(Framer):
    """Server-sent events (WHATWG HTML, "server-sent events"): blocks end at a blank line."""

    kind = SSE

    def _frames(self) -> list[Frame]:
        out: list[Frame] = []
        while True:
            ends = [(i, len(sep)) for sep in _SSE_ENDS if (i := self._buf.find(sep)) >= 0]
            if not ends:
                return out
            index, size = min(ends)
            raw = bytes(self._buf[: index + size])
            del self._buf[: index + size]
            out.append(sse_frame(raw))

    def _last(self, rest: bytes) -> Frame:
        return sse_frame(rest)


def sse_frame(raw: bytes) -> Frame:
    """Parse one SSE block: its ``event`` name and its ``data`` lines joined by newlines."""
    data_lines: list[bytes] = []
    event: str | None = None
    span: tuple[int, int] | None = None
    pos = 0
    for line in raw.splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        if body.startswith(_DATA):
            start = len(_DATA) + (1 if body[len(_DATA) : len(_DATA) + 1] == b" " else 0)
            data_lines.append(body[start:])
            span = (pos + start, pos + len(body))
        elif body.startswith(_EVENT):
            event = body[len(_EVENT) :].strip().decode("utf-8", "replace")
        pos += len(line)
    if not data_lines:
        return Frame(raw, event=event)
    return Frame(raw, b"\n".join(data_lines), span if len(data_lines) == 1 else None, event)


class NDJSONFramer(Framer):
    """Newline-delimited JSON (Ollama): one event per line."""

    kind = NDJSON

    def _frames(self) -> list[Frame]:
        out: list[Frame] = []
        while (index := self._buf.find(b"\n")) >= 0:
            raw = bytes(self._buf[: index + 1])
            del self._buf[: index + 1]
            out.append(self._line(raw))
        return out

    def _line(self, raw: bytes) -> Frame:
        body = raw.rstrip(b"\r\n")
        lead = len(body) - len(body.lstrip())
        if not body.strip():
            return Frame(raw, kind=NDJSON)
        return Frame(raw, body.strip(), (lead, lead + len(body.strip())), kind=NDJSON)

    def _last(self, rest: bytes) -> Frame:
        return self._line(rest)


class JSONArrayFramer(Framer):
    """One JSON array delivered item by item (Gemini ``streamGenerateContent`` without ``alt=sse``).

    Each frame holds the separators before an item and the item itself; the opening
    bracket travels with the first frame, the closing one is a frame of its own.
    """

    kind = JSON_ARRAY

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        super().__init__(max_frame)
        self._pos = 0  # scan position in the buffer
        self._depth = 0  # nesting inside the outer array (0: between items)
        self._in_string = False
        self._escape = False
        self._item_start: int | None = None
        self._opened = False

    def _frames(self) -> list[Frame]:
        out: list[Frame] = []
        buf = self._buf
        i = self._pos
        while i < len(buf):
            c = buf[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == 0x5C:
                    self._escape = True
                elif c == 0x22:
                    self._in_string = False
                    if self._depth == 0:
                        i = self._emit(out, i + 1)
                        buf = self._buf
                        continue
            elif not self._opened:
                if c == 0x5B:  # '['
                    self._opened = True
            elif c == 0x22:
                if self._item_start is None:
                    self._item_start = i
                self._in_string = True
            elif c in (0x7B, 0x5B):
                if self._item_start is None:
                    self._item_start = i
                self._depth += 1
            elif c in (0x7D, 0x5D):
                if self._depth == 0:  # the outer array closes: the rest is a trailer
                    i = len(buf)
                    break
                self._depth -= 1
                if self._depth == 0:
                    i = self._emit(out, i + 1)
                    buf = self._buf
                    continue
            elif c not in b" \t\r\n," and self._item_start is None and self._depth == 0:
                self._item_start = i  # a bare scalar item: ends at the next separator
            elif c in b" \t\r\n," and self._item_start is not None and self._depth == 0:
                i = self._emit(out, i)
                buf = self._buf
                continue
            i += 1
        self._pos = i
        return out

    def _emit(self, out: list[Frame], end: int) -> int:
        start = self._item_start if self._item_start is not None else end
        raw = bytes(self._buf[:end])
        del self._buf[:end]
        out.append(Frame(raw, raw[start:], (start, len(raw)), kind=JSON_ARRAY))
        self._item_start = None
        return 0

    def flush(self) -> list[Frame]:
        self._pos = 0
        return super().flush()

    def _last(self, rest: bytes) -> Frame:
        return Frame(rest, kind=JSON_ARRAY)


#: AWS event-stream prelude: total length, headers length, prelude CRC32 (all big-endian).
_PRELUDE: Final = struct.Struct(">III")
_AWS_MIN: Final = _PRELUDE.size + 4


class AWSEventStreamFramer(Framer):
    """Amazon's binary ``application/vnd.amazon.eventstream`` (Bedrock ConverseStream and
    InvokeModelWithResponseStream): length-prefixed messages with CRC32 checksums.

    The frame's ``data`` is the message payload; its ``event`` the ``:event-type`` header.
    """

    kind = AWS_EVENTSTREAM

    def _frames(self) -> list[Frame]:
        out: list[Frame] = []
        while len(self._buf) >= _AWS_MIN:
            total, headers_len, _ = _PRELUDE.unpack_from(self._buf)
            if total < _AWS_MIN + headers_len or total > self.max_frame:
                raise FrameTooLarge("malformed or oversized event-stream message")
            if len(self._buf) < total:
                break
            raw = bytes(self._buf[:total])
            del self._buf[:total]
            start = _PRELUDE.size + headers_len
            out.append(
                Frame(raw, raw[start : total - 4], None, _aws_event_type(raw[_PRELUDE.size : start]), AWS_EVENTSTREAM)
            )
        return out


def _aws_event_type(headers: bytes) -> str | None:
    """The ``:event-type`` string header, if present (header value type 7 is a string)."""
    pos = 0
    while pos < len(headers):
        name_len = headers[pos]
        name = headers[pos + 1 : pos + 1 + name_len]
        pos += 1 + name_len
        if pos >= len(headers):
            return None
        kind = headers[pos]
        pos += 1
        if kind != 7:  # only string headers matter here; others end the scan
            return None
        (value_len,) = struct.unpack_from(">H", headers, pos)
        value = headers[pos + 2 : pos + 2 + value_len]
        pos += 2 + value_len
        if name == b":event-type":
            return value.decode("utf-8", "replace")
    return None


def _aws_rebuild(raw: bytes, payload: bytes) -> bytes:
    """The same event-stream message with a new payload and fresh checksums."""
    _, headers_len, _ = _PRELUDE.unpack_from(raw)
    headers = raw[_PRELUDE.size : _PRELUDE.size + headers_len]
    total = _AWS_MIN + headers_len + len(payload)
    prelude = struct.pack(">II", total, headers_len)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def aws_message(headers: dict[str, str], payload: bytes) -> bytes:
    """A complete event-stream message with string headers (used for stream endings)."""
    encoded = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        encoded += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = _AWS_MIN + len(encoded) + len(payload)
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


FRAMERS: Final[dict[str, type[Framer]]] = {
    SSE: SSEFramer,
    NDJSON: NDJSONFramer,
    JSON_ARRAY: JSONArrayFramer,
    AWS_EVENTSTREAM: AWSEventStreamFramer,
}


def framing_for(content_type: str, path: str) -> str | None:
    """The framing of a streamed response from its Content-Type (and Gemini's URL), or None."""
    ctype = content_type.lower()
    if "text/event-stream" in ctype:
        return SSE
    if "ndjson" in ctype or "jsonl" in ctype:
        return NDJSON
    if "vnd.amazon.eventstream" in ctype:
        return AWS_EVENTSTREAM
    if "json" in ctype and ":streamgeneratecontent" in path.lower():
        return JSON_ARRAY
    return None
