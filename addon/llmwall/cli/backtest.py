"""``llmwall rules backtest NEW_RULES.yaml``: how a candidate policy would have decided on past traffic.

The event store keeps, per screened request, the field values the rules read (booleans,
categories, scores, counts, format, model, host, method; never text). The backtest replays
those stored values through the candidate rules and compares each decision with the one
that was made, so a change of policy is measured on real traffic before it goes live.

Two limits are reported rather than hidden: a rule that reads a field the store does not
keep (the URI, query, user agent, client address) is left out and named as not
backtestable; and an event recorded while no rule read some field has no value for it
(its detector did not run), so a candidate rule reading that field is counted as lacking it
on those events (evaluated as live: a comparison on a missing value is false).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from llmwall import fields
from llmwall.analytics.store import DEFAULT_DB, Store, endpoint_key, parse_duration
from llmwall.rules import RulesError, RuleSet, load_rules

#: Request fields the store keeps, and the event key each comes from.
STORED_REQUEST_FIELDS = {fields.HTTP_HOST: "host", fields.HTTP_METHOD: "method"}
#: The word for "no rule acted".
PASS = "pass"
#: Events read from the store per query.
PAGE = 2000
#: Changed event ids listed in full (JSON) and on the terminal.
MAX_CHANGED = 10_000
MAX_CHANGED_SHOWN = 50


def storable(name: str) -> bool:
    """Whether the store keeps values of field ``name`` (canonical) on the request events replayed.

    The answer's fields (``cf.llm.response.*``) are kept on separate response events, which the
    backtest does not replay: a rule reading them is left out like one reading an unstored field.
    """
    if name.startswith(fields.RESPONSE_PREFIX):
        return False
    return name.startswith(fields.LLM_PREFIX) or name in STORED_REQUEST_FIELDS


def values_of(event: dict[str, Any]) -> dict[str, object]:
    """The rule-field values of a stored event."""
    values: dict[str, object] = dict(event.get("fields") or {})
    for name, key in STORED_REQUEST_FIELDS.items():
        if event.get(key) is not None:
            values[name] = event[key]
    return values


@dataclass
class Report:
    """What the backtest found; ``as_dict`` is the ``--json`` output."""

    events: int = 0
    current: Counter[str] = field(default_factory=Counter)
    candidate: Counter[str] = field(default_factory=Counter)
    rule_matches: Counter[str] = field(default_factory=Counter)
    rule_decides: Counter[str] = field(default_factory=Counter)
    endpoints: dict[str, dict[str, Counter[str]]] = field(
        default_factory=lambda: defaultdict(lambda: {"current": Counter(), "candidate": Counter()})
    )
    changed: list[dict[str, object]] = field(default_factory=list)
    changed_count: int = 0
    not_backtestable: dict[str, list[str]] = field(default_factory=dict)
    lacking: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def as_dict(self) -> dict[str, object]:
        return {
            "events": self.events,
            "by_action": {"current": dict(self.current), "candidate": dict(self.candidate)},
            "by_rule": {
                rule: {"matched": self.rule_matches[rule], "decided": self.rule_decides[rule]}
                for rule in sorted(set(self.rule_matches) | set(self.rule_decides))
            },
            "by_endpoint": {
                ep: {side: dict(counts) for side, counts in sides.items()}
                for ep, sides in sorted(self.endpoints.items())
            },
            "changed_count": self.changed_count,
            "changed": self.changed,
            "changed_truncated": self.changed_count > len(self.changed),
            "not_backtestable": self.not_backtestable,
            "events_lacking_fields": {rule: dict(c) for rule, c in sorted(self.lacking.items())},
        }


def stored_events(store: Store, since: float | None) -> Iterator[dict[str, Any]]:
    """Screened events, newest first, read a page at a time."""
    offset = 0
    while True:
        page = store.events(since=since, limit=PAGE, offset=offset)
        yield from (e for e in page if e.get("status") == "screened")
        if len(page) < PAGE:
            return
        offset += PAGE


def backtest(candidate: RuleSet, events: Iterator[dict[str, Any]]) -> Report:
    """Replay ``events`` through ``candidate`` and compare with the decisions made at the time."""
    report = Report()
    for rule in candidate.rules:
        unstored = sorted(f for f in candidate.rule_fields[rule.id] if not storable(f))
        if rule.enabled and unstored:
            report.not_backtestable[rule.id] = unstored
    rules = candidate.disabling(report.not_backtestable)
    enabled = [r for r in rules.rules if r.enabled]
    for event in events:
        report.events += 1
        values = values_of(event)
        decision = rules.evaluate(values)
        before = (event.get("action") or PASS, event.get("rule"))
        after = (decision.action or PASS, decision.rule.id if decision.rule else None)
        report.current[before[0]] += 1
        report.candidate[after[0]] += 1
        for rule_id in decision.matched:
            report.rule_matches[rule_id] += 1
        if decision.rule:
            report.rule_decides[decision.rule.id] += 1
        sides = report.endpoints[endpoint_key(event["host"], event["path_template"])]
        sides["current"][before[0]] += 1
        sides["candidate"][after[0]] += 1
        for rule in enabled:
            for name in rules.rule_fields[rule.id]:
                if name.startswith(fields.LLM_PREFIX) and name not in values:
                    report.lacking[rule.id][name] += 1
        if before != after:
            report.changed_count += 1
            if len(report.changed) < MAX_CHANGED:
                report.changed.append(
                    {
                        "id": event["id"],
                        "ts": event["ts"],
                        "endpoint": endpoint_key(event["host"], event["path_template"]),
                        "before": {"action": before[0], "rule": before[1]},
                        "after": {"action": after[0], "rule": after[1]},
                    }
                )
    report.changed.sort(key=lambda c: c["id"])  # type: ignore[arg-type,return-value]
    return report


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_report(report: Report, title: str) -> None:
    print(title)
    actions = sorted(set(report.current) | set(report.candidate))
    print()
    _table(
        ["ACTION", "CURRENT", "CANDIDATE", "CHANGE"],
        [
            [a, str(report.current[a]), str(report.candidate[a]), f"{report.candidate[a] - report.current[a]:+d}"]
            for a in actions
        ],
    )
    if report.rule_matches or report.rule_decides:
        print()
        rules = sorted(set(report.rule_matches) | set(report.rule_decides))
        _table(
            ["CANDIDATE RULE", "MATCHED", "DECIDED"],
            [[r, str(report.rule_matches[r]), str(report.rule_decides[r])] for r in rules],
        )
    moved = {ep: s for ep, s in report.endpoints.items() if s["current"] != s["candidate"]}
    if moved:
        print()
        _table(
            ["ENDPOINT", "CURRENT", "CANDIDATE"],
            [[ep, _counts(s["current"]), _counts(s["candidate"])] for ep, s in sorted(moved.items())],
        )
    print()
    print(f"{report.changed_count} of {report.events} decisions change")
    for change in report.changed[:MAX_CHANGED_SHOWN]:
        b, a = change["before"], change["after"]
        print(
            f"  event {change['id']}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(change['ts']))}"  # type: ignore[arg-type]
            f"  {change['endpoint']}  {_decision(b)} -> {_decision(a)}"  # type: ignore[arg-type]
        )
    if report.changed_count > MAX_CHANGED_SHOWN:
        print(f"  ... {report.changed_count - MAX_CHANGED_SHOWN} more (--json lists up to {MAX_CHANGED})")
    for rule, names in sorted(report.not_backtestable.items()):
        print(
            f"not backtestable: rule {rule!r} reads {', '.join(names)}, which the store does not keep"
            " with request events; left out"
        )
    for rule, counts in sorted(report.lacking.items()):
        for name, n in sorted(counts.items()):
            print(
                f"note: rule {rule!r} reads {name}, absent in {n} of {report.events} events "
                "(its detector did not run or was not scored then; the comparison is false there, as live)"
            )


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def _decision(d: dict[str, object]) -> str:
    return f"{d['action']}" + (f" ({d['rule']})" if d.get("rule") else "")


def cmd_backtest(args: argparse.Namespace) -> int:
    try:
        candidate = load_rules(args.file)
    except RulesError as exc:
        for issue in exc.errors:
            print(str(issue), file=sys.stderr)
        return 1
    try:
        since = time.time() - parse_duration(args.since) if args.since else None
    except ValueError as exc:
        print(f"llmwall rules backtest: --since: {exc}", file=sys.stderr)
        return 2
    path = os.path.expanduser(args.db)
    if not os.path.exists(path):
        print(f"llmwall rules backtest: no database at {path} (run the proxy first, or pass --db)", file=sys.stderr)
        return 2
    store = Store(path)
    try:
        report = backtest(candidate, stored_events(store, since))
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        window = f" since {args.since}" if args.since else ""
        print_report(report, f"backtest of {args.file} on {report.events} screened events{window} in {path}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``backtest`` to the ``rules`` command group."""
    p = subparsers.add_parser(
        "backtest",
        help="replay the stored field values of past requests through candidate rules and show what would change",
        description=(
            "Evaluate a candidate rules file on the field values stored for past screened requests "
            "(never prompt text) and compare with the decisions made: counts per action, rule and endpoint, "
            "and the event ids whose decision changes."
        ),
    )
    p.add_argument("file", metavar="NEW_RULES.yaml", help="the candidate rules file")
    p.add_argument("--since", help="only events of the last period, e.g. 1h, 7d (default: all)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"event database (default {DEFAULT_DB})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_backtest)
