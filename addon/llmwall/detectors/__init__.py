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

from llmwall.detectors.base import Detector, DetectorConfig

log = logging.getLogger(__name__)

# (module, factory) in order of preference within each group of fields.
_FACTORIES: tuple[tuple[str, str], ...] = (
    ("tokens", "create"),
    ("pii", "create"),
    ("secrets", "create"),
    ("llama_guard", "create"),
    ("lite", "create_topics"),
    ("prompt_guard", "create"),
    ("lite", "create_injection"),
)


def build_detectors(config: DetectorConfig) -> list[Detector]:
    """Create every available detector; a field group is filled by its first available detector.

    A detector whose model is absent returns None from its factory and is skipped;
    one whose loading fails is logged and skipped, so a broken model never stops
    the proxy from starting.
    """
    detectors: list[Detector] = []
    covered: set[str] = set()
    for module_name, factory_name in _FACTORIES:
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
