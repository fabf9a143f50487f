"""The rule fields: Cloudflare's Firewall-for-AI names, their types, and aliases.

Canonical names are Cloudflare's (``cf.llm.prompt.pii_detected``); the same fields
are also reachable without the ``cf.`` prefix (``llm.prompt.pii_detected``).
A field that a detector did not fill (not scored, skipped, failed) is simply
absent from the values mapping: the rules engine treats a missing value like
Cloudflare does, so every comparison on it is false.
"""

from __future__ import annotations

from typing import Final

BOOL: Final = "Bool"
INT: Final = "Int"
STRING: Final = "String"
IP: Final = "IP"
ARRAY_STRING: Final = "Array<String>"
MAP_INT: Final = "Map<Int>"

#: Field name -> type. Order is documentation order.
SCHEMA: Final[dict[str, str]] = {
    # Firewall for AI (Cloudflare names)
    "cf.llm.prompt.detected": BOOL,
    "cf.llm.prompt.pii_detected": BOOL,
    "cf.llm.prompt.pii_categories": ARRAY_STRING,
    "cf.llm.prompt.unsafe_topic_detected": BOOL,
    "cf.llm.prompt.unsafe_topic_categories": ARRAY_STRING,
    "cf.llm.prompt.injection_score": INT,
    "cf.llm.prompt.token_count": INT,
    "cf.llm.prompt.custom_topic_categories": MAP_INT,
    # detectors that did not score this request (missed the deadline, no capacity, raised),
    # after Cloudflare's cf.appsec.request.failed_detections: rules choose fail-open or closed
    "cf.llm.prompt.failed_detections": ARRAY_STRING,
    # roles (user, system, assistant, tool) of the turns with an unsafe topic, PII or a secret
    "cf.llm.prompt.flagged_roles": ARRAY_STRING,
    # llmwall extensions, same style
    "cf.llm.prompt.secret_detected": BOOL,
    "cf.llm.prompt.secret_categories": ARRAY_STRING,
    "cf.llm.request.format": STRING,
    "cf.llm.request.model": STRING,
    # ordinary request fields
    "http.host": STRING,
    "http.request.method": STRING,
    "http.request.uri": STRING,
    "http.request.uri.path": STRING,
    "http.request.uri.query": STRING,
    "http.request.full_uri": STRING,
    "http.user_agent": STRING,
    "ip.src": IP,
}

#: Which fields each standard detector fills; used to skip detectors no rule needs.
PII_FIELDS: Final = frozenset({"cf.llm.prompt.pii_detected", "cf.llm.prompt.pii_categories"})
SECRET_FIELDS: Final = frozenset({"cf.llm.prompt.secret_detected", "cf.llm.prompt.secret_categories"})
UNSAFE_FIELDS: Final = frozenset({"cf.llm.prompt.unsafe_topic_detected", "cf.llm.prompt.unsafe_topic_categories"})
INJECTION_FIELDS: Final = frozenset({"cf.llm.prompt.injection_score"})
CUSTOM_TOPIC_FIELDS: Final = frozenset({"cf.llm.prompt.custom_topic_categories"})
TOKEN_FIELDS: Final = frozenset({"cf.llm.prompt.token_count"})

#: Filled by the orchestrator for every screened request (empty when every detector scored).
FAILED_DETECTIONS: Final = "cf.llm.prompt.failed_detections"
FLAGGED_ROLES: Final = "cf.llm.prompt.flagged_roles"

#: Injection score for "not scored", as in Cloudflare (1-99 scored, 100 = not scored).
INJECTION_NOT_SCORED: Final = 100


def canonical(name: str) -> str | None:
    """Return the canonical field name for ``name`` (accepting ``llm.*`` aliases), or None."""
    if name.startswith("llm."):
        name = "cf." + name
    return name if name in SCHEMA else None
