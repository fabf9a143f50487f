"""Closed vocabularies of rule fields: every value a detector can ever report.

A rule that compares a category field with a value outside its vocabulary (``"EMAIL"``
for ``EMAIL_ADDRESS``, ``"S99"``, ``"openai"`` for ``openai.chat``) can never match, and a
block rule that never matches is a hole in the policy nobody sees. So the rules loader
refuses such a value with a "did you mean" hint, in ``llmwall rules check``, at start-up and
on hot reload alike. Custom topic labels are checked against the file's own
``custom_topics`` by the compiler.

The vocabularies come from the modules that produce the values (detectors, discovery), read
on first use (the secrets module imports detect-secrets, which a rules file without category
comparisons never needs); the PII list lives in ``llmwall.categories`` so that checking a rules
file never imports Presidio.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from llmwall import fields
from llmwall.categories import PII_CATEGORIES, UNSAFE_CATEGORY_NAMES, label

UNSAFE_FIELD = fields.UNSAFE_TOPIC_CATEGORIES
PII_FIELD = fields.PII_CATEGORIES
SECRET_FIELD = fields.SECRET_CATEGORIES
FORMAT_FIELD = fields.REQUEST_FORMAT
#: The format recorded for a force-included body that no provider format matched.
CUSTOM_FORMAT = "custom"


@dataclass(frozen=True)
class Vocabulary:
    """The values one field can hold, and what to call them in a message."""

    what: str  # "an unsafe-topic category", ...
    values: tuple[str, ...]
    aliases: Mapping[str, str]  # lower-cased other spelling -> value (category names -> codes)


@functools.cache
def vocabularies() -> dict[str, Vocabulary]:
    """Field -> vocabulary, for every field with a closed set of values."""
    from llmwall.detectors import secrets
    from llmwall.providers import discovery

    prompt = {
        UNSAFE_FIELD: Vocabulary(
            "an unsafe-topic category",
            tuple(UNSAFE_CATEGORY_NAMES),
            {name.lower(): code for code, name in UNSAFE_CATEGORY_NAMES.items()},
        ),
        PII_FIELD: Vocabulary("a PII category", PII_CATEGORIES, {}),
        SECRET_FIELD: Vocabulary("a secret category", tuple(sorted(secrets.SECRET_CATEGORY_NAMES)), {}),
        FORMAT_FIELD: Vocabulary("a request format", (*discovery.FORMATS, CUSTOM_FORMAT), {}),
    }
    # The answer's category fields are filled by the same detectors: the same vocabularies.
    answer = {resp: prompt[src] for resp, src in fields.RESPONSE_FROM_PROMPT.items() if src in prompt}
    return {**prompt, **answer}


def suggest(value: str, known: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> str | None:
    """The known value ``value`` was most likely meant to be, or None."""
    lowered = value.strip().lower()
    if aliases and lowered in aliases:
        return aliases[lowered]
    for k in known:
        if k.lower() == lowered:
            return k
    containing = [k for k in known if lowered and lowered in k.lower()]
    if len(containing) == 1:
        return containing[0]
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.5) or difflib.get_close_matches(
        value.upper(), known, n=1, cutoff=0.5
    )
    return close[0] if close else None


def check(field: str, value: str) -> str | None:
    """None if ``value`` can occur in ``field``; else the error message, with a suggestion."""
    vocab = vocabularies().get(field)
    if vocab is None or value in vocab.values:
        return None
    guess = suggest(value, vocab.values, vocab.aliases)
    hint = f"did you mean {guess!r}{_named(field, guess)}? " if guess else ""
    known = ", ".join(label(v) if _unsafe(field) else v for v in vocab.values)
    return f"{value!r} is not {vocab.what}, so it never matches {field}; {hint}known: {known}"


def _unsafe(field: str) -> bool:
    """Whether ``field`` holds S-codes (the prompt's or the answer's unsafe-topic categories)."""
    return fields.RESPONSE_FROM_PROMPT.get(field, field) == UNSAFE_FIELD


def _named(field: str, code: str) -> str:
    return f" ({UNSAFE_CATEGORY_NAMES[code]})" if _unsafe(field) else ""
