"""Property-based tests: the parser only ever raises its own error, and print/re-parse is the identity."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmwall import fields
from llmwall.rules import RulesError, parse_expression, parse_rules
from llmwall.rules import nodes as n
from llmwall.rules.parser import PATTERN_OPS, parse

KEYWORDS = {
    "and",
    "or",
    "xor",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "contains",
    "matches",
    "wildcard",
    "strict",
    "in",
    "true",
    "false",
}
OPS = ["eq", "ne", "lt", "le", "gt", "ge", "contains", "matches", "wildcard", "strict wildcard"]
TOKENS = [
    "cf.llm.prompt.pii_detected",
    "cf.llm.prompt.injection_score",
    "cf.llm.prompt.unsafe_topic_categories",
    "cf.llm.prompt.custom_topic_categories",
    "ip.src",
    "http.host",
    "llm.prompt.token_count",
    "any",
    "all",
    "len",
    "lower",
    "upper",
    "starts_with",
    "ends_with",
    "concat",
    "(",
    ")",
    "[",
    "]",
    "[*]",
    "{",
    "}",
    ",",
    "..",
    "*",
    "and",
    "or",
    "xor",
    "not",
    "&&",
    "||",
    "^^",
    "!",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "~",
    *OPS,
    "in",
    "true",
    "false",
    '"S10"',
    '"a\\"b"',
    'r#"x"y"#',
    'r"',
    '"',
    "0",
    "20",
    "-1",
    "1..20",
    "10.0.0.0/8",
    "::1",
    "1.2.3.4..1.2.3.9",
    '["competitors"]',
    "\\",
    "#",
    "$",
    "\n",
    "é",
]


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_parser_raises_only_its_own_error_on_arbitrary_text(text: str) -> None:
    try:
        parse_expression(text)
    except RulesError as exc:
        assert exc.errors and all(e.line >= 1 and e.column >= 1 and e.message for e in exc.errors)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25), st.sampled_from([" ", ""]))
def test_parser_raises_only_its_own_error_on_token_soup(tokens: list[str], sep: str) -> None:
    try:
        parse_expression(sep.join(tokens))
    except RulesError as exc:
        assert exc.errors


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_rules_loader_raises_only_its_own_error(text: str) -> None:
    try:
        parse_rules(text)
    except RulesError as exc:
        assert exc.errors


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                "rules:",
                "  - id: a",
                "    expression: ",
                "cf.llm.prompt.pii_detected",
                "    action: log",
                "    action: block",
                "    status: 403",
                "    body: x",
                "    enabled: false",
                "custom_topics:",
                "  ab: cd ef",
                "  - ",
                "{",
                "}",
                "'",
                '"',
                ":",
                "-",
                "\t",
                "    status: !!int x",
                "    body: !!binary AA",
                "!!python/object:os.system",
                "&a x",
                "*a",
                "    id: !!timestamp 2020-13-45",
                "? [k]",
            ]
        ),
        max_size=12,
    ),
)
def test_rules_loader_raises_only_its_own_error_on_yaml_soup(lines: list[str]) -> None:
    try:
        parse_rules("\n".join(lines))
    except RulesError as exc:
        assert exc.errors


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


EVERY_FIELD_RULES = parse_rules(
    "rules:\n"
    + "".join(
        f"  - id: r{i}\n    expression: '{expr}'\n    action: {action}\n"
        for i, (expr, action) in enumerate(
            [
                (
                    'any(cf.llm.prompt.pii_categories[*] in {"US_SSN"}) or '
                    'all(lower(cf.llm.prompt.secret_categories[*])[*] eq "x")',
                    "log",
                ),
                ("cf.llm.prompt.injection_score lt 20 or cf.llm.prompt.token_count in {1..10}", "block"),
                (
                    "any(cf.llm.prompt.custom_topic_categories[*] lt 20) or "
                    "len(cf.llm.prompt.unsafe_topic_categories) gt 0",
                    "log",
                ),
                ("not cf.llm.prompt.pii_detected xor cf.llm.prompt.unsafe_topic_detected", "redact"),
                ('cf.llm.prompt.secret_detected and ip.src in {10.0.0.0/8 ::1} and http.host wildcard "*.com"', "log"),
                (
                    'cf.llm.request.model matches "^gpt" or ends_with(http.request.uri.path, "/x") '
                    "or cf.llm.prompt.detected",
                    "log",
                ),
                (
                    "concat(http.request.method, http.user_agent, http.request.uri, http.request.uri.query, "
                    'http.request.full_uri, cf.llm.request.format) contains "a"',
                    "log",
                ),
                (
                    'any(cf.llm.prompt.failed_detections[*] eq "lite_topics") or '
                    'any(cf.llm.prompt.flagged_roles[*] in {"system"})',
                    "block",
                ),
                (
                    "cf.llm.response.detected and (cf.llm.response.pii_detected"
                    ' or any(cf.llm.response.pii_categories[*] eq "EMAIL_ADDRESS")'
                    " or cf.llm.response.unsafe_topic_detected"
                    " or len(cf.llm.response.unsafe_topic_categories) gt 0"
                    " or cf.llm.response.secret_detected"
                    ' or any(cf.llm.response.secret_categories[*] eq "OPENAI_API_KEY")'
                    " or cf.llm.response.token_count gt 5)",
                    "block",
                ),
            ]
        )
    )
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(fields.SCHEMA)), JSON))
def test_evaluation_never_raises_on_arbitrary_values(values: dict[str, object]) -> None:
    # every field is exercised, the response fields by the response-phase rule
    assert EVERY_FIELD_RULES.fields | EVERY_FIELD_RULES.response_fields == frozenset(fields.SCHEMA)
    for phase in (fields.REQUEST_PHASE, fields.RESPONSE_PHASE):
        decision = EVERY_FIELD_RULES.evaluate(values, phase)
        assert decision.action in (None, "log", "block", "redact")


# --- syntax trees ---------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[A-Za-z0-9_]{1,6}){0,2}", fullmatch=True).filter(
    lambda s: s not in KEYWORDS
)
texts = st.text(max_size=12)
ints = st.integers(min_value=-(10**12), max_value=10**12)
addresses = st.ip_addresses()
networks = st.builds(
    lambda a, bits: ipaddress.ip_network((a, bits % (a.max_prefixlen + 1)), strict=False),
    addresses,
    st.integers(0, 128),
)


def _ip_range(a, b):
    lo, hi = sorted((a, b))
    return n.IpRange(lo, hi)


ip_ranges = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)), st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6))
).map(lambda p: _ip_range(*p))
int_ranges = st.tuples(ints, ints).map(lambda p: n.IntRange(min(p), max(p)))
plain_strings = texts.map(lambda t: n.StrLit(t))
literals = st.one_of(
    plain_strings, ints.map(n.IntLit), st.booleans().map(n.BoolLit), addresses.map(n.IpLit), networks.map(n.IpLit)
)
set_items = st.one_of(literals, int_ranges, ip_ranges)

values = st.deferred(
    lambda: st.one_of(
        names.map(n.Field),
        st.builds(n.Index, values, st.one_of(st.integers(0, 99), texts, st.just(n.STAR))),
        st.builds(n.Call, names, st.lists(arguments, max_size=3).map(tuple)),
    )
)
# A bare value used as a function argument is the value itself, never wrapped in Truthy.
arguments = st.deferred(
    lambda: st.one_of(
        plain_strings, ints.map(n.IntLit), values, conditions.filter(lambda c: not isinstance(c, n.Truthy))
    )
)


def _compare(lhs, op, rhs, pattern_text):
    if op in PATTERN_OPS and isinstance(rhs, n.StrLit):
        rhs = n.StrLit(pattern_text, pattern=True)
    return n.Compare(lhs, op, rhs)


conditions = st.deferred(
    lambda: st.one_of(
        st.builds(_compare, values, st.sampled_from(OPS), literals, texts),
        st.builds(n.InSet, values, st.lists(set_items, max_size=4).map(tuple)),
        values.map(n.Truthy),
        st.booleans().map(n.BoolLit),
        st.builds(n.Not, conditions),
        st.builds(n.And, st.lists(conditions, min_size=2, max_size=3).map(tuple)),
        st.builds(n.Xor, st.lists(conditions, min_size=2, max_size=3).map(tuple)),
        st.builds(n.Or, st.lists(conditions, min_size=2, max_size=3).map(tuple)),
    )
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions)
def test_print_then_parse_gives_the_same_tree(tree) -> None:
    text = str(tree)
    assert parse(text) == tree, text
    assert str(parse(text)) == text


# Well-typed expressions over the real schema: the full pipeline (parse + type check) round-trips.
typed_atoms = st.one_of(
    st.sampled_from(["cf.llm.prompt.pii_detected", "llm.prompt.unsafe_topic_detected", "true"]).map(parse),
    st.builds(
        lambda op, v: parse(f"cf.llm.prompt.injection_score {op} {v}"),
        st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"]),
        ints,
    ),
    st.builds(
        lambda items: n.InSet(n.Index(n.Field("cf.llm.prompt.unsafe_topic_categories"), n.STAR), tuple(items)),
        st.lists(st.sampled_from([f"S{i}" for i in range(1, 15)]).map(n.StrLit), min_size=1, max_size=3),
    ).map(lambda s: n.Truthy(n.Call("any", (s,)))),
    st.builds(lambda t: n.Compare(n.Call("lower", (n.Field("http.host"),)), "eq", n.StrLit(t)), texts),
    st.builds(
        lambda t: n.Compare(
            n.Field("http.request.uri.path"), "wildcard", n.StrLit(t.replace("*", "").replace("\\", ""), True)
        ),
        texts,
    ),
    st.builds(lambda a: n.InSet(n.Field("ip.src"), (n.IpLit(a),)), networks),
)
typed = st.recursive(
    typed_atoms,
    lambda inner: st.one_of(
        st.builds(n.Not, inner),
        st.builds(n.And, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(n.Xor, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(n.Or, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed)
def test_well_typed_expressions_round_trip_through_the_checker(tree) -> None:
    assert parse_expression(str(tree)) == tree
