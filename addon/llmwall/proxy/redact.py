"""Rewriting detected spans inside a raw JSON request body, byte for byte elsewhere.

The body is never re-serialised: a small scanner walks the raw bytes along each
part's JSON path to the one string literal that holds the part, checks that the
literal still decodes to the text the detectors saw, and splices in the JSON
encoding of the redacted text.  Every other byte (whitespace, key order, number
spelling, escapes in other strings) stays as the client sent it, so signatures over
unrelated fields, provider quirks and diffs all survive.  Anything unexpected
raises ``RedactError`` instead of guessing: a corrupted or half-redacted body must
never go upstream.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Final

from llmwall.detectors.base import Prompt, Span

_WS: Final = b" \t\r\n"
_BOM: Final = b"\xef\xbb\xbf"


class RedactError(ValueError):
    """The body cannot be redacted safely (path missing, text differs, bad JSON)."""


def placeholder(category: str) -> str:
    """What a redacted span becomes, e.g. ``<EMAIL_ADDRESS>``."""
    return f"<{category}>"


def redact_body(
    raw: bytes,
    prompt: Prompt,
    spans: Sequence[Span],
    categories: Collection[str] | None = None,
) -> tuple[bytes, list[str]]:
    """Return ``raw`` with the selected spans replaced by placeholders, and the sorted
    categories actually redacted.

    ``spans`` index ``prompt.text``; a span that crosses a part separator is cut into
    its pieces in each part.  ``categories`` selects which span categories to redact
    (None: all).  The returned bytes are a complete body; its length is the new
    Content-Length.
    """
    chosen = [s for s in spans if categories is None or s.category in categories]
    per_part = _spans_per_part(prompt, chosen)
    if not per_part:
        return raw, []

    edits: list[tuple[int, int, bytes]] = []
    redacted: set[str] = set()
    for index, local in per_part.items():
        part = prompt.parts[index]
        start, end = locate_string(raw, part.path)
        literal = raw[start:end]
        if _decode_string(raw, start, end) != part.text:
            raise RedactError(f"text at {_fmt(part.path)} differs from the screened text")
        new_text, cats = _apply(part.text, local)
        edits.append((start, end, _encode_like(new_text, literal)))
        redacted |= cats

    edits.sort()
    for (_, end_a, _), (start_b, _, _) in zip(edits, edits[1:], strict=False):
        if start_b < end_a:  # two parts claim the same literal
            raise RedactError("two prompt parts resolve to the same JSON string")
    out, pos = bytearray(), 0
    for start, end, replacement in edits:
        out += raw[pos:start]
        out += replacement
        pos = end
    out += raw[pos:]
    return bytes(out), sorted(redacted)


def _spans_per_part(prompt: Prompt, spans: Sequence[Span]) -> dict[int, list[Span]]:
    """Spans cut to each part, in that part's own text offsets."""
    out: dict[int, list[Span]] = {}
    offsets = prompt.part_offsets()
    for span in spans:
        if span.end <= span.start:
            continue
        for i, (lo, hi) in enumerate(offsets):
            s, e = max(span.start, lo), min(span.end, hi)
            if s < e:
                out.setdefault(i, []).append(Span(s - lo, e - lo, span.category))
    return out


def _apply(text: str, spans: list[Span]) -> tuple[str, set[str]]:
    """Replace each group of overlapping spans with one placeholder.

    The group is named after its longest span (ties: alphabetical), so a card number
    that also matched a weaker bank-number pattern reads ``<CREDIT_CARD>``; every
    category in the group counts as redacted, since its text is gone.
    """
    ordered = sorted(spans, key=lambda s: (s.start, -s.end))
    groups: list[tuple[int, int, list[Span]]] = []
    for s in ordered:
        if groups and s.start < groups[-1][1]:
            lo, hi, members = groups[-1]
            groups[-1] = (lo, max(hi, s.end), members + [s])
        else:
            groups.append((s.start, s.end, [s]))
    pieces: list[str] = []
    pos = 0
    cats: set[str] = set()
    for lo, hi, members in groups:
        label = min(members, key=lambda s: (-(s.end - s.start), s.category)).category
        pieces += [text[pos:lo], placeholder(label)]
        cats.update(m.category for m in members)
        pos = hi
    pieces.append(text[pos:])
    return "".join(pieces), cats


def _encode_like(text: str, original: bytes) -> bytes:
    """JSON-encode ``text`` in the original literal's style (ASCII-escaped or raw UTF-8)."""
    if original.isascii() and not text.isascii():
        return json.dumps(text, ensure_ascii=True).encode("ascii")
    try:
        return json.dumps(text, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (from "\ud800" escapes) only fit escaped
        return json.dumps(text, ensure_ascii=True).encode("ascii")


def _fmt(path: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


# --- the scanner -------------------------------------------------------------------


def locate_string(raw: bytes, path: tuple[str | int, ...]) -> tuple[int, int]:
    """(start, end) byte offsets of the string literal (quotes included) at ``path``.

    Keys are compared after JSON decoding (``"\\u0063ontent"`` is ``content``).  A key
    that appears twice in an object on the path raises: parsers disagree on which one
    wins, and redacting the wrong one would let the other through.
    """
    pos = _skip_ws(raw, len(_BOM) if raw.startswith(_BOM) else 0)
    for depth, step in enumerate(path):
        where = _fmt(path[: depth + 1])
        if isinstance(step, bool) or not isinstance(step, (str, int)):
            raise RedactError(f"bad path element {step!r} in {_fmt(path)}")
        pos = _member(raw, pos, step, where) if isinstance(step, str) else _element(raw, pos, step, where)
    if pos >= len(raw) or raw[pos] != 0x22:  # '"'
        raise RedactError(f"value at {_fmt(path)} is not a string")
    return pos, _string_end(raw, pos)


def _member(raw: bytes, pos: int, key: str, where: str) -> int:
    """Offset of the value of ``key`` in the object starting at ``pos``."""
    if pos >= len(raw) or raw[pos] != 0x7B:  # '{'
        raise RedactError(f"{where}: parent is not an object")
    pos = _skip_ws(raw, pos + 1)
    found: int | None = None
    if pos < len(raw) and raw[pos] == 0x7D:  # '}'
        raise RedactError(f"{where}: not found")
    while True:
        if pos >= len(raw) or raw[pos] != 0x22:
            raise RedactError(f"{where}: malformed object")
        key_end = _string_end(raw, pos)
        name = _decode_string(raw, pos, key_end)
        pos = _skip_ws(raw, key_end)
        if pos >= len(raw) or raw[pos] != 0x3A:  # ':'
            raise RedactError(f"{where}: malformed object")
        pos = _skip_ws(raw, pos + 1)
        if name == key:
            if found is not None:
                raise RedactError(f"{where}: duplicate key")
            found = pos
        pos = _skip_ws(raw, _value_end(raw, pos))
        if pos < len(raw) and raw[pos] == 0x2C:  # ','
            pos = _skip_ws(raw, pos + 1)
            continue
        if pos < len(raw) and raw[pos] == 0x7D:
            break
        raise RedactError(f"{where}: malformed object")
    if found is None:
        raise RedactError(f"{where}: not found")
    return found


def _element(raw: bytes, pos: int, index: int, where: str) -> int:
    """Offset of element ``index`` of the array starting at ``pos``."""
    if pos >= len(raw) or raw[pos] != 0x5B:  # '['
        raise RedactError(f"{where}: parent is not an array")
    if index < 0:
        raise RedactError(f"{where}: negative index")
    pos = _skip_ws(raw, pos + 1)
    if pos < len(raw) and raw[pos] == 0x5D:  # ']'
        raise RedactError(f"{where}: not found")
    for i in range(index + 1):
        if i == index:
            return pos
        pos = _skip_ws(raw, _value_end(raw, pos))
        if pos < len(raw) and raw[pos] == 0x2C:
            pos = _skip_ws(raw, pos + 1)
        else:
            break
    raise RedactError(f"{where}: not found")


def _skip_ws(raw: bytes, pos: int) -> int:
    n = len(raw)
    while pos < n and raw[pos] in _WS:
        pos += 1
    return pos


def _string_end(raw: bytes, pos: int) -> int:
    """Offset just past the closing quote of the string literal opening at ``pos``."""
    i, n = pos + 1, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x5C:  # backslash: skip the escaped byte ('\u' digits are plain bytes)
            i += 2
        elif c == 0x22:
            return i + 1
        else:
            i += 1
    raise RedactError("unterminated string")


def _decode_string(raw: bytes, start: int, end: int) -> str:
    try:
        value = json.loads(raw[start:end])
    except ValueError:
        raise RedactError("invalid string literal") from None
    return value


def _value_end(raw: bytes, pos: int) -> int:
    """Offset just past the JSON value starting at ``pos`` (iterative: no recursion limit)."""
    n = len(raw)
    if pos >= n:
        raise RedactError("unexpected end of body")
    c = raw[pos]
    if c == 0x22:
        return _string_end(raw, pos)
    if c in (0x7B, 0x5B):
        depth, i = 0, pos
        while i < n:
            c = raw[i]
            if c == 0x22:
                i = _string_end(raw, i)
                continue
            if c in (0x7B, 0x5B):
                depth += 1
            elif c in (0x7D, 0x5D):
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise RedactError("unterminated container")
    i = pos
    while i < n and raw[i] not in b",]}" and raw[i] not in _WS:
        i += 1
    if i == pos:
        raise RedactError(f"unexpected byte at offset {pos}")
    return i


__all__ = ["RedactError", "locate_string", "placeholder", "redact_body"]
