"""The two pattern operators: ``matches`` (regular expressions) and ``wildcard``.

Cloudflare runs ``matches`` on Rust's regex engine, which has no backtracking and so
no catastrophic cases. Python has no such engine in the runtime, so llmwall
(1) rejects at load time the constructs Rust's engine does not support either
(backreferences, lookaround, atomic groups, possessive quantifiers, conditionals), and
(2) runs the remaining patterns with the ``regex`` module under a per-match timeout;
a match that times out counts as "no match" (and is logged with the rule id only).
Wildcards never use a regex: ``*`` globs are matched with a linear-time scan.
"""

from __future__ import annotations

import logging

import regex

#: Longest time one ``matches`` evaluation may take before it counts as no match.
REGEX_TIMEOUT_S = 0.05

log = logging.getLogger(__name__)

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_lower(text: str) -> str:
    """Lowercase ASCII letters only, like Cloudflare's ``lower()``."""
    return text.translate(_ASCII_LOWER)


def ascii_upper(text: str) -> str:
    """Uppercase ASCII letters only, like Cloudflare's ``upper()``."""
    return text.translate(_ASCII_UPPER)


def _unsupported(pattern: str) -> str | None:
    """The first construct Rust's regex engine rejects, described, or None."""
    i, in_class, after_quantifier = 0, False, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt and nxt in "123456789gk":
                return "backreferences (\\1, \\g, \\k) are not supported"
            i += 2
            if nxt in ("p", "P", "x", "N") and pattern[i : i + 1] == "{":  # \p{Greek}, \x{263a}
                close = pattern.find("}", i)
                i = len(pattern) if close < 0 else close + 1
            after_quantifier = False
            continue
        if in_class:
            if ch == "]":
                in_class = False
            i += 1
            continue
        if ch == "[":
            in_class = True
            # a ']' right after '[' or '[^' is a literal member
            j = i + 1
            if pattern[j : j + 1] == "^":
                j += 1
            if pattern[j : j + 1] == "]":
                j += 1
            i = j
            after_quantifier = False
            continue
        if ch == "(" and pattern[i + 1 : i + 2] == "?":
            head = pattern[i + 2 : i + 4]
            if head[:1] in ("=", "!") or head in ("<=", "<!"):
                return "lookahead and lookbehind assertions are not supported"
            if head[:1] == ">":
                return "atomic groups (?>...) are not supported"
            if head[:1] == "(":
                return "conditionals (?(...)...) are not supported"
            if head == "P=":
                return "backreferences (?P=name) are not supported"
        if after_quantifier and ch == "+":
            return "possessive quantifiers (a++, a*+) are not supported"
        # '?' right after a quantifier makes it lazy and ends the quantifier
        after_quantifier = ch in "*+?}" and not (after_quantifier and ch == "?")
        i += 1
    return None


_MULTILINE_FLAG = regex.compile(r"\(\?[a-zA-Z]*m[a-zA-Z-]*[:)]")


def _rust_dollar(pattern: str) -> str:
    """Make ``$`` mean "end of text" as in Rust (Python's also matches before a final newline).

    Patterns that turn on multi-line mode keep their ``$``: both engines then mean "end of line".
    """
    if _MULTILINE_FLAG.search(pattern):
        return pattern
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            if pattern[j : j + 1] == "]":  # a leading ']' is a member, not the end
                out.append(pattern[i : j + 1])
                i = j + 1
                continue
        elif ch == "$":
            out.append("\\Z")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def compile_regex(pattern: str) -> regex.Pattern[str]:
    """Compile a ``matches`` pattern; raises ValueError with a user-facing message."""
    problem = _unsupported(pattern)
    if problem:
        raise ValueError(f"regular expression {pattern!r}: {problem} (Cloudflare uses Rust's regex engine)")
    try:
        return regex.compile(_rust_dollar(pattern))
    except regex.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def regex_search(compiled: regex.Pattern[str], text: str) -> bool:
    """True when the pattern matches anywhere in ``text``; a timeout counts as no match."""
    try:
        return compiled.search(text, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        log.warning("rules: a 'matches' pattern timed out after %.0f ms; counted as no match", REGEX_TIMEOUT_S * 1000)
        return False


def compile_wildcard(pattern: str, case_sensitive: bool) -> tuple[str, ...]:
    """Split a wildcard pattern into the literal pieces between ``*``s (``\\*`` and ``\\\\`` escape)."""
    pieces, current, i = [], [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise ValueError(f"wildcard pattern {pattern!r} ends with a lone backslash")
            current.append(pattern[i + 1])
            i += 2
        elif ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                raise ValueError(f"wildcard pattern {pattern!r}: '**' is not allowed (escape a literal star as \\*)")
            pieces.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    pieces.append("".join(current))
    return tuple(pieces if case_sensitive else (ascii_lower(p) for p in pieces))


def wildcard_match(pieces: tuple[str, ...], text: str) -> bool:
    """Whole-string glob match: with only ``*`` metacharacters, leftmost search is exact."""
    if len(pieces) == 1:
        return text == pieces[0]
    first, last = pieces[0], pieces[-1]
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    pos, end = len(first), len(text) - len(last)
    for piece in pieces[1:-1]:
        found = text.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True
