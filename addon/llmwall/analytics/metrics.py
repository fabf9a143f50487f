"""Prometheus metrics for screened requests, on a private registry.

A private ``CollectorRegistry`` keeps two addon instances (tests, reloads) from
colliding on the process-global one.  Label values that come from traffic
(endpoints) are capped so a hostile client cannot explode the series count.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from llmwall.analytics.store import CATEGORY_KINDS, CUSTOM_FIELD, CUSTOM_MATCH_SCORE, RESPONSE_STATUS
from llmwall.categories import legend

#: Latency buckets in seconds: detectors run from well under 1 ms (token count) to seconds (Llama Guard on CPU).
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Distinct endpoint label values kept; later ones are counted as "other".
MAX_ENDPOINT_LABELS: Final = 200
#: Same cap for other labels taken from events (rules, categories, detectors).
MAX_LABELS: Final = 500
OTHER: Final = "other"


class Metrics:
    """Counters and histograms fed from event records; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "llmwall_requests", "Screened LLM requests by final action and endpoint", ["action", "endpoint"], registry=r
        )
        self.detections = Counter(
            "llmwall_detections",
            "Requests in which a category was detected, by kind (unsafe/pii/secret/custom); unsafe codes: " + legend(),
            ["kind", "category"],
            registry=r,
        )
        self.rule_decisions = Counter(
            "llmwall_rule_decisions", "Requests decided by each rule", ["rule", "action"], registry=r
        )
        self.screening = Histogram(
            "llmwall_screening_seconds",
            "Total screening latency per request (all detectors, under the deadline)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.detector = Histogram(
            "llmwall_detector_seconds", "Latency of each detector", ["detector"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.deadline_hits = Counter(
            "llmwall_deadline_hits", "Requests where at least one detector missed the deadline", registry=r
        )
        self.not_scored = Counter(
            "llmwall_detector_not_scored", "Detector results missing because of the deadline", ["detector"], registry=r
        )
        self.detector_errors = Counter(
            "llmwall_detector_errors", "Detector failures (exceptions)", ["detector"], registry=r
        )
        self.unscreened = Counter(
            "llmwall_unscreened",
            "LLM requests that could not be screened, by status (parse_error, oversize, ...)",
            ["status"],
            registry=r,
        )
        self.rate_limited = Counter(
            "llmwall_rate_limited",
            "Requests over a rate limit (llmwall.ratelimit), by rule and action: block, log, fail_closed",
            ["rule", "action"],
            registry=r,
        )
        self.rate_limit_unchecked = Counter(
            "llmwall_rate_limit_unchecked",
            "Requests let through uncounted because the rate-limit counters were unreachable (fail open)",
            ["rule"],
            registry=r,
        )
        self.responses = Counter(
            "llmwall_responses",
            "Screened LLM responses (model answers) by final action and how the answer ended",
            ["action", "end"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._seen: dict[str, set[str]] = {}

    def _label(self, family: str, value: object, cap: int = MAX_LABELS) -> str:
        """``value`` as a label, or ``"other"`` once ``cap`` distinct values were seen for ``family``."""
        v = str(value)[:200]
        with self._lock:
            seen = self._seen.setdefault(family, set())
            if v in seen:
                return v
            if len(seen) >= cap:
                return OTHER
            seen.add(v)
            return v

    def observe(self, event: dict[str, Any]) -> None:
        """Count one event record (the same dict given to ``Store.record_event``)."""
        status = event.get("status") or "screened"
        if status == RESPONSE_STATUS:
            end = (event.get("response") or {}).get("end") or "complete"
            self.responses.labels(self._label("action", event.get("action") or "allow"), self._label("end", end)).inc()
        elif status != "screened":
            self.unscreened.labels(self._label("status", status)).inc()
        action = event.get("action") or "allow"
        endpoint = self._label(
            "endpoint", f"{event.get('host', '')}{event.get('path_template', '')}", MAX_ENDPOINT_LABELS
        )
        if status != RESPONSE_STATUS:
            self.requests.labels(self._label("action", action), endpoint).inc()
        if event.get("rule"):
            self.rule_decisions.labels(self._label("rule", event["rule"]), self._label("action", action)).inc()
        fields = event.get("fields") or {}
        cats: set[tuple[str, str]] = set()
        for name, kind in CATEGORY_KINDS.items():
            for c in fields.get(name) or ():
                cats.add((kind, str(c)))
        for label, score in (fields.get(CUSTOM_FIELD) or {}).items():
            if isinstance(score, int) and score < CUSTOM_MATCH_SCORE:
                cats.add(("custom", str(label)))
        for kind, c in cats:
            capped = self._label("category", f"{kind}:{c}") == OTHER
            self.detections.labels(kind, OTHER if capped else c[:200]).inc()
        if isinstance(event.get("total_ms"), (int, float)):
            self.screening.observe(event["total_ms"] / 1000.0)
        for det, ms in (event.get("timings_ms") or {}).items():
            if isinstance(ms, (int, float)):
                self.detector.labels(self._label("detector", det)).observe(ms / 1000.0)
        missed = event.get("not_scored") or ()
        if missed:
            self.deadline_hits.inc()
        for det in missed:
            self.not_scored.labels(self._label("detector", det)).inc()
        for det in event.get("errors") or ():
            self.detector_errors.labels(self._label("detector", det)).inc()

    def observe_rate_limit(self, event: dict[str, Any]) -> None:
        """Count one rate-limit decision (the dict given to ``Store.record_rate_limits``)."""
        action = event.get("action")
        if action in ("block", "log", "fail_closed"):
            self.rate_limited.labels(self._label("rule", event.get("rule")), action).inc()
        elif action == "fail_open":
            self.rate_limit_unchecked.labels(self._label("rule", event.get("rule"))).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
