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
    # llmwall extensions, same style
    "cf.llm.prompt.secret_detected": BOOL,
    "cf.llm.prompt.secret_categories": ARRAY_STRING,
    "cf.llm.request.format": STRING,
    "cf.llm.request.model": STRING,
    # the model's answer (llmwall extension, same names as the prompt's); a rule that reads
    # one of these is evaluated on the response, see RESPONSE_PREFIX
    "cf.llm.response.detected": BOOL,
    "cf.llm.response.unsafe_topic_detected": BOOL,
    "cf.llm.response.unsafe_topic_categories": ARRAY_STRING,
    "cf.llm.response.pii_detected": BOOL,
    "cf.llm.response.pii_categories": ARRAY_STRING,
    "cf.llm.response.secret_detected": BOOL,
    "cf.llm.response.secret_categories": ARRAY_STRING,
    "cf.llm.response.token_count": INT,
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

#: Fields of the model's answer: a rule reading any of them runs in the response phase.
RESPONSE_PREFIX: Final = "cf.llm.response."
REQUEST_PHASE: Final = "request"
RESPONSE_PHASE: Final = "response"

#: Response field -> the prompt field the same detector fills (detectors screen text, not sides).
RESPONSE_FROM_PROMPT: Final[dict[str, str]] = {
    RESPONSE_PREFIX + name: "cf.llm.prompt." + name
    for name in (
        "unsafe_topic_detected",
        "unsafe_topic_categories",
        "pii_detected",
        "pii_categories",
        "secret_detected",
        "secret_categories",
    )
}

#: Injection score for "not scored", as in Cloudflare (1-99 scored, 100 = not scored).
INJECTION_NOT_SCORED: Final = 100


def phase_of(names: frozenset[str] | set[str]) -> str:
    """The phase a rule reading ``names`` runs in: the response once it reads any response field."""
    return RESPONSE_PHASE if any(n.startswith(RESPONSE_PREFIX) for n in names) else REQUEST_PHASE


def canonical(name: str) -> str | None:
    """Return the canonical field name for ``name`` (accepting ``llm.*`` aliases), or None."""
    if name.startswith("llm."):
        name = "cf." + name
    return name if name in SCHEMA else None
