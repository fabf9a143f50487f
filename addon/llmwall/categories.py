"""Names of the unsafe-topic categories, for people: the one table every display reads.

Rule fields keep the codes (``S1`` .. ``S14``, as Cloudflare and Llama Guard 3 write them);
whatever a person reads (block message, chat page, dashboard, ``llmwall scan``, metrics help,
the console line) shows the code with its name. The names are the MLCommons hazard names of
the Llama Guard 3 model card (meta-llama/Llama-Guard-3-8B, "Hazard Taxonomy and Policy").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

#: Code -> name, in code order.
UNSAFE_CATEGORY_NAMES: Final[Mapping[str, str]] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}


def label(category: str) -> str:
    """``"S9"`` -> ``"S9 Indiscriminate Weapons"``; any other category (PII, secret, topic) unchanged."""
    name = UNSAFE_CATEGORY_NAMES.get(category)
    return f"{category} {name}" if name else category


def labels(categories: Iterable[str]) -> list[str]:
    """:func:`label` of each category, order kept."""
    return [label(c) for c in categories]


def legend() -> str:
    """All codes with their names on one line, for help texts: ``S1 Violent Crimes, S2 ...``."""
    return ", ".join(label(code) for code in UNSAFE_CATEGORY_NAMES)
