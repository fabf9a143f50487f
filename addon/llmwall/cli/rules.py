"""``llmwall rules check FILE``, ``llmwall rules eval FILE --fields FIELDS.json`` and ``rules backtest``.

``eval`` lets a policy be unit-tested without a model: field values come from JSON.
Exit codes: 0 success, 1 the rules file has errors, 2 the fields input is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

from llmwall import fields as schema
from llmwall.cli import backtest
from llmwall.rules import RulesError
from llmwall.rules.ruleset import Decision, coerce_value, load_rules


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``rules`` command group to the ``llmwall`` CLI."""
    rules = subparsers.add_parser("rules", help="check rule files and evaluate them on given field values")
    sub = rules.add_subparsers(dest="rules_command", metavar="{check,eval,backtest}")
    sub.required = True
    check = sub.add_parser("check", help="validate a rules file; print every error with its position")
    check.add_argument("file", help="path to rules.yaml")
    check.set_defaults(func=cmd_check)
    ev = sub.add_parser("eval", help="evaluate a rules file on field values given as JSON")
    ev.add_argument("file", help="path to rules.yaml")
    ev.add_argument(
        "--fields",
        required=True,
        metavar="FIELDS.json",
        help='JSON object keyed by field name, e.g. {"cf.llm.prompt.pii_detected": true}; - reads stdin',
    )
    ev.set_defaults(func=cmd_eval)
    backtest.add_parser(sub)


def _print_errors(exc: RulesError) -> None:
    for issue in exc.errors:
        print(str(issue), file=sys.stderr)
    print(f"{len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        rs = load_rules(args.file)
    except RulesError as exc:
        _print_errors(exc)
        return 1
    enabled = sum(r.enabled for r in rs.rules)
    count = len(rs.rules)
    print(f"{args.file}: OK, {count} rule{'' if count == 1 else 's'} ({enabled} enabled)")
    if rs.rate_limits:
        limits = len(rs.rate_limits)
        print(f"rate limits: {limits} ({sum(r.enabled for r in rs.rate_limits)} enabled), see docs/rate-limits.md")
    print(f"fields read: {', '.join(sorted(rs.fields | rs.response_fields)) or 'none'}")
    for rule in rs.rules:
        state = "" if rule.enabled else ", disabled"
        print(f"  {rule.id}: {rule.action}, {rs.phases[rule.id]} phase{state}")
    return 0


def field_values(raw: object) -> tuple[dict[str, object], list[str]]:
    """Validate user-given field values: known names (``cf.`` or ``llm.``), right JSON types."""
    if not isinstance(raw, Mapping):
        return {}, ["the fields JSON must be an object keyed by field name"]
    values: dict[str, object] = {}
    errors: list[str] = []
    for key, value in raw.items():
        name = schema.canonical(key) if isinstance(key, str) else None
        if name is None:
            errors.append(f"unknown field {key!r}")
            continue
        if name in values:
            errors.append(f"field {name} given twice (as cf.* and llm.*)")
            continue
        coerced = coerce_value(name, value)
        if value is not None and coerced is None:
            errors.append(f"field {key} must be {schema.SCHEMA[name]}, got {json.dumps(value)}")
            continue
        values[name] = coerced
    return values, errors


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        rs = load_rules(args.file)
    except RulesError as exc:
        _print_errors(exc)
        return 1
    try:
        if args.fields == "-":
            raw = json.load(sys.stdin)
        else:
            with open(args.fields, encoding="utf-8") as fh:
                raw = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"{args.fields}: cannot read the fields JSON: {exc}", file=sys.stderr)
        return 2
    values, errors = field_values(raw)
    if errors:
        for e in errors:
            print(f"{args.fields}: {e}", file=sys.stderr)
        return 2
    decision = rs.evaluate(values)
    out: dict[str, object] = _decision_json(decision)
    if rs.response_fields:
        out["response"] = _decision_json(rs.evaluate(values, schema.RESPONSE_PHASE))
    print(json.dumps(out))
    return 0


def _decision_json(decision: Decision) -> dict[str, object]:
    return {
        "matched": list(decision.matched),
        "action": decision.action,
        "rule": decision.rule.id if decision.rule else None,
    }
