"""Nothing sensitive reaches disk or logs: the SQLite files and mitmdump's output are grepped."""

from __future__ import annotations

import json
import time

from conftest import FakeUpstream, post

RULES = """\
rules:
  - id: log-pii
    expression: cf.llm.prompt.pii_detected
    action: log
  - id: block-secrets
    expression: cf.llm.prompt.secret_detected
    action: block
  - id: log-unsafe
    expression: cf.llm.prompt.unsafe_topic_detected
    action: log
  - id: log-injection
    expression: cf.llm.prompt.injection_score lt 50
    action: log
"""

SECRETS = {
    "email": "margaret.hamilton@apollo-guidance.com",
    "card": "4539 1488 0343 6467",
    "ssn": "536-90-4399",
    "iban": "DE89 3704 0044 0532 0130 00",
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "phrase": "purple elephants dance at midnight in zurich",
}
PROMPTS = [
    f"Write a polite reminder to {SECRETS['email']} that {SECRETS['phrase']}",
    f"My card {SECRETS['card']} was charged twice, and my SSN {SECRETS['ssn']} is on file",
    f"Transfer the refund to IBAN {SECRETS['iban']} please",
    f"Why does boto3 reject my key {SECRETS['aws_key']} with secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
]
HEADER_TOKEN = "sk-live-credential-in-a-header-7f3a9b"


def test_database_and_logs_hold_no_prompt_text_pii_or_credentials(start_proxy, upstream: FakeUpstream) -> None:
    # Debug logging, default flow detail (mitmdump prints bodies only when asked with flow_detail >= 3).
    proxy = start_proxy(rules=RULES, termlog_verbosity="debug")
    for prompt in PROMPTS:
        post(
            proxy.url + "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
            {"authorization": f"Bearer {HEADER_TOKEN}"},
        )
    end = time.monotonic() + 10
    while time.monotonic() < end:  # wait until every event is in the database
        from llmwall.analytics.store import Store

        store = Store(proxy.db_path)
        n = len(store.events(limit=100))
        store.close()
        if n >= len(PROMPTS):
            break
        time.sleep(0.2)
    assert n == len(PROMPTS)
    proxy.process.terminate()
    proxy.process.wait(timeout=30)
    files = sorted(proxy.db_path.parent.glob(proxy.db_path.name + "*"))
    assert files, "no database written"
    blobs = {f.name: f.read_bytes() for f in files}
    log = proxy.log()
    assert "llmwall" in log and "/v1/chat/completions" in log  # the log is the real one
    for name, value in {**SECRETS, "header": HEADER_TOKEN}.items():
        for fname, blob in blobs.items():
            assert value.encode() not in blob, f"{name} found in {fname}"
            assert value.replace(" ", "").encode() not in blob, f"{name} found in {fname}"
        assert value not in log, f"{name} found in the proxy's log"
    for prompt in PROMPTS:
        words = prompt.split()[:4]
        assert " ".join(words).encode() not in b"".join(blobs.values())
    # The events still say what was found.
    from llmwall.analytics.store import Store

    store = Store(proxy.db_path)
    found = {c for e in store.events(limit=100) for c in e["fields"].get("cf.llm.prompt.pii_categories", [])}
    store.close()
    assert {"EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "IBAN_CODE"} <= found, found
    assert json.dumps(sorted(found))  # categories only, no values
