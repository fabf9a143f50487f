"""Every streamed format through the stream screener (real detectors, real provider readers):
untouched bytes when no rule acts, a split e-mail redacted wherever it is repeated, and a cut
whose ending parses in the stream's own framing."""

from __future__ import annotations

import json
import random
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from llmwall.detectors import pii
from llmwall.detectors.base import DetectorConfig, Prompt, ScreenRequest, TextPart
from llmwall.providers import bedrock, registry
from llmwall.responses import framing
from llmwall.responses.formats import StreamReader, stream_ending
from llmwall.responses.window import BLOCK, REDACT, StreamScreener, Verdict

sys.path.insert(0, str(Path(__file__).parent / "support"))
from streams import STREAM_FORMATS, format_stream, split_at  # noqa: E402

EMAIL = "alice.liddell@example.com"


@pytest.fixture(scope="module")
def detector():
    return pii.create(DetectorConfig())


def screener_for(fmt: str, kind: str, screen, deadline_s: float = 1.0) -> StreamScreener:
    reader = StreamReader(registry.BY_NAME[fmt])
    screener: StreamScreener

    def ending() -> bytes:
        return stream_ending(fmt, kind, "Response blocked by llmwall (rule t)", reader, screener.stats.released_events)

    screener = StreamScreener(
        framing.FRAMERS[kind](),
        reader,
        screen,
        ending,
        holdback=256,
        context=64,
        hold_on_lag=True,
        fail_closed=True,
        deadline_s=deadline_s,
    )
    return screener


def pii_screen(detector, action: str | None):
    def screen(text: str, final: bool) -> Future[Verdict]:
        request = ScreenRequest(Prompt("x", (TextPart((), text, "assistant"),)), time.monotonic() + 5)
        spans = detector.detect(request).spans
        return settled(Verdict(action if spans else None, spans))

    return screen


def feed(screener: StreamScreener, chunks: list[bytes]) -> bytes:
    return b"".join(screener(chunk) for chunk in chunks) + screener(b"")


def client_text(fmt: str, kind: str, body: bytes) -> str:
    """What a client reads from the stream: every event through the provider's own reader."""
    framer = framing.FRAMERS[kind]()
    provider = registry.BY_NAME[fmt]
    text = []
    for frame in framer.feed(body) + framer.flush():
        if frame.data is None or frame.data == b"[DONE]":
            continue
        event = json.loads(frame.data)
        if kind == framing.AWS_EVENTSTREAM:
            event = {frame.event: event}
        text.append(provider.event_text(event).text)
    return "".join(text)


def _stream(name: str, pieces: list[str]) -> tuple[str, str, bytes]:
    body, ctype, path = format_stream(name, pieces)
    kind = framing.framing_for(ctype, path)
    assert kind is not None
    return ("gemini.generate" if name == "gemini.array" else name), kind, body


@pytest.mark.parametrize("name", STREAM_FORMATS)
def test_untouched_when_nothing_is_found(detector, name: str) -> None:
    fmt, kind, body = _stream(name, ["Hello ", "there, ", "how can I help?"])
    rng = random.Random(name)
    for _ in range(10):
        chunks = split_at(body, rng.sample(range(1, len(body)), min(len(body) - 1, 8)))
        assert feed(screener_for(fmt, kind, pii_screen(detector, REDACT)), chunks) == body


@pytest.mark.parametrize("name", STREAM_FORMATS)
def test_split_email_is_redacted_everywhere_the_stream_carries_it(detector, name: str) -> None:
    sentence = f"Write to {EMAIL} today."
    cut = sentence.index("@") + 2
    fmt, kind, body = _stream(name, ["Hi. ", sentence[:cut], sentence[cut:]])
    out = feed(screener_for(fmt, kind, pii_screen(detector, REDACT)), split_at(body, [len(body) // 2]))
    assert b"liddell" not in out  # nor in recaps (Responses' done events, TGI's generated_text)
    assert client_text(fmt, kind, out) == "Hi. Write to <EMAIL_ADDRESS> today."


@pytest.mark.parametrize("name", STREAM_FORMATS)
def test_cut_ending_parses_in_the_streams_framing(detector, name: str) -> None:
    fmt, kind, body = _stream(name, ["Fine. ", f"Mail {EMAIL[:9]}", f"{EMAIL[9:]} now. ", "Bye."])
    screener = screener_for(fmt, kind, pii_screen(detector, BLOCK))
    framer = framing.FRAMERS[kind]()
    out = feed(screener, [f.raw for f in framer.feed(body) + framer.flush()])  # as flushed, event by event
    assert screener.cut and b"liddell" not in out
    # OpenAI Chat carries the reason as the refusal, which clients show as text
    assert client_text(fmt, kind, out) in ("Fine. ", "Fine. Response blocked by llmwall (rule t)")
    if kind == framing.JSON_ARRAY:
        assert json.loads(out)[-1]["candidates"][0]["finishReason"] == "SAFETY"
        return
    frames = framing.FRAMERS[kind]().feed(out)
    assert b"".join(f.raw for f in frames) == out  # every event complete
    last = [f for f in frames if f.data and f.data != b"[DONE]"][-1]
    assert b"llmwall" in last.data and json.loads(last.data)


def _aws(event_type: str, payload: dict) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return framing.aws_message(headers, json.dumps(payload).encode())


def test_bedrock_event_stream_is_screened_and_rewritten_with_valid_checksums(detector) -> None:
    sentence = f"Write to {EMAIL} today."
    cut = sentence.index("@") + 2
    body = _aws("messageStart", {"role": "assistant"})
    for piece in ("Hi. ", sentence[:cut], sentence[cut:]):
        body += _aws("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}, "p": "abc"})
    body += _aws("messageStop", {"stopReason": "end_turn"})
    kind = framing.framing_for("application/vnd.amazon.eventstream", "/model/x/converse-stream")
    assert kind == framing.AWS_EVENTSTREAM
    plain = feed(screener_for("bedrock.converse", kind, pii_screen(detector, None)), split_at(body, [5, 77, 200]))
    assert plain == body
    out = feed(screener_for("bedrock.converse", kind, pii_screen(detector, REDACT)), split_at(body, [5, 77, 200]))
    events = list(bedrock.aws_events(out))  # the provider's own decoder checks both CRCs
    assert len(events) == 5
    text = "".join(registry.BY_NAME["bedrock.converse"].event_text(e).text for e in events)
    assert text == "Hi. Write to <EMAIL_ADDRESS> today." and b"liddell" not in out


def settled(verdict: Verdict) -> Future[Verdict]:
    """A window that finished at once (the addon runs windows in a thread pool)."""
    future: Future[Verdict] = Future()
    future.set_result(verdict)
    return future
