"""Builds the detector set from ``models/`` and the addon's options.

Precedence when several detectors fill the same fields: a model the user
brought (Llama Guard, Prompt Guard) wins over the embedded lite classifiers,
which keep the proxy useful on a laptop with no exported model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib import import_module

from llmwall import fields
from llmwall.detectors.base import Detector, DetectorConfig

log = logging.getLogger(__name__)

_TOPICS = fields.UNSAFE_FIELDS | fields.CUSTOM_TOPIC_FIELDS
#: (module, factory, the fields its detector fills) in order of preference within each group of fields.
_FACTORIES: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("tokens", "create", fields.TOKEN_FIELDS),
    ("pii", "create", fields.PII_FIELDS),
    ("secrets", "create", fields.SECRET_FIELDS),
    ("llama_guard_remote", "create", _TOPICS),  # a configured server wins over (and skips loading) the local model
    ("llama_guard", "create", _TOPICS),
    ("lite", "create_topics", _TOPICS),
    ("prompt_guard", "create", fields.INJECTION_FIELDS),
    ("lite", "create_injection", fields.INJECTION_FIELDS),
)


def build_detectors(config: DetectorConfig, only: frozenset[str] | None = None) -> list[Detector]:
    """Create every available detector; a field group is filled by its first available detector.

    A detector whose model is absent returns None from its factory and is skipped;
    one whose loading fails is logged and skipped, so a broken model never stops
    the proxy from starting. ``only`` limits the build to detectors filling some of
    those fields (``llmwall eval`` measures unsafe topics and injection without
    loading PII's spaCy model); the selection among them is the proxy's.
    """
    detectors: list[Detector] = []
    covered: set[str] = set()
    for module_name, factory_name, fills in _FACTORIES:
        if only is not None and not fills & only:
            continue
        try:
            start = time.monotonic()
            factory: Callable[[DetectorConfig], Detector | None] = getattr(
                import_module(f"{__name__}.{module_name}"), factory_name
            )
            if (detector := factory(config)) is None:
                continue
            detector.load_ms = (time.monotonic() - start) * 1000.0
        except Exception as exc:  # a broken model must not stop the proxy
            log.warning("llmwall: could not load %s.%s: %s", module_name, factory_name, exc)
            continue
        new_fields = detector.provides - covered
        if not new_fields:
            detector.close()  # a preferred detector already fills these fields
            continue
        covered |= detector.provides
        detectors.append(detector)
    return detectors
