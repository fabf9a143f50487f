"""Table-driven tests of the expression language: every operator, function and precedence level.

Each case is (expression, field values, expected result). Field values use canonical names;
a field absent from the dict is a missing value.
"""

from __future__ import annotations

import pytest

from llmwall.rules import RulesError, parse_expression, parse_rules
from llmwall.rules.compiler import compile_expression
from llmwall.rules.parser import parse
from llmwall.rules.ruleset import coerce_value

P = "cf.llm.prompt."
HOST, PATH, METHOD, UA = "http.host", "http.request.uri.path", "http.request.method", "http.user_agent"
URI, FULL = "http.request.uri", "http.request.full_uri"


def evaluate(expression: str, values: dict[str, object]) -> bool:
    compiled = compile_expression(parse(expression))
    normalized = {k: coerce_value(k, values.get(k)) for k in compiled.fields}
    return compiled.test(normalized)


CASES: list[tuple[str, dict[str, object], bool]] = [
    # --- bare booleans and literals
    (f"{P}pii_detected", {f"{P}pii_detected": True}, True),
    (f"{P}pii_detected", {f"{P}pii_detected": False}, False),
    ("llm.prompt.pii_detected", {f"{P}pii_detected": True}, True),  # alias without cf.
    ("true", {}, True),
    ("false", {}, False),
    (f"{P}pii_detected eq true", {f"{P}pii_detected": True}, True),
    (f"{P}pii_detected == false", {f"{P}pii_detected": True}, False),
    (f"{P}pii_detected ne false", {f"{P}pii_detected": True}, True),
    # --- integer comparisons, English and C-like
    (f"{P}injection_score eq 20", {f"{P}injection_score": 20}, True),
    (f"{P}injection_score == 21", {f"{P}injection_score": 20}, False),
    (f"{P}injection_score ne 20", {f"{P}injection_score": 21}, True),
    (f"{P}injection_score != 20", {f"{P}injection_score": 20}, False),
    (f"{P}injection_score lt 20", {f"{P}injection_score": 19}, True),
    (f"{P}injection_score lt 20", {f"{P}injection_score": 20}, False),
    (f"{P}injection_score < 20", {f"{P}injection_score": 19}, True),
    (f"{P}injection_score le 20", {f"{P}injection_score": 20}, True),
    (f"{P}injection_score <= 20", {f"{P}injection_score": 21}, False),
    (f"{P}injection_score gt 20", {f"{P}injection_score": 21}, True),
    (f"{P}injection_score > 20", {f"{P}injection_score": 20}, False),
    (f"{P}injection_score ge 20", {f"{P}injection_score": 20}, True),
    (f"{P}injection_score >= 20", {f"{P}injection_score": 19}, False),
    (f"{P}token_count gt -1", {f"{P}token_count": 0}, True),
    # --- string comparisons (case-sensitive, lexicographic ordering)
    (f'{HOST} eq "example.com"', {HOST: "example.com"}, True),
    (f'{HOST} eq "example.com"', {HOST: "Example.com"}, False),
    (f'{HOST} lt "b"', {HOST: "a"}, True),
    (f'{HOST} ge "b"', {HOST: "a"}, False),
    (f'{PATH} contains "/articles/"', {PATH: "/x/articles/1"}, True),
    (f'{PATH} contains "/Articles/"', {PATH: "/x/articles/1"}, False),
    # --- matches / ~ (regex, partial match), quoted and raw strings
    (f'{PATH} matches "^/articles/200[7-8]/$"', {PATH: "/articles/2008/"}, True),
    (f'{PATH} matches "^/articles/200[7-8]/$"', {PATH: "/articles/2009/"}, False),
    (f'{PATH} ~ "autodiscover\\.(xml|src)$"', {PATH: "/autodiscover.xml"}, True),
    (f'{PATH} ~ "autodiscover\\.(xml|src)$"', {PATH: "/autodiscoverXxml"}, False),
    (f'{PATH} matches r"/api/login\\.aspx$"', {PATH: "/v1/api/login.aspx"}, True),
    (f'{PATH} matches "a\\"b"', {PATH: 'xa"by'}, True),
    (f'{PATH} matches r#"a"b"#', {PATH: 'xa"by'}, True),
    (f'{PATH} matches r##"a"#b"##', {PATH: 'a"#b'}, True),
    (f'{PATH} matches "(?i)^/ADMIN"', {PATH: "/admin/x"}, True),
    (
        f'{PATH} matches "(?u)\\p{{Hangul}}+"',
        {PATH: "/한국어"},
        True,
    ),  # Cloudflare's url_decode() example, minus url_decode
    (f'{PATH} matches "(?u)\\p{{Hangul}}+"', {PATH: "/abc"}, False),
    # $ is the end of the text, as in Rust's engine (Python's own $ also matches before a final newline)
    (f'{PATH} matches "^/x$"', {PATH: "/x\n"}, False),
    (f'{PATH} matches "^/x$"', {PATH: "/x"}, True),
    (f'{PATH} matches r"^/x\\$"', {PATH: "/x$"}, True),  # an escaped $ stays a literal
    (f'{PATH} matches "^/x[$]"', {PATH: "/x$"}, True),  # so does $ in a class
    (f'{PATH} matches "(?m)^/x$"', {PATH: "/x\n/y"}, True),  # multi-line mode: end of line
    (f'{PATH} matches "^/x$"', {PATH: "/x\n/y"}, False),
    # --- wildcard (case-insensitive, whole value) and strict wildcard (case-sensitive)
    (f'{FULL} wildcard "https://example.com/a/*"', {FULL: "https://example.com/a/"}, True),
    (f'{FULL} wildcard "https://example.com/a/*"', {FULL: "https://example.com/a/sub/folder/?name=value"}, True),
    (f'{FULL} wildcard "https://example.com/a/*"', {FULL: "https://example.com/ab/"}, False),
    (f'{FULL} wildcard "https://example.com/a/*"', {FULL: "https://sub.example.com/a/"}, False),
    (f'{FULL} wildcard "https://EXAMPLE.com/A/*"', {FULL: "https://example.com/a/x"}, True),
    (f'{FULL} wildcard "*.example.com/*/page.html"', {FULL: "https://admin.example.com/team/subteam/page.html"}, True),
    (f'{FULL} wildcard "*.example.com/*/page.html"', {FULL: "https://example.com/ab/page.html"}, False),
    (
        f'{FULL} wildcard "*.example.com/*/page.html"',
        {FULL: "https://sub.example.com/folder2/page.html?s=value"},
        False,
    ),
    (f'{PATH} strict wildcard "/AdminTeam/*"', {PATH: "/AdminTeam/x"}, True),
    (f'{PATH} strict wildcard "/AdminTeam/*"', {PATH: "/adminteam/x"}, False),
    (f'{PATH} strict wildcard r"/a\\*b"', {PATH: "/a*b"}, True),
    (f'{PATH} strict wildcard r"/a\\*b"', {PATH: "/axxb"}, False),
    (f'{PATH} wildcard "/exact"', {PATH: "/exact"}, True),
    (f'{PATH} wildcard "/exact"', {PATH: "/exact/more"}, False),
    (f'{PATH} wildcard "*a*a*"', {PATH: "banana"}, True),
    (f'{PATH} wildcard "*ab*ba"', {PATH: "aba"}, False),  # pieces may not overlap
    # --- in {...}: strings, integers, ranges, IPs, CIDR, IP ranges
    (f'{HOST} in {{"example.com" "example.net"}}', {HOST: "example.net"}, True),
    (f'{HOST} in {{"example.com" "example.net"}}', {HOST: "example.org"}, False),
    (f"{P}token_count in {{8000..8009 8080..8089}}", {f"{P}token_count": 8085}, True),
    (f"{P}token_count in {{8000..8009 8080..8089}}", {f"{P}token_count": 8050}, False),
    (f"{P}token_count in {{1..20 50}}", {f"{P}token_count": 50}, True),
    (f"{P}token_count in {{1..20 50}}", {f"{P}token_count": 20}, True),
    ("ip.src in {10.0.0.0/8 192.168.1.1}", {"ip.src": "10.20.30.40"}, True),
    ("ip.src in {10.0.0.0/8 192.168.1.1}", {"ip.src": "192.168.1.1"}, True),
    ("ip.src in {10.0.0.0/8 192.168.1.1}", {"ip.src": "192.168.1.2"}, False),
    (
        "ip.src in {198.51.100.1 198.51.100.3..198.51.100.7 192.0.2.0/24 2001:0db8::/32}",
        {"ip.src": "198.51.100.5"},
        True,
    ),
    (
        "ip.src in {198.51.100.1 198.51.100.3..198.51.100.7 192.0.2.0/24 2001:0db8::/32}",
        {"ip.src": "2001:db8::1"},
        True,
    ),
    (
        "ip.src in {198.51.100.1 198.51.100.3..198.51.100.7 192.0.2.0/24 2001:0db8::/32}",
        {"ip.src": "198.51.100.2"},
        False,
    ),
    ("ip.src in {198.51.100.3..198.51.100.7}", {"ip.src": "::1"}, False),  # other IP version
    ("ip.src eq 203.0.113.0", {"ip.src": "203.0.113.0"}, True),
    ("ip.src ne 203.0.113.0", {"ip.src": "203.0.113.1"}, True),
    ("ip.src == ::1", {"ip.src": "0:0:0:0:0:0:0:1"}, True),
    ("ip.src eq 203.0.113.0", {"ip.src": "not an ip"}, False),  # invalid value = missing
    ("ip.src in {127.0.0.0/8}", {"ip.src": "::ffff:127.0.0.1"}, True),  # IPv4-mapped client address
    ("ip.src eq 10.1.2.3", {"ip.src": "::ffff:10.1.2.3"}, True),
    # --- arrays and maps
    (f'{P}pii_categories[0] == "EMAIL_ADDRESS"', {f"{P}pii_categories": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}, True),
    (f'{P}pii_categories[1] == "EMAIL_ADDRESS"', {f"{P}pii_categories": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}, False),
    (f'{P}pii_categories[5] ne "US_SSN"', {f"{P}pii_categories": ["EMAIL_ADDRESS"]}, False),  # out of bounds = missing
    (f'{P}custom_topic_categories["competitors"] lt 20', {f"{P}custom_topic_categories": {"competitors": 5}}, True),
    (f'{P}custom_topic_categories["competitors"] lt 20', {f"{P}custom_topic_categories": {"competitors": 50}}, False),
    (f'{P}custom_topic_categories["missing"] ge 0', {f"{P}custom_topic_categories": {"competitors": 5}}, False),
    (f"any({P}custom_topic_categories[*] lt 20)", {f"{P}custom_topic_categories": {"a": 90, "b": 10}}, True),
    (f"all({P}custom_topic_categories[*] lt 20)", {f"{P}custom_topic_categories": {"a": 90, "b": 10}}, False),
    # --- any / all
    (f'any({P}unsafe_topic_categories[*] in {{"S10" "S12"}})', {f"{P}unsafe_topic_categories": ["S1", "S12"]}, True),
    (f'any({P}unsafe_topic_categories[*] in {{"S10" "S12"}})', {f"{P}unsafe_topic_categories": ["S1"]}, False),
    (f'any({P}unsafe_topic_categories[*] in {{"S10" "S12"}})', {f"{P}unsafe_topic_categories": []}, False),
    (f'all({P}pii_categories[*] == "EMAIL_ADDRESS")', {f"{P}pii_categories": ["EMAIL_ADDRESS", "EMAIL_ADDRESS"]}, True),
    (f'all({P}pii_categories[*] == "EMAIL_ADDRESS")', {f"{P}pii_categories": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}, False),
    (f'all({P}pii_categories[*] == "EMAIL_ADDRESS")', {f"{P}pii_categories": []}, True),  # vacuous truth
    (f'any({P}pii_categories[*] contains "CARD")', {f"{P}pii_categories": ["CREDIT_CARD"]}, True),
    (f'any({P}pii_categories[*] matches "^US_")', {f"{P}pii_categories": ["US_SSN"]}, True),
    (f'any({P}pii_categories[*] wildcard "us_*")', {f"{P}pii_categories": ["US_SSN"]}, True),
    (f'any(not {P}pii_categories[*] in {{"EMAIL_ADDRESS"}})', {f"{P}pii_categories": ["EMAIL_ADDRESS", "X"]}, True),
    (f'all(not {P}pii_categories[*] in {{"EMAIL_ADDRESS"}})', {f"{P}pii_categories": ["EMAIL_ADDRESS", "X"]}, False),
    # --- len (bytes of a String, elements of an Array)
    (f"len({HOST}) == 11", {HOST: "example.com"}, True),
    (f"len({HOST}) == 2", {HOST: "é"}, True),  # byte length, as in Cloudflare
    (f"len({P}pii_categories) ge 2", {f"{P}pii_categories": ["A", "B"]}, True),
    (f"len({P}pii_categories) ge 2", {f"{P}pii_categories": ["A"]}, False),
    (f"any(len({P}pii_categories[*])[*] in {{3 4}})", {f"{P}pii_categories": ["ABC", "ABCDEF"]}, True),
    (f"all(len({P}pii_categories[*])[*] in {{3 4}})", {f"{P}pii_categories": ["ABC", "ABCDEF"]}, False),
    # --- lower / upper (ASCII only, as in Cloudflare)
    (f'lower({HOST}) == "www.cloudflare.com"', {HOST: "WWW.cloudflare.com"}, True),
    (f'upper({HOST}) == "WWW.CLOUDFLARE.COM"', {HOST: "www.cloudflare.com"}, True),
    (f'lower({HOST}) == "é"', {HOST: "É"}, False),  # non-ASCII unaffected
    (f'any(lower({P}pii_categories[*])[*] == "email_address")', {f"{P}pii_categories": ["EMAIL_ADDRESS"]}, True),
    # --- starts_with / ends_with
    (f'starts_with({PATH}, "/blog")', {PATH: "/blog/first-post"}, True),
    (f'starts_with({PATH}, "/blog")', {PATH: "/news/blog"}, False),
    (f'ends_with({PATH}, ".html")', {PATH: "/welcome.html"}, True),
    (f'ends_with({PATH}, ".html")', {PATH: "/welcome.htm"}, False),
    (f'not ends_with({PATH}, ".html")', {PATH: "/welcome.htm"}, True),
    (f'any(starts_with({P}pii_categories[*], "US_")[*])', {f"{P}pii_categories": ["X", "US_SSN"]}, True),
    (f'any(starts_with({P}pii_categories[*], "US_"))', {f"{P}pii_categories": ["X", "US_SSN"]}, True),
    (f'all(ends_with({P}pii_categories[*], "_SSN"))', {f"{P}pii_categories": ["X", "US_SSN"]}, False),
    # --- concat
    ('concat("String1", " ", "String", "2") == "String1 String2"', {}, True),
    (f'concat("/archive", {PATH}) == "/archive/x"', {PATH: "/x"}, True),
    (f'concat({HOST}, {PATH}) == "a.com/x"', {HOST: "a.com", PATH: "/x"}, True),
    (f'concat({HOST}, {PATH}) == "a.com"', {HOST: "a.com"}, False),  # missing argument -> missing
    (
        f"len(concat({P}pii_categories, {P}secret_categories)) == 3",
        {f"{P}pii_categories": ["A"], f"{P}secret_categories": ["B", "C"]},
        True,
    ),
    # --- logical operators and precedence: not > and > xor > or
    ("true and false", {}, False),
    ("true && true", {}, True),
    ("false or true", {}, True),
    ("false || false", {}, False),
    ("true xor true", {}, False),
    ("true ^^ false", {}, True),
    ("true xor true xor true", {}, True),  # left-associative parity
    ("not true", {}, False),
    ("! false", {}, True),
    ("not not true", {}, True),
    ("true or true and false", {}, True),  # and binds tighter than or
    ("(true or true) and false", {}, False),
    ("false and true or true", {}, True),
    ("false and (true or true)", {}, False),
    ("true xor true and false", {}, True),  # and binds tighter than xor: true xor (true and false)
    ("(true xor true) and false", {}, False),
    ("true or true xor true", {}, True),  # xor binds tighter than or: true or (true xor true)
    ("(true or true) xor true", {}, False),
    ("not true or true", {}, True),  # not binds tighter than or
    ("not (true or true)", {}, False),
    ("not true and false", {}, False),
    ("not false and true", {}, True),  # (not false) and true
    ("not (false and true)", {}, True),
    (f"not {P}injection_score lt 20", {f"{P}injection_score": 10}, False),  # comparison binds tighter than not
    # --- missing values: every comparison is false, a missing Bool is false
    (f"{P}injection_score lt 20", {}, False),
    (f"{P}injection_score ge 20", {}, False),
    (f"{P}injection_score ne 20", {}, False),
    (f"not {P}injection_score ne 20", {}, True),
    (f"{P}pii_detected", {}, False),
    (f"not {P}pii_detected", {}, True),
    (f'any({P}unsafe_topic_categories[*] == "S1")', {}, False),
    (f'not any({P}unsafe_topic_categories[*] == "S1")', {}, True),
    (f"len({P}pii_categories) >= 0", {}, False),
    (f"not len({P}pii_categories) >= 0", {}, True),
    (f'lower({HOST}) == ""', {}, False),
    (f'starts_with({PATH}, "/")', {}, False),
    (f"{P}injection_score lt 20", {f"{P}injection_score": "10"}, False),  # ill-typed value = missing
]


@pytest.mark.parametrize(("expression", "values", "expected"), CASES, ids=[c[0] for c in CASES])
def test_evaluation(expression: str, values: dict[str, object], expected: bool) -> None:
    assert evaluate(expression, values) is expected


# Expressions copied verbatim from Cloudflare's documentation, with their source page.
CLOUDFLARE_EXAMPLES: list[tuple[str, str, dict[str, object], bool]] = [
    # waf/detections/firewall-for-ai (example mitigation rules and get started)
    (
        "firewall-for-ai",
        '(any(cf.llm.prompt.pii_categories[*] in {"CREDIT_CARD"}))',
        {f"{P}pii_categories": ["EMAIL_ADDRESS", "CREDIT_CARD"]},
        True,
    ),
    (
        "firewall-for-ai",
        '(any(cf.llm.prompt.unsafe_topic_categories[*] in {"S1" "S10"}))',
        {f"{P}unsafe_topic_categories": ["S10"]},
        True,
    ),
    ("firewall-for-ai", "(cf.llm.prompt.injection_score < 20)", {f"{P}injection_score": 19}, True),
    ("firewall-for-ai", "(cf.llm.prompt.pii_detected)", {f"{P}pii_detected": True}, True),
    (
        "firewall-for-ai",
        '(cf.llm.prompt.pii_detected and http.host == "example.com")',
        {f"{P}pii_detected": True, HOST: "example.com"},
        True,
    ),
    # waf/detections/ai-security-for-apps/unsafe-topics (custom topics caution box)
    (
        "ai-security-for-apps/unsafe-topics",
        'cf.llm.prompt.custom_topic_categories["missing"] >= 0',
        {f"{P}custom_topic_categories": {"competitors": 10}},
        False,
    ),
    # ruleset-engine/rules-language/operators
    ("rules-language/operators", 'http.request.uri.path eq "/articles/2008/"', {PATH: "/articles/2008/"}, True),
    ("rules-language/operators", "ip.src ne 203.0.113.0", {"ip.src": "203.0.113.9"}, True),
    ("rules-language/operators", 'http.request.uri.path contains "/articles/"', {PATH: "/a/articles/"}, True),
    ("rules-language/operators", 'http.request.uri.path wildcard "/articles/*"', {PATH: "/ARTICLES/x"}, True),
    ("rules-language/operators", 'http.request.uri.path strict wildcard "/AdminTeam/*"', {PATH: "/adminteam/"}, False),
    (
        "rules-language/operators",
        'http.request.uri.path matches "^/articles/200[7-8]/$"',
        {PATH: "/articles/2007/"},
        True,
    ),
    ("rules-language/operators", "ip.src in { 203.0.113.0 203.0.113.1 }", {"ip.src": "203.0.113.1"}, True),
    (
        "rules-language/operators",
        'lower(http.request.uri.path) contains "/wp-login.php"',
        {PATH: "/WP-Login.php"},
        True,
    ),
    ("rules-language/operators", 'ends_with(http.request.uri.path, ".html")', {PATH: "/a.html"}, True),
    (
        "rules-language/operators",
        'http.request.full_uri wildcard "*.example.com/*" or http.request.full_uri wildcard "example.com/*"',
        {FULL: "https://admin.example.com/folder/team/app1/?s=foobar"},
        True,
    ),
    (
        "rules-language/operators",
        'not ( http.host eq "www.cloudflare.com" and ip.src in {203.0.113.0/24} )',
        {HOST: "www.cloudflare.com", "ip.src": "203.0.113.7"},
        False,
    ),
    (
        "rules-language/operators",
        'http.host eq "www.cloudflare.com" xor ip.src in {203.0.113.0/24}',
        {HOST: "www.cloudflare.com", "ip.src": "203.0.113.7"},
        False,
    ),
    (
        "rules-language/operators",
        """(
 (http.host eq "api.example.com" and http.request.uri.path eq "/api/v2/auth") or
 (http.host matches "^(www|store|blog)\\.example\\.com" and http.request.uri.path contains "wp-login.php")
) and not ip.src in {11.22.33.0/24}""",
        {HOST: "blog.example.com", PATH: "/wp-login.php", "ip.src": "1.2.3.4"},
        True,
    ),
    # ruleset-engine/rules-language/values
    ("rules-language/values", 'http.request.uri.path matches "a\\"b"', {PATH: 'a"b'}, True),
    ("rules-language/values", 'http.request.uri.path matches "a\\"#b"', {PATH: 'a"#b'}, True),
    ("rules-language/values", 'http.request.uri.path matches r#"a"b"#', {PATH: 'a"b'}, True),
    ("rules-language/values", 'http.request.uri.path matches r##"a"#b"##', {PATH: 'a"#b'}, True),
    ("rules-language/values", 'http.request.uri.path matches r"/api/login\\.aspx$"', {PATH: "/api/login.aspx"}, True),
    ("rules-language/values", 'http.host in {"example.com" "example.net"}', {HOST: "example.com"}, True),
    (
        "rules-language/values",
        "ip.src in {198.51.100.1 198.51.100.3..198.51.100.7 192.0.2.0/24 2001:0db8::/32}",
        {"ip.src": "192.0.2.200"},
        True,
    ),
    # ruleset-engine/rules-language/functions
    ("rules-language/functions", 'lower(http.host) == "www.cloudflare.com"', {HOST: "WWW.Cloudflare.com"}, True),
    ("rules-language/functions", 'starts_with(http.request.uri.path, "/blog")', {PATH: "/blog/first-post"}, True),
    ("rules-language/functions", 'ends_with(http.request.uri.path, ".html")', {PATH: "/welcome.html"}, True),
    ("rules-language/functions", 'concat("String1", " ", "String", "2") == "String1 String2"', {}, True),
    ("rules-language/functions", "len(http.host) == 11", {HOST: "example.com"}, True),
    ("rules-language/functions", 'upper(http.host) == "WWW.CLOUDFLARE.COM"', {HOST: "www.cloudflare.com"}, True),
]


@pytest.mark.parametrize(
    ("source", "expression", "values", "expected"), CLOUDFLARE_EXAMPLES, ids=[c[1][:60] for c in CLOUDFLARE_EXAMPLES]
)
def test_cloudflare_documentation_examples(
    source: str, expression: str, values: dict[str, object], expected: bool
) -> None:
    assert evaluate(expression, values) is expected


def test_cloudflare_newer_category_names_are_refused_with_the_codes_llmwall_reports() -> None:
    # waf/detections/ai-security-for-apps/example-rules: Cloudflare's newer names never occur in
    # llmwall's fields (its detectors report Llama Guard's S1-S14), so the rule is refused, not loaded silently.
    with pytest.raises(RulesError, match="'VIOLENCE_AND_WEAPONS' is not an unsafe-topic category") as err:
        parse_rules(
            "rules:\n  - id: a\n    expression: '(any(cf.llm.prompt.unsafe_topic_categories[*] in "
            '{"VIOLENCE_AND_WEAPONS" "HATE_AND_DISCRIMINATION"}))\'\n    action: block\n'
        )
    assert "known: S1 Violent Crimes" in str(err.value)


def test_seed_rules_verbatim() -> None:
    log_rule = 'any(cf.llm.prompt.unsafe_topic_categories[*] in {"S10" "S12"})'
    block_rule = "cf.llm.prompt.unsafe_topic_detected"
    assert evaluate(log_rule, {f"{P}unsafe_topic_categories": ["S12"]})
    assert not evaluate(log_rule, {f"{P}unsafe_topic_categories": ["S1"]})
    assert evaluate(block_rule, {f"{P}unsafe_topic_detected": True})
    assert not evaluate(block_rule, {f"{P}unsafe_topic_detected": False})
    assert str(parse_expression(log_rule)) == log_rule
    assert str(parse_expression(block_rule)) == block_rule


@pytest.mark.parametrize(
    ("source", "canonical"),
    [
        ("a == 1 && b", "a eq 1 and b"),
        ('x ~ "a\\\\.b"', 'x matches r"a\\\\.b"'),
        ('x matches "a\\.b"', 'x matches r"a\\.b"'),
        ("not (a or b) and c", "not (a or b) and c"),
        ("(a and b) or c", "a and b or c"),
        ("a and (b and c)", "a and (b and c)"),
        ("a || b ^^ c", "a or b xor c"),
        ("(a or b) xor c", "(a or b) xor c"),
        ('x in {"a" "b"}', 'x in {"a" "b"}'),
        ("x in {1..20 5}", "x in {1..20 5}"),
        ("ip in {10.0.0.0/8 192.168.1.1}", "ip in {10.0.0.0/8 192.168.1.1}"),
        ('x["k"][0]', 'x["k"][0]'),
        ('f(a[*], "b\\"c")', 'f(a[*], "b\\"c")'),
        ('x eq "tab\\x09"', 'x eq "tab\\x09"'),
        ('x eq r"back\\slash"', 'x eq "back\\\\slash"'),
        ('x strict wildcard "a*"', 'x strict wildcard r"a*"'),
    ],
)
def test_canonical_printing(source: str, canonical: str) -> None:
    tree = parse(source)
    assert str(tree) == canonical
    assert parse(canonical) == tree


def test_parse_expression_rejects_type_errors_with_positions() -> None:
    with pytest.raises(RulesError) as info:
        parse_expression('cf.llm.prompt.injection_score lt "20" and cf.llm.prompt.nope')
    issues = info.value.errors
    assert [(i.line, i.column) for i in issues] == [(1, 34), (1, 43)]
    assert "cannot compare Int" in issues[0].message and "unknown field" in issues[1].message


def test_custom_topic_labels_checked_only_when_declared() -> None:
    expression = 'cf.llm.prompt.custom_topic_categories["competitors"] lt 20'
    parse_expression(expression)  # no declared topics given: not checked
    parse_expression(expression, {"competitors": "seeking info on competitors"})
    with pytest.raises(RulesError, match="unknown custom topic label 'competitors'"):
        parse_expression(expression, {"finance": "seeking financial advice"})


def test_pathological_regex_times_out_as_no_match() -> None:
    # (a|aa)+$ backtracks exponentially; the timeout turns it into "no match" instead of a hang.
    assert evaluate(f'{PATH} matches "(a|aa)+$"', {PATH: "a" * 60 + "b"}) is False
    assert evaluate(f'{PATH} matches "(a|aa)+$"', {PATH: "aaaa"}) is True
