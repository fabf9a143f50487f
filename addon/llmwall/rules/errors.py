"""Error types of the rules engine: every problem is a positioned issue, and they are all reported at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleIssue:
    """One problem in a rules file or expression, with where it is (1-based line and column)."""

    source: str
    rule_id: str | None
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        rule = f" rule {self.rule_id!r}:" if self.rule_id else ""
        return f"{self.source}:{self.line}:{self.column}:{rule} {self.message}"


class RulesError(Exception):
    """Raised when rules or an expression fail to load; ``errors`` lists every problem found."""

    def __init__(self, errors: list[RuleIssue]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class ExprIssue:
    """A problem inside one expression, positioned relative to the expression text (1-based)."""

    line: int
    column: int
    message: str


class ExpressionError(Exception):
    """Internal: problems found in one expression, before they are placed in a file."""

    def __init__(self, issues: list[ExprIssue]):
        self.issues = issues
        super().__init__("; ".join(f"{i.line}:{i.column}: {i.message}" for i in issues))
