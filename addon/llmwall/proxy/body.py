"""Turning a request's raw bytes into the JSON text llmwall screens, without being fooled.

An attacker controls every byte of the body and its headers, so the reading here
follows what an upstream server could accept, not what the headers promise:

* Content-Encoding is inflated layer by layer with streaming decoders that stop at
  the size limit: a decompression bomb costs at most the limit, never its inflated size.
* A lying Content-Encoding (the header says gzip, the bytes are plain JSON) is read as
  the bytes really are, because many servers ignore request encodings.
* UTF-16 and UTF-32 (with or without a BOM) are detected as a JSON parser detects them
  (RFC 4627 section 3) and transcoded to UTF-8; invalid UTF-8 is read with U+FFFD in
  place of the bad bytes, as lenient parsers (Go's encoding/json) read it.
* Lone surrogates (``\\ud800`` escapes) are replaced with U+FFFD before any detector
  sees the text: tokenizers raise on them.
* JSON nested deeper than the parser's limit is read with the over-deep subtrees
  replaced by ``null``, so padding cannot hide the prompt next to it.

The original bytes are always what is forwarded; this module only decides what is screened.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

import brotli  # typed or not depending on the version: see [[tool.mypy.overrides]] in pyproject.toml
from backports import zstd

#: Status names shared with the addon, analytics and the README's failure table.
OK: Final = "ok"
OVERSIZE: Final = "oversize"
UNDECODABLE: Final = "undecodable"

#: More encoding layers than this is not something a client sends; it is an attack on the decoder.
MAX_LAYERS: Final = 4
#: Compressed input is fed in slices this large, so one call never produces much past the limit.
_SLICE: Final = 64 * 1024
_IDENTITY: Final = frozenset({"", "identity", "none"})
#: Bodies up to this size, not compressed, are parsed on the event loop: a hand-off to a
#: worker thread costs more than parsing them (tens of microseconds); bigger or compressed
#: ones go to a thread so the loop never stalls on them.
INLINE_PARSE_BYTES: Final = 16 * 1024
_GZIP_MAGIC: Final = b"\x1f\x8b"
#: zlib window bits for "gzip or zlib header, detected" (32 + 15).
_GZIP_WBITS: Final = 47
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_BOMS: Final = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")

#: A prompt-carrying key of any recognised format, any case (Go's encoding/json matches keys
#: case-insensitively, so ``"Messages"`` reaches such an upstream as ``messages``).
_LLM_KEY: Final = re.compile(
    rb'"(?:messages|prompt|contents|inputs?|instructions|system|systeminstruction|system_instruction)"', re.I
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# A JSON string literal (unrolled-loop form: linear, no backtracking) or one bracket.
_TOKEN: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


class TooLarge(Exception):
    """The inflated body would pass the limit; raised before inflating further."""

    def __init__(self, partial: bytes = b"") -> None:
        super().__init__("inflates past the limit")
        self.partial = partial


@dataclass(frozen=True)
class Decoded:
    """The body as it will be screened: ``status`` OK with ``data``, else why not.

    ``prefix`` holds what was inflated before the limit stopped a bomb (at most the
    limit), so the caller can still tell whether it looked like LLM traffic.
    """

    status: str
    data: bytes = b""
    note: str | None = None  # e.g. "encoding_mismatch": screened as the bytes really are
    prefix: bytes = b""


def encodings(headers: Iterable[str]) -> list[str]:
    """Every Content-Encoding token, in the order they were applied (repeated headers included)."""
    out: list[str] = []
    for value in headers:
        out += [t.strip().lower() for t in value.split(",")]
    return [t for t in out if t not in _IDENTITY]


def _zlib(wbits: int) -> Callable[[bytes, int], bytes]:
    def run(data: bytes, limit: int) -> bytes:
        out = bytearray()
        while data:
            dec = zlib.decompressobj(wbits)
            pending = data
            while pending:
                chunk, pending = pending[:_SLICE], pending[_SLICE:]
                out += dec.decompress(chunk, limit + 1 - len(out))
                if len(out) > limit or (dec.unconsumed_tail and len(out) >= limit):
                    raise TooLarge(bytes(out[:limit]))
                if dec.unconsumed_tail:
                    pending = dec.unconsumed_tail + pending
                if dec.eof:
                    break
            if not dec.eof:
                raise ValueError("truncated stream")
            rest = dec.unused_data + pending
            data = rest if wbits == _GZIP_WBITS and rest.startswith(_GZIP_MAGIC) else b""  # next gzip member
        return bytes(out)

    return run


def _deflate(data: bytes, limit: int) -> bytes:
    try:
        return _zlib(15)(data, limit)
    except zlib.error:
        return _zlib(-15)(data, limit)  # raw deflate, as some clients send it


def _brotli(data: bytes, limit: int) -> bytes:
    dec = brotli.Decompressor()
    out = bytearray()
    pending = data
    while True:
        if dec.can_accept_more_data():
            chunk, pending = pending[:_SLICE], pending[_SLICE:]
        else:
            chunk = b""
        out += dec.process(chunk, output_buffer_limit=limit + 1 - len(out))
        if len(out) > limit:
            raise TooLarge(bytes(out[:limit]))
        if dec.is_finished():
            return bytes(out)
        if not pending and dec.can_accept_more_data():
            raise ValueError("truncated stream")


def _zstd(data: bytes, limit: int) -> bytes:
    out = bytearray()
    while data:
        dec = zstd.ZstdDecompressor()
        pending = data
        while not dec.eof:
            chunk, pending = pending[:_SLICE], pending[_SLICE:]
            out += dec.decompress(chunk, max_length=limit + 1 - len(out))
            if len(out) > limit:
                raise TooLarge(bytes(out[:limit]))
            if not chunk and not dec.needs_input:
                continue
            if not chunk and not pending and dec.needs_input:
                raise ValueError("truncated stream")
        data = dec.unused_data + pending  # another frame may follow
    return bytes(out)


_DECODERS: Final[dict[str, Callable[[bytes, int], bytes]]] = {
    "gzip": _zlib(_GZIP_WBITS),
    "x-gzip": _zlib(_GZIP_WBITS),
    "deflate": _deflate,
    "deflateraw": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def _sniffed(raw: bytes, limit: int) -> bytes:
    """The bytes as they really are, whatever the header said: gzip or zstd by magic, else as sent."""
    if raw.startswith(_GZIP_MAGIC):
        return _zlib(_GZIP_WBITS)(raw, limit)
    if raw.startswith(_ZSTD_MAGIC):
        return _zstd(raw, limit)
    if len(raw) > limit:
        raise TooLarge(raw[:limit])
    return raw


def decode(raw: bytes, content_encodings: Iterable[str], limit: int) -> Decoded:
    """Inflate ``raw`` per its Content-Encoding headers, never past ``limit`` bytes. Never raises.

    A bomb comes back OVERSIZE with the part that fit as ``prefix``; when a layer other
    than the last one blew up, the prefix is still compressed, so it is left empty.
    """
    layers = encodings(content_encodings)
    if len(layers) > MAX_LAYERS or any(layer not in _DECODERS for layer in layers):
        return _fallback(raw, limit, "unsupported content-encoding")
    data = raw
    for i, layer in enumerate(reversed(layers)):
        try:
            data = _DECODERS[layer](data, limit)
        except TooLarge as exc:
            last = i == len(layers) - 1
            return Decoded(OVERSIZE, note="inflates past the limit", prefix=exc.partial if last else b"")
        except (ValueError, zlib.error, brotli.error, zstd.ZstdError):
            return _fallback(raw, limit, "content-encoding does not match the bytes")
    if len(data) > limit:
        return Decoded(OVERSIZE, prefix=data[:limit])
    return Decoded(OK, data)


def _fallback(raw: bytes, limit: int, why: str) -> Decoded:
    try:
        data = _sniffed(raw, limit)
    except TooLarge as exc:
        return Decoded(OVERSIZE, note="inflates past the limit", prefix=exc.partial)
    except (ValueError, zlib.error, zstd.ZstdError):
        return Decoded(UNDECODABLE, note=why, prefix=raw[:limit])
    return Decoded(OK, data, note="encoding_mismatch")


def to_utf8(data: bytes) -> bytes:
    """The body as UTF-8 JSON text: BOM dropped, UTF-16/32 transcoded, invalid bytes as U+FFFD."""
    codec, skip = _detect_encoding(data)
    if codec == "utf-8":
        body = data[skip:]
        try:
            body.decode("utf-8")
            return body
        except UnicodeDecodeError:
            return body.decode("utf-8", errors="replace").encode("utf-8")
    text = data[skip:].decode(codec, errors="surrogatepass" if codec.startswith("utf-16") else "replace")
    return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def _detect_encoding(raw: bytes) -> tuple[str, int]:
    """(codec, bytes to skip) from a BOM, or from the NUL pattern of the first four bytes (RFC 4627 s3)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return "utf-8", 3
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return ("utf-32-le" if raw[0] == 0xFF else "utf-32-be"), 4
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ("utf-16-le" if raw[0] == 0xFF else "utf-16-be"), 2
    if len(raw) >= 4:
        nul = tuple(b == 0 for b in raw[:4])
        if nul == (True, True, True, False):
            return "utf-32-be", 0
        if nul == (False, True, True, True):
            return "utf-32-le", 0
        if nul[0] and nul[2] and not nul[1] and not nul[3]:
            return "utf-16-be", 0
        if nul[1] and nul[3] and not nul[0] and not nul[2]:
            return "utf-16-le", 0
    return "utf-8", 0


def parse_inline(raw: bytes | None, headers: Mapping[str, str]) -> bool:
    """Whether a message body is small and plain enough to parse on the event loop."""
    return len(raw or b"") <= INLINE_PARSE_BYTES and not headers.get("content-encoding")


def needs_full_look(raw: bytes) -> bool:
    """The event-loop pre-check: could these bytes be LLM traffic?

    True for a prompt key in any case, for ``\\u`` escapes (which can spell a key), and
    for any body that is not plain 8-bit text (a BOM or NUL bytes: UTF-16/32).
    """
    return raw.startswith(_BOMS) or b"\x00" in raw[:4] or b"\\u" in raw or looks_llm(raw)


def looks_llm(data: bytes) -> bool:
    """Whether UTF-8 bytes name a prompt key anywhere (a padded body cannot push it out of view)."""
    return _LLM_KEY.search(data) is not None


#: Form bodies: no LLM API reads its prompt from one, but a custom gateway can carry a provider's
#: JSON in a field, so a form whose decoded fields name a prompt key is recorded (``unrecognised``).
_FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")


def is_form(content_type: str | None) -> bool:
    """Whether a Content-Type names a form body (any case, any parameters)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime in _FORM_TYPES


def form_looks_llm(data: bytes) -> bool:
    """Whether a form body names a prompt key, in the clear (multipart) or percent-encoded."""
    return looks_llm(data) or looks_llm(unquote_to_bytes(data.replace(b"+", b" ")))


def looks_json(data: bytes) -> bool:
    """Whether the start of a body (possibly only a prefix) is JSON or only whitespace."""
    head = to_utf8(data[:4096]).lstrip(b" \t\r\n")
    return not head or head[:1] in (b"{", b"[")


def prune_deep(text: str, max_depth: int) -> str:
    """``text`` with every array/object nested deeper than ``max_depth`` replaced by ``null``.

    Only the structure outside string literals counts. Unbalanced input comes back in
    a form the JSON parser will still reject, so nothing malformed becomes valid.
    """
    out: list[str] = []
    pos = depth = 0
    cut: int | None = None
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok[0] == '"':
            continue
        if tok in "[{":
            depth += 1
            if depth == max_depth + 1 and cut is None:
                cut = m.start()
        else:
            if depth == max_depth + 1 and cut is not None:
                out += (text[pos:cut], "null")
                pos, cut = m.end(), None
            depth -= 1
    out.append(text[pos:])
    return "".join(out)


def scrub_surrogates(node: object) -> object:
    """A copy of parsed JSON with every lone surrogate (keys and values) replaced by U+FFFD."""
    if isinstance(node, str):
        return _SURROGATE.sub("\ufffd", node) if _SURROGATE.search(node) else node
    if isinstance(node, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in node.items()}
    if isinstance(node, list):
        return [scrub_surrogates(v) for v in node]
    return node
