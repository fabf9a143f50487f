"""rules.yaml: loading, validation with file positions, and per-request evaluation.

Evaluation order (documented in docs/rules.md): every enabled rule is evaluated, in
file order, and every match is recorded in ``Decision.matched``. The first matching
``block`` or ``redact`` rule decides the action; ``log`` never stops anything. When no
terminating rule matched but a ``log`` rule did, the action is ``log`` and the deciding
rule is the first matching ``log`` rule.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import yaml

from llmwall import fields as schema
from llmwall.ratelimit import rules as rate_limit_rules
from llmwall.rules import nodes as n
from llmwall.rules.compiler import CompiledExpression, compile_expression
from llmwall.rules.errors import ExpressionError, ExprIssue, RuleIssue, RulesError
from llmwall.rules.parser import parse

if TYPE_CHECKING:
    from llmwall.ratelimit.rules import RateLimitRule

log = logging.getLogger(__name__)

ACTIONS = ("block", "log", "redact")
TERMINATING = frozenset({"block", "redact"})
RULE_KEYS = ("id", "description", "expression", "action", "enabled", "status", "body")
TOP_KEYS = ("rules", "custom_topics", "rate_limits")
MAX_CUSTOM_TOPICS = 20
_LABEL = re.compile(r"[a-z0-9-]{2,20}")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True)
class Rule:
    """One rule of rules.yaml. ``line`` is where the rule starts in its file (1-based)."""

    id: str
    description: str
    expression: str
    action: str
    enabled: bool = True
    status: int | None = None
    body: object | None = None
    line: int = 0


@dataclass(frozen=True)
class Decision:
    """The outcome for one request: every matching rule, and the action with its deciding rule."""

    matched: tuple[str, ...]
    action: str | None
    rule: Rule | None


# --- field values ------------------------------------------------------------------------------


def _bool(x: object) -> object:
    return x if isinstance(x, bool) else None


def _int(x: object) -> object:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return None


def _str(x: object) -> object:
    return x if isinstance(x, str) else None


def _ip(x: object) -> object:
    """An address; IPv4-mapped IPv6 (``::ffff:10.0.0.1``, as dual-stack sockets report IPv4
    clients) becomes the IPv4 address, so ``ip.src in {10.0.0.0/8}`` matches it."""
    if isinstance(x, str):
        try:
            x = ipaddress.ip_address(x)
        except ValueError:
            return None
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped is not None:
        return x.ipv4_mapped
    return x if isinstance(x, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None


def _str_array(x: object) -> object:
    if isinstance(x, (list, tuple, set, frozenset)) and all(isinstance(i, str) for i in x):
        return list(x)
    return None


def _int_map(x: object) -> object:
    if isinstance(x, Mapping) and all(isinstance(k, str) and _int(v) is not None for k, v in x.items()):
        return {k: _int(v) for k, v in x.items()}
    return None


_COERCE: dict[schema.FieldType, Callable[[object], object]] = {
    schema.BOOL: _bool,
    schema.INT: _int,
    schema.STRING: _str,
    schema.IP: _ip,
    schema.ARRAY_STRING: _str_array,
    schema.MAP_INT: _int_map,
}


def coerce_value(name: str, value: object) -> object:
    """``value`` in the form the evaluator expects for canonical field ``name``; None if missing or ill-typed."""
    if value is None:
        return None
    return _COERCE[schema.SCHEMA[name]](value)


class RuleSet:
    """A loaded, type-checked rule set, ready to evaluate per request."""

    def __init__(
        self,
        rules: tuple[Rule, ...],
        compiled: Mapping[str, CompiledExpression],
        custom_topics: Mapping[str, str],
        source: str = "<string>",
        rate_limits: tuple[RateLimitRule, ...] = (),
    ):
        self.rules = rules
        self.custom_topics = dict(custom_topics)
        self.source = source
        self._compiled = compiled
        #: Rule id -> the canonical fields its expression reads.
        self.rule_fields: dict[str, frozenset[str]] = {r.id: compiled[r.id].fields for r in rules}
        #: Rule id -> the phase it runs in: "response" when it reads a ``cf.llm.response.*`` field.
        self.phases: dict[str, str] = {r.id: schema.phase_of(compiled[r.id].fields) for r in rules}
        self._active = {
            phase: tuple((r, compiled[r.id].test) for r in rules if r.enabled and self.phases[r.id] == phase)
            for phase in (schema.REQUEST_PHASE, schema.RESPONSE_PHASE)
        }
        #: The ``rate_limits:`` section (llmwall.ratelimit); their fields are computed like the rules'.
        self.rate_limits = rate_limits
        read: frozenset[str] = frozenset().union(
            *(compiled[r.id].fields for r in rules if r.enabled), *(r.fields for r in rate_limits if r.enabled)
        )
        self._read = read
        #: Fields the request must provide (every enabled rule's, response fields aside).
        self.fields: frozenset[str] = frozenset(f for f in read if not f.startswith(schema.RESPONSE_PREFIX))
        #: Response fields some enabled rule reads: the response is screened only for these.
        self.response_fields: frozenset[str] = read - self.fields
        literals: dict[str, set[str]] = {}
        for r in rules:
            if r.enabled:
                for name, values in compiled[r.id].literals.items():
                    literals.setdefault(name, set()).update(values)
        #: Field -> string values the enabled rules compare its elements with (see CompiledExpression).
        self.literals: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in literals.items()}

    def disabling(self, rule_ids: Collection[str]) -> RuleSet:
        """The same rules with ``rule_ids`` disabled (a backtest leaves out rules it cannot evaluate)."""
        rules = tuple(dataclasses.replace(r, enabled=False) if r.id in rule_ids else r for r in self.rules)
        return RuleSet(rules, self._compiled, self.custom_topics, self.source, self.rate_limits)

    def evaluate(self, values: Mapping[str, object], phase: str = schema.REQUEST_PHASE) -> Decision:
        """Evaluate every enabled rule of ``phase`` on ``values`` (canonical names; absent = missing).

        The request phase skips rules that read response fields; the response phase runs
        only those, with the request's values alongside the response's.
        """
        vals = {}
        for name in self._read:
            try:
                vals[name] = coerce_value(name, values.get(name))
            except Exception:  # a hostile Mapping must not take the proxy down
                vals[name] = None
        matched: list[str] = []
        decider: Rule | None = None
        first_log: Rule | None = None
        for rule, test in self._active[phase]:
            try:
                hit = test(vals)
            except Exception as exc:  # never crash the proxy; values are not logged
                log.warning(
                    "rules: rule %r failed to evaluate (%s); treated as not matching", rule.id, type(exc).__name__
                )
                hit = False
            if not hit:
                continue
            matched.append(rule.id)
            if rule.action in TERMINATING:
                decider = decider or rule
            else:
                first_log = first_log or rule
        deciding = decider or first_log
        return Decision(tuple(matched), deciding.action if deciding else None, deciding)

    def __repr__(self) -> str:
        return f"RuleSet({self.source!r}, {len(self.rules)} rules, fields={sorted(self.fields)})"


# --- loading -----------------------------------------------------------------------------------


class _Loader:
    """Walks the YAML node tree so every issue can carry the line and column it is about."""

    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self.issues: list[RuleIssue] = []
        self._constructor = yaml.SafeLoader("")

    def issue(self, node_or_mark: object, message: str, rule_id: str | None = None) -> None:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        line = getattr(mark, "line", 0) + 1
        column = getattr(mark, "column", 0) + 1
        self.issues.append(RuleIssue(self.source, rule_id, line, column, message))

    def construct(self, node: yaml.Node, rule_id: str | None = None) -> object:
        """The Python value of a node; a value YAML cannot build (``!!int abc``) is reported, giving None."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception as exc:  # PyYAML raises ValueError, TypeError, ... for bad tagged values
            detail = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else exc
            self.issue(node, f"invalid value: {detail}", rule_id)
            return None

    def pairs(self, node: yaml.MappingNode, where: str, rule_id: str | None = None) -> dict[str, tuple]:
        """Key -> (key node, value node), reporting duplicate and non-string keys."""
        out: dict[str, tuple] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.issue(key_node, f"keys in {where} must be strings", rule_id)
                continue
            if key in out:
                self.issue(
                    key_node,
                    f"duplicate key {key!r} in {where} (first on line {out[key][0].start_mark.line + 1})",
                    rule_id,
                )
                continue
            out[key] = (key_node, value_node)
        return out

    def unknown_keys(self, keys: dict[str, tuple], allowed: tuple[str, ...], where: str, rule_id: str | None) -> None:
        for key, (key_node, _) in keys.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.issue(key_node, f"unknown key {key!r} in {where}; {hint}allowed: {', '.join(allowed)}", rule_id)

    def load(self) -> RuleSet:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            self.issue(mark, f"YAML syntax error: {exc.problem or exc.context}")
            raise RulesError(self.issues) from None
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow, by position
            pos = min(max(exc.position, 0), len(self.text))
            line, column = self.text.count("\n", 0, pos) + 1, pos - self.text.rfind("\n", 0, pos)
            char = chr(exc.character) if isinstance(exc.character, int) else exc.character
            message = f"YAML error: character {char!r} is not allowed ({exc.reason})"
            self.issues.append(RuleIssue(self.source, None, line, column, message))
            raise RulesError(self.issues) from None
        except yaml.YAMLError as exc:  # any other (unpositioned) YAML failure
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.issues.append(RuleIssue(self.source, None, 1, 1, f"YAML error: {first_line}"))
            raise RulesError(self.issues) from None
        if root is None:
            self.issues.append(
                RuleIssue(self.source, None, 1, 1, "the file is empty; it needs a top-level 'rules:' list")
            )
            raise RulesError(self.issues)
        if not isinstance(root, yaml.MappingNode):
            self.issue(root, "the top level must be a mapping with a 'rules:' key")
            raise RulesError(self.issues)
        top = self.pairs(root, "the top level")
        self.unknown_keys(top, TOP_KEYS, "the top level", None)
        topics = self.custom_topics(top["custom_topics"][1]) if "custom_topics" in top else {}
        rules: list[Rule] = []
        compiled: dict[str, CompiledExpression] = {}
        if "rules" not in top:
            self.issue(root, "missing top-level key 'rules' (a list of rules)")
        else:
            rules, compiled = self.rules(top["rules"][1], topics)
        rate_limits = (
            rate_limit_rules.parse_rate_limits(self, top["rate_limits"][1], topics) if "rate_limits" in top else ()
        )
        if self.issues:
            raise RulesError(sorted(self.issues, key=lambda i: (i.line, i.column)))
        return RuleSet(tuple(rules), compiled, topics, self.source, rate_limits)

    def custom_topics(self, node: yaml.Node) -> dict[str, str]:
        """``custom_topics:`` as ``label: description``, or Cloudflare's API list of {label, topic}."""
        entries: list[tuple[yaml.Node, object, object]] = []
        if isinstance(node, yaml.MappingNode):
            for key, (key_node, value_node) in self.pairs(node, "custom_topics").items():
                entries.append((key_node, key, self.construct(value_node)))
        elif isinstance(node, yaml.SequenceNode):
            seen: dict[str, int] = {}
            for item in node.value:
                if not isinstance(item, yaml.MappingNode):
                    self.issue(item, "each custom topic must be a mapping with 'label' and 'topic'")
                    continue
                keys = self.pairs(item, "a custom topic")
                self.unknown_keys(keys, ("label", "topic"), "a custom topic", None)
                if "label" not in keys or "topic" not in keys:
                    self.issue(item, "each custom topic needs 'label' and 'topic'")
                    continue
                label = self.construct(keys["label"][1])
                if isinstance(label, str) and label in seen:
                    self.issue(
                        keys["label"][1], f"duplicate custom topic label {label!r} (first on line {seen[label]})"
                    )
                    continue
                if isinstance(label, str):
                    seen[label] = item.start_mark.line + 1
                entries.append((keys["label"][1], label, self.construct(keys["topic"][1])))
        elif not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
            self.issue(node, "custom_topics must be a mapping of label: description")
            return {}
        if len(entries) > MAX_CUSTOM_TOPICS:
            self.issue(node, f"{len(entries)} custom topics; Cloudflare allows at most {MAX_CUSTOM_TOPICS}")
        topics: dict[str, str] = {}
        for where, label, description in entries:
            if not isinstance(label, str) or not _LABEL.fullmatch(label):
                self.issue(where, f"custom topic label {label!r} must be 2-20 characters of a-z, 0-9 and '-'")
                continue
            if (
                not isinstance(description, str)
                or not 2 <= len(description) <= 50
                or not all(" " <= c <= "~" for c in description)
            ):
                self.issue(where, f"custom topic {label!r}: the description must be 2-50 printable ASCII characters")
                continue
            topics[label] = description
        return topics

    def rules(self, node: yaml.Node, topics: Mapping[str, str]) -> tuple[list[Rule], dict[str, CompiledExpression]]:
        if not isinstance(node, yaml.SequenceNode):
            if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
                return [], {}
            self.issue(node, "'rules' must be a list of rules (each item starts with '- id: ...')")
            return [], {}
        rules: list[Rule] = []
        compiled: dict[str, CompiledExpression] = {}
        first_seen: dict[str, int] = {}
        for item in node.value:
            # Duplicates are found from the raw id, so a duplicate that also has another
            # error (a typo in its expression) is still reported as a duplicate.
            rid = _raw_id(item)
            duplicate = rid is not None and rid in first_seen
            if rid is not None and duplicate:
                self.issue(item, f"duplicate rule id {rid!r} (first defined on line {first_seen[rid]})", rid)
            elif rid is not None:
                first_seen[rid] = item.start_mark.line + 1
            rule = self.rule(item, topics, {} if duplicate else compiled)
            if rule is not None and not duplicate:
                rules.append(rule)
        return rules, compiled

    def rule(self, node: yaml.Node, topics: Mapping[str, str], compiled: dict[str, CompiledExpression]) -> Rule | None:
        if not isinstance(node, yaml.MappingNode):
            self.issue(node, "each rule must be a mapping with id, expression and action")
            return None
        rid = _raw_id(node)
        keys = self.pairs(node, "a rule", rid)
        values = {}
        for key, (_, value_node) in keys.items():
            values[key] = self.construct(value_node, rid)
        rule_id = values.get("id")
        before = len(self.issues)
        self.unknown_keys(keys, RULE_KEYS, "a rule", rid)
        for required in ("id", "expression", "action"):
            if required not in keys:
                self.issue(node, f"missing required key {required!r}", rid)
        if "id" in keys and (not isinstance(rule_id, str) or not _RULE_ID.fullmatch(rule_id)):
            self.issue(
                keys["id"][1],
                f"id {rule_id!r} must be a string of letters, digits, '-', '_', '.', ':' "
                "(starting with a letter or digit, at most 128 characters)",
            )
        action = values.get("action")
        if "action" in keys and action not in ACTIONS:
            close = difflib.get_close_matches(str(action), ACTIONS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.issue(keys["action"][1], f"unknown action {action!r}; {hint}allowed: {', '.join(ACTIONS)}", rid)
        description = values.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            self.issue(keys["description"][1], "description must be a string", rid)
        enabled = values.get("enabled", True)
        if not isinstance(enabled, bool):
            self.issue(keys["enabled"][1], f"enabled must be true or false, got {enabled!r}", rid)
        status = values.get("status")
        if "status" in keys:
            if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
                self.issue(
                    keys["status"][1], f"status must be an HTTP status code between 100 and 599, got {status!r}", rid
                )
            if action in ACTIONS and action != "block":
                self.issue(
                    keys["status"][0], f"status only applies to action 'block' (this rule's action is {action!r})", rid
                )
        if "body" in keys:
            body = values.get("body")
            if not isinstance(body, (str, dict, list)):
                self.issue(keys["body"][1], "body must be a string or a JSON object or array", rid)
            else:
                try:
                    json.dumps(body, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    self.issue(keys["body"][1], f"body must be plain JSON (quote dates and times): {exc}", rid)
        if "body" in keys and action in ACTIONS and action != "block":
            self.issue(keys["body"][0], f"body only applies to action 'block' (this rule's action is {action!r})", rid)
        expression = values.get("expression")
        if "expression" in keys and self.text.startswith("!", keys["expression"][1].start_mark.index):
            # `expression: ! x` is the YAML tag "!" and the string "x": the negation would vanish.
            self.issue(
                keys["expression"][1],
                "YAML reads a leading '!' as a tag, not as the not operator; quote the expression or write 'not ...'",
                rid,
            )
        elif "expression" in keys:
            if not isinstance(expression, str):
                hint = f' (quote it: expression: "{str(expression).lower()}")' if isinstance(expression, bool) else ""
                self.issue(keys["expression"][1], f"expression must be a string{hint}", rid)
            else:
                try:
                    compiled_expr = compile_expression(parse(expression), topics)
                    if rid is not None:
                        compiled[rid] = compiled_expr
                except ExpressionError as exc:
                    for issue in exc.issues:
                        self.expression_issue(keys["expression"][1], issue, rid)
        if len(self.issues) > before:
            return None
        # Every value was checked above; a wrong type added an issue and returned None.
        return Rule(
            id=cast(str, rule_id),
            description=cast(str, description),
            expression=cast(str, expression),
            action=cast(str, action),
            enabled=cast(bool, enabled),
            status=cast("int | None", status),
            body=values.get("body"),
            line=node.start_mark.line + 1,
        )

    def expression_issue(self, node: yaml.ScalarNode, issue: ExprIssue, rule_id: str | None) -> None:
        """Place an expression issue in the file: exactly where the scalar's layout allows."""
        located = self._locate(node, issue.line, issue.column)
        if located is None:
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
            message = f"expression line {issue.line}, column {issue.column}: {issue.message}"
        else:
            (line, column), message = located, issue.message
        self.issues.append(RuleIssue(self.source, rule_id, line, column, message))

    def _locate(self, node: yaml.ScalarNode, line: int, column: int) -> tuple[int, int] | None:
        start, value = node.start_mark, node.value
        raw = self.text[start.index : node.end_mark.index]
        if node.style is None and "\n" not in value and raw == value:
            return start.line + 1, start.column + column
        if node.style in ('"', "'") and "\n" not in raw and raw[1:-1] == value:
            return start.line + 1, start.column + 1 + column
        if node.style == "|":
            lines = raw.split("\n")[1:]
            indent = next((len(s) - len(s.lstrip(" ")) for s in lines if s.strip()), None)
            if indent is None or line > len(lines):
                return None
            return start.line + 1 + line, indent + column
        return None


def _raw_id(node: yaml.Node) -> str | None:
    """The ``id`` string of a rule mapping, read before any validation; None when absent."""
    if not isinstance(node, yaml.MappingNode):
        return None
    return next(
        (
            v.value
            for k, v in node.value
            if isinstance(k, yaml.ScalarNode)
            and k.value == "id"
            and isinstance(v, yaml.ScalarNode)
            and v.tag == "tag:yaml.org,2002:str"
        ),
        None,
    )


def parse_rules(text: str, source: str = "<string>") -> RuleSet:
    """Load rules from YAML text; raises :class:`RulesError` listing every problem with its position."""
    return _Loader(text, source).load()


def load_rules(path: str | os.PathLike) -> RuleSet:
    """Load a rules.yaml file; raises :class:`RulesError` (also when the file cannot be read)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([RuleIssue(source, None, 1, 1, f"cannot read the rules file: {exc}")]) from None
    return parse_rules(text, source)


def parse_expression(text: str, custom_topics: Mapping[str, str] | None = None) -> n.Expr:
    """Parse and type-check one expression; raises :class:`RulesError`. ``str()`` of the result is canonical."""
    try:
        expr = parse(text)
        compile_expression(expr, custom_topics)
    except ExpressionError as exc:
        raise RulesError([RuleIssue("<expression>", None, i.line, i.column, i.message) for i in exc.issues]) from None
    return expr
