"""rules.yaml loading, evaluation order and actions, the default file, and hot reload."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from llmwall import fields
from llmwall.rules import Decision, RulesError, RulesWatcher, load_rules, parse_rules

ROOT = Path(__file__).resolve().parent.parent
P = "cf.llm.prompt."


def rules(text: str):
    return parse_rules(textwrap.dedent(text), "test.yaml")


ORDERED = """
rules:
  - id: log-a
    expression: cf.llm.prompt.pii_detected
    action: log
  - id: redact-b
    expression: cf.llm.prompt.pii_detected and cf.llm.prompt.token_count gt 10
    action: redact
  - id: log-c
    expression: cf.llm.prompt.injection_score lt 50
    action: log
  - id: block-d
    expression: cf.llm.prompt.injection_score lt 20
    action: block
    status: 451
    body: {"error": "no"}
  - id: block-disabled
    expression: "true"
    action: block
    enabled: false
"""


@pytest.mark.parametrize(
    ("values", "matched", "action", "rule"),
    [
        ({}, (), None, None),
        ({f"{P}pii_detected": True}, ("log-a",), "log", "log-a"),
        ({f"{P}injection_score": 30}, ("log-c",), "log", "log-c"),
        ({f"{P}pii_detected": True, f"{P}injection_score": 30}, ("log-a", "log-c"), "log", "log-a"),
        ({f"{P}injection_score": 10}, ("log-c", "block-d"), "block", "block-d"),
        # the first terminating rule wins, later matches are still recorded
        (
            {f"{P}pii_detected": True, f"{P}token_count": 99, f"{P}injection_score": 10},
            ("log-a", "redact-b", "log-c", "block-d"),
            "redact",
            "redact-b",
        ),
        ({f"{P}pii_detected": True, f"{P}token_count": 99}, ("log-a", "redact-b"), "redact", "redact-b"),
    ],
)
def test_evaluation_order_and_actions(values, matched, action, rule) -> None:
    rs = rules(ORDERED)
    decision = rs.evaluate(values)
    assert isinstance(decision, Decision)
    assert decision.matched == matched
    assert decision.action == action
    assert (decision.rule.id if decision.rule else None) == rule


def test_rule_attributes_and_fields() -> None:
    rs = rules(ORDERED)
    assert [r.id for r in rs.rules] == ["log-a", "redact-b", "log-c", "block-d", "block-disabled"]
    block = rs.rules[3]
    assert (block.action, block.status, block.body, block.line, block.enabled) == (
        "block",
        451,
        {"error": "no"},
        12,
        True,
    )
    assert rs.rules[4].enabled is False
    assert rs.rules[0].description == ""
    # only fields read by enabled rules; the disabled "true" rule reads none anyway
    assert rs.fields == frozenset({f"{P}pii_detected", f"{P}token_count", f"{P}injection_score"})
    assert rs.fields <= set(fields.SCHEMA)


def test_fields_exclude_disabled_rules_and_resolve_aliases() -> None:
    rs = rules(
        """
        rules:
          - id: a
            expression: llm.prompt.pii_detected
            action: log
          - id: b
            expression: any(cf.llm.prompt.unsafe_topic_categories[*] == "S1")
            action: block
            enabled: false
        """
    )
    assert rs.fields == frozenset({f"{P}pii_detected"})
    assert rs.evaluate({f"{P}pii_detected": True}).matched == ("a",)


def test_empty_rule_list_is_valid() -> None:
    rs = rules("rules: []\n")
    assert rs.rules == () and rs.fields == frozenset()
    assert rs.evaluate({}).action is None


def test_custom_topics_mapping_and_api_list_forms() -> None:
    rs = rules(
        """
        custom_topics:
          competitors: seeking info on competitors
          financial-advice: seeking financial advice
        rules:
          - id: competitors
            expression: cf.llm.prompt.custom_topic_categories["competitors"] lt 20
            action: log
        """
    )
    assert rs.custom_topics == {
        "competitors": "seeking info on competitors",
        "financial-advice": "seeking financial advice",
    }
    assert rs.fields == frozenset({f"{P}custom_topic_categories"})
    assert rs.evaluate({f"{P}custom_topic_categories": {"competitors": 3}}).action == "log"
    rs2 = rules(
        """
        custom_topics:
          - {label: hr-internal, topic: asking about internal HR policies}
        rules: []
        """
    )
    assert rs2.custom_topics == {"hr-internal": "asking about internal HR policies"}


def test_evaluate_tolerates_bad_values() -> None:
    rs = rules(ORDERED)
    weird = {f"{P}pii_detected": "yes", f"{P}injection_score": True, f"{P}token_count": [1]}
    assert rs.evaluate(weird) == Decision((), None, None)


def test_default_rules_file_loads_and_keeps_seed_rules_verbatim() -> None:
    rs = load_rules(ROOT / "rules.yaml")
    by_id = {r.id: r for r in rs.rules}
    expressions = {r.expression: r for r in rs.rules}
    seed_log = expressions['any(cf.llm.prompt.unsafe_topic_categories[*] in {"S10" "S12"})']
    seed_block = expressions["cf.llm.prompt.unsafe_topic_detected"]
    assert (seed_log.action, seed_log.enabled) == ("log", True)
    # Logged, not blocked, on the embedded model's measured precision (see rules.yaml).
    assert (seed_block.action, seed_block.enabled) == ("log", True)
    assert any(r.action == "block" and r.enabled and "unsafe_topic_categories" in r.expression for r in rs.rules)
    assert any(r.expression == "cf.llm.prompt.pii_detected" and r.action == "log" for r in rs.rules)
    assert any(r.expression == "cf.llm.prompt.injection_score lt 20" and r.action == "log" for r in rs.rules)
    assert any(r.action == "redact" and not r.enabled for r in rs.rules)
    assert len(by_id) == len(rs.rules)


@pytest.mark.parametrize(
    "values",
    [
        # what the detectors report for an ordinary prompt
        {
            f"{P}detected": True,
            f"{P}pii_detected": False,
            f"{P}pii_categories": [],
            f"{P}unsafe_topic_detected": False,
            f"{P}unsafe_topic_categories": [],
            f"{P}injection_score": 95,
            f"{P}token_count": 40,
        },
        # and when every detector missed its deadline
        {f"{P}detected": True},
        # an ordinary prompt that mentions an e-mail address is logged, not blocked
        {
            f"{P}pii_detected": True,
            f"{P}pii_categories": ["EMAIL_ADDRESS"],
            f"{P}unsafe_topic_detected": False,
            f"{P}injection_score": 90,
        },
    ],
)
def test_default_rules_never_block_ordinary_prompts(values) -> None:
    decision = load_rules(ROOT / "rules.yaml").evaluate(values)
    assert decision.action in (None, "log")


def test_default_rules_block_unsafe_and_log_seed_categories() -> None:
    rs = load_rules(ROOT / "rules.yaml")
    unsafe = rs.evaluate({f"{P}unsafe_topic_detected": True, f"{P}unsafe_topic_categories": ["S10"]})
    assert unsafe.action == "block" and unsafe.rule is not None
    assert unsafe.rule.id == "block-unsafe-categories"
    assert len(unsafe.matched) == 3  # both seed rules are recorded as well
    advice = rs.evaluate({f"{P}unsafe_topic_detected": True, f"{P}unsafe_topic_categories": ["S6"]})
    assert advice.action == "log" and advice.rule.expression == "cf.llm.prompt.unsafe_topic_detected"


# --- hot reload ---------------------------------------------------------------------------------

GOOD_1 = "rules:\n  - id: one\n    expression: cf.llm.prompt.pii_detected\n    action: log\n"
GOOD_2 = "rules:\n  - id: two\n    expression: cf.llm.prompt.pii_detected\n    action: block\n"
BAD = "rules:\n  - id: three\n    expression: cf.llm.prompt.pii_detectd\n    action: block\n"


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def settle(watcher: RulesWatcher) -> RulesError | None:
    """Two polls: a change is read only once it held still from one poll to the next."""
    first = watcher.poll()
    return first or watcher.poll()


def test_watcher_reloads_keeps_last_good_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, GOOD_1)
    watcher = RulesWatcher(path)
    assert [r.id for r in watcher.current.rules] == ["one"]
    assert settle(watcher) is None  # unchanged

    _write(path, GOOD_2)
    assert settle(watcher) is None
    assert [r.id for r in watcher.current.rules] == ["two"]

    _write(path, BAD)
    error = settle(watcher)
    assert isinstance(error, RulesError)
    assert error.errors[0].rule_id == "three" and error.errors[0].line == 3
    assert [r.id for r in watcher.current.rules] == ["two"]  # last good stays active
    assert watcher.poll() is None  # the same bad file is reported once

    _write(path, GOOD_1)
    assert settle(watcher) is None
    assert [r.id for r in watcher.current.rules] == ["one"]


def test_watcher_sees_same_size_edit_within_one_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, GOOD_1)
    watcher = RulesWatcher(path)
    st = os.stat(path)
    edited = GOOD_1.replace("one", "uno")
    assert len(edited) == len(GOOD_1)
    _write(path, edited)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    settle(watcher)
    assert [r.id for r in watcher.current.rules] == ["uno"]


def test_watcher_reports_a_deleted_file_and_keeps_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, GOOD_1)
    watcher = RulesWatcher(path)
    path.unlink()
    error = settle(watcher)
    assert isinstance(error, RulesError) and "cannot read" in str(error)
    assert watcher.poll() is None
    assert [r.id for r in watcher.current.rules] == ["one"]
    _write(path, GOOD_2)
    assert settle(watcher) is None
    assert [r.id for r in watcher.current.rules] == ["two"]


def test_watcher_reports_non_utf8_edit(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, GOOD_1)
    watcher = RulesWatcher(path)
    path.write_bytes(GOOD_2.encode() + b"# caf\xe9\n")
    error = settle(watcher)
    assert isinstance(error, RulesError) and "not UTF-8" in str(error)
    assert [r.id for r in watcher.current.rules] == ["one"]


def test_watcher_first_load_must_succeed(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, BAD)
    with pytest.raises(RulesError, match="unknown field"):
        RulesWatcher(path)
    with pytest.raises(RulesError, match="cannot read"):
        RulesWatcher(tmp_path / "absent.yaml")


def test_watcher_poll_is_cheap_when_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, GOOD_1)
    old = time.time() - 60
    os.utime(path, (old, old))
    watcher = RulesWatcher(path)
    before = watcher.current
    for _ in range(100):
        assert settle(watcher) is None
    assert watcher.current is before  # never re-parsed


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "rules").glob("*.yaml")), ids=lambda p: p.name)
def test_example_rule_files_load(path: Path) -> None:
    assert load_rules(path).rules


def test_strict_example_blocks_card_numbers_before_redacting() -> None:
    rs = load_rules(ROOT / "examples" / "rules" / "strict.yaml")
    decision = rs.evaluate({f"{P}pii_categories": ["EMAIL_ADDRESS", "CREDIT_CARD"]})
    assert (decision.action, decision.rule.id) == ("block", "block-financial-pii")
    assert rs.evaluate({f"{P}pii_categories": ["EMAIL_ADDRESS"]}).action == "redact"
    assert rs.custom_topics["competitors"] == "seeking info on competitors"


def test_watcher_keeps_the_last_good_rules_on_a_value_typo(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, GOOD_1)
    watcher = RulesWatcher(path)
    before = watcher.current
    _write(
        path,
        'rules:\n  - id: w\n    expression: any(cf.llm.prompt.unsafe_topic_categories[*] in {"S99"})\n'
        "    action: log\n",
    )
    error = settle(watcher)
    assert error is not None and "'S99' is not an unsafe-topic category" in str(error)
    assert watcher.current is before


def test_watcher_turns_an_internal_loader_failure_into_a_rules_error(tmp_path: Path, monkeypatch) -> None:
    from llmwall.rules import watcher as watcher_module

    path = tmp_path / "rules.yaml"
    _write(path, GOOD_1)
    watcher = RulesWatcher(path)

    def broken(text: str, source: str):
        raise KeyError("bug")

    monkeypatch.setattr(watcher_module, "parse_rules", broken)
    _write(path, GOOD_2)
    error = settle(watcher)
    assert isinstance(error, RulesError) and "internal error" in str(error)
    assert [r.id for r in watcher.current.rules] == ["one"]


def test_default_rules_need_only_some_detectors() -> None:
    # The proxy runs a detector only when an enabled rule reads one of its fields.
    need = load_rules(ROOT / "rules.yaml").fields
    assert need & fields.UNSAFE_FIELDS and need & fields.PII_FIELDS and need & fields.INJECTION_FIELDS
    assert not need & (fields.SECRET_FIELDS | fields.CUSTOM_TOPIC_FIELDS | fields.TOKEN_FIELDS)
    # the disabled redact rule reads pii_categories; it must not count
    assert "cf.llm.prompt.pii_categories" not in need
