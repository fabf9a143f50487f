"""proxy.coverage: a rule is refused only when nothing can fill a field it reads, answers included."""

from __future__ import annotations

from llmwall import fields
from llmwall.detectors.base import Detection, Detector, ScreenRequest
from llmwall.proxy.coverage import uncovered
from llmwall.rules import parse_rules


class _Fills(Detector):
    def __init__(self, name: str, provides: frozenset[str]) -> None:
        self.name = name
        self.provides = provides

    def detect(self, request: ScreenRequest) -> Detection:
        return Detection()


def _rules(expression: str):
    return parse_rules(f"rules:\n  - id: r\n    expression: '{expression}'\n    action: block\n")


def test_response_fields_are_covered_by_the_detector_of_their_prompt_field() -> None:
    pii = _Fills("pii", fields.PII_FIELDS)
    for expression in (
        "cf.llm.response.pii_detected",
        'any(cf.llm.response.pii_categories[*] eq "EMAIL_ADDRESS")',
        "cf.llm.response.detected",  # filled by the response screening itself
        "cf.llm.response.token_count gt 100",  # the provider's usage
    ):
        assert uncovered(_rules(expression), [pii], "models") == [], expression


def test_a_response_field_nothing_fills_names_its_detector() -> None:
    [message] = uncovered(_rules("cf.llm.response.unsafe_topic_detected"), [], "models")
    assert message.startswith("rule 'r' reads cf.llm.response.unsafe_topic_detected, which no loaded detector")
    assert "an unsafe-topic model" in message
