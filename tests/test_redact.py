"""redact_body: only the targeted string literals change, every other byte survives."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmwall.detectors.base import PART_SEPARATOR, Prompt, Span, TextPart
from llmwall.proxy.redact import RedactError, locate_string, redact_body


def _prompt(*parts: tuple[tuple[str | int, ...], str], fmt: str = "openai.chat") -> Prompt:
    return Prompt(format=fmt, parts=tuple(TextPart(path=p, text=t) for p, t in parts))


def _span(prompt: Prompt, needle: str, category: str, occurrence: int = 0) -> Span:
    """Span of the n-th occurrence of ``needle`` in ``prompt.text``."""
    start = -1
    for _ in range(occurrence + 1):
        start = prompt.text.index(needle, start + 1)
    return Span(start, start + len(needle), category)


def _outside(raw: bytes, new: bytes, start: int, end: int, new_end: int) -> None:
    """Bytes before ``start`` and after the literal are identical."""
    assert new[:start] == raw[:start]
    assert new[new_end:] == raw[end:]


# An OpenAI chat body as a client might send it: odd indentation, CRLF, escapes in
# other strings, a number spelled with an exponent, unicode escapes in the prompt.
OPENAI_RAW = (
    b'{\r\n  "model" :"gpt-4o-mini",  "temperature":1.0E0,\n'
    b'\t"messages":[ {"role":"system","content":"You are \\"helpful\\".\\nBe brief."} ,\n'
    b'    {"role": "user",   "content": "Caf\\u00e9 order: mail jane.doe@example.com\\nor call +1 415-555-2671"}\n'
    b'  ],"stream":false , "user":"u-jane.doe@example.com" }\r\n'
)


def test_openai_body_only_the_user_literal_changes() -> None:
    data = json.loads(OPENAI_RAW)
    user = data["messages"][1]["content"]
    prompt = _prompt(
        (("messages", 0, "content"), data["messages"][0]["content"]),
        (("messages", 1, "content"), user),
    )
    spans = [_span(prompt, "jane.doe@example.com", "EMAIL_ADDRESS"), _span(prompt, "+1 415-555-2671", "PHONE_NUMBER")]
    new, cats = redact_body(OPENAI_RAW, prompt, spans)

    assert cats == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
    start, end = locate_string(OPENAI_RAW, ("messages", 1, "content"))
    new_end = len(new) - (len(OPENAI_RAW) - end)
    _outside(OPENAI_RAW, new, start, end, new_end)
    # the original literal was ASCII with \u escapes; the replacement keeps that style
    assert new[start:new_end] == b'"Caf\\u00e9 order: mail <EMAIL_ADDRESS>\\nor call <PHONE_NUMBER>"'
    out = json.loads(new)
    assert out["messages"][1]["content"] == "Café order: mail <EMAIL_ADDRESS>\nor call <PHONE_NUMBER>"
    # the same address elsewhere (not a screened part) is untouched
    assert out["user"] == "u-jane.doe@example.com"
    assert b"jane.doe@example.com" not in new[start:new_end]


ANTHROPIC_RAW = (
    '{"model":"claude-3-5-sonnet-latest","max_tokens":1024,\n'
    ' "system":[{"type":"text","text":"Système: réponds en français"}],\n'
    ' "messages":[{"role":"user","content":[\n'
    '    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},\n'
    '    {"type":"text",  "text":"Mon IBAN est FR14 2004 1010 0505 0001 3M02 606, merci\\t!"}\n'
    " ]}]}"
).encode()


def test_anthropic_body_raw_utf8_and_content_length() -> None:
    data = json.loads(ANTHROPIC_RAW)
    text = data["messages"][0]["content"][1]["text"]
    prompt = _prompt(
        (("system", 0, "text"), data["system"][0]["text"]),
        (("messages", 0, "content", 1, "text"), text),
        fmt="anthropic.messages",
    )
    spans = [_span(prompt, "FR14 2004 1010 0505 0001 3M02 606", "IBAN_CODE")]
    new, cats = redact_body(ANTHROPIC_RAW, prompt, spans)

    assert cats == ["IBAN_CODE"]
    expected = ANTHROPIC_RAW.replace(b"FR14 2004 1010 0505 0001 3M02 606", b"<IBAN_CODE>")
    assert new == expected
    assert len(new) == len(ANTHROPIC_RAW) - len(b"FR14 2004 1010 0505 0001 3M02 606") + len(b"<IBAN_CODE>")
    # non-ASCII in an untouched part stays raw UTF-8
    assert "Système".encode() in new


def test_span_crossing_a_part_separator_is_cut_per_part() -> None:
    raw = b'{"messages":[{"role":"user","content":"name: Jane"},{"role":"user","content":"Doe lives here"}]}'
    prompt = _prompt((("messages", 0, "content"), "name: Jane"), (("messages", 1, "content"), "Doe lives here"))
    start = prompt.text.index("Jane")
    end = start + len("Jane") + len(PART_SEPARATOR) + len("Doe")
    new, cats = redact_body(raw, prompt, [Span(start, end, "PERSON")])
    out = json.loads(new)
    assert out["messages"][0]["content"] == "name: <PERSON>"
    assert out["messages"][1]["content"] == "<PERSON> lives here"
    assert cats == ["PERSON"]


def test_overlapping_spans_become_one_placeholder_named_after_the_longest() -> None:
    raw = b'{"prompt":"card 4111 1111 1111 1111 ok"}'
    prompt = _prompt((("prompt",), "card 4111 1111 1111 1111 ok"), fmt="openai.completions")
    spans = [_span(prompt, "4111 1111 1111 1111", "CREDIT_CARD"), _span(prompt, "1111 1111", "US_BANK_NUMBER")]
    new, cats = redact_body(raw, prompt, spans)
    assert new == b'{"prompt":"card <CREDIT_CARD> ok"}'
    assert cats == ["CREDIT_CARD", "US_BANK_NUMBER"]


def test_category_filter_and_nothing_to_do() -> None:
    raw = b'{"prompt":"a@example.com 10.1.2.3"}'
    prompt = _prompt((("prompt",), "a@example.com 10.1.2.3"))
    spans = [_span(prompt, "a@example.com", "EMAIL_ADDRESS"), _span(prompt, "10.1.2.3", "IP_ADDRESS")]
    new, cats = redact_body(raw, prompt, spans, categories={"IP_ADDRESS"})
    assert new == b'{"prompt":"a@example.com <IP_ADDRESS>"}'
    assert cats == ["IP_ADDRESS"]
    same, none = redact_body(raw, prompt, spans, categories={"US_SSN"})
    assert same is raw and none == []
    assert redact_body(raw, prompt, []) == (raw, [])


def test_escaped_quotes_and_keys_written_with_escapes() -> None:
    raw = b'{"\\u006dessages":[{"content":"He said \\"mail me at x@example.org\\" \\/ ok"}]}'
    prompt = _prompt((("messages", 0, "content"), 'He said "mail me at x@example.org" / ok'))
    new, _ = redact_body(raw, prompt, [_span(prompt, "x@example.org", "EMAIL_ADDRESS")])
    assert new == b'{"\\u006dessages":[{"content":"He said \\"mail me at <EMAIL_ADDRESS>\\" / ok"}]}'


def test_text_that_differs_from_the_body_raises() -> None:
    raw = b'{"prompt":"hello a@example.com"}'
    prompt = _prompt((("prompt",), "hello b@example.com"))
    with pytest.raises(RedactError, match="differs"):
        redact_body(raw, prompt, [_span(prompt, "b@example.com", "EMAIL_ADDRESS")])


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        (b'{"messages":[{"content":"x"}]}', ("messages", 1, "content"), "not found"),
        (b'{"messages":[]}', ("messages", 0, "content"), "not found"),
        (b'{"messages":{"content":"x"}}', ("messages", 0, "content"), "not an array"),
        (b'{"prompt":["x"]}', ("prompt",), "not a string"),
        (b'{"prompt":"x","prompt":"y"}', ("prompt",), "duplicate key"),
        (b'{"prompt":"x"', ("prompt",), "malformed"),
        (b'{"prompt":"x', ("prompt",), "unterminated"),
        (b'[{"prompt":"x"}]', ("prompt",), "not an object"),
        (b"{}", ("prompt",), "not found"),
    ],
)
def test_bad_paths_and_bodies_raise_clear_errors(raw: bytes, path: tuple, message: str) -> None:
    prompt = _prompt((path, "x"))
    with pytest.raises(RedactError, match=message):
        redact_body(raw, prompt, [Span(0, 1, "PERSON")])


def test_bom_and_nested_containers_are_skipped() -> None:
    raw = (
        b'\xef\xbb\xbf {"tools":[{"a":[1,{"b":"]}\\""}]}], "meta":{"x":[[],{}]},'
        b' "messages":[null, true, -1.5e3, {"content":"ssn 536-90-4399"}]}'
    )
    prompt = _prompt((("messages", 3, "content"), "ssn 536-90-4399"))
    new, _ = redact_body(raw, prompt, [_span(prompt, "536-90-4399", "US_SSN")])
    assert new == raw.replace(b"536-90-4399", b"<US_SSN>")


def test_lone_surrogate_text_is_written_escaped() -> None:
    raw = b'{"prompt":"\\ud800 x@example.com \xc3\xa9"}'
    text = json.loads(raw)["prompt"]
    prompt = _prompt((("prompt",), text))
    new, _ = redact_body(raw, prompt, [_span(prompt, "x@example.com", "EMAIL_ADDRESS")])
    assert json.loads(new)["prompt"] == "\ud800 <EMAIL_ADDRESS> é"


_json_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    before=_json_text,
    secret=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
    after=_json_text,
    other=_json_text,
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 0, 2, "\t"]),
)
def test_property_only_the_span_changes(before, secret, after, other, ascii_only, indent) -> None:
    """Any text, any JSON spelling: decoding the result equals the expected redaction,
    and the bytes outside the literal are untouched."""
    body = {"model": "m", "other": other, "messages": [{"role": "user", "content": before + secret + after}]}
    raw = json.dumps(body, ensure_ascii=ascii_only, indent=indent).encode("utf-8")
    prompt = _prompt((("messages", 0, "content"), before + secret + after))
    span = Span(len(before), len(before) + len(secret), "PERSON")
    new, cats = redact_body(raw, prompt, [span])
    assert cats == ["PERSON"]
    out = json.loads(new)
    assert out["messages"][0]["content"] == before + "<PERSON>" + after
    assert out["other"] == other
    start, end = locate_string(raw, ("messages", 0, "content"))
    _outside(raw, new, start, end, len(new) - (len(raw) - end))


def test_detect_then_redact_real_bodies() -> None:
    """extraction.extract -> PII and secrets detectors -> redact_body, on provider bodies."""
    import time

    from llmwall.detectors import pii, secrets
    from llmwall.detectors.base import DetectorConfig, ScreenRequest
    from llmwall.providers.extraction import extract

    key = "AKIA" + "7QK2M4XR9TZB3WPA"
    bodies = {
        "openai.chat": OPENAI_RAW,
        "anthropic.messages": ANTHROPIC_RAW.replace(b"merci", b"cl\\u00e9 " + key.encode()),
    }
    detectors = [pii.create(DetectorConfig()), secrets.create(DetectorConfig())]
    for fmt, raw in bodies.items():
        prompt = extract(fmt, json.loads(raw))
        request = ScreenRequest(prompt=prompt, deadline=time.monotonic() + 30)
        spans = [s for d in detectors for s in d.detect(request).spans]
        new, cats = redact_body(raw, prompt, spans)
        assert cats, fmt
        for part in prompt.parts:
            start, end = locate_string(raw, part.path)
            new_end = len(new) - (len(raw) - end)
            _outside(raw, new, start, end, new_end)
            after = json.loads(new[start:new_end])
            for s in spans:
                assert prompt.text[s.start : s.end] not in after
    assert cats == ["AWS_ACCESS_KEY", "IBAN_CODE"]


_PLACEHOLDER_RE = re.compile(r"<[A-Z_]+>")


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<>"), max_size=30),
        min_size=1,
        max_size=4,
    ),
    raw_spans=st.lists(
        st.tuples(st.integers(0, 140), st.integers(0, 40), st.sampled_from(["PERSON", "US_SSN"])), max_size=6
    ),
    ascii_only=st.booleans(),
)
def test_property_multi_part_spans(texts, raw_spans, ascii_only) -> None:
    """Arbitrary spans over several parts, crossing separators and overlapping: each part
    becomes its text with exactly the covered characters replaced by placeholders."""
    body = {"messages": [{"role": "user", "content": t} for t in texts], "n": 1}
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    prompt = _prompt(*((("messages", i, "content"), t) for i, t in enumerate(texts)))
    total = len(prompt.text)
    spans = [Span(min(s, total), min(s + n, total), c) for s, n, c in raw_spans]
    new, cats = redact_body(raw, prompt, spans)
    out = json.loads(new)
    assert out["n"] == 1 and len(out["messages"]) == len(texts)
    covered_cats: set[str] = set()
    for i, ((lo, hi), t) in enumerate(zip(prompt.part_offsets(), texts, strict=False)):
        covered = [False] * len(t)
        for s in spans:
            for k in range(max(s.start, lo), min(s.end, hi)):
                covered[k - lo] = True
                covered_cats.add(s.category)
        kept = "".join(ch for ch, c in zip(t, covered, strict=False) if not c)
        got = out["messages"][i]["content"]
        assert _PLACEHOLDER_RE.sub("", got) == kept
        assert (got == t) == (not any(covered))
    assert cats == sorted(covered_cats)
