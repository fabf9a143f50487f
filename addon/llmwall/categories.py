"""Category names: the S1-S14 names every display reads, and the PII category list.

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

#: Cloudflare's Firewall-for-AI PII categories (Presidio entity names), in its order; the PII
#: detector (``detectors.pii``) reports these, and the rules loader checks rule values against them.
PII_CATEGORIES: Final[tuple[str, ...]] = (
    "CREDIT_CARD", "CRYPTO", "DATE_TIME", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS",
    "NRP", "LOCATION", "PERSON", "PHONE_NUMBER", "MEDICAL_LICENSE", "URL",
    "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_ITIN", "US_PASSPORT", "US_SSN",
    "UK_NHS", "UK_NINO", "ES_NIF", "ES_NIE", "IT_FISCAL_CODE", "IT_DRIVER_LICENSE",
    "IT_VAT_CODE", "IT_PASSPORT", "IT_IDENTITY_CARD", "PL_PESEL", "SG_NRIC_FIN",
    "SG_UEN", "AU_ABN", "AU_ACN", "AU_TFN", "AU_MEDICARE", "IN_PAN", "IN_AADHAAR",
    "IN_VEHICLE_REGISTRATION", "IN_VOTER", "IN_PASSPORT", "FI_PERSONAL_IDENTITY_CODE",
)  # fmt: skip


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
