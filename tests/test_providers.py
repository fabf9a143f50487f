"""Provider modules: the registry, and per format the response text, stream deltas, usage and block errors.

Streams are written as the providers send them (SSE, NDJSON, JSON arrays, AWS
event-stream), decoded with ``providers.events`` / ``bedrock.aws_events`` and fed
event by event to :class:`StreamText`, as response screening and token budgets will.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from provider_samples import ALL_SAMPLES, SAMPLES, aws_event

from llmwall.providers import events, registry
from llmwall.providers.base import ChatEvidence, CompletionEvidence, Provider, ResponseText, StreamText, Usage
from llmwall.providers.bedrock import aws_events
from llmwall.providers.discovery import FORMATS
from llmwall.proxy.actions import error_body


def sse(*payloads: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return b"".join(f"{head}data: {json.dumps(p)}\n\n".encode() for p in payloads)


def ndjson(*payloads: object) -> bytes:
    return b"".join(json.dumps(p).encode() + b"\n" for p in payloads)


def run_stream(fmt: str, body: bytes) -> StreamText:
    provider = registry.get(fmt)
    assert provider is not None
    acc = StreamText(provider)
    decoded = aws_events(body) if fmt == "bedrock.converse" else events.iter_events(body)
    for event in decoded:
        acc.feed(event)
    return acc


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_format_once() -> None:
    names = [p.name for p in registry.PROVIDERS]
    assert len(names) == len(set(names)) == 10
    assert list(FORMATS) == names
    assert all(FORMATS[p.name] == p.description for p in registry.PROVIDERS)
    assert set(SAMPLES) == set(names)


@pytest.mark.parametrize("provider", registry.PROVIDERS, ids=lambda p: p.name)
def test_each_format_has_exactly_one_kind_of_request_evidence(provider: Provider) -> None:
    kinds = [provider.chat is not None, provider.completion is not None, provider.body_key is not None]
    assert kinds.count(True) == 1
    assert isinstance(provider.chat, (ChatEvidence, type(None)))
    assert isinstance(provider.completion, (CompletionEvidence, type(None)))
    assert provider.family == provider.name.split(".")[0]
    assert registry.get(provider.name) is provider


def test_registry_lookups_of_unknown_names() -> None:
    assert registry.get(None) is None
    assert registry.get("custom") is None
    assert registry.family("nope") is None
    assert registry.family("openai") is registry.get("openai.chat")


# --------------------------------------------------------------------------- whole responses


EXPECTED_TEXT = {
    "openai.chat": "About 2.1 million people live in Paris proper.",
    "openai.completions": "\n\nDas Wetter ist heute schön.",
    "openai.responses": "No, 91 = 7 x 13.",
    "anthropic.messages": "Kyoto, especially the Philosopher's Path.",
    "gemini.generate": "Fish, mostly. And the occasional houseplant.",
    "ollama.generate": "Arr, 'tis the scatterin' o' sunlight, matey!",
    "ollama.chat": "Mie scattering involves larger particles.",
    "cohere.chat": "How about 'The Rolling Pin'?",
    "bedrock.converse": "Crimson leaves drifting\nwhispers of the cooling wind\nthe year exhales slow",
    "tgi.generate": " Deep learning is a subset of machine learning that uses neural networks.",
}

EXPECTED_USAGE = {
    "openai.chat": Usage(48, 12),
    "openai.completions": Usage(11, 8),
    "openai.responses": Usage(36, 9),
    "anthropic.messages": Usage(52, 14),
    "gemini.generate": Usage(24, 10),
    "ollama.generate": Usage(None, 14),
    "ollama.chat": Usage(None, 9),
    "cohere.chat": Usage(96, 8),
    "bedrock.converse": Usage(30, 22),
    "tgi.generate": None,
}


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_response_text_and_usage_of_each_sample(fmt: str) -> None:
    provider = registry.get(fmt)
    assert provider is not None
    response = SAMPLES[fmt].response
    assert provider.response_text(response) == ResponseText(EXPECTED_TEXT[fmt])
    assert provider.usage(response) == EXPECTED_USAGE[fmt]


@pytest.mark.parametrize("name", sorted(ALL_SAMPLES))
def test_every_sample_response_has_text(name: str) -> None:
    sample = ALL_SAMPLES[name]
    provider = registry.get(sample.format)
    assert provider is not None and provider.response_text(sample.response).text.strip()


def test_tool_calls_in_whole_responses() -> None:
    cases = {
        "openai.chat": {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"b":2}'}},
                        ],
                    },
                }
            ],
        },
        "openai.responses": {
            "object": "response",
            "output": [
                {"type": "reasoning", "summary": []},
                {"type": "function_call", "name": "f", "call_id": "c1", "arguments": '{"a":1}'},
            ],
        },
        "anthropic.messages": {
            "type": "message",
            "content": [
                {"type": "thinking", "thinking": "hidden"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            ],
        },
        "gemini.generate": {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "thinking...", "thought": True},
                            {"functionCall": {"name": "f", "args": {"a": 1}}},
                        ],
                    }
                }
            ]
        },
        "ollama.chat": {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
            },
            "done": True,
        },
        "cohere.chat": {
            "finish_reason": "TOOL_CALL",
            "message": {
                "role": "assistant",
                "tool_plan": "I will call f.",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
            },
        },
        "bedrock.converse": {
            "output": {
                "message": {
                    "role": "assistant",
                    "content": [
                        {"text": "Calling f."},
                        {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}},
                    ],
                }
            }
        },
    }
    expected = {
        "openai.chat": ResponseText("", ((0, '{"a":1}'), (1, '{"b":2}'))),
        "openai.responses": ResponseText("", ((1, '{"a":1}'),)),
        "anthropic.messages": ResponseText("Let me look.", ((2, '{"a": 1}'),)),
        "gemini.generate": ResponseText("", ((0, '{"a": 1}'),)),
        "ollama.chat": ResponseText("", ((0, '{"a": 1}'),)),
        "cohere.chat": ResponseText("", ((0, '{"a":1}'),)),
        "bedrock.converse": ResponseText("Calling f.", ((1, '{"a": 1}'),)),
    }
    for fmt, body in cases.items():
        provider = registry.get(fmt)
        assert provider is not None
        assert provider.confirm_response(body), fmt
        assert provider.response_text(body) == expected[fmt], fmt


def test_several_choices_and_refusals_are_all_text() -> None:
    chat = registry.get("openai.chat")
    assert chat is not None
    body = {
        "choices": [
            {"message": {"role": "assistant", "content": "One."}},
            {"message": {"role": "assistant", "content": None, "refusal": "I can't help with that."}},
            {"message": {"role": "assistant", "content": [{"type": "text", "text": "Three."}]}},
        ]
    }
    assert chat.response_text(body).text == "One.\nI can't help with that.\nThree."


def test_anthropic_usage_counts_prompt_cache_tokens() -> None:
    provider = registry.get("anthropic.messages")
    assert provider is not None
    body = {
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 900,
            "output_tokens": 7,
        }
    }
    assert provider.usage(body) == Usage(1005, 7)


def test_gemini_array_body_is_a_whole_stream() -> None:
    provider = registry.get("gemini.generate")
    assert provider is not None
    body = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "A "}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "DBA"}]}}]},
        {
            "candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3, "thoughtsTokenCount": 2},
        },
    ]
    assert provider.response_text(body) == ResponseText("A DBA", ((0, "{}"),))
    assert provider.usage(body) == Usage(4, 5)


# --------------------------------------------------------------------------- streams

STREAMS: dict[str, tuple[bytes, str, dict[int, str], Usage | None]] = {
    "openai.chat": (
        sse(
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
            },
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
            {
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
                            ]
                        },
                    }
                ],
            },
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}}]},
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
        )
        + b"data: [DONE]\n\n",
        "Hello",
        {0: '{"city":"Paris"}'},
        Usage(10, 5),
    ),
    "openai.completions": (
        sse(
            {"object": "text_completion", "choices": [{"text": "Das ", "index": 0}]},
            {"object": "text_completion", "choices": [{"text": "Wetter", "index": 0}]},
            {"object": "text_completion", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}},
        )
        + b"data: [DONE]\n\n",
        "Das Wetter",
        {},
        Usage(11, 2),
    ),
    "openai.responses": (
        b"event: response.created\n"
        + sse({"type": "response.created", "response": {"object": "response", "output": [], "usage": None}})
        + sse({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "No, "})
        + sse({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "91 = 7 x 13."})
        + sse({"type": "response.output_text.done", "output_index": 0, "text": "No, 91 = 7 x 13."})
        + sse({"type": "response.function_call_arguments.delta", "output_index": 1, "delta": '{"n":'})
        + sse({"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "91}"})
        + sse(
            {
                "type": "response.completed",
                "response": {"object": "response", "output": [], "usage": {"input_tokens": 36, "output_tokens": 9}},
            }
        ),
        "No, 91 = 7 x 13.",
        {1: '{"n":91}'},
        Usage(36, 9),
    ),
    "anthropic.messages": (
        sse(
            {
                "type": "message_start",
                "message": {"type": "message", "content": [], "usage": {"input_tokens": 52, "output_tokens": 1}},
            },
            event="message_start",
        )
        + sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        + sse({"type": "ping"})
        + sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Kyo"}})
        + sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "to"}})
        + sse({"type": "content_block_stop", "index": 0})
        + sse({"type": "content_block_start", "index": 1, "content_block": {"type": "thinking", "thinking": ""}})
        + sse({"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "hmm"}})
        + sse(
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            }
        )
        + sse(
            {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"q":'}}
        )
        + sse(
            {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '"x"}'}}
        )
        + sse({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 14}})
        + sse({"type": "message_stop"}),
        "Kyoto",
        {2: '{"q":"x"}'},
        Usage(52, 14),
    ),
    "gemini.generate": (
        b"".join(
            f"data: {json.dumps(p)}\r\n\r\n".encode()
            for p in (
                {
                    "candidates": [{"content": {"parts": [{"text": "Fish"}], "role": "model"}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 24, "totalTokenCount": 24},
                },
                {
                    "candidates": [{"content": {"parts": [{"text": ", mostly."}], "role": "model"}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 24, "candidatesTokenCount": 4, "totalTokenCount": 28},
                },
            )
        ),
        "Fish, mostly.",
        {},
        Usage(24, 4),
    ),
    "ollama.chat": (
        ndjson(
            {"model": "llama3.2", "message": {"role": "assistant", "content": "Mie"}, "done": False},
            {"model": "llama3.2", "message": {"role": "assistant", "content": " scattering"}, "done": False},
            {
                "model": "llama3.2",
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "prompt_eval_count": 26,
                "eval_count": 2,
            },
        ),
        "Mie scattering",
        {},
        Usage(26, 2),
    ),
    "ollama.generate": (
        ndjson(
            {"model": "llama3.2", "response": "Arr", "done": False},
            {"model": "llama3.2", "response": ", matey", "done": False},
            {"model": "llama3.2", "response": "", "done": True, "prompt_eval_count": 30, "eval_count": 2},
        ),
        "Arr, matey",
        {},
        Usage(30, 2),
    ),
    "cohere.chat": (
        sse({"type": "message-start", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": ""}}})
        + sse({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})
        + sse({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "How about"}}}})
        + sse({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": " 'The Rolling Pin'?"}}}})
        + sse({"type": "content-end", "index": 0})
        + sse({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will"}}})
        + sse(
            {
                "type": "tool-call-start",
                "index": 0,
                "delta": {
                    "message": {
                        "tool_calls": {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
                    }
                },
            }
        )
        + sse(
            {
                "type": "tool-call-delta",
                "index": 0,
                "delta": {"message": {"tool_calls": {"function": {"arguments": '{"a"'}}}},
            }
        )
        + sse(
            {
                "type": "tool-call-delta",
                "index": 0,
                "delta": {"message": {"tool_calls": {"function": {"arguments": ":1}"}}}},
            }
        )
        + sse({"type": "tool-call-end", "index": 0})
        + sse(
            {
                "type": "message-end",
                "delta": {"finish_reason": "COMPLETE", "usage": {"tokens": {"input_tokens": 96, "output_tokens": 8}}},
            }
        ),
        "How about 'The Rolling Pin'?",
        {0: '{"a":1}'},
        Usage(96, 8),
    ),
    "bedrock.converse": (
        aws_event("messageStart", {"p": "abc", "role": "assistant"})
        + aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Crimson "}, "p": "x"})
        + aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "leaves"}, "p": "x"})
        + aws_event("contentBlockStop", {"contentBlockIndex": 0})
        + aws_event(
            "contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}
        )
        + aws_event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}})
        + aws_event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}})
        + aws_event("messageStop", {"stopReason": "tool_use"})
        + aws_event("metadata", {"usage": {"inputTokens": 30, "outputTokens": 22}, "metrics": {"latencyMs": 800}}),
        "Crimson leaves",
        {1: '{"a":1}'},
        Usage(30, 22),
    ),
    "tgi.generate": (
        b'data:{"index":1,"token":{"id":89554,"text":" Deep","logprob":-0.12,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
        b'data:{"index":2,"token":{"id":6975,"text":" learning","logprob":-0.3,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
        b'data:{"index":3,"token":{"id":2,"text":"</s>","logprob":-0.01,"special":true},'
        b'"generated_text":" Deep learning","details":{"finish_reason":"eos_token","generated_tokens":3}}\n\n',
        " Deep learning",
        {},
        Usage(None, 3),
    ),
}


def test_every_format_has_a_stream() -> None:
    assert set(STREAMS) == set(FORMATS)


@pytest.mark.parametrize("fmt", sorted(STREAMS))
def test_stream_text_tool_arguments_and_usage(fmt: str) -> None:
    body, text, tools, usage = STREAMS[fmt]
    acc = run_stream(fmt, body)
    assert acc.text == text
    assert acc.tool_arguments == tools
    assert acc.usage == usage


@pytest.mark.parametrize("fmt", sorted(STREAMS))
def test_stream_is_confirmed_from_its_first_bytes(fmt: str) -> None:
    provider = registry.get(fmt)
    assert provider is not None and provider.confirm_stream(STREAMS[fmt][0][:65536])


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_sample_stream_start_feeds_without_error(fmt: str) -> None:
    acc = run_stream(fmt, SAMPLES[fmt].stream_start)
    assert isinstance(acc.text, str)


def test_event_framings() -> None:
    assert list(events.iter_events(b'[{"a": 1},\r\n{"a": 2}\r\n]')) == [{"a": 1}, {"a": 2}]
    assert list(events.iter_events(b'[{"a": 1},\n{"a": ')) == [{"a": 1}]  # a cut stream: what is complete
    assert list(events.iter_events(b'{"a": 1}\n\n{"a": 2}\n')) == [{"a": 1}, {"a": 2}]
    multi = b'event: x\ndata: {"a":\ndata: 1}\n\ndata: [DONE]\n\n: comment\ndata: {"b": 2}'
    assert list(events.iter_events(multi)) == [{"a": 1}, {"b": 2}]
    assert list(events.iter_events(b"")) == []


def test_aws_events_stop_at_damage() -> None:
    good = aws_event("messageStart", {"role": "assistant"})
    second = aws_event("metadata", {"usage": {"inputTokens": 1}})
    assert list(aws_events(good + second)) == [
        {"messageStart": {"role": "assistant"}},
        {"metadata": {"usage": {"inputTokens": 1}}},
    ]
    damaged = second[:-1] + bytes([second[-1] ^ 1])
    assert list(aws_events(good + damaged)) == [{"messageStart": {"role": "assistant"}}]
    assert list(aws_events(good[:-3])) == []


def json_values() -> st.SearchStrategy[object]:
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
    keys = st.sampled_from(
        ["choices", "message", "delta", "content", "text", "type", "usage", "candidates", "parts", "output", "index"]
        + ["tool_calls", "function", "arguments", "token", "response", "generated_text", "contentBlockDelta", "toolUse"]
    )
    return st.recursive(
        leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(keys, c, max_size=4)), max_leaves=20
    )


@settings(max_examples=300, deadline=None)
@given(data=json_values())
def test_response_functions_never_raise(data: object) -> None:
    for provider in registry.PROVIDERS:
        assert isinstance(provider.response_text(data), ResponseText)
        assert isinstance(provider.event_text(data), ResponseText)
        assert provider.usage(data) is None or isinstance(provider.usage(data), Usage)
        assert provider.event_usage(data) is None or isinstance(provider.event_usage(data), Usage)
        provider.confirm_response(data)


# --------------------------------------------------------------------------- block errors


@pytest.mark.parametrize(
    ("fmt", "body", "headers"),
    [
        (
            "openai.chat",
            {
                "error": {
                    "message": "m",
                    "type": "llmwall_blocked",
                    "param": None,
                    "code": "blocked",
                    "rule": "r",
                    "categories": ["A"],
                }
            },
            {},
        ),
        (
            None,
            {
                "error": {
                    "message": "m",
                    "type": "llmwall_blocked",
                    "param": None,
                    "code": "blocked",
                    "rule": "r",
                    "categories": ["A"],
                }
            },
            {},
        ),
        (
            "custom",
            {
                "error": {
                    "message": "m",
                    "type": "llmwall_blocked",
                    "param": None,
                    "code": "blocked",
                    "rule": "r",
                    "categories": ["A"],
                }
            },
            {},
        ),
        (
            "anthropic.messages",
            {"type": "error", "error": {"type": "permission_error", "message": "m", "rule": "r", "categories": ["A"]}},
            {},
        ),
        (
            "gemini.generate",
            {"error": {"code": 403, "message": "m", "status": "PERMISSION_DENIED", "rule": "r", "categories": ["A"]}},
            {},
        ),
        ("ollama.chat", {"error": "m", "error_type": "llmwall_blocked", "rule": "r", "categories": ["A"]}, {}),
        ("tgi.generate", {"error": "m", "error_type": "llmwall_blocked", "rule": "r", "categories": ["A"]}, {}),
        ("cohere.chat", {"message": "m", "rule": "r", "categories": ["A"]}, {}),
        (
            "bedrock.converse",
            {"message": "m", "rule": "r", "categories": ["A"]},
            {"x-amzn-ErrorType": "AccessDeniedException"},
        ),
    ],
)
def test_block_error_is_shaped_per_family(fmt: str | None, body: dict, headers: dict) -> None:
    assert error_body(fmt, "m", 403, "r", ["A"]) == (body, headers)
