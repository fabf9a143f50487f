"""Recognising LLM traffic from request bodies, on any host and any path.

The body decides whether a request is LLM traffic and in which provider format; the
path only breaks ties between formats whose bodies look alike (OpenAI legacy
completions vs Ollama ``/api/generate``, OpenAI chat vs Cohere v2 vs Ollama chat).
This lets llmwall find self-hosted and proxied endpoints (Azure OpenAI, vLLM,
llama.cpp, LM Studio, OpenRouter...) without a host list.

Everything here runs on every JSON request, so it stays cheap and never raises.
What each format looks like (its request evidence, response shapes, stream events)
lives in its provider module, listed by ``providers/registry.py``; this module holds
what is format-independent: body parsing, weighing the formats' evidence, URL path
templates and hints. See ``docs/discovery.md`` for the heuristics and their known
ambiguities.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import numpy as np

from llmwall.providers import registry
from llmwall.providers.base import CHAT_ROLES, MEDIA_KEYS, SAMPLE, Provider, as_str, sample

#: Format name -> what it covers, from the provider registry. Names are stable: they
#: appear in rules (``cf.llm.request.format``), analytics and block responses.
FORMATS: Final[dict[str, str]] = {p.name: p.description for p in registry.PROVIDERS}

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
# What each format's bodies look like is its provider module's business (providers/<family>.py);
# here is only how that evidence is weighed, the same way for every format.

# Non-generation endpoints whose bodies reuse {model, input} / {model, prompt} / contents:
# matched on whole path segments so "/embedded-assistant/chat" is not caught.
_NON_GENERATION_PATH: Final = re.compile(
    r"(?:^|/)(?:embed|embeddings|moderations|tokenize|detokenize|rerank|classify|count_tokens|speech|"
    r"transcriptions|translations)(?:/|$)|(?:^|/)(?:images|audio)/|"
    r":(?:counttokens|embedcontent|batchembedcontents)$"
)


# Endpoints that take a chat body but generate nothing (Anthropic count_tokens, vLLM /tokenize).
_COUNTING_PATH: Final = re.compile(r"(?:^|/)(?:count_tokens|tokenize|detokenize)(?:/|$)|:counttokens$")


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
    for provider in registry.OWN_KEY:
        if provider.body_key in data and provider.matches(tail, data):
            return provider.name
    if "prompt" in data:
        return _classify_prompt(tail, data)
    return None


def _best(possible: list[Provider], score: dict[str, int], by_path: Provider | None) -> str | None:
    """The highest score among ``possible``; a tie goes to ``by_path``, else to the first."""
    if not possible:
        return None
    best = max(score[p.name] for p in possible)
    tied = [p for p in possible if score[p.name] == best]
    return (by_path if by_path in tied else tied[0]).name


def _classify_prompt(tail: str, data: dict) -> str | None:
    """Pick among the completion formats ({"prompt": ...}); see ``CompletionEvidence``."""
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        pass
    elif isinstance(prompt, list) and prompt:
        first = prompt[0]
        if not (
            isinstance(first, (str, int))
            or (isinstance(first, list) and all(isinstance(t, int) for t in first[:SAMPLE]))
        ):
            return None
    else:
        return None
    if data.keys() & MEDIA_KEYS:
        return None
    formats = [(p, p.completion) for p in registry.COMPLETION if p.completion is not None]
    by_path = next((p for p, ev in formats if ev.path_matches(tail)), None)
    if not (
        isinstance(data.get("model"), str) or by_path is not None or any(data.keys() & ev.params for _, ev in formats)
    ):
        return None
    possible = [p for p, ev in formats if isinstance(prompt, str) or ev.list_prompt]
    score = {p.name: len(data.keys() & ev.keys) for p, ev in formats}
    return _best(possible, score, by_path)


def _classify_messages(tail: str, data: dict) -> str | None:
    """Pick among the chat formats: rule out by incompatible shapes, score by specific keys.

    Each format states its evidence (:class:`~llmwall.providers.base.ChatEvidence`);
    the same rules weigh it for all.
    """
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    formats = [(p, p.chat) for p in registry.CHAT if p.chat is not None]
    possible = {p.name for p, _ in formats}
    score = {p.name: len(data.keys() & ev.keys) + p.chat_body_score(data) for p, ev in formats}
    for msg in sample(messages):
        if not isinstance(msg, dict):
            return None
        role = as_str(msg.get("role"))
        if role not in CHAT_ROLES:
            return None
        for p, ev in formats:
            if role not in ev.roles:
                possible.discard(p.name)
            score[p.name] += p.chat_message_score(msg)
        content = msg.get("content")
        if isinstance(content, str):
            possible -= {p.name for p, ev in formats if not ev.string_content}
        elif isinstance(content, list):
            possible -= {p.name for p, ev in formats if not ev.list_content}
            for block in content[:SAMPLE]:
                if not isinstance(block, dict):
                    return None
                kind = block.get("type")
                if kind is not None and not isinstance(kind, str):
                    return None
                if kind is None:
                    possible -= {p.name for p, ev in formats if not ev.untyped_blocks}
                for p, _ in formats:  # a block counts for the first format that claims it
                    points = p.chat_block_score(block, kind)
                    if points:
                        score[p.name] += points
                        break
        elif content is not None:
            return None
    by_path = next((p for p, ev in formats if ev.paths and tail.endswith(ev.paths)), None)
    return _best([p for p, _ in formats if p.name in possible], score, by_path)


# --------------------------------------------------------------------------- responses


def confirm_response(fmt: str, data: object) -> bool:
    """True when a (non-streamed) response body looks like ``fmt``'s response."""
    provider = registry.get(fmt)
    return provider is not None and provider.confirm_response(data)


def confirm_stream(fmt: str, first_bytes: bytes) -> bool:
    """True when the start of a streamed response (SSE, NDJSON, event-stream) looks like ``fmt``."""
    if not isinstance(first_bytes, (bytes, bytearray)):
        return False
    provider = registry.get(fmt)
    return provider is not None and provider.confirm_stream(bytes(first_bytes))


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
    provider = registry.get(fmt)
    return PathHints(model, provider is not None and provider.streams_by_path(route, query))
