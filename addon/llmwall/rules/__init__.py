"""The rules engine: Cloudflare Rules-language expressions over ``cf.llm.*`` fields, from rules.yaml.

Public API (see docs/rules.md for the language and the file format)::

    rs = load_rules("rules.yaml")          # raises RulesError listing every problem
    decision = rs.evaluate({"cf.llm.prompt.pii_detected": True})
    rs.fields                              # canonical fields the enabled rules read
    watcher = RulesWatcher("rules.yaml")   # hot reload: call watcher.poll() about once a second
"""

from llmwall.rules.errors import RuleIssue, RulesError
from llmwall.rules.nodes import Expr
from llmwall.rules.ruleset import ACTIONS, Decision, Rule, RuleSet, load_rules, parse_expression, parse_rules
from llmwall.rules.watcher import RulesWatcher

__all__ = [
    "ACTIONS",
    "Decision",
    "Expr",
    "Rule",
    "RuleIssue",
    "RuleSet",
    "RulesError",
    "RulesWatcher",
    "load_rules",
    "parse_expression",
    "parse_rules",
]
