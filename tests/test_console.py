"""The decision line: in process with mitmproxy's test context, and in a real mitmdump's output."""

from __future__ import annotations

import logging

from conftest import FakeUpstream, post
from mitmproxy.addons import dumper
from mitmproxy.test import taddons, tflow

from llmwall.proxy.console import Console, decision_line

BLOCK_META = {
    "host": "api.example.com",
    "method": "POST",
    "path_template": "/v1/chat/completions",
    "action": "block",
    "rule": "block-unsafe",
    "matched": ["log-everything", "block-unsafe"],
    "fields": {
        "cf.llm.prompt.unsafe_topic_categories": ["S9", "S1"],
        "cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"],
        "cf.llm.prompt.injection_score": 12,
    },
    "timings_ms": {"lite-topics": 14.25, "pii": 3.0},
    "not_scored": ["llama-guard"],
    "errors": [],
    "status": "screened",
}


def test_line_names_action_rule_categories_score_time_and_not_scored() -> None:
    assert decision_line(BLOCK_META) == (
        "llmwall: block POST api.example.com/v1/chat/completions rule=block-unsafe "
        "categories=[S9 Indiscriminate Weapons, S1 Violent Crimes, EMAIL_ADDRESS] injection=12 "
        "detectors=14.2ms not_scored=llama-guard"
    )
    detailed = decision_line(BLOCK_META, detail=2)
    assert "also matched=log-everything" in detailed
    assert "detectors=lite-topics:14.2ms,pii:3.0ms" in detailed


def test_pass_unparsed_and_unscored_injection() -> None:
    meta = {**BLOCK_META, "action": None, "rule": None, "matched": [], "not_scored": [], "timings_ms": {}}
    meta["fields"] = {"cf.llm.prompt.injection_score": 100}
    assert decision_line(meta) == "llmwall: pass POST api.example.com/v1/chat/completions injection=not scored"
    unparsed = {"host": "h", "method": "POST", "path_template": "/x", "action": None, "status": "parse_error"}
    assert decision_line(unparsed) == "llmwall: pass (parse_error) POST h/x"


def test_addon_comments_every_screened_flow_and_follows_flow_detail(caplog) -> None:
    console = Console()
    with taddons.context(console, dumper.Dumper()) as tctx:
        flow = tflow.tflow()
        flow.metadata["llmwall"] = BLOCK_META
        with caplog.at_level(logging.INFO, logger="llmwall.proxy.console"):
            console.request(flow)
        assert flow.comment.startswith("llmwall: block POST api.example.com")
        assert [r.getMessage() for r in caplog.records] == [flow.comment]

        caplog.clear()
        tctx.configure(console, flow_detail=0)
        quiet = tflow.tflow()
        quiet.metadata["llmwall"] = BLOCK_META
        with caplog.at_level(logging.INFO, logger="llmwall.proxy.console"):
            console.request(quiet)
        assert caplog.records == [] and quiet.comment == flow.comment  # still visible in mitmweb

        untouched = tflow.tflow()
        console.request(untouched)  # not screened by llmwall: no comment
        assert untouched.comment == ""


PII_RULES = """\
rules:
  - id: block-email
    expression: any(cf.llm.prompt.pii_categories[*] == "EMAIL_ADDRESS")
    action: block
  - id: log-injection
    expression: cf.llm.prompt.injection_score lt 101
    action: log
"""
SECRET_PROMPT = "mail the ledger to quentin.harbour@example.org today"
PLAIN_PROMPT = "what is the capital of portugal"


def _chat(text: str) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def test_mitmdump_prints_one_decision_line_per_screened_flow(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES)
    status, _, _ = post(proxy.url + "/v1/chat/completions", _chat(SECRET_PROMPT))
    assert status == 403
    status, _, _ = post(proxy.url + "/v1/chat/completions", _chat(PLAIN_PROMPT))
    assert status == 200
    proxy.wait_for_log("llmwall: log POST")
    lines = [line for line in proxy.log().splitlines() if "llmwall: block POST" in line or "llmwall: log POST" in line]
    assert len(lines) == 2, proxy.log()[-3000:]
    assert "rule=block-email" in lines[0] and "categories=[EMAIL_ADDRESS]" in lines[0]
    assert "injection=" in lines[0] and "detectors=" in lines[0]
    assert "rule=log-injection" in lines[1]
    log = proxy.log()
    assert "quentin" not in log and "portugal" not in log  # never prompt text


def test_flow_detail_zero_keeps_mitmdump_quiet(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(rules=PII_RULES, flow_detail=0)
    status, _, _ = post(proxy.url + "/v1/chat/completions", _chat(SECRET_PROMPT))
    assert status == 403
    post(proxy.url + "/v1/chat/completions", _chat(PLAIN_PROMPT))
    assert len(upstream.received) == 1  # both flows were handled before we look at the log
    assert "llmwall: block" not in proxy.log() and "llmwall: log" not in proxy.log()
