"""Privacy at the analytics layer: real prompts through the real detectors into the store and metrics.

The prompts carry PII and credentials; the detectors produce the fields the addon
records.  Afterwards the SQLite file, its WAL and shared-memory files, the metrics
exposition and every log record (DEBUG and up) are searched for the prompt text and
for each sensitive value: none may appear.  The proxy-level grep (through mitmdump)
is in tests/test_demo_browser.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from llmwall.analytics.metrics import Metrics
from llmwall.analytics.store import Store
from llmwall.detectors import build_detectors
from llmwall.detectors.base import DetectorConfig, Prompt, ScreenRequest, TextPart
from llmwall.proxy.orchestrator import Orchestrator

ROOT = Path(__file__).resolve().parent.parent

SECRETS = {
    "email": "maria.gonzalez.privacy@example.org",
    "phone": "(415) 555-0132",
    "card": "4111 1111 1111 1111",
    "ssn": "078-05-1120",
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
}
PROMPTS = [
    f"Hi, I'm writing from {SECRETS['email']}; my phone is {SECRETS['phone']}. Can you update my billing?",
    f"Charge my card {SECRETS['card']} and file the form with SSN {SECRETS['ssn']} please.",
    f"Why does boto fail with aws_access_key_id={SECRETS['aws_key']} and token {SECRETS['github']}?",
    "Write a haiku about a quiet lighthouse in the fog.",
]


def _needles() -> list[bytes]:
    out: list[bytes] = []
    for text in [*PROMPTS, *SECRETS.values()]:
        out += [text.encode(), text.encode("utf-16-le")]
    out += [w.encode() for w in ("update my billing", "file the form", "boto fail", "quiet lighthouse")]
    return out


def test_store_and_metrics_hold_no_prompt_text_or_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    detectors = build_detectors(DetectorConfig(models_dir=str(ROOT / "models")))
    names = {d.name for d in detectors}
    assert {"pii", "secrets"} <= names, f"detectors available: {names}"
    wanted = frozenset().union(*(d.provides for d in detectors))
    store = Store(tmp_path / "privacy.sqlite")
    metrics = Metrics()
    orchestrator = Orchestrator(workers=4)

    async def screen_all() -> list[dict]:
        events = []
        for text in PROMPTS:
            prompt = Prompt("openai.chat", (TextPart(("messages", 0, "content"), text),), model="gpt-4o-mini")
            start = time.monotonic()
            result = await orchestrator.screen(ScreenRequest(prompt, start + 30.0, wanted), detectors)
            events.append(
                {
                    "ts": time.time(),
                    "host": "api.openai.com",
                    "method": "POST",
                    "path_template": "/v1/chat/completions",
                    "format": prompt.format,
                    "model": prompt.model,
                    "action": "block" if result.fields.get("cf.llm.prompt.pii_detected") else None,
                    "rule": "block-pii" if result.fields.get("cf.llm.prompt.pii_detected") else None,
                    "matched": [],
                    "fields": {k: v for k, v in result.fields.items() if k.startswith("cf.llm.")},
                    "timings_ms": result.timings_ms,
                    "not_scored": result.not_scored,
                    "errors": result.errors,
                    "total_ms": (time.monotonic() - start) * 1000,
                    "status": "screened",
                }
            )
        return events

    try:
        events = asyncio.run(screen_all())
        for ev in events:
            store.record_event(ev)
            metrics.observe(ev)
            store.upsert_endpoint("api.openai.com", "POST", "/v1/chat/completions", "openai.chat", ev["ts"])
        # the detections really happened (categories only), so the grep below is meaningful
        cats = {c["category"] for c in store.stats()["top_categories"]}
        assert "EMAIL_ADDRESS" in cats and any("AWS" in c for c in cats), cats
        blobs = {p.name: p.read_bytes() for p in tmp_path.glob("privacy.sqlite*")}
        assert "privacy.sqlite-wal" in blobs  # read before close: the WAL still holds the pages
    finally:
        orchestrator.close()
        for d in detectors:
            d.close()
        store.close()
    blobs.update({p.name + " (closed)": p.read_bytes() for p in tmp_path.glob("privacy.sqlite*")})
    blobs["metrics"] = metrics.render()[0]
    blobs["logs"] = "\n".join(r.getMessage() for r in caplog.records).encode()
    for name, blob in blobs.items():
        for needle in _needles():
            assert needle not in blob, f"{needle[:40]!r} found in {name}"
