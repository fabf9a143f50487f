"""Every field an enabled rule reads must have something that fills it, or the proxy does not start.

A block rule on ``cf.llm.prompt.unsafe_topic_detected`` with no unsafe-topic model loaded
can never fire: the prompt it was written for reaches the upstream. That is refused with a
message naming the rule, the field and the fix, at start-up and on a hot reload alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmwall import fields
from llmwall.detectors.base import Detector
from llmwall.rules import RuleSet

#: Fields the addon fills itself from the request and its parsed body.
ADDON_FIELDS = frozenset(
    {fields.PROMPT_DETECTED, fields.REQUEST_FORMAT, fields.REQUEST_MODEL}
    # filled by the orchestrator for every screened request
    | {fields.FAILED_DETECTIONS, fields.FLAGGED_ROLES}
    | {name for name in fields.SCHEMA if not name.startswith(fields.LLM_PREFIX)}
)

#: Response fields the response screening (llmwall.responses) fills itself: that an answer was
#: screened, and its token count from the provider's usage (else from the token counter).
RESPONSE_ADDON_FIELDS = frozenset({fields.RESPONSE_DETECTED, fields.RESPONSE_TOKEN_COUNT})

#: What provides each detection field group, for the fix in the message.
_PROVIDERS = (
    (fields.UNSAFE_FIELDS, "an unsafe-topic model (lite/ or an exported llama-guard-*/)"),
    (fields.INJECTION_FIELDS, "an injection model (lite/ or an exported prompt-guard-*/)"),
    (fields.CUSTOM_TOPIC_FIELDS, "a custom-topic model (lite/ or an exported llama-guard-*/)"),
    (fields.PII_FIELDS, "the PII detector (Presidio; its load error is in the log above)"),
    (fields.SECRET_FIELDS, "the secrets detector (its load error is in the log above)"),
    (fields.TOKEN_FIELDS, "the token counter (its load error is in the log above)"),
)


def uncovered(ruleset: RuleSet, detectors: Iterable[Detector], models_dir: str) -> list[str]:
    """One message per (enabled rule, field) that nothing fills; empty when every field is covered."""
    provided = set(ADDON_FIELDS).union(*(d.provides for d in detectors))
    # The response screening runs the same detectors on the answer: a response field is filled
    # whenever the prompt field its detector fills is.
    provided |= RESPONSE_ADDON_FIELDS
    provided |= {resp for resp, prompt in fields.RESPONSE_FROM_PROMPT.items() if prompt in provided}
    messages = []
    for rule in ruleset.rules:
        if not rule.enabled:
            continue
        for name in sorted(ruleset.rule_fields[rule.id] - provided):
            source = fields.RESPONSE_FROM_PROMPT.get(name, name)
            needs = next((what for group, what in _PROVIDERS if source in group), "a detector")
            messages.append(
                f"rule {rule.id!r} reads {name}, which no loaded detector provides: it needs {needs}, "
                f"and none was found in {models_dir}. Fix: set llmwall_models to a directory with the models "
                "(leave it empty for the ones shipped with llmwall), or disable the rule (enabled: false)"
            )
    return messages
