"""The stream screener in process, with the real PII and secrets detectors: any split of
the bytes gives the same answer; a value split across events never leaves unredacted."""

from __future__ import annotations

import json
import random
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from llmwall.detectors import pii, secrets
from llmwall.detectors.base import DetectorConfig, Prompt, ScreenRequest, TextPart
from llmwall.providers import registry
from llmwall.responses import framing
from llmwall.responses.formats import StreamReader, stream_ending
from llmwall.responses.window import BLOCK, REDACT, StreamScreener, Verdict, growable_start

sys.path.insert(0, str(Path(__file__).parent / "support"))
from streams import anthropic_events, openai_chat_events, split_at  # noqa: E402

EMAIL = "alice.liddell@example.com"
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def detectors():
    return [pii.create(DetectorConfig()), secrets.create(DetectorConfig())]


def screen_with(detectors, action_on_find: str):
    """The addon's window screen reduced to its essentials: real detectors, one rule."""
    windows: list[str] = []

    def screen(text: str, final: bool) -> Future[Verdict]:
        windows.append(text)
        request = ScreenRequest(Prompt("openai.chat", (TextPart((), text, "assistant"),)), time.monotonic() + 5)
        spans = [s for d in detectors for s in d.detect(request).spans]
        return settled(Verdict(action_on_find if spans else None, spans))

    screen.windows = windows  # type: ignore[attr-defined]
    return screen


def run(data_chunks, screen, fmt="openai.chat", holdback=256, hold_on_lag=True, deadline_s=1.0):
    reader = StreamReader(registry.BY_NAME[fmt])
    screener = StreamScreener(
        framing.SSEFramer(),
        reader,
        screen,
        lambda: stream_ending(fmt, framing.SSE, "Response blocked by llmwall (rule t)", reader, 0),
        holdback=holdback,
        context=64,
        hold_on_lag=hold_on_lag,
        fail_closed=True,
        deadline_s=deadline_s,
    )
    out = [screener(chunk) for chunk in data_chunks]
    out.append(screener(b""))
    return out, screener


def chat_text(body: bytes) -> str:
    """The content the client reads from an OpenAI chat stream."""
    text = []
    for block in body.split(b"\n\n"):
        if block.startswith(b"data: {"):
            for choice in json.loads(block[6:])["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


def test_untouched_stream_is_byte_identical_for_any_split(detectors):
    data = openai_chat_events(["Hello", " there", ", how", " can I", " help?"], usage=6)
    rng = random.Random(7)
    for _ in range(40):
        chunks = split_at(data, rng.sample(range(1, len(data)), rng.randint(1, 30)))
        out, screener = run(chunks, screen_with(detectors, REDACT))
        assert b"".join(out) == data
        assert screener.completion_tokens == 6


@pytest.mark.parametrize("value,placeholder", [(EMAIL, "<EMAIL_ADDRESS>"), (CARD, "<CREDIT_CARD>")])
def test_value_split_across_events_is_redacted_at_every_split_point(detectors, value, placeholder):
    sentence = f"Write to {value} today."
    start = sentence.index(value)
    for cut in range(start + 1, start + len(value)):
        data = openai_chat_events([sentence[:cut], sentence[cut:]])
        out, _ = run(split_at(data, [len(data) // 3]), screen_with(detectors, REDACT))
        body = b"".join(out)
        assert chat_text(body) == f"Write to {placeholder} today.", cut
        for part in value.split(" ")[:1] + [value[:6]]:
            assert part.encode() not in body, (cut, part)


def test_value_in_many_tiny_events_is_held_until_whole_then_redacted(detectors):
    sentence = f"Mail {EMAIL} now"
    data = openai_chat_events(list(sentence))  # one character per event
    out, _ = run([data[i : i + 7] for i in range(0, len(data), 7)], screen_with(detectors, REDACT))
    assert chat_text(b"".join(out)) == "Mail <EMAIL_ADDRESS> now"
    released = b""
    for piece in out:  # nothing of the address leaves before it is known to be one
        released += piece
        assert EMAIL[:3].encode() not in released


def test_only_the_event_with_the_growable_end_is_held(detectors):
    data = openai_chat_events(["Hello there, ", "friend. My ", "address is ali"])
    out, _ = run([data[: data.index(b"[DONE]")]], screen_with(detectors, REDACT))
    assert chat_text(out[0]) == "Hello there, friend. My "  # events are atomic: "address is ali" waits


def test_block_cuts_with_a_content_filter_ending_and_stops(detectors):
    key = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
    data = openai_chat_events(["Sure, the key is ", key[:20], key[20:], " and more text"])
    out, screener = run([data[:200], data[200:]], screen_with(detectors, BLOCK))
    body = b"".join(out)
    assert key[:12].encode() not in body
    assert screener.cut
    assert body.endswith(b"data: [DONE]\n\n")
    last = json.loads(body.split(b"\n\n")[-3][6:])
    assert last["choices"][0]["finish_reason"] == "content_filter"
    assert screener(b"more bytes") == b""


def test_anthropic_block_ends_with_an_error_event(detectors):
    data = anthropic_events(["Card: ", CARD[:7], CARD[7:], " ok"])
    out, screener = run([data], screen_with(detectors, BLOCK), fmt="anthropic.messages")
    body = b"".join(out)
    assert screener.cut and b"4111" not in body
    assert body.endswith(b"\n\n") and b"event: error\n" in body
    assert json.loads(body.split(b"\n\n")[-2].split(b"data: ")[1])["error"]["type"] == "permission_error"


def test_hold_back_is_bounded_on_a_run_without_spaces(detectors):
    run_text = "x" * 5000
    data = openai_chat_events([run_text[i : i + 50] for i in range(0, 5000, 50)])
    chunks = [data[i : i + 300] for i in range(0, len(data), 300)]
    out, screener = run(chunks, screen_with(detectors, REDACT), holdback=128)
    assert chat_text(b"".join(out)) == run_text
    assert screener.stats.max_held_chars <= 128 + 300


def test_lag_hold_keeps_text_back_and_cuts_when_it_persists():
    def lagging(text: str, final: bool) -> Future[Verdict]:
        return settled(Verdict(None, (), lagged=True))

    data = openai_chat_events(["one two three four five six"])
    out, screener = run([data], lagging, hold_on_lag=True)
    assert b"one two" not in b"".join(out)
    assert screener.cut and screener.stats.cut_reason == "screening lagged"


def test_lag_release_lets_text_through():
    def lagging(text: str, final: bool) -> Future[Verdict]:
        return settled(Verdict(None, (), lagged=True))

    data = openai_chat_events(["one two three four five six"])
    out, screener = run([data], lagging, hold_on_lag=False)
    assert b"".join(out) == data and not screener.cut


def test_a_window_that_never_answers_holds_until_its_deadline_then_cuts():
    never: list[Future[Verdict]] = []

    def hanging(text: str, final: bool) -> Future[Verdict]:
        never.append(Future())
        return never[-1]

    data = openai_chat_events(["one two three four five six"])
    start = time.monotonic()
    out, screener = run([data[:150], data[150:]], hanging, deadline_s=0.05)
    assert time.monotonic() - start < 1.0  # waits are bounded by the window deadlines
    assert b"three" not in b"".join(out)
    assert screener.cut and screener.stats.cut_reason == "screening lagged"


def test_a_slow_window_is_collected_on_a_later_call(detectors):
    pending: list[tuple[Future[Verdict], str]] = []

    def slow(text: str, final: bool) -> Future[Verdict]:
        pending.append((Future(), text))
        return pending[-1][0]

    reader = StreamReader(registry.BY_NAME["openai.chat"])
    screener = StreamScreener(
        framing.SSEFramer(),
        reader,
        slow,
        lambda: b"",
        holdback=256,
        context=64,
        hold_on_lag=True,
        fail_closed=True,
        deadline_s=5.0,
        wait_s=lambda: 0.001,
    )
    data = openai_chat_events(["Hello there. ", "More text. "])
    events = data.split(b"\n\n")
    first = b"\n\n".join(events[:2]) + b"\n\n"
    assert screener(first) == events[0] + b"\n\n"  # the role chunk goes; the text waits for its window
    pending[0][0].set_result(Verdict())
    out = screener(events[2] + b"\n\n")  # the next piece collects the window and releases its text
    assert chat_text(out) == "Hello there. "


def test_growable_start():
    assert growable_start("hello world") == 6
    assert growable_start("hello world ") == 12
    assert growable_start("call 555 ") == 5
    assert growable_start("card 4111 1111") == 5
    assert growable_start("x" * 100, lo=90) == 90
    assert growable_start("word0 ") == 6  # a digit inside a word starts no number
    assert growable_start("tel. +1 (555) 123") == 5


def settled(verdict: Verdict) -> Future[Verdict]:
    """A window that finished at once (the addon runs windows in a thread pool)."""
    future: Future[Verdict] = Future()
    future.set_result(verdict)
    return future
