"""The ``rate_limits:`` section of rules.yaml, checked like the rules themselves.

Modelled on Cloudflare's rate-limiting rules: an expression selects the requests,
``characteristics`` form the counting key, and a ``limit`` per ``period`` is counted in
requests or in tokens.  The ruleset loader calls :func:`parse_rate_limits` with itself
as ``loader`` so every problem is reported with its file, line and column, and the
expressions are type-checked by the same compiler as the rules.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from llmwall import fields
from llmwall.rules.compiler import compile_expression
from llmwall.rules.errors import ExpressionError
from llmwall.rules.parser import parse

UNIT_REQUESTS: Final = "requests"
UNIT_PROMPT: Final = "prompt_tokens"
UNIT_COMPLETION: Final = "completion_tokens"
UNIT_TOTAL: Final = "total_tokens"
UNITS: Final = (UNIT_TOTAL, UNIT_PROMPT, UNIT_COMPLETION, UNIT_REQUESTS)
#: Units whose count is only known once the response arrives.
COMPLETION_UNITS: Final = frozenset({UNIT_COMPLETION, UNIT_TOTAL})
ACTION_BLOCK: Final = "block"
ACTION_LOG: Final = "log"
ACTIONS: Final = (ACTION_BLOCK, ACTION_LOG)
KEYS: Final = ("id", "description", "expression", "characteristics", "period", "limit", "unit", "action", "enabled")
REQUIRED: Final = ("id", "characteristics", "period", "limit", "action")
#: Characteristics that are request fields (the value is used as is, then hashed into the key).
FIELD_CHARACTERISTICS: Final = (fields.IP_SRC, fields.REQUEST_MODEL, fields.REQUEST_FORMAT, fields.HTTP_HOST)
HEADER_PREFIX: Final = "http.request.headers"
_HEADER = re.compile(r'http\.request\.headers\["([!#$%&\'*+.^_`|~0-9A-Za-z-]{1,128})"\]')
MAX_CHARACTERISTICS: Final = 5
MAX_PERIOD_S: Final = 7 * 86400
MAX_LIMIT: Final = 10**12
_PERIOD = re.compile(r"^(\d{1,7})([smhd]?)$")
_PERIOD_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True)
class Characteristic:
    """One part of the counting key: a request field, or a request header (lower-cased name)."""

    name: str
    header: str | None = None


@dataclass(frozen=True)
class RateLimitRule:
    """One rate limit. ``test`` is the compiled expression (always true when none was given)."""

    id: str
    description: str
    expression: str
    test: Callable[[Mapping[str, object]], bool]
    fields: frozenset[str]
    characteristics: tuple[Characteristic, ...]
    period: int
    limit: int
    unit: str
    action: str
    enabled: bool = True
    line: int = 0


def _always(_values: Mapping[str, object]) -> bool:
    return True


def parse_period(value: object) -> int | None:
    """``60``, ``"90s"``, ``"10m"``, ``"1h"``, ``"1d"`` -> seconds; None when invalid or out of range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _PERIOD.match(value.strip())):
        seconds = int(m.group(1)) * _PERIOD_UNITS[m.group(2)]
    else:
        return None
    return seconds if 1 <= seconds <= MAX_PERIOD_S else None


def parse_characteristic(text: object) -> Characteristic | None:
    """A characteristic as written in the file; None if it is not one llmwall can key on."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text in FIELD_CHARACTERISTICS:
        return Characteristic(text)
    if text.startswith("llm.") and "cf." + text in FIELD_CHARACTERISTICS:
        return Characteristic("cf." + text)
    m = _HEADER.fullmatch(text)
    if m:
        header = m.group(1).lower()
        return Characteristic(f'{HEADER_PREFIX}["{header}"]', header)
    return None


def parse_rate_limits(loader: Any, node: yaml.Node, topics: Mapping[str, str]) -> tuple[RateLimitRule, ...]:
    """Parse the ``rate_limits:`` list; problems go to ``loader.issue`` (the rules loader)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return ()
    if not isinstance(node, yaml.SequenceNode):
        loader.issue(node, "'rate_limits' must be a list (each item starts with '- id: ...')")
        return ()
    out: list[RateLimitRule] = []
    first_seen: dict[str, int] = {}
    for item in node.value:
        rule = _rule(loader, item, topics)
        if rule is None:
            continue
        if rule.id in first_seen:
            loader.issue(
                item, f"duplicate rate limit id {rule.id!r} (first defined on line {first_seen[rule.id]})", rule.id
            )
            continue
        first_seen[rule.id] = rule.line
        out.append(rule)
    return tuple(out)


def _rule(loader: Any, node: yaml.Node, topics: Mapping[str, str]) -> RateLimitRule | None:
    if not isinstance(node, yaml.MappingNode):
        loader.issue(node, "each rate limit must be a mapping with id, characteristics, period, limit and action")
        return None
    keys = loader.pairs(node, "a rate limit")
    values = {key: loader.construct(value_node) for key, (_, value_node) in keys.items()}
    rid = values.get("id") if isinstance(values.get("id"), str) else None
    before = len(loader.issues)
    loader.unknown_keys(keys, KEYS, "a rate limit", rid)
    for required in REQUIRED:
        if required not in keys:
            loader.issue(node, f"missing required key {required!r}", rid)
    if "id" in keys and (rid is None or not _RULE_ID.fullmatch(rid)):
        loader.issue(keys["id"][1], f"id {values.get('id')!r} must be a string of letters, digits, '-', '_', '.', ':'")
    action = values.get("action")
    if "action" in keys and action not in ACTIONS:
        close = difflib.get_close_matches(str(action), ACTIONS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        loader.issue(keys["action"][1], f"unknown action {action!r}; {hint}allowed: {', '.join(ACTIONS)}", rid)
    unit = values.get("unit", UNIT_TOTAL)
    if unit not in UNITS:
        close = difflib.get_close_matches(str(unit), UNITS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        loader.issue(keys["unit"][1], f"unknown unit {unit!r}; {hint}allowed: {', '.join(UNITS)}", rid)
    period = parse_period(values.get("period"))
    if "period" in keys and period is None:
        loader.issue(
            keys["period"][1],
            f"period must be seconds or a duration like 10s, 1m, 1h, 1d (1 second to 7 days), "
            f"got {values.get('period')!r}",
            rid,
        )
    limit = values.get("limit")
    if "limit" in keys and (not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT):
        loader.issue(keys["limit"][1], f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}", rid)
    description = values.get("description") or ""
    if not isinstance(description, str):
        loader.issue(keys["description"][1], "description must be a string", rid)
    enabled = values.get("enabled", True)
    if not isinstance(enabled, bool):
        loader.issue(keys["enabled"][1], f"enabled must be true or false, got {enabled!r}", rid)
    characteristics = _characteristics(loader, keys.get("characteristics"), values.get("characteristics"), rid)
    expression: object = ""
    test: Callable[[Mapping[str, object]], bool] = _always
    fields = frozenset[str]()
    if "expression" in keys:
        expr_node = keys["expression"][1]
        expression = values.get("expression")
        if loader.text.startswith("!", expr_node.start_mark.index):
            loader.issue(expr_node, "YAML reads a leading '!' as a tag; quote the expression or write 'not ...'", rid)
        elif not isinstance(expression, str):
            loader.issue(expr_node, "expression must be a string", rid)
        else:
            try:
                compiled = compile_expression(parse(expression), topics)
                test, fields = compiled.test, compiled.fields
            except ExpressionError as exc:
                for issue in exc.issues:
                    loader.expression_issue(expr_node, issue, rid)
    if len(loader.issues) > before:
        return None
    assert rid is not None and period is not None and isinstance(limit, int) and isinstance(expression, str)
    return RateLimitRule(
        id=rid,
        description=description,
        expression=expression,
        test=test,
        fields=fields,
        characteristics=characteristics,
        period=period,
        limit=limit,
        unit=str(unit),
        action=str(action),
        enabled=enabled,
        line=node.start_mark.line + 1,
    )


def _characteristics(loader: Any, entry: tuple | None, value: object, rid: str | None) -> tuple[Characteristic, ...]:
    if entry is None:
        return ()
    node = entry[1]
    if not isinstance(value, list) or not value:
        loader.issue(node, "characteristics must be a non-empty list, e.g. [ip.src]", rid)
        return ()
    if len(value) > MAX_CHARACTERISTICS:
        loader.issue(node, f"at most {MAX_CHARACTERISTICS} characteristics", rid)
    out: list[Characteristic] = []
    for item_node, item in zip(node.value, value, strict=False):
        parsed = parse_characteristic(item)
        if parsed is None:
            known = ", ".join((*FIELD_CHARACTERISTICS, f'{HEADER_PREFIX}["name"]'))
            loader.issue(item_node, f"unknown characteristic {item!r}; allowed: {known}", rid)
        elif parsed in out:
            loader.issue(item_node, f"duplicate characteristic {parsed.name!r}", rid)
        else:
            out.append(parsed)
    return tuple(out)
