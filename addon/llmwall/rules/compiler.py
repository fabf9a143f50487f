"""Type-checking an expression tree against the field schema and compiling it to closures.

Compiling once at load time means evaluation per request is a chain of Python calls
with no tree walking, no type dispatch and no regex compilation. Every type error is
collected (not just the first), each with its position in the expression.

Values at run time: a missing field is ``None``; every comparison on ``None`` is false,
functions given ``None`` return ``None``, and ``None`` used as a condition is false
(Cloudflare's "missing value" behaviour).
"""

from __future__ import annotations

import difflib
import ipaddress
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from llmwall import fields as schema
from llmwall.rules import nodes as n
from llmwall.rules.errors import ExpressionError, ExprIssue
from llmwall.rules.patterns import (
    ascii_lower,
    ascii_upper,
    compile_regex,
    compile_wildcard,
    regex_search,
    wildcard_match,
)

Values = Mapping[str, object]
Fn = Callable[[Values], object]

BOOL, INT, STRING, IP = "Bool", "Int", "String", "IP"
ERROR = "?"  # the type of something already reported; suppresses follow-on errors
FUNCTIONS = ("any", "all", "len", "lower", "upper", "starts_with", "ends_with", "concat")
#: Cloudflare functions llmwall does not implement, named so the error can say so.
CLOUDFLARE_ONLY_FUNCTIONS = frozenset(
    {
        "bit_slice",
        "cidr",
        "cidr6",
        "decode_base64",
        "encode_base64",
        "has_key",
        "has_value",
        "is_timed_hmac_valid_v0",
        "join",
        "lookup_json_integer",
        "lookup_json_string",
        "regex_replace",
        "remove_bytes",
        "remove_query_args",
        "sha256",
        "split",
        "substring",
        "to_string",
        "url_decode",
        "uuidv4",
        "wildcard_replace",
        "is_jwt_valid",
        "is_jwt_present",
    }
)
_LITERAL_KIND = {n.StrLit: "a string", n.IntLit: "an integer", n.BoolLit: "a boolean", n.IpLit: "an IP address"}
_LITERAL_TYPE = {n.StrLit: STRING, n.IntLit: INT, n.BoolLit: BOOL, n.IpLit: IP}
_ORDERING = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}


def array_of(t: str) -> str:
    return f"Array<{t}>"


def element(t: str) -> str | None:
    """The element type of an Array or Map type, or None."""
    for prefix in ("Array<", "Map<"):
        if t.startswith(prefix):
            return t[len(prefix) : -1]
    return None


@dataclass(frozen=True)
class Compiled:
    """A checked sub-expression: its type, whether it is per-element (``[*]``), and its evaluator."""

    ty: str
    fn: Fn
    mapped: bool = False  # fn returns a list, one entry per element of the [*] array
    literal: bool = False


def _binary(kind: type, a: Fn, b: Fn) -> Fn:
    """``a kind b`` on conditions, where anything but ``True`` (false, missing) counts as false."""
    if kind is n.And:
        return lambda v: a(v) is True and b(v) is True
    if kind is n.Or:
        return lambda v: a(v) is True or b(v) is True
    return lambda v: (a(v) is True) is not (b(v) is True)


def _const(value: object) -> Fn:
    return lambda v: value


def _error() -> Compiled:
    return Compiled(ERROR, _const(None))


#: Values the detectors can report for a category field. A literal outside this set can never
#: match, which is almost always a typo ("S01", "s10") or a name from another taxonomy, so the
#: loader warns about it (without refusing the rule).
KNOWN_VALUES: dict[str, tuple[frozenset[str], str]] = {
    "cf.llm.prompt.unsafe_topic_categories": (
        frozenset(f"S{i}" for i in range(1, 15)),
        "llmwall reports Llama Guard 3 hazard codes S1-S14",
    ),
}

#: Deepest nesting of operators, functions and indexes an expression may have. Real rules
#: stay far below it; the bound keeps compiled evaluation far from Python's recursion limit.
MAX_NESTING = 64


class _TooDeep(Exception):
    def __init__(self, pos: n.Pos):
        self.pos = pos


@dataclass(frozen=True)
class CompiledExpression:
    """A ready-to-run condition and the canonical fields it reads."""

    expr: n.Expr
    test: Callable[[Values], bool]
    fields: frozenset[str]
    warnings: tuple[ExprIssue, ...] = ()
    #: Field -> the string literals its elements are compared with (``field[*] eq "URL"``,
    #: ``field[0] in {...}``): which category values a rule can match.
    literals: Mapping[str, frozenset[str]] = field(default_factory=dict)


class _Checker:
    def __init__(self, custom_topics: Collection[str] | None):
        self.custom_topics = custom_topics
        self.issues: list[ExprIssue] = []
        self.warnings: list[ExprIssue] = []
        self.fields: set[str] = set()
        self.literals: dict[str, set[str]] = {}
        self.depth = 0  # function-call nesting; [*] results may not escape depth 0
        self.nesting = 0  # tree depth, bounded so evaluation never nears the recursion limit

    def error(self, pos: n.Pos, message: str) -> Compiled:
        self.issues.append(ExprIssue(pos[0], pos[1], message))
        return _error()

    # --- conditions ---------------------------------------------------------------------

    def condition(self, node: n.Node) -> Compiled:
        """Compile a node used as a condition: result type Bool, or Array<Bool> inside a function."""
        self.nesting += 1
        try:
            if self.nesting > MAX_NESTING:
                raise _TooDeep(getattr(node, "pos", (1, 1)))
            return self._condition(node)
        finally:
            self.nesting -= 1

    def _condition(self, node: n.Node) -> Compiled:
        if isinstance(node, n.BoolLit):
            return Compiled(BOOL, _const(node.value), literal=True)
        if isinstance(node, n.Truthy):
            return self.truthy(node.value, node.pos)
        if isinstance(node, (n.Field, n.Index, n.Call)):
            return self.truthy(node, node.pos)
        if isinstance(node, n.Not):
            return self.negation(node)
        if isinstance(node, n._Logical):
            return self.logical(node)
        if isinstance(node, n.Compare):
            return self.compare(node)
        if isinstance(node, n.InSet):
            return self.in_set(node)
        raise TypeError(f"not a condition node: {node!r}")  # the grammar never produces this

    def truthy(self, value: n.Value, pos: n.Pos) -> Compiled:
        c = self.value(value)
        if c.ty == ERROR:
            return c
        if c.mapped:
            return self._escaped_star(pos)
        if c.ty not in (BOOL, array_of(BOOL)):
            return self.error(pos, f"{value} is {c.ty}, not a condition; compare it with an operator (eq, lt, in, ...)")
        return c

    def _check_values(self, lhs: n.Value, literals: list[n.StrLit]) -> None:
        """Warn about string literals a category field can never hold."""
        if not (isinstance(lhs, n.Index) and isinstance(lhs.base, n.Field)):
            return
        name = schema.canonical(lhs.base.name) or ""
        self.literals.setdefault(name, set()).update(lit.value for lit in literals)
        known = KNOWN_VALUES.get(name)
        if known is None:
            return
        values, why = known
        for lit in literals:
            if lit.value not in values:
                close = difflib.get_close_matches(lit.value, sorted(values), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.warnings.append(ExprIssue(*lit.pos, f"{lit.value!r} never matches {lhs}: {why}{hint}"))

    def _escaped_star(self, pos: n.Pos) -> Compiled:
        return self.error(pos, '[*] is only allowed inside a function call, for example any(field[*] eq "x")')

    def negation(self, node: n.Not) -> Compiled:
        c = self.condition(node.item)
        if c.ty == ERROR:
            return c
        f = c.fn
        if c.ty == BOOL:
            return Compiled(BOOL, lambda v: f(v) is not True)
        return Compiled(c.ty, lambda v: None if (a := f(v)) is None else [x is not True for x in a])  # type: ignore[union-attr]

    def logical(self, node: n._Logical) -> Compiled:
        parts = [self.condition(item) for item in node.items]
        if any(p.ty == ERROR for p in parts):
            return _error()
        for item, p in zip(node.items, parts, strict=False):
            if p.ty != BOOL:
                return self.error(
                    item.pos,
                    f"'{node.KEYWORD}' combines conditions, not per-element [*] results; "
                    "wrap each side in any(...) or all(...)",
                )
        # Fold into binary closures: a chain of plain calls is faster per request than a generator.
        fn = parts[0].fn
        for p in parts[1:]:
            fn = _binary(type(node), fn, p.fn)
        return Compiled(BOOL, fn)

    def compare(self, node: n.Compare) -> Compiled:
        c = self.value(node.lhs)
        if c.ty == ERROR:
            return c
        if c.mapped and self.depth == 0:
            return self._escaped_star(node.pos)
        ty, op, rhs = c.ty, node.op, node.rhs
        if element(ty) is not None:
            return self._collection_compare(node, ty)
        want = _LITERAL_TYPE.get(type(rhs))
        allowed = {
            "eq": (BOOL, INT, STRING, IP),
            "ne": (BOOL, INT, STRING, IP),
            "lt": (INT, STRING),
            "le": (INT, STRING),
            "gt": (INT, STRING),
            "ge": (INT, STRING),
            "contains": (STRING,),
            "matches": (STRING,),
            "wildcard": (STRING,),
            "strict wildcard": (STRING,),
        }[op]
        if ty not in allowed:
            return self.error(
                node.pos, f"operator '{op}' does not apply to {ty} ({node.lhs}); it works on " + ", ".join(allowed)
            )
        if want != ty:
            hint = " (write IP addresses without quotes)" if ty == IP and want == STRING else ""
            return self.error(rhs.pos, f"cannot compare {ty} ({node.lhs}) with {_LITERAL_KIND[type(rhs)]}{hint}")
        if op in ("eq", "ne") and isinstance(rhs, n.StrLit):
            self._check_values(node.lhs, [rhs])
        test = self._test(op, rhs)
        if test is None:
            return _error()
        return self._apply(c, test)

    def _collection_compare(self, node: n.Compare | n.InSet, ty: str) -> Compiled:
        op = node.op if isinstance(node, n.Compare) else "in"
        if ty.startswith("Map<"):
            hint = f'look up one key, for example {node.lhs}["key"]'
        else:
            hint = (
                f"compare one element ({node.lhs}[0]) or every element inside any()/all(): any({node.lhs}[*] {op} ...)"
            )
        return self.error(node.pos, f"cannot compare {ty} ({node.lhs}) with '{op}'; {hint}")

    def _test(self, op: str, rhs: n.Literal) -> Callable[[object], bool] | None:
        """The per-value test for ``lhs op rhs``, with lhs already known to be non-missing."""
        value = rhs.value
        if op in ("eq", "ne"):
            if isinstance(rhs, n.IpLit) and not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                self.error(rhs.pos, f"'{op}' compares single addresses; use 'in {{{value}}}' for a CIDR range")
                return None
            return (lambda x: x == value) if op == "eq" else (lambda x: x != value)
        if op in _ORDERING:
            compare = _ORDERING[op]
            return lambda x: compare(x, value)
        if op == "contains":
            return lambda x: value in x  # type: ignore[operator]
        if op == "matches":
            try:
                compiled = compile_regex(value)  # type: ignore[arg-type]
            except ValueError as exc:
                self.error(rhs.pos, str(exc))
                return None
            return lambda x: regex_search(compiled, x)  # type: ignore[arg-type]
        strict = op == "strict wildcard"
        try:
            pieces = compile_wildcard(value, case_sensitive=strict)  # type: ignore[arg-type]
        except ValueError as exc:
            self.error(rhs.pos, str(exc))
            return None
        if strict:
            return lambda x: wildcard_match(pieces, x)  # type: ignore[arg-type]
        return lambda x: wildcard_match(pieces, ascii_lower(x))  # type: ignore[arg-type]

    @staticmethod
    def _apply(c: Compiled, test: Callable[[object], bool]) -> Compiled:
        f = c.fn
        if c.mapped:
            return Compiled(
                array_of(BOOL), lambda v: None if (a := f(v)) is None else [x is not None and test(x) for x in a]
            )  # type: ignore[union-attr]
        return Compiled(BOOL, lambda v: (x := f(v)) is not None and test(x))

    def in_set(self, node: n.InSet) -> Compiled:
        c = self.value(node.lhs)
        if c.ty == ERROR:
            return c
        if c.mapped and self.depth == 0:
            return self._escaped_star(node.pos)
        ty = c.ty
        if element(ty) is not None:
            return self._collection_compare(node, ty)
        if ty not in (STRING, INT, IP):
            return self.error(
                node.pos, f"operator 'in' does not apply to {ty} ({node.lhs}); it works on String, Int, IP"
            )
        if not node.items:
            return self.error(node.pos, "empty set {}: list at least one value")
        singles: set[object] = set()
        ranges: list[tuple[object, object]] = []
        networks: list[object] = []
        ok = True
        for item in node.items:
            if ty == STRING and isinstance(item, n.StrLit):
                singles.add(item.value)
            elif ty == INT and isinstance(item, n.IntLit):
                singles.add(item.value)
            elif ty == INT and isinstance(item, n.IntRange):
                ranges.append((item.lo, item.hi))
            elif ty == IP and isinstance(item, n.IpLit):
                if isinstance(item.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                    networks.append(item.value)
                else:
                    singles.add(item.value)
            elif ty == IP and isinstance(item, n.IpRange):
                ranges.append((item.lo, item.hi))
            else:
                ok = False
                kind = "a range" if isinstance(item, (n.IntRange, n.IpRange)) else _LITERAL_KIND[type(item)]
                self.error(item.pos, f"set element {item} is {kind}, but {node.lhs} is {ty}")
        if not ok:
            return _error()
        if ty == STRING:
            self._check_values(node.lhs, [i for i in node.items if isinstance(i, n.StrLit)])
        members = frozenset(singles)
        spans, nets = tuple(ranges), tuple(networks)
        if ty == IP:

            def test(x: object) -> bool:
                return (
                    x in members
                    or any(x in net for net in nets)  # type: ignore[operator]
                    or any(lo.version == x.version and lo <= x <= hi for lo, hi in spans)  # type: ignore[attr-defined,operator]
                )
        elif spans:

            def test(x: object) -> bool:
                return x in members or any(lo <= x <= hi for lo, hi in spans)  # type: ignore[operator]
        else:

            def test(x: object) -> bool:
                return x in members

        return self._apply(c, test)

    # --- values -------------------------------------------------------------------------

    def value(self, node: n.Node) -> Compiled:
        self.nesting += 1
        try:
            if self.nesting > MAX_NESTING:
                raise _TooDeep(node.pos)  # type: ignore[union-attr]
            return self._value(node)
        finally:
            self.nesting -= 1

    def _value(self, node: n.Node) -> Compiled:
        if isinstance(node, n.Field):
            return self.field(node)
        if isinstance(node, n.Index):
            return self.index(node)
        if isinstance(node, n.Call):
            return self.call(node)
        raise TypeError(f"not a value node: {node!r}")  # the grammar never produces this

    def field(self, node: n.Field) -> Compiled:
        name = schema.canonical(node.name)
        if name is None:
            known = list(schema.SCHEMA) + [k[3:] for k in schema.SCHEMA if k.startswith("cf.llm.")]
            close = difflib.get_close_matches(node.name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            if node.name in FUNCTIONS:
                hint = f"; {node.name} is a function: call it as {node.name}(...)"
            elif not close and node.name.split(".")[0] in ("cf", "http", "ip", "ssl", "raw", "cf.llm"):
                hint = (
                    "; it may be a Cloudflare field, but llmwall cannot compute it (see docs/rules.md for the fields)"
                )
            return self.error(node.pos, f"unknown field {node.name!r}{hint}")
        self.fields.add(name)
        return Compiled(schema.SCHEMA[name], lambda v: v.get(name))

    def index(self, node: n.Index) -> Compiled:
        base = self.value(node.base)
        if base.ty == ERROR:
            return base
        inner = element(base.ty)
        key, f = node.key, base.fn
        if inner is None:
            return self.error(node.pos, f"{node.base} is {base.ty}; only arrays and maps can be indexed")
        if isinstance(key, n.Star):
            if base.ty.startswith("Map<"):
                return Compiled(inner, lambda v: None if (m := f(v)) is None else list(m.values()), mapped=True)  # type: ignore[union-attr]
            return Compiled(inner, f, mapped=True)
        if base.ty.startswith("Array<"):
            if not isinstance(key, int) or key < 0:
                return self.error(node.pos, f"{node}: an array index must be a non-negative integer or *")

            def get(a: object) -> object:
                return a[key] if a is not None and key < len(a) else None  # type: ignore[index,arg-type]
        else:
            if not isinstance(key, str):
                return self.error(node.pos, f"{node}: a map key must be a string")
            if (
                self.custom_topics is not None
                and isinstance(node.base, n.Field)
                and schema.canonical(node.base.name) == "cf.llm.prompt.custom_topic_categories"
                and key not in self.custom_topics
            ):
                declared = ", ".join(sorted(self.custom_topics)) or "none"
                return self.error(
                    node.pos, f"unknown custom topic label {key!r} (declared in custom_topics: {declared})"
                )

            def get(m: object) -> object:
                return None if m is None else m.get(key)  # type: ignore[attr-defined]

        if base.mapped:
            return Compiled(inner, lambda v: None if (a := f(v)) is None else [get(x) for x in a], mapped=True)  # type: ignore[union-attr]
        return Compiled(inner, lambda v: get(f(v)))

    def argument(self, node: n.Node) -> Compiled:
        if isinstance(node, n.StrLit):
            return Compiled(STRING, _const(node.value), literal=True)
        if isinstance(node, n.IntLit):
            return Compiled(INT, _const(node.value), literal=True)
        if isinstance(node, (n.Field, n.Index, n.Call)):
            return self.value(node)
        return self.condition(node)

    def call(self, node: n.Call) -> Compiled:
        if node.name in CLOUDFLARE_ONLY_FUNCTIONS:
            return self.error(
                node.pos,
                f"{node.name}() is a Cloudflare function that llmwall does not support; "
                f"supported: {', '.join(FUNCTIONS)}",
            )
        if node.name not in FUNCTIONS:
            close = difflib.get_close_matches(node.name, FUNCTIONS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            return self.error(node.pos, f"unknown function {node.name}(); {hint}supported: {', '.join(FUNCTIONS)}")
        self.depth += 1
        try:
            args = [self.argument(a) for a in node.args]
        finally:
            self.depth -= 1
        if any(a.ty == ERROR for a in args):
            return _error()
        arity = {
            "any": (1, 1),
            "all": (1, 1),
            "len": (1, 1),
            "lower": (1, 1),
            "upper": (1, 1),
            "starts_with": (2, 2),
            "ends_with": (2, 2),
            "concat": (1, 64),
        }[node.name]
        if not arity[0] <= len(args) <= arity[1]:
            want = f"{arity[0]}" if arity[0] == arity[1] else f"at least {arity[0]}"
            s = "" if arity[0] == 1 else "s"
            return self.error(node.pos, f"{node.name}() takes {want} argument{s}, got {len(args)}")
        for i, a in enumerate(args[1:], start=2):
            if a.mapped:
                return self.error(node.args[i - 1].pos, f"{node.name}(): [*] is only allowed in the first argument")
        return getattr(self, f"fn_{node.name}")(node, args)

    def _arg_error(self, node: n.Call, i: int, want: str, got: str) -> Compiled:
        return self.error(node.args[i].pos, f"{node.name}() argument {i + 1} must be {want}, got {got}")

    def _lift(self, args: list[Compiled], ret: str, impl: Callable[..., object]) -> Compiled:
        """Build the call: None in -> None out, and per element when the first argument has [*]."""
        fns = [a.fn for a in args]
        first, rest = fns[0], fns[1:]
        if args[0].mapped:

            def mapped(v: Values) -> object:
                items = first(v)
                others = [g(v) for g in rest]
                if items is None or any(o is None for o in others):
                    return None
                return [None if x is None else impl(x, *others) for x in items]  # type: ignore[union-attr]

            return Compiled(array_of(ret), mapped)

        if len(fns) == 1:

            def one(v: Values) -> object:
                x = first(v)
                return None if x is None else impl(x)

            return Compiled(ret, one)
        if len(fns) == 2:
            second = fns[1]

            def two(v: Values) -> object:
                x, y = first(v), second(v)
                return None if x is None or y is None else impl(x, y)

            return Compiled(ret, two)

        def many(v: Values) -> object:
            vals = [g(v) for g in fns]
            return None if None in vals else impl(*vals)

        return Compiled(ret, many)

    # Array<Bool> elements are True, False or None (missing), so membership tests are exact.
    def fn_any(self, node: n.Call, args: list[Compiled]) -> Compiled:
        return self._quantifier(node, args, lambda xs: True in xs)

    def fn_all(self, node: n.Call, args: list[Compiled]) -> Compiled:
        return self._quantifier(node, args, lambda xs: False not in xs and None not in xs)

    def _quantifier(self, node: n.Call, args: list[Compiled], fold: Callable[[list], bool]) -> Compiled:
        a = args[0]
        if a.mapped and a.ty == BOOL:  # any(f(x[*])[*]) is any(f(x[*])): the same list of Bools
            a = Compiled(array_of(BOOL), a.fn)
        if a.ty != array_of(BOOL) or a.mapped:
            got = f"{a.ty} with [*]" if a.mapped else a.ty
            return self.error(
                node.pos, f'{node.name}() needs Array<Bool>, got {got}; write {node.name}(field[*] eq "value")'
            )
        return self._lift([a], BOOL, fold)

    def fn_len(self, node: n.Call, args: list[Compiled]) -> Compiled:
        ty = args[0].ty
        if ty == STRING:
            return self._lift(args, INT, lambda s: len(s.encode("utf-8")))
        if ty.startswith("Array<"):
            return self._lift(args, INT, len)
        return self._arg_error(node, 0, "String or Array", ty)

    def fn_lower(self, node: n.Call, args: list[Compiled]) -> Compiled:
        if args[0].ty != STRING:
            return self._arg_error(node, 0, "String", args[0].ty)
        return self._lift(args, STRING, ascii_lower)

    def fn_upper(self, node: n.Call, args: list[Compiled]) -> Compiled:
        if args[0].ty != STRING:
            return self._arg_error(node, 0, "String", args[0].ty)
        return self._lift(args, STRING, ascii_upper)

    def fn_starts_with(self, node: n.Call, args: list[Compiled]) -> Compiled:
        return self._affix(node, args, str.startswith)

    def fn_ends_with(self, node: n.Call, args: list[Compiled]) -> Compiled:
        return self._affix(node, args, str.endswith)

    def _affix(self, node: n.Call, args: list[Compiled], test: Callable[[str, str], bool]) -> Compiled:
        for i, a in enumerate(args):
            if a.ty != STRING:
                return self._arg_error(node, i, "String", a.ty)
        if args[0].literal:
            return self.error(node.args[0].pos, f"{node.name}(): the first argument must be a field, not a literal")
        return self._lift(args, BOOL, test)

    def fn_concat(self, node: n.Call, args: list[Compiled]) -> Compiled:
        first = args[0].ty
        if first != STRING and not first.startswith("Array<"):
            return self._arg_error(node, 0, "String or Array", first)
        for i, a in enumerate(args[1:], start=1):
            if a.ty != first:
                return self._arg_error(node, i, first, a.ty)
        if first == STRING:
            return self._lift(args, STRING, lambda *parts: "".join(parts))
        return self._lift(args, first, lambda *parts: [x for p in parts for x in p])


def compile_expression(expr: n.Expr, custom_topics: Collection[str] | None = None) -> CompiledExpression:
    """Type-check ``expr`` against :data:`llmwall.fields.SCHEMA` and compile it.

    ``custom_topics`` are the declared labels for ``custom_topic_categories["label"]``;
    None skips that check. Raises :class:`ExpressionError` listing every problem.
    """
    checker = _Checker(custom_topics)
    try:
        c = checker.condition(expr)
    except _TooDeep as exc:
        message = f"the expression is nested more than {MAX_NESTING} levels deep"
        raise ExpressionError([ExprIssue(exc.pos[0], exc.pos[1], message)]) from None
    if c.ty not in (BOOL, ERROR):
        checker.error(getattr(expr, "pos", (1, 1)), f"the expression must be a condition (Bool), got {c.ty}")
    if checker.issues:
        raise ExpressionError(sorted(set(checker.issues), key=lambda i: (i.line, i.column)))
    fn = c.fn

    def test(values: Values) -> bool:
        return fn(values) is True

    literals = {name: frozenset(values) for name, values in checker.literals.items()}
    return CompiledExpression(expr, test, frozenset(checker.fields), tuple(checker.warnings), literals)
