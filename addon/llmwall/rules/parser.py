"""Text -> expression tree, with lark's LALR parser and the grammar in ``llmwall/rules/rules.lark``.

Strings are decoded here because their escaping depends on where they stand (as in
Cloudflare): after ``matches``/``wildcard`` a quoted string keeps its backslashes for the
pattern engine; everywhere else only ``\\"``, ``\\\\`` and ``\\xHH`` escapes are allowed.
"""

from __future__ import annotations

import ipaddress
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr

from llmwall.rules import nodes as n
from llmwall.rules.errors import ExpressionError, ExprIssue

#: Cloudflare's limit on the length of one rule expression.
MAX_EXPRESSION_LENGTH = 4096

_OPS = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "~": "matches"}
PATTERN_OPS = frozenset({"matches", "wildcard", "strict wildcard"})

_GRAMMAR = (resources.files("llmwall.rules") / "rules.lark").read_text(encoding="utf-8")
_PARSER = Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

_TERMINAL_NAMES = {
    "NAME": "a field or function name",
    "INT": "an integer",
    "IP": "an IP address",
    "STRING": 'a string "..."',
    "RAW_STRING": 'a raw string r"..."',
    "LIST_NAME": "a list name $name",
    "$END": "the end of the expression",
}
_DISPLAY = {
    t.name: (repr(t.pattern.value) if isinstance(t.pattern, PatternStr) else _TERMINAL_NAMES.get(t.name, t.name))
    for t in _PARSER.terminals
}
_DISPLAY["$END"] = _TERMINAL_NAMES["$END"]
_COMPARISON_TOKENS = {
    repr(s)
    for s in (
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "contains",
        "matches",
        "~",
        "wildcard",
        "strict",
        "in",
    )
}


class _RawStr:
    """A string token not yet decoded (decoding depends on the operator it belongs to)."""

    __slots__ = ("text", "raw", "pos")

    def __init__(self, text: str, raw: bool, pos: n.Pos):
        self.text, self.raw, self.pos = text, raw, pos

    def plain(self) -> n.StrLit:
        return n.StrLit(self.text if self.raw else _unescape(self.text, self.pos), False, self.pos)

    def pattern(self) -> n.StrLit:
        return n.StrLit(self.text if self.raw else _unescape_pattern(self.text), True, self.pos)


class _Issue(Exception):
    def __init__(self, pos: n.Pos, message: str):
        super().__init__(message)
        self.pos, self.message = pos, message


def _unescape(body: str, pos: n.Pos) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt in ('"', "\\"):
            out.append(nxt)
            i += 2
        elif nxt == "x" and len(body) >= i + 4 and all(c in "0123456789abcdefABCDEF" for c in body[i + 2 : i + 4]):
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        else:
            raise _Issue(
                pos,
                f"invalid escape '\\{nxt}' in string: only \\\", \\\\ and \\xHH are allowed "
                '(use a raw string r"..." to write backslashes freely)',
            )
    return "".join(out)


def _unescape_pattern(body: str) -> str:
    """Regex/wildcard strings keep their escapes for the pattern engine; only ``\\"`` becomes ``"``."""
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append('"' if body[i + 1] == '"' else body[i : i + 2])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _tpos(tok: Token) -> n.Pos:
    return (tok.line or 1, tok.column or 1)


def _mpos(meta) -> n.Pos:
    return (getattr(meta, "line", 1), getattr(meta, "column", 1))


def _ip(tok: Token) -> n.IpLit:
    text = str(tok)
    try:
        value = ipaddress.ip_network(text, strict=False) if "/" in text else ipaddress.ip_address(text)
    except ValueError:
        raise _Issue(_tpos(tok), f"invalid IP address {text!r}") from None
    return n.IpLit(value, _tpos(tok))


def _plain(item: Any) -> Any:
    """A raw string as a plain literal; other nodes unchanged (lark's items are untyped: the grammar types them)."""
    return item.plain() if isinstance(item, _RawStr) else item


class _ToNodes(Transformer_NonRecursive):
    """Builds :mod:`nodes` from lark's parse tree."""

    # literals
    def string(self, items):
        tok = items[0]
        return _RawStr(str(tok)[1:-1], False, _tpos(tok))

    def raw_string(self, items):
        tok = str(items[0])
        hashes = len(tok) - len(tok[1:].lstrip("#")) - 1
        return _RawStr(tok[2 + hashes : len(tok) - 1 - hashes], True, _tpos(items[0]))

    def int(self, items):
        return n.IntLit(int(items[0]), _tpos(items[0]))

    def ip(self, items):
        return _ip(items[0])

    @v_args(meta=True)
    def true(self, meta, items):
        return n.BoolLit(True, _mpos(meta))

    @v_args(meta=True)
    def false(self, meta, items):
        return n.BoolLit(False, _mpos(meta))

    def int_range(self, items):
        lo, hi = int(items[0]), int(items[1])
        if lo > hi:
            raise _Issue(_tpos(items[0]), f"range {lo}..{hi}: the start must not be greater than the end")
        return n.IntRange(lo, hi, _tpos(items[0]))

    def ip_range(self, items):
        lo, hi = _ip(items[0]).value, _ip(items[1]).value
        if not isinstance(lo, (ipaddress.IPv4Address, ipaddress.IPv6Address)) or not isinstance(
            hi, (ipaddress.IPv4Address, ipaddress.IPv6Address)
        ):
            raise _Issue(_tpos(items[0]), "an IP range a..b takes two addresses, not CIDR networks")
        if lo.version != hi.version or int(lo) > int(hi):
            raise _Issue(_tpos(items[0]), f"IP range {lo}..{hi}: both ends must be the same IP version, start <= end")
        return n.IpRange(lo, hi, _tpos(items[0]))

    # values
    def field(self, items):
        return n.Field(str(items[0]), _tpos(items[0]))

    def star(self, items):
        return n.STAR

    @v_args(meta=True)
    def index(self, meta, items):
        base, key = items
        if isinstance(key, _RawStr):
            key = key.plain().value
        elif isinstance(key, n.IntLit):
            key = key.value
        return n.Index(base, key, _mpos(meta))

    def call(self, items):
        name = items[0]
        args = tuple(a.value if isinstance(a, n.Truthy) else _plain(a) for a in items[1:])
        return n.Call(str(name), args, _tpos(name))

    # conditions
    @v_args(meta=True)
    def truthy(self, meta, items):
        return n.Truthy(items[0], _mpos(meta))

    def cmp_op(self, items):
        text = " ".join(str(t) for t in items)
        return (_OPS.get(text, text), _tpos(items[0]))

    @v_args(meta=True)
    def comparison(self, meta, items):
        lhs, (op, _), rhs = items
        if isinstance(rhs, _RawStr):
            rhs = rhs.pattern() if op in PATTERN_OPS else rhs.plain()
        return n.Compare(lhs, op, rhs, _mpos(meta))

    @v_args(meta=True)
    def in_set(self, meta, items):
        return n.InSet(items[0], tuple(_plain(i) for i in items[1:]), _mpos(meta))

    def in_list(self, items):
        tok = items[1]
        raise _Issue(
            _tpos(tok),
            f'named lists ({tok}) are not supported in llmwall; write the values inline: in {{"a" "b"}}',
        )

    @v_args(meta=True)
    def not_(self, meta, items):
        return n.Not(items[0], _mpos(meta))

    @v_args(meta=True)
    def and_expr(self, meta, items):
        return n.And(tuple(items), _mpos(meta))

    @v_args(meta=True)
    def xor_expr(self, meta, items):
        return n.Xor(tuple(items), _mpos(meta))

    @v_args(meta=True)
    def or_expr(self, meta, items):
        return n.Or(tuple(items), _mpos(meta))


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of expression"
    return repr(str(tok))


def _expected(names) -> str:
    shown = sorted({_DISPLAY.get(x, x) for x in names})
    if _COMPARISON_TOKENS & set(shown):
        shown = [s for s in shown if s not in _COMPARISON_TOKENS] + ["an operator (eq, ne, lt, contains, in, ...)"]
    return ", ".join(shown)


def _syntax_issue(exc: UnexpectedInput) -> ExprIssue:
    line, column = getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1
    if isinstance(exc, UnexpectedCharacters):
        msg = f"syntax error: unexpected character {exc.char!r}"
        if exc.allowed:
            msg += f"; expected {_expected(exc.allowed)}"
    elif isinstance(exc, UnexpectedToken):
        tok = exc.token
        msg = f"syntax error: unexpected {_describe(tok)}"
        if tok.type != "$END":
            line, column = _tpos(tok)
        msg += f"; expected {_expected(exc.expected)}"
    elif isinstance(exc, UnexpectedEOF):
        msg = f"syntax error: unexpected end of expression; expected {_expected(exc.expected)}"
    else:  # pragma: no cover - lark has no other UnexpectedInput kinds
        msg = f"syntax error: {exc}"
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        line, column = exc.token.end_line or line, exc.token.end_column or column
    return ExprIssue(line, column, msg)


def parse(text: str) -> n.Expr:
    """Parse one expression into a tree; raises :class:`ExpressionError` (syntax only, no types)."""
    if not isinstance(text, str):
        raise ExpressionError([ExprIssue(1, 1, "the expression must be a string")])
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            [ExprIssue(1, 1, f"expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_LENGTH}")]
        )
    if not text.strip():
        raise ExpressionError([ExprIssue(1, 1, "the expression is empty")])
    try:
        tree = _PARSER.parse(text)
        return _ToNodes().transform(tree)
    except UnexpectedInput as exc:
        raise ExpressionError([_syntax_issue(exc)]) from None
    except VisitError as exc:
        if isinstance(exc.orig_exc, _Issue):
            raise ExpressionError([ExprIssue(*exc.orig_exc.pos, exc.orig_exc.message)]) from None
        raise
    except RecursionError:
        raise ExpressionError([ExprIssue(1, 1, "the expression is nested too deeply")]) from None
