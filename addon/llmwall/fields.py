"""The rule fields: Cloudflare's Firewall-for-AI names, their types, and aliases.

Every field name is defined here once, as a constant; modules import the constant
rather than spell the name, so a typo is a NameError (and a mypy error) instead of a
field that is silently absent and a rule that is silently false.

Canonical names are Cloudflare's (``cf.llm.prompt.pii_detected``); the same fields
are also reachable without the ``cf.`` prefix (``llm.prompt.pii_detected``).
A field that a detector did not fill (not scored, skipped, failed) is simply
absent from the values mapping: the rules engine treats a missing value like
Cloudflare does, so every comparison on it is false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class FieldType:
    """A rules-language type: a scalar, or an Array/Map of an element type.

    Printed as the rules documentation writes it (``Bool``, ``Array<String>``), which is
    also how error messages name it.
    """

    name: str  # Bool | Int | String | IP | Array | Map (and "?" for the compiler's error type)
    element: FieldType | None = None  # for Array and Map

    @property
    def is_array(self) -> bool:
        return self.name == "Array"

    @property
    def is_map(self) -> bool:
        return self.name == "Map"

    def __str__(self) -> str:
        return f"{self.name}<{self.element}>" if self.element is not None else self.name


def array_of(element: FieldType) -> FieldType:
    return FieldType("Array", element)


def map_of(element: FieldType) -> FieldType:
    """A map from string keys to ``element`` values."""
    return FieldType("Map", element)


BOOL: Final = FieldType("Bool")
INT: Final = FieldType("Int")
STRING: Final = FieldType("String")
IP: Final = FieldType("IP")
ARRAY_STRING: Final = array_of(STRING)
MAP_INT: Final = map_of(INT)

# --------------------------------------------------------------------------- names

#: Prefix of the LLM fields (Cloudflare's and llmwall's extensions): these, and only
#: these, are recorded in analytics (outcomes, never text) and have ``llm.*`` aliases.
LLM_PREFIX: Final = "cf.llm."

# Firewall for AI (Cloudflare names)
PROMPT_DETECTED: Final = "cf.llm.prompt.detected"
PII_DETECTED: Final = "cf.llm.prompt.pii_detected"
PII_CATEGORIES: Final = "cf.llm.prompt.pii_categories"
UNSAFE_TOPIC_DETECTED: Final = "cf.llm.prompt.unsafe_topic_detected"
UNSAFE_TOPIC_CATEGORIES: Final = "cf.llm.prompt.unsafe_topic_categories"
INJECTION_SCORE: Final = "cf.llm.prompt.injection_score"
TOKEN_COUNT: Final = "cf.llm.prompt.token_count"
CUSTOM_TOPIC_CATEGORIES: Final = "cf.llm.prompt.custom_topic_categories"
#: Detectors that did not score this request (missed the deadline, no capacity, raised), after
#: Cloudflare's cf.appsec.request.failed_detections: rules choose fail-open or fail-closed.
FAILED_DETECTIONS: Final = "cf.llm.prompt.failed_detections"
#: Roles (user, system, assistant, tool) of the turns with an unsafe topic, PII or a secret.
FLAGGED_ROLES: Final = "cf.llm.prompt.flagged_roles"
# llmwall extensions, same style
SECRET_DETECTED: Final = "cf.llm.prompt.secret_detected"
SECRET_CATEGORIES: Final = "cf.llm.prompt.secret_categories"
REQUEST_FORMAT: Final = "cf.llm.request.format"
REQUEST_MODEL: Final = "cf.llm.request.model"
# the model's answer (llmwall extension, same names as the prompt's)
RESPONSE_DETECTED: Final = "cf.llm.response.detected"
RESPONSE_UNSAFE_TOPIC_DETECTED: Final = "cf.llm.response.unsafe_topic_detected"
RESPONSE_UNSAFE_TOPIC_CATEGORIES: Final = "cf.llm.response.unsafe_topic_categories"
RESPONSE_PII_DETECTED: Final = "cf.llm.response.pii_detected"
RESPONSE_PII_CATEGORIES: Final = "cf.llm.response.pii_categories"
RESPONSE_SECRET_DETECTED: Final = "cf.llm.response.secret_detected"
RESPONSE_SECRET_CATEGORIES: Final = "cf.llm.response.secret_categories"
RESPONSE_TOKEN_COUNT: Final = "cf.llm.response.token_count"
# ordinary request fields
HTTP_HOST: Final = "http.host"
HTTP_METHOD: Final = "http.request.method"
HTTP_URI: Final = "http.request.uri"
HTTP_URI_PATH: Final = "http.request.uri.path"
HTTP_URI_QUERY: Final = "http.request.uri.query"
HTTP_FULL_URI: Final = "http.request.full_uri"
HTTP_USER_AGENT: Final = "http.user_agent"
IP_SRC: Final = "ip.src"

#: Field name -> type. Order is documentation order.
SCHEMA: Final[dict[str, FieldType]] = {
    PROMPT_DETECTED: BOOL,
    PII_DETECTED: BOOL,
    PII_CATEGORIES: ARRAY_STRING,
    UNSAFE_TOPIC_DETECTED: BOOL,
    UNSAFE_TOPIC_CATEGORIES: ARRAY_STRING,
    INJECTION_SCORE: INT,
    TOKEN_COUNT: INT,
    CUSTOM_TOPIC_CATEGORIES: MAP_INT,
    FAILED_DETECTIONS: ARRAY_STRING,
    FLAGGED_ROLES: ARRAY_STRING,
    SECRET_DETECTED: BOOL,
    SECRET_CATEGORIES: ARRAY_STRING,
    REQUEST_FORMAT: STRING,
    REQUEST_MODEL: STRING,
    # the model's answer (llmwall extension, same names as the prompt's); a rule that reads
    # one of these is evaluated on the response, see RESPONSE_PREFIX
    RESPONSE_DETECTED: BOOL,
    RESPONSE_UNSAFE_TOPIC_DETECTED: BOOL,
    RESPONSE_UNSAFE_TOPIC_CATEGORIES: ARRAY_STRING,
    RESPONSE_PII_DETECTED: BOOL,
    RESPONSE_PII_CATEGORIES: ARRAY_STRING,
    RESPONSE_SECRET_DETECTED: BOOL,
    RESPONSE_SECRET_CATEGORIES: ARRAY_STRING,
    RESPONSE_TOKEN_COUNT: INT,
    HTTP_HOST: STRING,
    HTTP_METHOD: STRING,
    HTTP_URI: STRING,
    HTTP_URI_PATH: STRING,
    HTTP_URI_QUERY: STRING,
    HTTP_FULL_URI: STRING,
    HTTP_USER_AGENT: STRING,
    IP_SRC: IP,
}

#: Which fields each standard detector fills; used to skip detectors no rule needs.
PII_FIELDS: Final = frozenset({PII_DETECTED, PII_CATEGORIES})
SECRET_FIELDS: Final = frozenset({SECRET_DETECTED, SECRET_CATEGORIES})
UNSAFE_FIELDS: Final = frozenset({UNSAFE_TOPIC_DETECTED, UNSAFE_TOPIC_CATEGORIES})
INJECTION_FIELDS: Final = frozenset({INJECTION_SCORE})
CUSTOM_TOPIC_FIELDS: Final = frozenset({CUSTOM_TOPIC_CATEGORIES})
TOKEN_FIELDS: Final = frozenset({TOKEN_COUNT})

#: The category fields a block message and analytics list (the kinds of detection).
CATEGORY_FIELDS: Final = (UNSAFE_TOPIC_CATEGORIES, PII_CATEGORIES, SECRET_CATEGORIES)

#: Fields of the model's answer: a rule reading any of them runs in the response phase.
RESPONSE_PREFIX: Final = "cf.llm.response."
REQUEST_PHASE: Final = "request"
RESPONSE_PHASE: Final = "response"

#: Response field -> the prompt field the same detector fills (detectors screen text, not sides).
RESPONSE_FROM_PROMPT: Final[dict[str, str]] = {
    RESPONSE_UNSAFE_TOPIC_DETECTED: UNSAFE_TOPIC_DETECTED,
    RESPONSE_UNSAFE_TOPIC_CATEGORIES: UNSAFE_TOPIC_CATEGORIES,
    RESPONSE_PII_DETECTED: PII_DETECTED,
    RESPONSE_PII_CATEGORIES: PII_CATEGORIES,
    RESPONSE_SECRET_DETECTED: SECRET_DETECTED,
    RESPONSE_SECRET_CATEGORIES: SECRET_CATEGORIES,
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
