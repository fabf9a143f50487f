"""Discovery: body parsing and its bad inputs, format classification, response confirmation, paths."""

from __future__ import annotations

import codecs
import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from provider_samples import ALL_SAMPLES, NON_LLM, SAMPLES, aws_event, slots

from llmwall.providers.discovery import (
    FORMATS,
    PARSE_ERRORS,
    SUSPICIOUS,
    ParsedBody,
    classify,
    confirm_response,
    confirm_stream,
    parse_body,
    path_hints,
    path_template,
)

JSON = "application/json"


# --------------------------------------------------------------------------- samples


def test_every_format_has_a_sample() -> None:
    assert set(SAMPLES) == set(FORMATS)
    assert all(s.format == fmt for fmt, s in SAMPLES.items())


@pytest.mark.parametrize("name", sorted(ALL_SAMPLES))
def test_sample_is_classified_from_raw_bytes(name: str) -> None:
    sample = ALL_SAMPLES[name]
    parsed = parse_body(sample.raw(), JSON)
    assert parsed.error is None
    assert classify(sample.method, sample.path, parsed.data) == sample.format


@pytest.mark.parametrize(
    "ctype",
    [
        None,
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ],
)
@pytest.mark.parametrize("name", ["openai.chat", "anthropic.messages", "gemini.generate"])
def test_wrong_or_missing_content_type_is_sniffed(name: str, ctype: str | None) -> None:
    sample = SAMPLES[name]
    parsed = parse_body(b"\r\n  " + sample.raw(), ctype)
    assert parsed == ParsedBody(sample.body, None)
    assert classify("POST", sample.path, parsed.data) == name


@pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS", "HEAD"])
def test_only_post_put_and_patch_bodies_qualify(method: str) -> None:
    sample = SAMPLES["openai.chat"]
    assert classify(method, sample.path, sample.body) is None
    assert classify("put", sample.path, sample.body) == "openai.chat"


# Samples whose bodies fit several chat formats: only the path tells them apart, and on
# a neutral path they fall back to openai.chat (the same text is extracted either way).
PATH_DEPENDENT = {"ollama.chat", "cohere.chat"}  # ALL_SAMPLES keys


@pytest.mark.parametrize("name", sorted(ALL_SAMPLES))
@pytest.mark.parametrize("path", ["/", "/proxy/llm", "/internal/v3/do-the-thing?x=1"])
def test_body_decides_on_any_path(name: str, path: str) -> None:
    sample = ALL_SAMPLES[name]
    expected = "openai.chat" if name in PATH_DEPENDENT else sample.format
    assert classify("POST", path, sample.body) == expected


def _parts_variant(body: dict, key: str, part: dict) -> dict:
    out = copy.deepcopy(body)
    for msg in out[key]:
        if isinstance(msg.get("content"), str):
            msg["content"] = [{**part, "text": msg["content"]}]
    return out


@pytest.mark.parametrize("name", ["openai.chat", "anthropic.messages", "cohere.chat"])
def test_content_as_parts_list(name: str) -> None:
    sample = SAMPLES[name]
    body = _parts_variant(sample.body, "messages", {"type": "text"})
    assert classify("POST", sample.path, body) == name


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("stream", [True, False])
def test_stream_flag_does_not_change_format(name: str, stream: bool) -> None:
    sample = SAMPLES[name]
    assert classify("POST", sample.path, {**sample.body, "stream": stream}) == name


TIE_BREAKS = [
    # (path, body, expected) -- bodies that fit several formats, decided by the path
    ("/api/generate", {"model": "llama3", "prompt": "hi"}, "ollama.generate"),
    ("/v1/completions", {"model": "llama3", "prompt": "hi"}, "openai.completions"),
    ("/whatever", {"model": "llama3", "prompt": "hi"}, "openai.completions"),
    ("/whatever", {"model": "llama3", "prompt": "hi", "keep_alive": "5m"}, "ollama.generate"),
    ("/api/generate", {"model": "llama3", "prompt": "hi", "max_tokens": 5, "n": 2}, "openai.completions"),
    ("/v1/completions", {"model": "m", "prompt": [1, 2, 3]}, "openai.completions"),
    ("/completion", {"prompt": "Building a website can be", "n_predict": 128}, "openai.completions"),
    ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "ollama.chat"),
    ("/v2/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "cohere.chat"),
    ("/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "anthropic.messages"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "openai.chat"),
    ("/x", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "openai.chat"),
    # the body wins over a misleading path
    (
        "/v1/chat/completions",
        {"model": "m", "system": "be nice", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
        "anthropic.messages",
    ),
    (
        "/api/chat",
        {"model": "m", "messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "hi"}]},
        "openai.chat",
    ),
    (
        "/v1/messages",
        {"model": "m", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]},
        "openai.chat",
    ),
    ("/v2/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "documents": ["d"]}, "cohere.chat"),
    # keys both accept: the path decides
    (
        "/v2/chat",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "seed": 1,
            "response_format": {"type": "json_object"},
            "frequency_penalty": 0.1,
        },
        "cohere.chat",
    ),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1}, "openai.chat"),
    (
        "/v2/chat",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop_sequences": ["x"]},
        "cohere.chat",
    ),
    (
        "/v1/messages",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop_sequences": ["x"]},
        "anthropic.messages",
    ),
    ("/x", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "options": {"num_ctx": 8}}, "ollama.chat"),
    ("/x", {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "bedrock.converse"),
    ("/model/m/converse", {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "bedrock.converse"),
    (
        "/x",
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
                    ],
                }
            ],
        },
        "anthropic.messages",
    ),
    (
        "/x",
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
        },
        "openai.chat",
    ),
    ("/x", {"model": "m", "messages": [{"role": "user", "content": "hi", "images": ["AA=="]}]}, "ollama.chat"),
    ("/v1/responses", {"model": "gpt-4.1", "input": "hi"}, "openai.responses"),
    ("/x", {"model": "gpt-4.1", "input": "hi", "instructions": "be brief"}, "openai.responses"),
    ("/x", {"model": "gpt-4.1", "input": [{"role": "user", "content": "hi"}]}, "openai.responses"),
    (
        "/x",
        {"input": [{"type": "function_call_output", "call_id": "c", "output": "42"}], "previous_response_id": "resp_1"},
        "openai.responses",
    ),
    ("/client/v4/accounts/0123/ai/run/@cf/meta/llama-3.1-8b-instruct", {"prompt": "hi"}, "openai.completions"),
    (
        "/client/v4/accounts/0123/ai/run/@cf/meta/llama-3.1-8b-instruct",
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
        "openai.chat",
    ),
    (
        "/v1/projects/p/locations/l/publishers/anthropic/models/claude-3-haiku@20240307:rawPredict",
        {"anthropic_version": "vertex-2023-10-16", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
        "anthropic.messages",
    ),
    (
        "/embedded-assistant/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        "openai.chat",
    ),
    ("/classifyer/v1/completions", {"model": "m", "prompt": "hi"}, "openai.completions"),
    # decoy keys and dot-segments cannot hide a real body
    (
        "/v1/chat/completions",
        {"contents": 1, "prompt": {}, "messages": [{"role": "user", "content": "hi"}]},
        "openai.chat",
    ),
    ("/x", {"messages": "decoy", "contents": [{"parts": [{"text": "hi"}]}]}, "gemini.generate"),
    ("/x", {"input": 3, "inputs": {}, "prompt": "hi", "model": "m"}, "openai.completions"),
    (
        "/v1/embeddings/../chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        "openai.chat",
    ),
    ("/v1/embeddings/../completions", {"model": "m", "prompt": "hi"}, "openai.completions"),
    ("/v1/%63hat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "openai.chat"),
    ("/V1/Messages", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "anthropic.messages"),
    ("/generate", {"inputs": "hi"}, "tgi.generate"),
    ("/", {"inputs": "hi"}, "tgi.generate"),
    ("/x", {"inputs": "hi", "parameters": {"max_new_tokens": 3}}, "tgi.generate"),
    ("/x", {"contents": [{"parts": [{"text": "hi"}]}]}, "gemini.generate"),
    (
        "/x",
        {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]},
        "gemini.generate",
    ),
]


@pytest.mark.parametrize(("path", "body", "expected"), TIE_BREAKS)
def test_tie_breaks(path: str, body: dict, expected: str) -> None:
    assert classify("POST", path, body) == expected


@pytest.mark.parametrize(("method", "path", "body"), NON_LLM)
def test_ordinary_json_apis_are_not_llm(method: str, path: str, body: dict) -> None:
    raw = json.dumps(body).encode()
    parsed = parse_body(raw, JSON)
    assert parsed.error is None
    assert classify(method, path, parsed.data) is None


def test_non_llm_corpus_is_big_enough() -> None:
    assert len(NON_LLM) >= 15


NEAR_MISSES = [
    ("/x", {"messages": []}),
    ("/x", {"messages": "hello"}),
    ("/x", {"messages": [{"role": "system", "content": [{"text": "bedrock has no system role"}]}]}),
    ("/x", {"contents": []}),
    ("/x", {"contents": [{"parts": "text"}]}),
    ("/x", {"contents": [{"role": "admin", "parts": []}]}),
    ("/x", {"prompt": "Enter PIN"}),
    ("/x", {"prompt": {"text": "x"}, "model": "m"}),
    ("/x", {"prompt": [], "model": "m"}),
    ("/x", {"prompt": [{"a": 1}], "model": "m"}),
    ("/v1/images/edits", {"model": "gpt-image-1", "prompt": "add a hat"}),
    ("/x", {"model": "m", "input": "hi"}),
    ("/x", {"model": "m", "input": ["a", "b"]}),
    ("/x", {"model": "m", "input": [{"type": "text", "text": "moderate me"}]}),
    ("/x", {"inputs": {"image": "AA=="}}),
    ("/x", {"inputs": "hi", "labels": ["a"]}),
    ("/v1beta/models/gemini-pro:countTokens", {"contents": [{"parts": [{"text": "hi"}]}]}),
    ("/v1/messages/count_tokens", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/embed", {"model": "nomic-embed-text", "input": "hi"}),
    ("/v1/audio/transcriptions", {"model": "whisper-1", "prompt": "names: Ada"}),
    ("/v2/rerank", {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
    ("/x", ["not", "a", "dict"]),
]


@pytest.mark.parametrize(("path", "body"), NEAR_MISSES)
def test_near_misses_are_not_llm(path: str, body: object) -> None:
    assert classify("POST", path, body) is None


# Former near misses that lenient servers still answer: junk beside a real prompt must not
# hide it (issue 12, row 7), so these are recognised.
JUNK_AROUND_A_PROMPT = [
    ("/x", {"messages": [{"role": "user", "content": "hi"}, {"text": "no role"}]}),
    ("/x", {"messages": [{"role": "user", "content": "hi"}, None, {"role": "x"}]}),
    ("/x", {"messages": [{"role": "USER", "content": "hi"}]}),
    ("/x", {"messages": [{"role": "user", "content": 42}, {"role": "user", "content": "hi"}]}),
    ("/x", {"messages": [{"role": "user", "content": ["plain", "strings"]}]}),
    ("/x", {"model": "sdxl", "prompt": "a cat", "negative_prompt": "blurry"}),
    ("/x", {"model": "m", "prompt": "a cat", "size": "1024x1024", "voice": "alloy"}),
]


@pytest.mark.parametrize(("path", "body"), JUNK_AROUND_A_PROMPT)
def test_junk_around_a_real_prompt_does_not_hide_it(path: str, body: object) -> None:
    assert classify("POST", path, body) is not None


def test_huge_message_list_is_classified_by_sampling() -> None:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(100_000)]
    raw = json.dumps({"model": "m", "messages": messages}).encode()
    parsed = parse_body(raw, JSON)
    assert parsed.error is None
    assert classify("POST", "/v1/chat/completions", parsed.data) == "openai.chat"


# --------------------------------------------------------------------------- responses


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@pytest.mark.parametrize("origin", sorted(SAMPLES))
def test_response_confirms_only_its_own_format(fmt: str, origin: str) -> None:
    assert confirm_response(fmt, SAMPLES[origin].response) == (fmt == origin)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@pytest.mark.parametrize("origin", sorted(SAMPLES))
def test_stream_start_confirms_only_its_own_format(fmt: str, origin: str) -> None:
    assert confirm_stream(fmt, SAMPLES[origin].stream_start) == (fmt == origin)


@pytest.mark.parametrize("name", sorted(ALL_SAMPLES))
def test_extra_samples_confirm(name: str) -> None:
    sample = ALL_SAMPLES[name]
    assert confirm_response(sample.format, sample.response)
    if sample.stream_start:
        assert confirm_stream(sample.format, sample.stream_start)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize(
    "data",
    [
        {"error": {"message": "Invalid API key", "type": "invalid_request_error"}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        {"ok": True},
        [],
        [1],
        "text",
        None,
        42,
    ],
)
def test_errors_and_other_json_do_not_confirm(fmt: str, data: object) -> None:
    assert not confirm_response(fmt, data)


def test_confirm_stream_details() -> None:
    first = SAMPLES["anthropic.messages"].stream_start
    assert confirm_stream("anthropic.messages", first + b'event: ping\ndata: {"type": "ping"}\n\n')
    assert confirm_stream("openai.chat", b": keep-alive comment\n\n" + SAMPLES["openai.chat"].stream_start)
    # Gemini without alt=sse streams one JSON array, possibly cut mid-way
    assert confirm_stream("gemini.generate", b'[{"candidates": [{"content": {"parts": [{"text": "a"}]}}]}\n,\r\n{"cand')
    assert not confirm_stream("gemini.generate", b'[{"candidates": [{"content": {"par')
    assert not confirm_stream("openai.chat", b"data: [DONE]\n\n")
    assert not confirm_stream("openai.chat", b"")
    assert not confirm_stream("openai.chat", b"\xff\xfe garbage")
    assert not confirm_stream("bedrock.converse", aws_event("messageStart", {})[:15])
    assert confirm_stream("bedrock.converse", aws_event("contentBlockDelta", {"delta": {"text": "x"}}))
    assert not confirm_stream("bedrock.converse", aws_event("somethingElse", {}))
    corrupted = bytearray(aws_event("messageStart", {}))
    corrupted[9] ^= 0xFF  # prelude CRC no longer matches
    assert not confirm_stream("bedrock.converse", bytes(corrupted))
    assert not confirm_stream("nonexistent.format", SAMPLES["openai.chat"].stream_start)


# --------------------------------------------------------------------------- paths

TEMPLATES = [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v1/chat/completions?foo=bar", "/v1/chat/completions"),
    ("/v1beta/models/gemini-1.5-pro:generateContent", "/v1beta/models/{model}:generateContent"),
    (
        "/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse&key=AIzaSy",
        "/v1beta/models/{model}:streamGenerateContent",
    ),
    ("/v1beta/tunedModels/my-tuned-7:generateContent", "/v1beta/tunedModels/{model}:generateContent"),
    ("/model/anthropic.claude-3-haiku-20240307-v1:0/converse", "/model/{model}/converse"),
    ("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", "/model/{model}/converse"),
    (
        "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus.meta.llama3-v1%3A0"
        "/converse-stream",
        "/model/{model}/converse-stream",
    ),
    ("/model/amazon.titan-text-express-v1/invoke", "/model/{model}/invoke"),
    ("/openai/deployments/my-gpt4/chat/completions", "/openai/deployments/{model}/chat/completions"),
    (
        "/openai/deployments/my-gpt4/chat/completions?api-version=2024-10-21",
        "/openai/deployments/{model}/chat/completions",
    ),
    ("/v1/engines/davinci/completions", "/v1/engines/{model}/completions"),
    ("/models/meta-llama/Meta-Llama-3-8B-Instruct", "/models/{model}"),
    ("/models/meta-llama/Meta-Llama-3-8B-Instruct/v1/chat/completions", "/models/{model}/v1/chat/completions"),
    (
        "/v1/projects/acme-prod/locations/us-central1/publishers/google/models/gemini-1.5-pro:generateContent",
        "/v1/projects/{id}/locations/us-central1/publishers/google/models/{model}:generateContent",
    ),
    (
        "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict",
        "/v1/projects/{id}/locations/us-east5/publishers/anthropic/models/{model}:rawPredict",
    ),
    ("/models/chat/completions?api-version=2024-05-01-preview", "/models/chat/completions"),
    ("/v1/models", "/v1/models"),
    (
        "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/ai/run/@cf/meta/llama-3.1-8b-instruct",
        "/client/v4/accounts/{id}/ai/run/{model}",
    ),
    ("/v1/threads/123/messages", "/v1/threads/{id}/messages"),
    ("/api/items/550e8400-e29b-41d4-a716-446655440000", "/api/items/{id}"),
    ("/v1/responses/resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "/v1/responses/{id}"),
    ("/objects/5f2b9c0e8d1a4b7f9e3c6a2d", "/objects/{id}"),
    ("/v1/chat/completions/chatcmpl-AXk3f9pQvW1x2Yz7LmN0", "/v1/chat/completions/{id}"),
    ("/api/generate", "/api/generate"),
    ("/generate_stream", "/generate_stream"),
    ("/model/x/invoke-with-response-stream", "/model/{model}/invoke-with-response-stream"),
    ("/", "/"),
    ("", ""),
]


@pytest.mark.parametrize(("path", "expected"), TEMPLATES)
def test_path_template(path: str, expected: str) -> None:
    assert path_template(path) == expected


@pytest.mark.parametrize(
    ("fmt", "path", "model", "stream"),
    [
        (
            "bedrock.converse",
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "anthropic.claude-3-haiku-20240307-v1:0",
            False,
        ),
        (
            "bedrock.converse",
            "/model/meta.llama3-8b-instruct-v1:0/converse-stream",
            "meta.llama3-8b-instruct-v1:0",
            True,
        ),
        ("gemini.generate", "/v1beta/models/gemini-1.5-pro:generateContent", "gemini-1.5-pro", False),
        ("gemini.generate", "/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse", "gemini-1.5-pro", True),
        (
            "openai.chat",
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21",
            "gpt-4o-prod",
            False,
        ),
        ("tgi.generate", "/generate_stream", None, True),
        (
            "openai.chat",
            "/models/meta-llama/Meta-Llama-3-8B-Instruct/v1/chat/completions",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            False,
        ),
        (
            "anthropic.messages",
            "/v1/projects/p/locations/l/publishers/anthropic/models/claude-3-haiku@20240307:streamRawPredict",
            "claude-3-haiku@20240307",
            False,
        ),
        (
            "openai.chat",
            "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/ai/run/@cf/meta/llama-3.1-8b-instruct",
            "@cf/meta/llama-3.1-8b-instruct",
            False,
        ),
        ("openai.chat", "/models/chat/completions?api-version=2024-05-01-preview", None, False),
        ("openai.chat", "/v1/chat/completions", None, False),
    ],
)
def test_path_hints(fmt: str, path: str, model: str | None, stream: bool) -> None:
    hints = path_hints(fmt, path)
    assert (hints.model, hints.stream) == (model, stream)


# --------------------------------------------------------------------------- bad input

CHAT = SAMPLES["openai.chat"].raw()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


BAD_INPUTS = [
    # (name, raw, content type, expected error)
    ("empty", b"", JSON, "empty"),
    ("whitespace", b" \r\n\t ", JSON, "empty"),
    ("bom only", b"\xef\xbb\xbf", JSON, "empty"),
    ("plain text", b"hello there", "text/plain", "not_json"),
    ("form", b"a=1&b=2", "application/x-www-form-urlencoded", "not_json"),
    ("html", b"<html><body>hi</body></html>", None, "not_json"),
    ("binary upload", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "image/png", "not_json"),
    ("declared but text", b"hello", JSON, "malformed_json"),
    ("truncated", CHAT[:-7], JSON, "malformed_json"),
    ("truncated sniffed", CHAT[: len(CHAT) // 2], "text/plain", "malformed_json"),
    ("trailing garbage", CHAT + b"}", JSON, "malformed_json"),
    ("two documents", CHAT + CHAT, JSON, "malformed_json"),
    ("single quotes", b"{'a': 1}", JSON, "malformed_json"),
    ("invalid utf-8 in string", b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', JSON, "non_utf8"),
    ("invalid utf-8 sniffed", b'{"a": "\xff\xfe\xfd"}', None, "non_utf8"),
    ("overlong utf-8", b'{"a": "\xc0\xaf"}', JSON, "non_utf8"),
    ("encoded surrogate", b'{"a": "\xed\xa0\x80"}', JSON, "non_utf8"),
    ("100k deep", _nested(100_000), JSON, "too_deep"),
    ("100k deep objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, JSON, "too_deep"),
    ("100k deep unclosed", b"[" * 100_000, JSON, "too_deep"),
    ("65 deep", _nested(65), JSON, "too_deep"),
    ("too large", b'{"a": "' + b"x" * (4 * 1024 * 1024) + b'"}', JSON, "too_large"),
    ("duplicate key", b'{"messages": [{"role": "user", "content": "a", "content": "b"}]}', JSON, "duplicate_key"),
    ("lone high surrogate", b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}', JSON, "lone_surrogate"),
    ("lone low surrogate in key", b'{"\\udc00": "x"}', JSON, "lone_surrogate"),
    ("reversed pair", b'{"a": "\\ude00\\ud83d"}', JSON, "lone_surrogate"),
]


@pytest.mark.parametrize(("raw", "ctype", "error"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(raw: bytes, ctype: str | None, error: str) -> None:
    parsed = parse_body(raw, ctype)
    assert parsed.error == error
    assert error in PARSE_ERRORS
    assert (parsed.data is not None) == (error in SUSPICIOUS)


def test_duplicate_key_still_exposes_last_wins_reading() -> None:
    parsed = parse_body(b'{"messages": [{"role": "user", "content": "a", "content": "b"}]}', JSON)
    assert parsed.error == "duplicate_key"
    assert parsed.data == {"messages": [{"role": "user", "content": "b"}]}
    assert classify("POST", "/v1/chat/completions", parsed.data) == "openai.chat"
    # a duplicate followed by broken JSON is malformed, not duplicate
    assert parse_body(b'{"a": {"k": 1, "k": 2}, "b": [', JSON).error == "malformed_json"


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    assert parse_body(b'{"a": "\\ud83d\\ude00"}', JSON) == ParsedBody({"a": "\U0001f600"}, None)
    assert parse_body(b'{"a": "\\\\ud800"}', JSON) == ParsedBody({"a": "\\ud800"}, None)
    parsed = parse_body(b'{"model": "m", "messages": [{"role": "user", "content": "\\udfff"}]}', JSON)
    assert parsed.error == "lone_surrogate"
    assert classify("POST", "/v1/chat/completions", parsed.data) == "openai.chat"


def test_depth_limit_is_exact_and_ignores_brackets_in_strings() -> None:
    assert parse_body(_nested(64), JSON).error is None
    assert parse_body(_nested(10), JSON, max_depth=10).error is None
    assert parse_body(_nested(11), JSON, max_depth=10).error == "too_deep"
    in_string = json.dumps({"content": "[" * 100_000 + "{" * 1000 + '\\"[[['}).encode()
    parsed = parse_body(in_string, JSON)
    assert parsed.error is None
    assert parsed.data["content"].startswith("[[[")


def test_size_limit_is_exact() -> None:
    raw = b'{"a": "' + b"x" * 100 + b'"}'
    assert parse_body(raw, JSON, max_bytes=len(raw)).error is None
    assert parse_body(raw, JSON, max_bytes=len(raw) - 1).error == "too_large"


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
def test_boms_and_wide_encodings(codec: str) -> None:
    body = SAMPLES["anthropic.messages"].body
    raw = json.dumps(body, ensure_ascii=False).encode(codec)
    parsed = parse_body(raw, JSON)
    assert parsed == ParsedBody(body, None)


def test_bom_with_non_ascii_text() -> None:
    raw = codecs.BOM_UTF8 + json.dumps({"prompt": "naïve café ☕", "model": "m"}, ensure_ascii=False).encode()
    parsed = parse_body(raw, "text/plain")
    assert parsed.data == {"prompt": "naïve café ☕", "model": "m"}


def test_truncated_utf16_is_non_utf8() -> None:
    raw = json.dumps({"a": "b"}).encode("utf-16")[:-1]
    assert parse_body(raw, JSON).error == "non_utf8"


def test_top_level_scalars_parse_but_do_not_classify() -> None:
    for raw in (b"42", b'"text"', b"null", b"true"):
        parsed = parse_body(raw, JSON)
        assert parsed.error is None
        assert classify("POST", "/v1/chat/completions", parsed.data) is None
    assert parse_body(b"42", "text/plain").error == "not_json"


def test_100k_message_array_parses() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}] * 100_000}
    parsed = parse_body(json.dumps(body).encode(), JSON)
    assert parsed.error is None and len(parsed.data["messages"]) == 100_000


def test_classify_rejects_odd_arguments() -> None:
    assert classify("POST", None, {"messages": []}) is None  # type: ignore[arg-type]
    assert classify(None, "/x", {"prompt": "p", "model": "m"}) is None  # type: ignore[arg-type]
    assert path_template(None) == ""  # type: ignore[arg-type]


# --------------------------------------------------------------------------- never raises

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "messages",
                    "role",
                    "content",
                    "contents",
                    "parts",
                    "text",
                    "input",
                    "prompt",
                    "inputs",
                    "model",
                    "type",
                    "system",
                    "stream",
                    "options",
                    "source",
                    "toolResult",
                    "json",
                    "output",
                    "documents",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), ctype=st.sampled_from([None, JSON, "text/plain", "x/y; charset=utf-16"]))
def test_parse_body_never_raises_on_bytes(raw: bytes, ctype: str | None) -> None:
    parsed = parse_body(raw, ctype, max_depth=8, max_bytes=200)
    assert (parsed.error is None) or parsed.error in PARSE_ERRORS
    if parsed.error is not None and parsed.error not in SUSPICIOUS:
        assert parsed.data is None


@settings(max_examples=300, deadline=None)
@given(
    data=json_values,
    path=st.sampled_from(
        [
            "/",
            "/v1/chat/completions",
            "/api/generate",
            "/v2/chat",
            "/model/m/converse",
            "/v1/messages",
            "/generate",
            "/v1/responses",
        ]
    ),
)
def test_classify_and_confirm_never_raise(data: object, path: str) -> None:
    fmt = classify("POST", path, data)
    assert fmt is None or fmt in FORMATS
    for name in FORMATS:
        assert confirm_response(name, data) in (True, False)
    raw = json.dumps(data).encode()
    assert classify("POST", path, parse_body(raw, JSON, max_depth=100).data) == fmt
    path_template(path)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200), fmt=st.sampled_from(sorted(FORMATS)))
def test_confirm_stream_never_raises(raw: bytes, fmt: str) -> None:
    assert confirm_stream(fmt, raw) in (True, False)
    assert confirm_stream(fmt, b"data: " + raw) in (True, False)
    assert confirm_stream(fmt, aws_event("messageStart", {})[:12] + raw) in (True, False)


tricky_text = st.text(alphabet=st.sampled_from('ab"\\[]{}:,é\n'), max_size=12)
tricky_json = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(data=tricky_json, limit=st.integers(min_value=1, max_value=8), indent=st.sampled_from([None, 1]))
def test_depth_scan_agrees_with_the_real_depth(data: object, limit: int, indent: int | None) -> None:
    """Brackets, quotes and backslashes inside strings must not fool the depth scan."""
    raw = json.dumps(data, indent=indent, ensure_ascii=False).encode()
    parsed = parse_body(raw, JSON, max_depth=limit)
    if _depth(data) > limit:
        assert parsed == ParsedBody(None, "too_deep")
    else:
        assert parsed == ParsedBody(data, None)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(ALL_SAMPLES)), data=st.data())
def test_mutated_samples_classify_without_raising(name: str, data: st.DataObject) -> None:
    body = copy.deepcopy(ALL_SAMPLES[name].body)
    parent, key = data.draw(st.sampled_from(slots(body)))
    parent[key] = data.draw(json_values)  # type: ignore[index]
    fmt = classify("POST", ALL_SAMPLES[name].path, body)
    assert fmt is None or fmt in FORMATS
    assert parse_body(json.dumps(body).encode(), JSON).data == body
