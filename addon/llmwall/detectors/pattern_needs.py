"""What every match of a regular expression must contain, read from the pattern itself.

The PII detector runs about 60 Presidio patterns over each text; most of them cannot
match a text that has no run of, say, 9 digits, or no ":".  A hand-written "cannot
match" gate was rejected in review (an Italian fiscal code can be all letters), so the
conditions here are derived from each pattern's parse tree, conservatively: a
construct that is not understood contributes "needs nothing", so a pattern is only
ever skipped where it provably has no match.

Derived for each pattern (``Needs``):

* ``digit_run``: every match holds this many consecutive digits.  A "digit" item is
  an ASCII digit literal, a range inside 0-9, or ``\\d``; texts are measured with the
  ``regex`` module's ``\\d`` (what Presidio matches with), a superset of all three.
* ``word_run``: every match holds this many consecutive word characters (ASCII
  letters, digits and "_", ranges of them, ``\\d``, ``\\w``); texts are measured with
  the ``regex`` module's ``\\w``, a superset even case-insensitively ("ſ" and the Kelvin
  sign match ``[a-z]`` then, and are word characters).
* ``chars``: ASCII punctuation (``SAFE_CHARS``) every match holds; no other code point
  matches one of them, even case-insensitively.

``tests/test_pii_fast.py`` checks the superset claims over every code point.

The parse is Python's own (``re._parser``, the parser behind ``re.compile``); the
``regex`` module in its default VERSION0 reads these constructs the same way.  A
pattern it cannot parse gets ``NOTHING``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from re import _constants as sre  # the opcodes of Python's regex parse trees
from re import _parser as sre_parse
from typing import Final

#: Characters a match's need is tracked for: ASCII punctuation, which no other code
#: point matches case-insensitively (letters and digits are runs, handled apart).
SAFE_CHARS: Final = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")

_DIGITS: Final = frozenset("0123456789")
_WORD_CHARS: Final = frozenset("0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
#: Repetition counts beyond this are summarised as this many copies (still sound: more
#: copies can only lengthen the runs a match is known to hold).
_MAX_COPIES: Final = 64

_Node = tuple[object, object]


@dataclass(frozen=True)
class Needs:
    """What any non-empty match of a pattern contains."""

    digit_run: int = 0
    word_run: int = 0
    chars: frozenset[str] = frozenset()


NOTHING: Final = Needs()


@dataclass(frozen=True)
class _Runs:
    """Lower bounds over every string a piece of pattern matches, for one character
    class: ``full`` = every such string is made of the class only (then ``min_len`` is
    its shortest length); ``lead``/``tail`` = class characters it surely starts/ends
    with; ``run`` = the longest run of them it surely holds."""

    full: bool
    min_len: int
    lead: int
    tail: int
    run: int


_EMPTY: Final = _Runs(full=True, min_len=0, lead=0, tail=0, run=0)
_MEMBER: Final = _Runs(full=True, min_len=1, lead=1, tail=1, run=1)
_OTHER: Final = _Runs(full=False, min_len=1, lead=0, tail=0, run=0)
_UNKNOWN: Final = _Runs(full=False, min_len=0, lead=0, tail=0, run=0)


def _then(a: _Runs, b: _Runs) -> _Runs:
    """``a`` followed by ``b``."""
    return _Runs(
        full=a.full and b.full,
        min_len=a.min_len + b.min_len,
        lead=a.min_len + b.lead if a.full else a.lead,
        tail=b.min_len + a.tail if b.full else b.tail,
        run=max(a.run, b.run, a.tail + b.lead),
    )


def _either(options: list[_Runs]) -> _Runs:
    """Any one of ``options``: only what all of them guarantee."""
    return _Runs(
        full=all(o.full for o in options),
        min_len=min(o.min_len for o in options),
        lead=min(o.lead for o in options),
        tail=min(o.tail for o in options),
        run=min(o.run for o in options),
    )


def _repeat(lo: int, hi: int, one: _Runs) -> _Runs:
    if hi == 0:
        return _EMPTY
    some = one
    for _ in range(min(max(lo, 1), _MAX_COPIES) - 1):
        some = _then(some, one)
    if hi > lo:  # further optional copies: only a class-only piece stays class-only
        some = _then(some, _either([_EMPTY, one]))
    return _either([_EMPTY, some]) if lo == 0 else some


def _digit_item(op: object, av: object) -> bool:
    if op is sre.LITERAL and isinstance(av, int):
        return chr(av) in _DIGITS
    if op is sre.RANGE and isinstance(av, tuple):
        return ord("0") <= av[0] <= av[1] <= ord("9")
    return op is sre.CATEGORY and av is sre.CATEGORY_DIGIT


def _word_item(op: object, av: object) -> bool:
    if op is sre.LITERAL and isinstance(av, int):
        return chr(av) in _WORD_CHARS
    if op is sre.RANGE and isinstance(av, tuple):
        return any(ord(a) <= av[0] <= av[1] <= ord(b) for a, b in ("09", "AZ", "az"))
    return op is sre.CATEGORY and av in (sre.CATEGORY_DIGIT, sre.CATEGORY_WORD)


def _runs(nodes: list[_Node], member: Callable[[object, object], bool]) -> _Runs:
    out = _EMPTY
    for op, av in nodes:
        out = _then(out, _runs_of(op, av, member))
    return out


def _runs_of(op: object, av: object, member: Callable[[object, object], bool]) -> _Runs:  # noqa: PLR0911
    """One parse-tree node, for the class ``member`` tells items of."""
    if op is sre.LITERAL:
        return _MEMBER if member(op, av) else _OTHER
    if op is sre.IN and isinstance(av, list):
        return _MEMBER if av and all(member(o, a) for o, a in av) else _OTHER
    if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
        return _EMPTY  # zero-width: consumes nothing, breaks no run
    if op is sre.SUBPATTERN and isinstance(av, tuple):
        return _runs(list(av[-1]), member)
    if op is sre.ATOMIC_GROUP:
        return _runs(list(av), member)  # type: ignore[call-overload]
    if op is sre.BRANCH and isinstance(av, tuple):
        return _either([_runs(list(b), member) for b in av[1]])
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT) and isinstance(av, tuple):
        lo, hi, sub = av
        return _repeat(lo, hi, _runs(list(sub), member))
    return _OTHER if op in (sre.ANY, sre.NOT_LITERAL) else _UNKNOWN  # group references, conditionals: no claim


def _chars(nodes: list[_Node]) -> frozenset[str]:
    """Safe characters every match of the sequence ``nodes`` holds."""
    out: set[str] = set()
    for op, av in nodes:
        out |= _chars_of(op, av)
    return frozenset(out)


def _chars_of(op: object, av: object) -> frozenset[str]:
    if op is sre.LITERAL and isinstance(av, int) and chr(av) in SAFE_CHARS:
        return frozenset(chr(av))
    if op is sre.IN and isinstance(av, list) and len(av) == 1 and av[0][0] is sre.LITERAL:  # "[@]"
        return _chars_of(*av[0])
    if op is sre.SUBPATTERN and isinstance(av, tuple):
        return _chars(list(av[-1]))
    if op is sre.ATOMIC_GROUP:
        return _chars(list(av))  # type: ignore[call-overload]
    if op is sre.BRANCH and isinstance(av, tuple):
        return frozenset.intersection(*(_chars(list(b)) for b in av[1]))
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT) and isinstance(av, tuple) and av[0] >= 1:
        return _chars(list(av[2]))
    return frozenset()


def needs(pattern: str, flags: int = 0) -> Needs:
    """What every non-empty match of ``pattern`` contains (``NOTHING`` if unparsable)."""
    try:
        tree = list(sre_parse.parse(pattern, flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL)))
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return NOTHING  # e.g. a "(?i)" in mid-pattern, which only the regex module accepts
    return Needs(
        digit_run=_runs(tree, _digit_item).run,
        word_run=_runs(tree, _word_item).run,
        chars=_chars(tree),
    )


__all__ = ["NOTHING", "SAFE_CHARS", "Needs", "needs"]
