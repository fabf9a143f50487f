"""Recognising LLM traffic from request bodies, on any host and any path.

The body decides whether a request is LLM traffic and in which provider format; the
path only breaks ties between formats whose bodies look alike (OpenAI legacy
completions vs Ollama ``/api/generate``, OpenAI chat vs Cohere v2 vs Ollama chat).
This lets llmwall find self-hosted and proxied endpoints (Azure OpenAI, vLLM,
llama.cpp, LM Studio, OpenRouter...) without a host list.

Everything here runs on every JSON request, so it stays cheap and never raises.
See ``docs/discovery.md`` for the heuristics and their known ambiguities.
"""

from __future__ import annotations

import json
import posixpath
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import numpy as np

#: Format name -> what it covers. Names are stable: they appear in rules
#: (``cf.llm.request.format``), analytics and block responses.
FORMATS: Final[dict[str, str]] = {
    "openai.chat": "OpenAI Chat Completions (and every OpenAI-compatible server)",
    "openai.completions": "OpenAI legacy Completions ({model, prompt})",
    "openai.responses": "OpenAI Responses API ({model, input})",
    "anthropic.messages": "Anthropic Messages (also via Bedrock InvokeModel / Vertex rawPredict)",
    "gemini.generate": "Google Gemini generateContent and streamGenerateContent (AI Studio and Vertex)",
    "ollama.generate": "Ollama /api/generate",
    "ollama.chat": "Ollama /api/chat",
    "cohere.chat": "Cohere Chat API v2 (/v2/chat)",
    "bedrock.converse": "Amazon Bedrock Converse and ConverseStream",
    "tgi.generate": "Hugging Face Text Generation Inference /generate and /generate_stream",
}

#: parse_body error codes -> meaning (documented in docs/discovery.md).
PARSE_ERRORS: Final[dict[str, str]] = {
    "empty": "the body is empty or only whitespace",
    "not_json": "neither declared as JSON nor starting with '{' or '['",
    "non_utf8": "not valid UTF-8 (or not valid UTF-16/32 where a BOM or NUL pattern announced it)",
    "malformed_json": "declared or sniffed as JSON but does not parse (truncated, syntax error)",
    "too_deep": "arrays/objects nested deeper than max_depth",
    "too_large": "the body is larger than max_bytes",
    "duplicate_key": "an object repeats a key: parsers disagree on which value wins, so it could hide text",
    "lone_surrogate": "a \\uD800-\\uDFFF escape that is not half of a pair: not valid Unicode text, "
    "so detectors (tokenizers) would fail on it",
}

#: Errors that still come with ``data``: valid JSON an upstream would accept, but
#: ambiguous or unscreenable, so the caller decides (block as evasive, or screen anyway).
SUSPICIOUS: Final = frozenset({"duplicate_key", "lone_surrogate"})


@dataclass(frozen=True)
class ParsedBody:
    """Result of :func:`parse_body`.

    On success ``error`` is None. On failure ``data`` is None, except for the
    SUSPICIOUS errors (``duplicate_key``, ``lone_surrogate``): the body is valid JSON
    that upstream parsers accept (duplicates: last value wins), so ``data`` holds that
    reading and the caller can still classify it, e.g. to block it as evasive rather
    than let it pass unscreened.
    """

    data: object | None
    error: str | None  # a key of PARSE_ERRORS, or None on success


# --------------------------------------------------------------------------- parsing

_JSON_WS: Final = " \t\r\n"
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class _DuplicateKey(ValueError):
    """Raised from the object hook; never escapes parse_body."""


def _object_no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def _is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in ("application/json", "text/json") or mime.endswith("+json")


def _detect_encoding(raw: bytes) -> tuple[str, int]:
    """(codec, bytes to skip) from a BOM, or from the NUL pattern of RFC 4627 section 3."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return "utf-8", 3
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return ("utf-32-le" if raw[0] == 0xFF else "utf-32-be"), 4
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ("utf-16-le" if raw[0] == 0xFF else "utf-16-be"), 2
    if len(raw) >= 4:
        b0, b1, b2, b3 = (raw[0] == 0, raw[1] == 0, raw[2] == 0, raw[3] == 0)
        if b0 and b1 and b2 and not b3:
            return "utf-32-be", 0
        if not b0 and b1 and b2 and b3:
            return "utf-32-le", 0
        if b0 and not b1 and b2 and not b3:
            return "utf-16-be", 0
        if not b0 and b1 and not b2 and b3:
            return "utf-16-le", 0
    return "utf-8", 0


def _starts_like_json(raw: bytes, codec: str) -> bool:
    head = raw[:256].decode(codec, errors="ignore") if codec != "utf-8" else raw[:256].decode("latin-1")
    return head.lstrip(_JSON_WS)[:1] in ("{", "[")


def _nesting_exceeds(text: str, max_depth: int) -> bool:
    """True when brackets outside string literals nest deeper than ``max_depth``.

    Runs before json.loads so a 100k-deep body is refused without any recursion;
    the work is done by C string methods and numpy, not a Python loop per character.
    """
    if text.count("{") + text.count("[") <= max_depth:
        return False  # cannot possibly be deeper: skip the scan (the common case)
    # Drop escaped backslashes, then escaped quotes: every '"' left opens or closes a
    # string, so the even-numbered pieces of a split on '"' are everything outside strings.
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(text.split('"')[::2])
    brackets = _NOT_BRACKET.sub("", outside).encode("ascii")
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
    return bool(steps.size) and int(np.cumsum(steps, dtype=np.int32).max()) > max_depth


def parse_body(
    raw: bytes,
    content_type: str | None,
    max_depth: int = 64,
    max_bytes: int = 4 * 1024 * 1024,
) -> ParsedBody:
    """Parse a request/response body as JSON, or say precisely why not. Never raises.

    The Content-Type is advisory: clients often send JSON as text/plain or as
    ``application/x-www-form-urlencoded`` (``curl -d``), so a body that starts with
    ``{`` or ``[`` is tried as JSON whatever its declared type.
    """
    if len(raw) > max_bytes:
        return ParsedBody(None, "too_large")
    if not raw or raw.isspace():
        return ParsedBody(None, "empty")
    declared = _is_json_type(content_type)
    codec, skip = _detect_encoding(raw)
    body = raw[skip:]
    try:
        text = body.decode(codec)
    except UnicodeDecodeError:
        if declared or _starts_like_json(body, codec):
            return ParsedBody(None, "non_utf8")
        return ParsedBody(None, "not_json")
    text = text.strip(_JSON_WS)
    if not text:
        return ParsedBody(None, "empty")
    if not declared and text[0] not in "{[":
        return ParsedBody(None, "not_json")
    if _nesting_exceeds(text, max_depth):
        return ParsedBody(None, "too_deep")
    duplicate = False
    try:
        try:
            data = json.loads(text, object_pairs_hook=_object_no_duplicates)
        except _DuplicateKey:  # raised at the first duplicate: the rest may still be malformed
            duplicate = True
            data = json.loads(text)
    except RecursionError:
        return ParsedBody(None, "too_deep")
    except ValueError:
        return ParsedBody(None, "malformed_json")
    if duplicate:
        return ParsedBody(data, "duplicate_key")
    if "\\" in text and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
        return ParsedBody(data, "lone_surrogate")
    return ParsedBody(data, None)


def _has_lone_surrogate(data: object) -> bool:
    """True when a string (or key) holds a surrogate code point: not encodable text."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


# --------------------------------------------------------------------------- classification

#: How many messages/items at each end of a list are inspected: enough to decide, cheap on 100k.
_SAMPLE: Final = 32

_CHAT_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# Top-level keys as evidence: each key counts for every chat format that accepts it
# (Cohere v2 shares seed/response_format/penalties with OpenAI, stop_sequences with Anthropic).
_OPENAI, _ANTHROPIC, _OLLAMA, _COHERE, _BEDROCK = (
    "openai.chat",
    "anthropic.messages",
    "ollama.chat",
    "cohere.chat",
    "bedrock.converse",
)
_KEY_EVIDENCE: Final[dict[str, tuple[str, ...]]] = {
    **dict.fromkeys(
        (
            "n",
            "logit_bias",
            "top_logprobs",
            "stream_options",
            "max_completion_tokens",
            "user",
            "parallel_tool_calls",
            "modalities",
            "audio",
            "reasoning_effort",
            "prediction",
            "service_tier",
            "functions",
            "function_call",
            "web_search_options",
            "verbosity",
            "store",
        ),
        (_OPENAI,),
    ),
    **dict.fromkeys(
        ("seed", "response_format", "frequency_penalty", "presence_penalty", "logprobs"), (_OPENAI, _COHERE)
    ),
    **dict.fromkeys(
        ("anthropic_version", "top_k", "thinking", "anthropic_beta", "mcp_servers", "container"), (_ANTHROPIC,)
    ),
    "stop_sequences": (_ANTHROPIC, _COHERE),
    **dict.fromkeys(("options", "keep_alive", "format", "think"), (_OLLAMA,)),
    **dict.fromkeys(
        (
            "documents",
            "citation_options",
            "safety_mode",
            "k",
            "p",
            "strict_tools",
            "return_prompt",
            "tool_results",
            "priority",
        ),
        (_COHERE,),
    ),
    **dict.fromkeys(
        (
            "inferenceConfig",
            "toolConfig",
            "guardrailConfig",
            "additionalModelRequestFields",
            "additionalModelResponseFieldPaths",
            "promptVariables",
            "performanceConfig",
            "requestMetadata",
        ),
        (_BEDROCK,),
    ),
}
_BEDROCK_BLOCKS: Final = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "toolUse",
        "toolResult",
        "guardContent",
        "reasoningContent",
        "cachePoint",
    }
)
_ANTHROPIC_BLOCK_TYPES: Final = frozenset(
    {
        "tool_use",
        "tool_result",
        "document",
        "thinking",
        "redacted_thinking",
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "container_upload",
    }
)
_OPENAI_PART_TYPES: Final = frozenset({"image_url", "input_audio", "file", "refusal"})
_COHERE_PART_TYPES: Final = frozenset({"document", "thinking"})

_RESPONSES_KEYS: Final = frozenset(
    {
        "instructions",
        "previous_response_id",
        "reasoning",
        "text",
        "tools",
        "tool_choice",
        "store",
        "max_output_tokens",
        "include",
        "truncation",
        "background",
        "conversation",
        "prompt",
        "max_tool_calls",
        "parallel_tool_calls",
        "prompt_cache_key",
        "safety_identifier",
    }
)
_RESPONSES_ITEM_TYPES: Final = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "item_reference",
        "file_search_call",
        "web_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "mcp_call",
        "mcp_approval_response",
        "local_shell_call",
        "local_shell_call_output",
    }
)

_COMPLETION_PARAMS: Final = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "n",
        "echo",
        "best_of",
        "logprobs",
        "suffix",
        "n_predict",
        "options",
        "raw",
        "template",
        "context",
        "system",
        "keep_alive",
    }
)
_OPENAI_COMPLETION_KEYS: Final = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "echo",
        "best_of",
        "logprobs",
        "logit_bias",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "user",
        "stream_options",
    }
)
_OLLAMA_GENERATE_KEYS: Final = frozenset(
    {
        "options",
        "keep_alive",
        "context",
        "raw",
        "template",
        "system",
        "images",
        "format",
        "think",
    }
)
# Image/speech generation also sends {model, prompt}/{model, input}: not text generation.
_MEDIA_KEYS: Final = frozenset(
    {
        "size",
        "quality",
        "style",
        "aspect_ratio",
        "negative_prompt",
        "width",
        "height",
        "num_inference_steps",
        "guidance_scale",
        "voice",
        "encoding_format",
        "dimensions",
    }
)
# Non-generation endpoints whose bodies reuse {model, input} / {model, prompt} / contents:
# matched on whole path segments so "/embedded-assistant/chat" is not caught.
_NON_GENERATION_PATH: Final = re.compile(
    r"(?:^|/)(?:embed|embeddings|moderations|tokenize|detokenize|rerank|classify|count_tokens|speech|"
    r"transcriptions|translations)(?:/|$)|(?:^|/)(?:images|audio)/|"
    r":(?:counttokens|embedcontent|batchembedcontents)$"
)


# Endpoints that take a chat body but generate nothing (Anthropic count_tokens, vLLM /tokenize).
_COUNTING_PATH: Final = re.compile(r"(?:^|/)(?:count_tokens|tokenize|detokenize)(?:/|$)|:counttokens$")


def _str(value: object) -> str | None:
    """``value`` if it is a string: body values are used as set members, so no lists."""
    return value if isinstance(value, str) else None


def _sample(items: list) -> list:
    return items if len(items) <= 2 * _SAMPLE else items[:_SAMPLE] + items[-_SAMPLE:]


def _tail(path: str) -> str:
    """The route, decoded, dot-segments resolved, lower case, no trailing slash.

    Normalised so that ``/embeddings/../v1/chat/completions`` cannot dodge screening
    on a server that resolves dot-segments.
    """
    route = unquote(path.split("?", 1)[0].split("#", 1)[0]).lower()
    return posixpath.normpath(route).rstrip("/") if route else ""


def classify(method: str, path: str, data: object) -> str | None:
    """The provider format of a request body, or None when it is not LLM traffic.

    Every signature is tried in turn, so a decoy key (``"contents": 1`` next to a
    real ``messages`` list) cannot make a body look unrecognised.
    """
    if not isinstance(method, str) or method.upper() not in ("POST", "PUT"):
        return None
    if not isinstance(data, dict) or not isinstance(path, str):
        return None
    tail = _tail(path)
    if "messages" in data and not _COUNTING_PATH.search(tail):
        fmt = _classify_messages(tail, data)
        if fmt is not None:
            return fmt
    if _NON_GENERATION_PATH.search(tail):
        return None
    if "contents" in data and _is_gemini(data):
        return "gemini.generate"
    if "inputs" in data and _is_tgi(tail, data):
        return "tgi.generate"
    if "input" in data and _is_responses(tail, data):
        return "openai.responses"
    if "prompt" in data:
        return _classify_prompt(tail, data)
    return None


def _is_gemini(data: dict) -> bool:
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        return False
    for item in _sample(contents):
        if not isinstance(item, dict) or not isinstance(item.get("parts"), list):
            return False
        role = item.get("role")
        if role is not None and role not in ("user", "model", "function", "tool", ""):
            return False
    return True


def _is_tgi(tail: str, data: dict) -> bool:
    inputs = data.get("inputs")
    if not (
        isinstance(inputs, str)
        or (isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in _sample(inputs)))
    ):
        return False
    if isinstance(data.get("parameters"), dict) or isinstance(data.get("stream"), bool):
        return True
    if tail.endswith(("/generate", "/generate_stream")):
        return True
    return set(data) <= {"inputs", "options"}  # bare HF Inference API call


def _is_responses(tail: str, data: dict) -> bool:
    inp = data.get("input")
    if data.keys() & _MEDIA_KEYS:
        return False
    path_says = tail.endswith("/responses")
    if isinstance(inp, str):
        return path_says or bool(data.keys() & _RESPONSES_KEYS)
    if not isinstance(inp, list) or not inp:
        return False
    for item in _sample(inp):
        if not isinstance(item, dict):
            return False
        role, kind = _str(item.get("role")), _str(item.get("type"))
        if role is None and "role" in item:
            return False
        if role is None and kind not in _RESPONSES_ITEM_TYPES:
            return False
        if role is not None and role not in _CHAT_ROLES:
            return False
    return True


def _classify_prompt(tail: str, data: dict) -> str | None:
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        pass
    elif isinstance(prompt, list) and prompt:
        first = prompt[0]
        if not (
            isinstance(first, (str, int))
            or (isinstance(first, list) and all(isinstance(t, int) for t in first[:_SAMPLE]))
        ):
            return None
    else:
        return None
    if data.keys() & _MEDIA_KEYS:
        return None
    generate_path = tail.endswith("/api/generate")
    completions_path = tail.endswith(("/completions", "/completion")) or "/ai/run/@" in tail
    if not (
        isinstance(data.get("model"), str) or generate_path or completions_path or data.keys() & _COMPLETION_PARAMS
    ):
        return None
    if not isinstance(prompt, str):
        return "openai.completions"  # Ollama only takes a string prompt
    ollama = len(data.keys() & _OLLAMA_GENERATE_KEYS)
    openai = len(data.keys() & _OPENAI_COMPLETION_KEYS)
    if ollama > openai:
        return "ollama.generate"
    if openai > ollama:
        return "openai.completions"
    return "ollama.generate" if generate_path else "openai.completions"


# Chat families told apart by messages-shaped bodies, in default priority order.
_CHAT_FORMATS: Final = ("openai.chat", "anthropic.messages", "ollama.chat", "cohere.chat", "bedrock.converse")


def _chat_path_format(tail: str) -> str | None:
    if tail.endswith(("/converse", "/converse-stream")):
        return "bedrock.converse"
    if tail.endswith("/api/chat"):
        return "ollama.chat"
    if tail.endswith("/v2/chat"):
        return "cohere.chat"
    if tail.endswith("/messages"):
        return "anthropic.messages"
    if tail.endswith("/chat/completions"):
        return "openai.chat"
    return None


def _classify_messages(tail: str, data: dict) -> str | None:
    """Pick among the chat formats: rule out by incompatible shapes, score by specific keys."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    possible = set(_CHAT_FORMATS)
    score = dict.fromkeys(_CHAT_FORMATS, 0)
    for key in data.keys() & _KEY_EVIDENCE.keys():
        for fmt in _KEY_EVIDENCE[key]:
            score[fmt] += 1
    system = data.get("system")
    if isinstance(system, str):
        score["anthropic.messages"] += 1
    elif isinstance(system, list) and system and isinstance(system[0], dict):
        score["anthropic.messages" if "type" in system[0] else "bedrock.converse"] += 2
    if isinstance(data.get("tool_choice"), dict) and data["tool_choice"].get("type") in ("auto", "any", "tool", "none"):
        score["anthropic.messages"] += 1
    for msg in _sample(messages):
        if not isinstance(msg, dict):
            return None
        role = _str(msg.get("role"))
        if role not in _CHAT_ROLES:
            return None
        if role != "user" and role != "assistant":
            possible -= {"anthropic.messages", "bedrock.converse"}
        if role in ("developer", "function"):
            possible -= {"ollama.chat", "cohere.chat"}
        if "tool_calls" in msg or "tool_call_id" in msg or "name" in msg:
            score["openai.chat"] += 1
        if "images" in msg:
            score["ollama.chat"] += 1
        if "tool_plan" in msg:
            score["cohere.chat"] += 1
        content = msg.get("content")
        if isinstance(content, str):
            possible.discard("bedrock.converse")
        elif isinstance(content, list):
            possible.discard("ollama.chat")  # Ollama content is always a string
            for block in content[:_SAMPLE]:
                if not isinstance(block, dict):
                    return None
                kind = block.get("type")
                if kind is not None and not isinstance(kind, str):
                    return None
                if kind is None:
                    if block.keys() & _BEDROCK_BLOCKS:
                        score["bedrock.converse"] += 2
                    possible -= {"openai.chat", "anthropic.messages", "cohere.chat"}
                elif kind in _OPENAI_PART_TYPES:
                    score["openai.chat"] += 1
                elif kind in _ANTHROPIC_BLOCK_TYPES or (kind == "image" and "source" in block):
                    score["anthropic.messages"] += 1
                elif kind in _COHERE_PART_TYPES:
                    score["cohere.chat"] += 1
        elif content is not None:
            return None
    if not possible:
        return None
    best = max(score[f] for f in possible)
    tied = [f for f in _CHAT_FORMATS if f in possible and score[f] == best]
    by_path = _chat_path_format(tail)
    return by_path if by_path in tied else tied[0]


# --------------------------------------------------------------------------- responses


def confirm_response(fmt: str, data: object) -> bool:
    """True when a (non-streamed) response body looks like ``fmt``'s response."""
    if fmt == "gemini.generate" and isinstance(data, list) and data:
        data = data[0]  # streamGenerateContent without alt=sse: a JSON array of responses
    if fmt == "tgi.generate" and isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return False
    check = _RESPONSE_CHECKS.get(fmt)
    return bool(check and check(data))


def _first_choice(data: dict) -> dict:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


_RESPONSE_CHECKS: Final = {
    "openai.chat": lambda d: d.get("object") == "chat.completion" or isinstance(_first_choice(d).get("message"), dict),
    "openai.completions": lambda d: (
        d.get("object") == "text_completion" or isinstance(_first_choice(d).get("text"), str)
    ),
    "openai.responses": lambda d: d.get("object") == "response" and isinstance(d.get("output"), list),
    "anthropic.messages": lambda d: d.get("type") == "message" and isinstance(d.get("content"), list),
    "gemini.generate": lambda d: isinstance(d.get("candidates"), list) or isinstance(d.get("promptFeedback"), dict),
    "ollama.generate": lambda d: isinstance(d.get("response"), str) and "done" in d,
    "ollama.chat": lambda d: isinstance(d.get("message"), dict) and "done" in d,
    "cohere.chat": lambda d: isinstance(d.get("message"), dict) and "finish_reason" in d,
    "bedrock.converse": lambda d: isinstance(d.get("output"), dict) and isinstance(d["output"].get("message"), dict),
    "tgi.generate": lambda d: isinstance(d.get("generated_text"), str),
}

_ANTHROPIC_EVENTS: Final = frozenset(
    {
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
)
_COHERE_EVENTS: Final = frozenset(
    {
        "message-start",
        "content-start",
        "content-delta",
        "content-end",
        "tool-plan-delta",
        "tool-call-start",
        "tool-call-delta",
        "tool-call-end",
        "citation-start",
        "citation-end",
        "message-end",
        "debug",
    }
)
_BEDROCK_EVENTS: Final = frozenset(
    {
        b"messageStart",
        b"contentBlockStart",
        b"contentBlockDelta",
        b"contentBlockStop",
        b"messageStop",
        b"metadata",
    }
)


def _first_event(first_bytes: bytes) -> object:
    """The JSON of the first SSE event or NDJSON line (or first array item), else None."""
    text = first_bytes.decode("utf-8", errors="replace").lstrip("\ufeff" + _JSON_WS)
    decoder = json.JSONDecoder()
    if text.startswith("["):  # Gemini streamGenerateContent without alt=sse
        try:
            return decoder.raw_decode(text[1:].lstrip(_JSON_WS))[0]
        except (ValueError, RecursionError):
            return None
    if text.startswith("{"):  # NDJSON (Ollama)
        line = text.split("\n", 1)[0]
        try:
            return json.loads(line)
        except (ValueError, RecursionError):
            return None
    data_lines: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if data_lines:
                break  # end of the first event that had data
            continue
        if line.startswith("data:"):
            data_lines.append(line[5:].removeprefix(" "))
    if not data_lines:
        return None
    try:
        return json.loads("\n".join(data_lines))
    except (ValueError, RecursionError):
        return None


def _bedrock_event_type(first_bytes: bytes) -> bytes | None:
    """``:event-type`` of the first AWS event-stream message (binary framing)."""
    if len(first_bytes) < 16:
        return None
    total, headers_len, prelude_crc = struct.unpack(">III", first_bytes[:12])
    if zlib.crc32(first_bytes[:8]) != prelude_crc or headers_len > total:
        return None
    pos, end = 12, min(12 + headers_len, len(first_bytes))
    while pos < end:
        name_len = first_bytes[pos]
        name = first_bytes[pos + 1 : pos + 1 + name_len]
        pos += 1 + name_len
        if pos >= end:
            return None
        value_type = first_bytes[pos]
        if value_type != 7 or pos + 3 > end:  # only string headers matter; others: give up rather than guess
            return None
        (value_len,) = struct.unpack(">H", first_bytes[pos + 1 : pos + 3])
        value = first_bytes[pos + 3 : pos + 3 + value_len]
        pos += 3 + value_len
        if name == b":event-type":
            return value
    return None


def confirm_stream(fmt: str, first_bytes: bytes) -> bool:
    """True when the start of a streamed response (SSE, NDJSON, event-stream) looks like ``fmt``."""
    if not isinstance(first_bytes, (bytes, bytearray)):
        return False
    first_bytes = bytes(first_bytes)
    if fmt == "bedrock.converse":
        return _bedrock_event_type(first_bytes) in _BEDROCK_EVENTS
    event = _first_event(first_bytes)
    if not isinstance(event, dict):
        return False
    kind = _str(event.get("type"))
    if fmt == "openai.chat":
        return event.get("object") == "chat.completion.chunk" or isinstance(_first_choice(event).get("delta"), dict)
    if fmt == "openai.completions":
        return event.get("object") == "text_completion" or isinstance(_first_choice(event).get("text"), str)
    if fmt == "openai.responses":
        return isinstance(kind, str) and kind.startswith("response.")
    if fmt == "anthropic.messages":
        return kind in _ANTHROPIC_EVENTS
    if fmt == "cohere.chat":
        return kind in _COHERE_EVENTS
    if fmt == "tgi.generate":
        return isinstance(event.get("token"), dict)
    return confirm_response(fmt, event)  # gemini, ollama: chunks have the full-response shape


# --------------------------------------------------------------------------- paths

_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX: Final = re.compile(r"^[0-9a-fA-F]{16,}$")
_TOKENISH: Final = re.compile(r"^[A-Za-z0-9_\-=.~+]{20,}$")
_NUMBER: Final = re.compile(r"^\d+$")
# Segments after which the next one names a model or deployment.
_MODEL_PARENTS: Final = frozenset({"models", "model", "deployments", "engines", "tunedModels"})
# Segments after which the next one is an account/project identifier.
_ID_PARENTS: Final = frozenset({"projects", "accounts"})
# Path words that are API structure, never a model name (Azure AI Inference uses
# /models/chat/completions; Hugging Face model ids span "org/name").
_API_WORDS: Final = frozenset(
    {
        "v1",
        "v2",
        "v1beta",
        "v1alpha",
        "chat",
        "completions",
        "completion",
        "generate",
        "generate_stream",
        "invoke",
        "invoke-with-response-stream",
        "converse",
        "converse-stream",
        "responses",
        "messages",
        "embeddings",
        "api",
        "openai",
        "pipeline",
        "info",
        "images",
        "audio",
    }
)


def _is_id(segment: str) -> bool:
    if _NUMBER.match(segment) or _UUID.match(segment) or _HEX.match(segment):
        return True
    return bool(_TOKENISH.match(segment)) and any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment)


def _split_action(segment: str) -> tuple[str, str]:
    """Gemini/Vertex ``gemini-1.5-pro:generateContent`` -> (model, ":generateContent")."""
    if ":" in segment:
        name, action = segment.rsplit(":", 1)
        return name, ":" + action
    return segment, ""


def _analyse_path(path: str) -> tuple[str, str | None]:
    """(template, model name found in the path or None); see path_template."""
    segments = path.split("?", 1)[0].split("#", 1)[0].split("/")
    out: list[str] = []
    model: str | None = None
    i = 0
    while i < len(segments):
        seg = segments[i]
        decoded = unquote(seg)
        parent = segments[i - 1] if i else ""
        if parent in _MODEL_PARENTS and seg and decoded not in _API_WORDS:
            if parent == "model":  # Bedrock: the whole (URL-encoded) segment is the model id or ARN
                name, action = decoded, ""
            else:
                name, action = _split_action(decoded)
                following = unquote(segments[i + 1]) if i + 1 < len(segments) else ""
                if parent == "models" and not action and following and _split_action(following)[0] not in _API_WORDS:
                    i += 1  # Hugging Face "org/name": the model id spans two segments
                    second, action = _split_action(following)
                    name = f"{name}/{second}"
            out.append("{model}" + action)
            model = model or name
        elif parent == "run" and decoded.startswith("@"):  # Workers AI: /ai/run/@cf/meta/llama-3-8b
            out.append("{model}")
            model = model or "/".join(unquote(s) for s in segments[i:])
            break
        elif parent in _ID_PARENTS and seg:
            out.append("{id}")
        elif ":" in decoded and _is_id(decoded.split(":", 1)[0]):
            out.append("{id}:" + decoded.split(":", 1)[1])
        elif _is_id(decoded):
            out.append("{id}")
        else:
            out.append(seg)
        i += 1
    return "/".join(out), model


def path_template(path: str) -> str:
    """Path without query, ids -> ``{id}`` and model/deployment names -> ``{model}``.

    Keeps the endpoint inventory (and analytics' ``path_template``) low-cardinality
    and free of identifiers.
    """
    if not isinstance(path, str):
        return ""
    return _analyse_path(path)[0]


@dataclass(frozen=True)
class PathHints:
    """What the URL path adds to a body: the model (Bedrock, Gemini, Azure) and streaming."""

    model: str | None
    stream: bool


def path_hints(fmt: str, path: str) -> PathHints:
    """Model name and stream flag that some formats carry in the path rather than the body.

    ``Prompt.model`` stays None for Bedrock and Gemini (the body has no model); the
    caller can fill ``cf.llm.request.model`` from here.
    """
    if not isinstance(path, str):
        return PathHints(None, False)
    model = _analyse_path(path)[1]
    route, _, query = path.partition("?")
    route = route.lower().rstrip("/")
    stream = (
        (fmt == "gemini.generate" and (route.endswith(":streamgeneratecontent") or "alt=sse" in query))
        or (fmt == "bedrock.converse" and route.endswith("/converse-stream"))
        or (fmt == "tgi.generate" and route.endswith("/generate_stream"))
    )
    return PathHints(model, stream)
