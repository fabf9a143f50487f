"""Metrics: counters and histograms appear in the exposition after observe()."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from llmwall.analytics import metrics as M
from llmwall.analytics.metrics import Metrics


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


EVENT = {
    "ts": 1.0,
    "host": "api.openai.com",
    "method": "POST",
    "path_template": "/v1/chat/completions",
    "format": "openai.chat",
    "action": "block",
    "rule": "block-pii",
    "matched": ["block-pii"],
    "fields": {
        "cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"],
        "cf.llm.prompt.unsafe_topic_categories": ["S1"],
        "cf.llm.prompt.custom_topic_categories": {"competitors": 5, "pets": 95},
    },
    "timings_ms": {"pii": 4.0, "llama_guard": 300.0},
    "not_scored": ["injection"],
    "errors": ["secrets"],
    "total_ms": 310.0,
    "status": "screened",
}


def test_observe_fills_every_family() -> None:
    m = Metrics()
    m.observe(EVENT)
    m.observe({**EVENT, "action": None, "rule": None, "not_scored": [], "errors": [], "fields": {}})
    m.observe({"ts": 2.0, "host": "h", "path_template": "/x", "status": "parse_error"})
    s = _samples(m)
    ep = ("endpoint", "api.openai.com/v1/chat/completions")
    assert s[("llmwall_requests_total", (("action", "block"), ep))] == 1
    assert s[("llmwall_requests_total", (("action", "allow"), ep))] == 1
    assert s[("llmwall_detections_total", (("category", "EMAIL_ADDRESS"), ("kind", "pii")))] == 1
    assert s[("llmwall_detections_total", (("category", "S1"), ("kind", "unsafe")))] == 1
    assert s[("llmwall_detections_total", (("category", "competitors"), ("kind", "custom")))] == 1
    assert ("llmwall_detections_total", (("category", "pets"), ("kind", "custom"))) not in s
    assert s[("llmwall_rule_decisions_total", (("action", "block"), ("rule", "block-pii")))] == 1
    assert s[("llmwall_deadline_hits_total", ())] == 1
    assert s[("llmwall_detector_not_scored_total", (("detector", "injection"),))] == 1
    assert s[("llmwall_detector_errors_total", (("detector", "secrets"),))] == 1
    assert s[("llmwall_unscreened_total", (("status", "parse_error"),))] == 1
    assert s[("llmwall_screening_seconds_count", ())] == 2
    assert s[("llmwall_screening_seconds_sum", ())] == 0.62
    lg = ("detector", "llama_guard")
    assert s[("llmwall_detector_seconds_count", (lg,))] == 2
    assert s[("llmwall_detector_seconds_bucket", (lg, ("le", "0.25")))] == 0
    assert s[("llmwall_detector_seconds_bucket", (lg, ("le", "0.5")))] == 2


def test_private_registries_and_endpoint_cap() -> None:
    a, b = Metrics(), Metrics()
    for i in range(M.MAX_ENDPOINT_LABELS + 50):
        a.observe({**EVENT, "path_template": f"/v{i}"})
    sa, sb = _samples(a), _samples(b)
    endpoints = {dict(k[1])["endpoint"] for k in sa if k[0] == "llmwall_requests_total"}
    assert len(endpoints) == M.MAX_ENDPOINT_LABELS + 1 and M.OTHER in endpoints
    assert sa[("llmwall_requests_total", (("action", "block"), ("endpoint", M.OTHER)))] == 50
    assert not any(k[0] == "llmwall_requests_total" for k in sb)
