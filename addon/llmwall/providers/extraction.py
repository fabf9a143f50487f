"""Prompt text from each provider format, with the exact JSON path of every string.

Default: the latest user turn only, i.e. the last user message that carries
user-written text (a user message holding only tool results is not a user turn).
``whole_conversation=True``: every user, assistant and tool-result text, in order.

Never extracted: system prompts and instructions, images/audio/files, tool schemas,
tool-call arguments, model reasoning. Tool *results* (and Cohere's RAG
``documents``) are untrusted input that often carries indirect prompt injection, so
whole-conversation mode includes them with role ``tool``.

Each TextPart's ``path`` leads from the parsed body to the very string it holds;
``redact.redact_body`` relies on that to rewrite the literal in the raw body.
Nothing here raises on odd shapes: a wrong type anywhere just yields fewer parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from llmwall.detectors.base import Prompt, TextPart

Path = tuple[str | int, ...]
# (path, text, role) candidates, before the latest-turn selection.
Turn = list[tuple[Path, str, str]]

_ASSISTANT_ROLES: Final = frozenset({"assistant", "model", "chatbot"})
_TOOL_ROLES: Final = frozenset({"tool", "function", "ipython"})


def _role(raw: object, default_user: bool = False) -> str | None:
    """Normalise a provider role to user / assistant / tool; None for system and unknowns."""
    if raw is None and default_user:
        return "user"
    if not isinstance(raw, str):
        return None
    role = raw.lower()
    if role == "user":
        return "user"
    if role in _ASSISTANT_ROLES:
        return "assistant"
    if role in _TOOL_ROLES:
        return "tool"
    return None  # system, developer, unknown


def _strings(value: object, path: Path, limit: int = 1000) -> Iterator[tuple[Path, str]]:
    """Every non-empty string value under ``value`` (not keys), in document order, iteratively."""
    stack: list[tuple[Path, object]] = [(path, value)]
    found = 0
    while stack and found < limit:
        here, node = stack.pop()
        if isinstance(node, str):
            if not node:
                continue
            found += 1
            yield here, node
        elif isinstance(node, dict):
            stack.extend((here + (k,), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((here + (i,), v) for i, v in reversed(list(enumerate(node))))


def _text_at(container: object, key: str | int, path: Path, role: str) -> Turn:
    """The string at ``container[key]`` as a one-part turn (empty when absent/not a string)."""
    if isinstance(container, dict) and isinstance(key, str):
        value = container.get(key)
    elif isinstance(container, list) and isinstance(key, int) and 0 <= key < len(container):
        value = container[key]
    else:
        return []
    return [(path + (key,), value, role)] if isinstance(value, str) else []


# --------------------------------------------------------------------------- per-block readers
# Each returns the (path, text, role) parts of one message's content; ``role`` is the
# message's role and tool results inside it are re-labelled "tool".


def _openai_content(content: object, path: Path, role: str) -> Turn:
    """String content, or a list of parts where {"type": "text"} parts carry text."""
    if isinstance(content, str):
        return [(path, content, role)]
    out: Turn = []
    if isinstance(content, list):
        for i, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
                out += _text_at(part, "text", path + (i,), role)
    return out


def _anthropic_content(content: object, path: Path, role: str) -> Turn:
    """Text blocks, plain-text documents, and tool_result blocks (as role tool)."""
    if isinstance(content, str):
        return [(path, content, role)]
    out: Turn = []
    if not isinstance(content, list):
        return out
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind, here = block.get("type"), path + (i,)
        if kind == "text":
            out += _text_at(block, "text", here, role)
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                out += _text_at(source, "data", here + ("source",), role)
            elif isinstance(source, dict) and source.get("type") == "content":
                out += _anthropic_content(source.get("content"), here + ("source", "content"), role)
        elif kind == "tool_result":
            out += _anthropic_content(block.get("content"), here + ("content",), "tool")
    return out


def _bedrock_content(content: object, path: Path, role: str) -> Turn:
    """Converse blocks: {"text"}, {"guardContent": {"text": {"text"}}}, {"toolResult"}."""
    out: Turn = []
    if not isinstance(content, list):
        return out
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        here = path + (i,)
        if "text" in block:
            out += _text_at(block, "text", here, role)
        elif isinstance(block.get("guardContent"), dict):
            inner = block["guardContent"].get("text")
            out += _text_at(inner, "text", here + ("guardContent", "text"), role)
        elif isinstance(block.get("toolResult"), dict):
            results = block["toolResult"].get("content")
            rpath = here + ("toolResult", "content")
            for j, item in enumerate(results if isinstance(results, list) else []):
                if not isinstance(item, dict):
                    continue
                if "text" in item:
                    out += _text_at(item, "text", rpath + (j,), "tool")
                elif "json" in item:
                    out += [(p, s, "tool") for p, s in _strings(item["json"], rpath + (j, "json"))]
    return out


def _cohere_content(content: object, path: Path, role: str) -> Turn:
    """String or [{"type": "text"}, {"type": "document", "document": {"data": ...}}]."""
    if isinstance(content, str):
        return [(path, content, role)]
    out: Turn = []
    for i, part in enumerate(content if isinstance(content, list) else []):
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            out += _text_at(part, "text", path + (i,), role)
        elif part.get("type") == "document" and isinstance(part.get("document"), dict):
            out += [(p, s, role) for p, s in _strings(part["document"].get("data"), path + (i, "document", "data"))]
    return out


def _gemini_parts(parts: object, path: Path, role: str) -> Turn:
    """Text parts (not model thoughts); functionResponse payload strings as role tool."""
    out: Turn = []
    for i, part in enumerate(parts if isinstance(parts, list) else []):
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        here = path + (i,)
        if "text" in part:
            out += _text_at(part, "text", here, role)
        for key in ("functionResponse", "function_response"):
            response = part.get(key)
            if isinstance(response, dict) and "response" in response:
                out += [(p, s, "tool") for p, s in _strings(response["response"], here + (key, "response"))]
    return out


# --------------------------------------------------------------------------- turn selection


def _messages(
    items: object,
    base: Path,
    role_of: Callable[[dict], str | None],
    content_key: str,
    reader: Callable[[object, Path, str], Turn],
    latest_only: bool,
) -> list[Turn]:
    """One Turn per message with a kept role (system messages are dropped here).

    ``latest_only`` walks backwards and stops at the first turn with user text, so
    the default mode costs the same on a 100k-message history as on a short one.
    """
    if not isinstance(items, list):
        return []
    turns: list[Turn] = []
    for i in reversed(range(len(items))) if latest_only else range(len(items)):
        msg = items[i]
        if not isinstance(msg, dict):
            continue
        role = role_of(msg)
        if role is None:
            continue
        turn = reader(msg.get(content_key), base + (i, content_key), role)
        if role == "tool":
            turn = [(p, t, "tool") for p, t, _ in turn]
        if latest_only and any(r == "user" and t for _, t, r in turn):
            return [turn]
        turns.append(turn)
    return [] if latest_only else turns


def _select(turns: list[Turn], whole_conversation: bool) -> list[TextPart]:
    """All non-empty parts, or those of the last turn holding user-written text."""
    if whole_conversation:
        chosen = [part for turn in turns for part in turn]
    else:
        chosen = []
        for turn in reversed(turns):
            users = [part for part in turn if part[2] == "user" and part[1]]
            if users:
                chosen = users
                break
    return [TextPart(path=p, text=t, role=r) for p, t, r in chosen if t]


def _role_key(msg: dict) -> str | None:
    return _role(msg.get("role"))


def _gemini_role(msg: dict) -> str | None:
    return _role(msg.get("role"), default_user=True) if msg.get("role") != "" else "user"


def _responses_turns(data: dict) -> list[Turn]:
    inp = data.get("input")
    if isinstance(inp, str):
        return [[(("input",), inp, "user")]]
    turns: list[Turn] = []
    for i, item in enumerate(inp if isinstance(inp, list) else []):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in (
            "function_call_output",
            "custom_tool_call_output",
            "computer_call_output",
            "local_shell_call_output",
        ):
            output = item.get("output")
            if isinstance(output, str):
                turns.append([(("input", i, "output"), output, "tool")])
            else:
                turns.append([(p, t, "tool") for p, t, _ in _openai_content(output, ("input", i, "output"), "tool")])
        elif kind in (None, "message"):
            role = _role(item.get("role"))
            if role is not None:
                turns.append(_openai_content(item.get("content"), ("input", i, "content"), role))
    return turns


def _prompt_turns(data: dict, key: str) -> list[Turn]:
    """Completion-style bodies: ``key`` is a string or a list of strings; plus ``suffix``."""
    value = data.get(key)
    turn: Turn = []
    if isinstance(value, str):
        turn.append(((key,), value, "user"))
    elif isinstance(value, list):
        turn += [((key, i), s, "user") for i, s in enumerate(value) if isinstance(s, str)]
    turn += _text_at(data, "suffix", (), "user")
    return [turn]


def _cohere_turns(data: dict, latest_only: bool) -> list[Turn]:
    turns = _messages(data.get("messages"), ("messages",), _role_key, "content", _cohere_content, latest_only)
    docs = data.get("documents")
    if isinstance(docs, list) and not latest_only:  # RAG documents: untrusted, like tool results
        turns.insert(
            0, [(p, s, "tool") for p, s in _strings(docs, ("documents",)) if not (len(p) == 3 and p[2] == "id")]
        )
    return turns


def _turns(fmt: str, data: dict, latest_only: bool) -> list[Turn]:
    reader = _CHAT_READERS.get(fmt)
    if reader is not None:
        key = "contents" if fmt == "gemini.generate" else "messages"
        role_of = _gemini_role if fmt == "gemini.generate" else _role_key
        content_key = "parts" if fmt == "gemini.generate" else "content"
        return _messages(data.get(key), (key,), role_of, content_key, reader, latest_only)
    if fmt == "cohere.chat":
        return _cohere_turns(data, latest_only)
    if fmt == "openai.responses":
        return _responses_turns(data)
    if fmt in ("openai.completions", "ollama.generate"):
        return _prompt_turns(data, "prompt")
    if fmt == "tgi.generate":
        return _prompt_turns(data, "inputs")
    return []


_CHAT_READERS: Final[dict[str, Callable[[object, Path, str], Turn]]] = {
    "openai.chat": _openai_content,
    "ollama.chat": _openai_content,
    "anthropic.messages": _anthropic_content,
    "bedrock.converse": _bedrock_content,
    "gemini.generate": _gemini_parts,
}


def extract(fmt: str, data: object, whole_conversation: bool = False) -> Prompt:
    """The screened text of a classified request body (see the module docstring)."""
    if not isinstance(data, dict):
        return Prompt(format=fmt, parts=())
    parts = _select(_turns(fmt, data, not whole_conversation), whole_conversation)
    model = data.get("model")
    stream = data.get("stream")
    if fmt in ("ollama.chat", "ollama.generate"):
        stream = stream is not False  # Ollama streams unless told not to
    return Prompt(
        format=fmt,
        parts=tuple(parts),
        model=model if isinstance(model, str) and model else None,
        stream=stream is True,
    )


def extract_all_strings(data: object, fmt: str = "unknown", max_parts: int = 1000) -> Prompt:
    """Every string value in the body (keys excluded), for force-included unknown endpoints."""
    parts = tuple(TextPart(path=p, text=s, role="unknown") for p, s in _strings(data, (), limit=max_parts))
    return Prompt(format=fmt, parts=parts)
