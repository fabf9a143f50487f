"""Every error message of the rules engine, with the position it points at."""

from __future__ import annotations

import textwrap

import pytest

from llmwall.rules import RulesError, parse_expression, parse_rules

P = "cf.llm.prompt."

# (expression, line, column, part of the message)
EXPRESSION_ERRORS: list[tuple[str, int | None, int | None, str]] = [
    # syntax
    ("", 1, 1, "the expression is empty"),
    ("   ", 1, 1, "the expression is empty"),
    (f"{P}injection_score lt", 1, 33, "unexpected end of expression"),
    (f"{P}injection_score lt 20 20", 1, 37, "syntax error: unexpected '20'"),
    (f"{P}injection_score $ 20", 1, 31, "unexpected character '$'"),
    (f"{P}injection_score LT 20", 1, 31, "syntax error: unexpected 'LT'"),  # English operators are lowercase
    (f"({P}pii_detected", 1, 28, "unexpected end of expression"),
    (f"{P}pii_detected)", 1, 27, "syntax error: unexpected ')'"),
    (f"{P}pii_detected and", 1, 31, "unexpected end of expression"),
    (f'{P}pii_categories[0] eq "a\\nb"', 1, 36, "invalid escape '\\n'"),
    (f"{P}token_count in {{20..1}}", 1, 31, "range 20..1: the start must not be greater than the end"),
    ("ip.src in {10.0.0.9..10.0.0.1}", 1, 12, "IP range 10.0.0.9..10.0.0.1"),
    ("ip.src in {10.0.0.1..::1}", 1, 12, "same IP version"),
    ("ip.src in {10.0.0.0/8..10.0.0.1}", 1, 12, "takes two addresses, not CIDR networks"),
    ("ip.src eq 300.1.1.1", 1, 11, "invalid IP address '300.1.1.1'"),
    ("x" * 4097, 1, 1, "the limit is 4096"),
    ("ip.src in $office_network", 1, 11, "named lists ($office_network) are not supported"),
    # fields and types
    ("cf.bot_management.score lt 10", 1, 1, "it may be a Cloudflare field, but llmwall cannot compute it"),
    ('url_decode(http.request.uri.path) eq "a"', 1, 1, "url_decode() is a Cloudflare function that llmwall does not"),
    (f"{P}pii_detectd", 1, 1, "unknown field 'cf.llm.prompt.pii_detectd'; did you mean cf.llm.prompt.pii_detected?"),
    ("llm.prompt.injection_scor lt 20", 1, 1, "did you mean llm.prompt.injection_score?"),
    ("any", 1, 1, "any is a function: call it as any(...)"),
    (
        f'{P}unsafe_topic_categories eq "S1"',
        1,
        1,
        "cannot compare Array<String> (cf.llm.prompt.unsafe_topic_categories) with 'eq'; compare one element",
    ),
    (f'{P}unsafe_topic_categories in {{"S1"}}', 1, 1, "cannot compare Array<String>"),
    (f"{P}custom_topic_categories lt 20", 1, 1, "cannot compare Map<Int>"),
    (f'{P}injection_score lt "20"', 1, 34, "cannot compare Int (cf.llm.prompt.injection_score) with a string"),
    (f"{P}pii_detected eq 1", 1, 31, "cannot compare Bool (cf.llm.prompt.pii_detected) with an integer"),
    ("http.host eq 10", 1, 14, "cannot compare String (http.host) with an integer"),
    ('ip.src eq "10.0.0.1"', 1, 11, "write IP addresses without quotes"),
    ("ip.src eq 10.0.0.0/8", 1, 11, "use 'in {10.0.0.0/8}' for a CIDR range"),
    ("ip.src lt 10.0.0.1", 1, 1, "operator 'lt' does not apply to IP"),
    (f"{P}pii_detected lt true", 1, 1, "operator 'lt' does not apply to Bool"),
    (f'{P}injection_score contains "1"', 1, 1, "operator 'contains' does not apply to Int"),
    (f'{P}injection_score matches "1"', 1, 1, "operator 'matches' does not apply to Int"),
    (f'{P}injection_score wildcard "1*"', 1, 1, "operator 'wildcard' does not apply to Int"),
    (f"{P}pii_detected in {{1}}", 1, 1, "operator 'in' does not apply to Bool"),
    ("http.host in {}", 1, 1, "empty set {}"),
    ('http.host in {"a" 1}', 1, 19, "set element 1 is an integer, but http.host is String"),
    (f'{P}token_count in {{1 "2"}}', 1, 33, 'set element "2" is a string'),
    ('ip.src in {10.0.0.1 "x"}', 1, 21, 'set element "x" is a string, but ip.src is IP'),
    (f"{P}token_count in {{1 2.3.4.5}}", 1, 33, "set element 2.3.4.5 is an IP address"),
    ("http.host in {1..2}", 1, 15, "set element 1..2 is a range, but http.host is String"),
    (f'starts_with({P}pii_categories[*], "US")', 1, 1, "the expression must be a condition (Bool), got Array<Bool>"),
    (f"{P}token_count", 1, 1, "is Int, not a condition"),
    ("http.host", 1, 1, "is String, not a condition"),
    (f"len({P}pii_categories)", 1, 1, "len(cf.llm.prompt.pii_categories) is Int, not a condition"),
    # arrays, maps and [*]
    (f'{P}unsafe_topic_categories[*] eq "S1"', 1, 1, "[*] is only allowed inside a function call"),
    (f'{P}unsafe_topic_categories[*] in {{"S1"}}', 1, 1, "[*] is only allowed inside a function call"),
    (f'lower({P}pii_categories[*])[*] eq "a"', 1, 1, "[*] is only allowed inside a function call"),
    (f'{P}unsafe_topic_categories["S1"] eq "x"', 1, 1, "an array index must be a non-negative integer"),
    (f'{P}unsafe_topic_categories[-1] eq "x"', 1, 1, "an array index must be a non-negative integer"),
    (f"{P}custom_topic_categories[0] lt 20", 1, 1, "a map key must be a string"),
    (f"{P}injection_score[0] eq 1", 1, 1, "only arrays and maps can be indexed"),
    (f'any({P}pii_categories[*][*] eq "x")', 1, 5, "is String; only arrays and maps can be indexed"),
    # functions
    (f"foo({P}pii_detected)", 1, 1, "unknown function foo(); supported: any, all, len"),
    ('lowr(http.host) eq "a"', 1, 1, "did you mean lower?"),
    (f"any({P}pii_detected, {P}pii_detected)", 1, 1, "any() takes 1 argument, got 2"),
    ("all()", 1, 1, "all() takes 1 argument, got 0"),
    ("starts_with(http.host) ", 1, 1, "starts_with() takes 2 arguments, got 1"),
    ('ends_with(http.host, "a", "b")', 1, 1, "ends_with() takes 2 arguments, got 3"),
    ('concat() eq ""', 1, 1, "concat() takes at least 1 argument, got 0"),
    (f"any({P}unsafe_topic_categories)", 1, 1, "any() needs Array<Bool>, got Array<String>"),
    (f"all({P}unsafe_topic_categories[*])", 1, 1, "all() needs Array<Bool>, got String with [*]"),
    (f"len({P}injection_score) eq 1", 1, 5, "len() argument 1 must be String or Array, got Int"),
    (f'lower({P}injection_score) eq "1"', 1, 7, "lower() argument 1 must be String, got Int"),
    (f'upper({P}pii_categories) eq "1"', 1, 7, "upper() argument 1 must be String, got Array<String>"),
    ("starts_with(http.host, 1)", 1, 24, "starts_with() argument 2 must be String, got Int"),
    ('starts_with("abc", "a")', 1, 13, "the first argument must be a field, not a literal"),
    (f'concat(http.host, {P}pii_categories) eq "a"', 1, 19, "concat() argument 2 must be String, got Array<String>"),
    (f"concat({P}injection_score) eq 1", 1, 8, "concat() argument 1 must be String or Array, got Int"),
    (f'concat("a", {P}pii_categories[*]) eq "a"', 1, 13, "[*] is only allowed in the first argument"),
    # logic over per-element results
    (f'any({P}pii_categories[*] eq "a" and {P}pii_categories[*] eq "b")', 1, 5, "'and' combines conditions"),
    # patterns
    ('http.host matches "("', 1, 19, "invalid regular expression '('"),
    ('http.host matches "(a)\\1"', 1, 19, "backreferences"),
    ('http.host matches "(a)\\\\1"', None, None, ""),  # \\ is an escaped backslash, not a backreference
    ('http.host matches r"(a)\\1"', 1, 19, "backreferences"),
    ('http.host matches "a(?=b)"', 1, 19, "lookahead and lookbehind"),
    ('http.host matches "(?<!a)b"', 1, 19, "lookahead and lookbehind"),
    ('http.host matches "(?>a)"', 1, 19, "atomic groups"),
    ('http.host matches "a++"', 1, 19, "possessive quantifiers"),
    ('http.host matches "(a)?(?(1)b|c)"', 1, 19, "conditionals"),
    ('http.host matches "(?P<x>a)(?P=x)"', 1, 19, "backreferences"),
    ('http.host wildcard "a**b"', 1, 20, "'**' is not allowed"),
    ('http.host strict wildcard r"a\\"', 1, 27, "ends with a lone backslash"),
]


@pytest.mark.parametrize(
    ("expression", "line", "column", "message"), EXPRESSION_ERRORS, ids=[e[3][:50] or e[0] for e in EXPRESSION_ERRORS]
)
def test_expression_error(expression: str, line: int | None, column: int | None, message: str) -> None:
    if line is None:  # a near miss that must be accepted
        parse_expression(expression)
        return
    with pytest.raises(RulesError) as info:
        parse_expression(expression)
    issues = info.value.errors
    assert any(message in i.message for i in issues), [i.message for i in issues]
    issue = next(i for i in issues if message in i.message)
    assert (issue.line, issue.column) == (line, column), issue


@pytest.mark.parametrize(
    "pattern",
    [r"[(?=]x", r"\(?=x\)", r"a+?b", r"[a-z]+\d*", r"(?i)abc", r"(?:a|b)+", r"\p{L}+", r"a{2,3}?", r"[\]]+"],
)
def test_supported_regex_constructs_are_accepted(pattern: str) -> None:
    parse_expression(f'http.host matches r#"{pattern}"#')


def test_multiple_expression_errors_are_all_reported_in_order() -> None:
    with pytest.raises(RulesError) as info:
        parse_expression('cf.llm.prompt.nope and lower(cf.llm.prompt.injection_score) eq "x" and foo()')
    assert [(i.line, i.column) for i in info.value.errors] == [(1, 1), (1, 30), (1, 72)]


def test_multiline_expression_positions() -> None:
    with pytest.raises(RulesError) as info:
        parse_expression('cf.llm.prompt.pii_detected and\n  cf.llm.prompt.token_count lt "x"')
    assert [(i.line, i.column) for i in info.value.errors] == [(2, 32)]


# --- rules.yaml errors: (file text, [(line, column, rule id, part of message), ...]) --------------

FILE_ERRORS: list[tuple[str, list[tuple[int, int, str | None, str]]]] = [
    ("", [(1, 1, None, "the file is empty")]),
    ("- a\n- b\n", [(1, 1, None, "the top level must be a mapping")]),
    ("rules: [\n", [(2, 1, None, "YAML syntax error")]),
    ("rules:\n  - id: a\n   action: log\n", [(3, 4, None, "YAML syntax error")]),
    (
        "rule: []\n",
        [
            (1, 1, None, "unknown key 'rule' in the top level; did you mean 'rules'?"),
            (1, 1, None, "missing top-level key 'rules'"),
        ],
    ),
    ("rules: 3\n", [(1, 8, None, "'rules' must be a list")]),
    ("rules:\n  - just a string\n", [(2, 5, None, "each rule must be a mapping")]),
    ("rules: []\nrules: []\n", [(2, 1, None, "duplicate key 'rules' in the top level")]),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: log\n"
        "  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: block\n",
        [(5, 5, "a", "duplicate rule id 'a' (first defined on line 2)")],
    ),
    (
        "rules:\n  - expression: cf.llm.prompt.pii_detected\n    action: log\n",
        [(2, 5, None, "missing required key 'id'")],
    ),
    ("rules:\n  - id: a\n    action: log\n", [(2, 5, "a", "missing required key 'expression'")]),
    ("rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n", [(2, 5, "a", "missing required key 'action'")]),
    (
        "rules:\n  - id: 7\n    expression: cf.llm.prompt.pii_detected\n    action: log\n",
        [(2, 9, None, "id 7 must be a string")],
    ),
    (
        "rules:\n  - id: has space\n    expression: cf.llm.prompt.pii_detected\n    action: log\n",
        [(2, 9, None, "id 'has space' must be a string")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: blok\n",
        [(4, 13, "a", "unknown action 'blok'; did you mean 'block'? allowed: block, log, redact")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: log\n    enabeld: true\n",
        [(5, 5, "a", "unknown key 'enabeld' in a rule; did you mean 'enabled'?")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: log\n    action: block\n",
        [(5, 5, "a", "duplicate key 'action' in a rule (first on line 4)")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: log\n    enabled: yes please\n",
        [(5, 14, "a", "enabled must be true or false")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: block\n    status: 99\n",
        [(5, 13, "a", "status must be an HTTP status code between 100 and 599, got 99")],
    ),
    (
        'rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: block\n    status: "403"\n',
        [(5, 13, "a", "status must be an HTTP status code")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: log\n    status: 403\n",
        [(5, 5, "a", "status only applies to action 'block'")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: redact\n    body: nope\n",
        [(5, 5, "a", "body only applies to action 'block'")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: log\n    description: [1]\n",
        [(5, 18, "a", "description must be a string")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: block\n    body: 42\n",
        [(5, 11, "a", "body must be a string or a JSON object or array")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: block\n"
        "    body: {when: 2020-01-01}\n",
        [(5, 11, "a", "body must be plain JSON (quote dates and times)")],
    ),
    (
        "rules:\n  - id: a\n    expression: true\n    action: log\n",
        [(3, 17, "a", 'expression must be a string (quote it: expression: "true")')],
    ),
    (
        "rules:\n  - id: a\n    expression: ! cf.llm.prompt.pii_detected\n    action: log\n",
        [(3, 17, "a", "YAML reads a leading '!' as a tag, not as the not operator")],
    ),
    (
        "rules:\n  - id: a\n    expression: !cf.llm.prompt.pii_detected\n    action: log\n",
        [(3, 17, "a", "YAML reads a leading '!' as a tag")],
    ),
    ("rules:\n  - id: a\n    expression: 42\n    action: log\n", [(3, 17, "a", "expression must be a string")]),
    # expression errors land on the exact file position for plain, quoted and literal-block scalars
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detectd\n    action: log\n",
        [(3, 17, "a", "unknown field 'cf.llm.prompt.pii_detectd'")],
    ),
    (
        "rules:\n  - id: a\n    expression: \"cf.llm.prompt.injection_score lt 'x'\"\n    action: log\n",
        [(3, 51, "a", "unexpected character")],
    ),
    (
        "rules:\n  - id: a\n    expression: 'cf.llm.prompt.injection_score lt \"x\"'\n    action: log\n",
        [(3, 51, "a", "cannot compare Int")],
    ),
    (
        "rules:\n  - id: a\n    expression: |\n      cf.llm.prompt.pii_detected and\n"
        '      cf.llm.prompt.token_count lt "x"\n'
        "    action: log\n",
        [(5, 36, "a", "cannot compare Int")],
    ),
    # a folded scalar cannot be mapped exactly: the error points at its start and names the spot
    (
        "rules:\n  - id: a\n    expression: >\n      cf.llm.prompt.pii_detected and\n      cf.llm.prompt.nope\n"
        "    action: log\n",
        [(3, 17, "a", "expression line 1, column 32: unknown field 'cf.llm.prompt.nope'")],
    ),
    # custom topics
    (
        "custom_topics:\n  Bad_Label: seeking things\nrules: []\n",
        [(2, 3, None, "custom topic label 'Bad_Label' must be 2-20 characters of a-z, 0-9 and '-'")],
    ),
    ("custom_topics:\n  ok: x\nrules: []\n", [(2, 3, None, "the description must be 2-50 printable ASCII characters")]),
    ("custom_topics:\n  ok: " + "y" * 51 + "\nrules: []\n", [(2, 3, None, "2-50 printable ASCII")]),
    ("custom_topics:\n  ok: café talk\nrules: []\n", [(2, 3, None, "2-50 printable ASCII")]),
    ("custom_topics:\n  ok: talk\n  ok: more talk\nrules: []\n", [(3, 3, None, "duplicate key 'ok' in custom_topics")]),
    (
        "custom_topics:\n  - {label: ok, topic: talk}\n  - {label: ok, topic: more}\nrules: []\n",
        [(3, 13, None, "duplicate custom topic label 'ok' (first on line 2)")],
    ),
    ("custom_topics:\n  - {label: ok}\nrules: []\n", [(2, 5, None, "each custom topic needs 'label' and 'topic'")]),
    (
        "custom_topics:\n  - foo\nrules: []\n",
        [(2, 5, None, "each custom topic must be a mapping with 'label' and 'topic'")],
    ),
    (
        "custom_topics:\n  - {label: ab, topic: cd, x: 1}\nrules: []\n",
        [(2, 28, None, "unknown key 'x' in a custom topic; allowed: label, topic")],
    ),
    (
        "rules:\n  - {[x]: 1, id: a, expression: cf.llm.prompt.pii_detected, action: log}\n",
        [(2, 6, "a", "keys in a rule must be strings")],
    ),
    (
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: block\n    status: !!int abc\n",
        [(5, 13, "a", "invalid value: invalid literal for int()")],
    ),
    ("rules: []\n# \x00\n", [(2, 3, None, "YAML error: character '\\x00' is not allowed")]),
    ("custom_topics: 5\nrules: []\n", [(1, 16, None, "custom_topics must be a mapping")]),
    (
        "custom_topics:\n" + "".join(f"  t{i:02d}: topic number {i}\n" for i in range(21)) + "rules: []\n",
        [(2, 3, None, "21 custom topics; Cloudflare allows at most 20")],
    ),
    (
        "custom_topics:\n  competitors: seeking info on competitors\nrules:\n  - id: a\n"
        '    expression: cf.llm.prompt.custom_topic_categories["finance"] lt 20\n    action: log\n',
        [(5, 17, "a", "unknown custom topic label 'finance' (declared in custom_topics: competitors)")],
    ),
    (
        'rules:\n  - id: a\n    expression: cf.llm.prompt.custom_topic_categories["finance"] lt 20\n    action: log\n',
        [(3, 17, "a", "unknown custom topic label 'finance' (declared in custom_topics: none)")],
    ),
]


@pytest.mark.parametrize(("text", "expected"), FILE_ERRORS, ids=[e[1][0][3][:50] for e in FILE_ERRORS])
def test_rules_file_error(text: str, expected: list[tuple[int, int, str | None, str]]) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.yaml")
    got = [(i.line, i.column, i.rule_id, i.message) for i in info.value.errors]
    for line, column, rule_id, message in expected:
        assert any((g[0], g[1], g[2]) == (line, column, rule_id) and message in g[3] for g in got), got
    assert all(i.source == "rules.yaml" for i in info.value.errors)


def test_every_error_in_a_file_is_reported() -> None:
    text = textwrap.dedent(
        """\
        rules:
          - id: one
            expression: cf.llm.prompt.pii_detectd
            action: log
          - id: two
            expression: cf.llm.prompt.injection_score lt 20
            action: blok
          - id: three
            expression: any(cf.llm.prompt.unsafe_topic_categories)
            action: block
            body: {"error": "x"}
            colour: red
        """
    )
    with pytest.raises(RulesError) as info:
        parse_rules(text, "r.yaml")
    got = [(i.line, i.rule_id) for i in info.value.errors]
    assert got == [(3, "one"), (7, "two"), (9, "three"), (12, "three")]
    text_form = str(info.value)
    assert "r.yaml:3:17: rule 'one': unknown field" in text_form
    assert len(text_form.splitlines()) == 4


def test_unreadable_and_non_utf8_files(tmp_path) -> None:
    from llmwall.rules import load_rules

    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"rules: []\n# caf\xe9\n")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(bad)


@pytest.mark.parametrize(
    "expression",
    [
        "not " * 1000 + "true",
        "any(" * 300 + "true" + ")" * 300,
        "lower(" * 100 + "http.host" + ")" * 100 + ' eq "a"',
    ],
    ids=["not-chain", "nested-calls", "nested-lower"],
)
def test_deeply_nested_expressions_are_rejected_cleanly(expression: str) -> None:
    with pytest.raises(RulesError, match="nested more than 64 levels deep"):
        parse_expression(expression)


def test_long_flat_and_moderately_nested_expressions_work() -> None:
    parse_expression(" and ".join(["cf.llm.prompt.pii_detected"] * 130))
    parse_expression("not " * 60 + "true")
    parse_expression("(" * 500 + "true" + ")" * 500)  # parentheses add no depth


def test_non_string_expression_is_rejected() -> None:
    with pytest.raises(RulesError, match="the expression must be a string"):
        parse_expression(123)  # type: ignore[arg-type]


# --- values: a category value that can never match is an error ----------------------------------


@pytest.mark.parametrize(
    ("expression", "literal", "message"),
    [
        ('any(cf.llm.prompt.unsafe_topic_categories[*] in {"S10" "s12"})', '"s12"', "'s12' is not an unsafe-topic"),
        ('any(cf.llm.prompt.unsafe_topic_categories[*] in {"S10" "s12"})', '"s12"', "did you mean 'S12'"),
        ('cf.llm.prompt.unsafe_topic_categories[0] eq "S15"', '"S15"', "'S15' is not an unsafe-topic category"),
        (
            'any(cf.llm.prompt.unsafe_topic_categories[*] in {"VIOLENCE_AND_WEAPONS"})',
            '"VIOLENCE',
            "known: S1 Violent Crimes, S2 Non-Violent Crimes",
        ),
        ('any(cf.llm.prompt.unsafe_topic_categories[*] eq "hate")', '"hate"', "did you mean 'S10' (Hate)?"),
        ('any(cf.llm.prompt.pii_categories[*] in {"EMAIL"})', '"EMAIL"', "did you mean 'EMAIL_ADDRESS'?"),
        ('any(cf.llm.prompt.pii_categories[*] in {"ssn"})', '"ssn"', "did you mean 'US_SSN'?"),
        ('any(cf.llm.prompt.secret_categories[*] eq "OPENAI")', '"OPENAI"', "did you mean 'OPENAI_API_KEY'?"),
        ('cf.llm.request.format eq "openai"', '"openai"', "'openai' is not a request format"),
        ('cf.llm.request.format in {"anthropic"}', '"anthropic"', "did you mean 'anthropic.messages'?"),
        # the answer's category fields have the prompt's vocabularies
        ('any(cf.llm.response.unsafe_topic_categories[*] eq "hate")', '"hate"', "did you mean 'S10' (Hate)?"),
        ('any(cf.llm.response.pii_categories[*] in {"EMAIL"})', '"EMAIL"', "did you mean 'EMAIL_ADDRESS'?"),
        ('any(cf.llm.response.secret_categories[*] eq "OPENAI")', '"OPENAI"', "did you mean 'OPENAI_API_KEY'?"),
    ],
)
def test_unknown_values_are_errors_with_a_suggestion(expression: str, literal: str, message: str) -> None:
    text = f"rules:\n  - id: a\n    expression: '{expression}'\n    action: log\n"
    column = len("    expression: '") + expression.index(literal) + 1
    with pytest.raises(RulesError) as err:
        parse_rules(text, "w.yaml")
    assert any(message in e.message and (e.line, e.column, e.rule_id) == (3, column, "a") for e in err.value.errors), (
        err.value.errors
    )


@pytest.mark.parametrize(
    "expression",
    [
        'any(cf.llm.prompt.unsafe_topic_categories[*] in {"S1" "S14"})',
        'cf.llm.prompt.unsafe_topic_categories[0] ne "S3"',
        'any(cf.llm.prompt.pii_categories[*] in {"EMAIL_ADDRESS" "US_SSN"})',
        'any(cf.llm.prompt.secret_categories[*] eq "OPENAI_API_KEY")',
        'cf.llm.request.format in {"openai.chat" "custom"}',
        'any(cf.llm.prompt.unsafe_topic_categories[*] contains "1")',  # not an equality: not checked
        'cf.llm.request.model eq "anything"',  # open vocabulary
        'any(cf.llm.response.pii_categories[*] in {"EMAIL_ADDRESS" "URL"})',
        'any(cf.llm.response.unsafe_topic_categories[*] eq "S1")',
    ],
)
def test_known_values_load(expression: str) -> None:
    rs = parse_rules(f"rules:\n  - id: a\n    expression: '{expression}'\n    action: log\n")
    assert [r.id for r in rs.rules] == ["a"]


def test_unknown_custom_topic_label_suggests_the_declared_one() -> None:
    text = (
        'rules:\n  - id: a\n    expression: cf.llm.prompt.custom_topic_categories["competitor"] lt 30\n'
        "    action: log\ncustom_topics:\n  competitors: questions about competitor products\n"
    )
    with pytest.raises(RulesError, match="did you mean 'competitors'"):
        parse_rules(text)


def test_every_duplicate_id_is_reported_even_with_other_errors() -> None:
    text = (
        "rules:\n"
        "  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: log\n"
        "  - id: a\n    expression: cf.llm.prompt.pii_detected and\n    action: log\n"
        "  - id: a\n    expression: cf.llm.prompt.pii_detected\n    action: blok\n"
    )
    with pytest.raises(RulesError) as err:
        parse_rules(text, "d.yaml")
    duplicates = [(e.line, e.message) for e in err.value.errors if "duplicate rule id" in e.message]
    assert duplicates == [
        (5, "duplicate rule id 'a' (first defined on line 2)"),
        (8, "duplicate rule id 'a' (first defined on line 2)"),
    ]
    assert any("syntax error" in e.message for e in err.value.errors)
    assert any("unknown action 'blok'" in e.message for e in err.value.errors)
