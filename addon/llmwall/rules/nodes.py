"""The expression tree. ``str(node)`` prints canonical syntax that parses back to an equal tree.

Positions (1-based line/column inside the expression) are kept for error messages but
excluded from equality, so a printed-and-reparsed tree compares equal to the original.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

Pos = tuple[int, int]
IpValue = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network


def _pos() -> Pos:
    return field(default=(1, 1), compare=False, repr=False)


def quote(text: str) -> str:
    """A quoted string literal: only ``"`` and ``\\`` are escaped, control characters as ``\\xHH``."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def raw_quote(text: str) -> str:
    """A raw string literal ``r#"..."#`` with as few ``#`` as the text allows (no escapes inside)."""
    hashes = 0
    while '"' + "#" * hashes in text:
        hashes += 1
    return "r" + "#" * hashes + '"' + text + '"' + "#" * hashes


# --- literals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrLit:
    """A string literal. ``pattern`` strings (regex, wildcard) are kept unescaped and print raw."""

    value: str
    pattern: bool = False
    pos: Pos = _pos()

    def __str__(self) -> str:
        return raw_quote(self.value) if self.pattern else quote(self.value)


@dataclass(frozen=True)
class IntLit:
    value: int
    pos: Pos = _pos()

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class BoolLit:
    value: bool
    pos: Pos = _pos()

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(frozen=True)
class IpLit:
    """An IP address, or a CIDR network (only meaningful inside ``in {...}``)."""

    value: IpValue
    pos: Pos = _pos()

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class IntRange:
    lo: int
    hi: int
    pos: Pos = _pos()

    def __str__(self) -> str:
        return f"{self.lo}..{self.hi}"


@dataclass(frozen=True)
class IpRange:
    lo: ipaddress.IPv4Address | ipaddress.IPv6Address
    hi: ipaddress.IPv4Address | ipaddress.IPv6Address
    pos: Pos = _pos()

    def __str__(self) -> str:
        return f"{self.lo}..{self.hi}"


Literal = StrLit | IntLit | BoolLit | IpLit
SetItem = StrLit | IntLit | BoolLit | IpLit | IntRange | IpRange


# --- values ---------------------------------------------------------------------------------


class Star:
    """The ``[*]`` index: apply the enclosing comparison or function to every element."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Star)

    def __hash__(self) -> int:
        return hash(Star)

    def __repr__(self) -> str:
        return "STAR"


STAR = Star()


@dataclass(frozen=True)
class Field:
    name: str  # as written; resolved to the canonical name by the compiler
    pos: Pos = _pos()

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Index:
    base: Value
    key: int | str | Star
    pos: Pos = _pos()

    def __str__(self) -> str:
        if isinstance(self.key, Star):
            k = "*"
        elif isinstance(self.key, str):
            k = quote(self.key)
        else:
            k = str(self.key)
        return f"{self.base}[{k}]"


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]
    pos: Pos = _pos()

    def __str__(self) -> str:
        return f"{self.name}({', '.join(str(a) for a in self.args)})"


Value = Field | Index | Call


# --- boolean expressions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    lhs: Value
    op: str  # canonical English: eq ne lt le gt ge contains matches wildcard "strict wildcard"
    rhs: Literal
    pos: Pos = _pos()

    def __str__(self) -> str:
        return f"{self.lhs} {self.op} {self.rhs}"


@dataclass(frozen=True)
class InSet:
    lhs: Value
    items: tuple[SetItem, ...]
    pos: Pos = _pos()

    def __str__(self) -> str:
        return f"{self.lhs} in {{{' '.join(str(i) for i in self.items)}}}"


@dataclass(frozen=True)
class Truthy:
    """A value used as a condition: a bare Bool field (``cf.llm.prompt.pii_detected``) or call."""

    value: Value
    pos: Pos = _pos()

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Not:
    item: Expr
    pos: Pos = _pos()

    def __str__(self) -> str:
        inner = str(self.item)
        return f"not ({inner})" if isinstance(self.item, (And, Xor, Or)) else f"not {inner}"


@dataclass(frozen=True)
class _Logical:
    items: tuple[Expr, ...]
    pos: Pos = _pos()
    KEYWORD = ""
    PRECEDENCE = 0

    def __str__(self) -> str:
        parts = []
        for item in self.items:
            text = str(item)
            if isinstance(item, _Logical) and item.PRECEDENCE <= self.PRECEDENCE:
                text = f"({text})"
            parts.append(text)
        return f" {self.KEYWORD} ".join(parts)


@dataclass(frozen=True)
class And(_Logical):
    KEYWORD = "and"
    PRECEDENCE = 3


@dataclass(frozen=True)
class Xor(_Logical):
    KEYWORD = "xor"
    PRECEDENCE = 2


@dataclass(frozen=True)
class Or(_Logical):
    KEYWORD = "or"
    PRECEDENCE = 1


Expr = Or | Xor | And | Not | Compare | InSet | Truthy | BoolLit
Node = Expr | Value | StrLit | IntLit
