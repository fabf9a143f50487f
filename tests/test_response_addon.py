"""The response addon in process (mitmproxy's taddons): options, and which flows stream."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from llmwall.analytics.addon import Analytics
from llmwall.proxy.addon import LLMWall
from llmwall.responses.addon import ResponseScreen

RULES = """\
rules:
  - id: redact-answer-pii
    expression: cf.llm.response.pii_detected
    action: redact
"""


@pytest.mark.parametrize(
    "option,value",
    [
        ("llmwall_response_on_lag", "maybe"),
        ("llmwall_response_holdback", -1),
        ("llmwall_response_deadline_ms", 0),
        ("llmwall_response_context", 100_000),
    ],
)
def test_bad_options_are_refused(option: str, value: object) -> None:
    screen = ResponseScreen(LLMWall(), Analytics())
    with taddons.context(screen) as tctx:
        with pytest.raises(exceptions.OptionsError, match=option):
            tctx.configure(screen, **{option: value})


def _flow(ctype: str, screened: bool = True):
    flow = tflow.tflow(resp=True)
    flow.request.path = "/v1/chat/completions"
    flow.response.headers["content-type"] = ctype
    if screened:
        flow.metadata["llmwall"] = {"status": "screened", "format": "openai.chat", "action": None, "fields": {}}
    return flow


def test_only_screened_llm_streams_are_streamed(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    wall, analytics = LLMWall(), Analytics()
    screen = ResponseScreen(wall, analytics)
    with taddons.context(wall, screen, analytics) as tctx:
        tctx.configure(wall, llmwall_rules=str(rules), llmwall_models=str(tmp_path / "none"), llmwall_workers=2)
        tctx.configure(analytics, llmwall_db="")
        plain = _flow("text/event-stream", screened=False)
        screen.responseheaders(plain)
        assert not plain.response.stream  # not LLM traffic: mitmproxy's default (buffered)
        whole = _flow("application/json")
        screen.responseheaders(whole)
        assert not whole.response.stream  # a whole answer is screened in the response hook
        sse = _flow("text/event-stream")
        screen.responseheaders(sse)
        assert callable(sse.response.stream)
        event = b'data: {"choices":[{"index":0,"delta":{"content":"Hello there "}}]}\n\n'
        assert sse.response.stream(event[:10]) == []  # an incomplete event is never sent as b""
        assert sse.response.stream(event[10:]) == [event]
        assert sse.response.stream(b"") == []
        screen.error(sse)  # the stream's state is dropped
        assert screen._streams == {}


def test_store_keeps_response_summaries_and_refuses_text(tmp_path: Path) -> None:
    from llmwall.analytics.store import Store

    store = Store(tmp_path / "events.sqlite")
    event = {
        "ts": 1.0,
        "host": "api.openai.com",
        "path_template": "/v1/chat/completions",
        "format": "openai.chat",
        "action": "redact",
        "status": "response",
        "fields": {"cf.llm.response.pii_detected": True, "cf.llm.response.pii_categories": ["EMAIL_ADDRESS"]},
        "redacted": ["EMAIL_ADDRESS"],
        "response": {"end": "complete", "events": 12, "windows": 9},
    }
    try:
        stored = store.event(store.record_event(event))
        assert stored is not None and stored["response"] == {"end": "complete", "events": 12, "windows": 9}
        totals = store.stats()["totals"]
        assert totals["responses"] == 1 and totals["responses_acted"] == 1 and totals["unparsed"] == 0
        assert store.events(category="response_pii:EMAIL_ADDRESS")
        for bad in ({"end": "alice@example.com wrote this"}, {"text": "hello"}, {"events": "12 words"}):
            with pytest.raises(ValueError):
                store.record_event({**event, "response": bad})
    finally:
        store.close()
