"""Google Gemini generateContent and streamGenerateContent, on AI Studio and Vertex AI.

The model is in the path (``/models/gemini-1.5-pro:generateContent``), not the body;
``discovery.path_hints`` reads it from there.
"""

from __future__ import annotations

from typing import Final

from llmwall.providers.base import (
    EMPTY,
    Path,
    Provider,
    ResponseText,
    Turn,
    Usage,
    add_counts,
    arguments_text,
    dicts,
    messages,
    role,
    sample,
    strings,
    text_at,
)

_ROLES: Final = ("user", "model", "function", "tool", "")


def gemini_parts(parts: object, path: Path, role: str) -> Turn:
    """Text parts (not model thoughts), functionCall argument strings; functionResponse payload
    strings as role tool."""
    out: Turn = []
    for i, part in enumerate(parts if isinstance(parts, list) else []):
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        here = path + (i,)
        if "text" in part:
            out += text_at(part, "text", here, role)
        for key in ("functionCall", "function_call"):  # earlier calls the client resends
            call = part.get(key)
            if isinstance(call, dict):
                out += [(p, s, role) for p, s in strings(call.get("args"), here + (key, "args"))]
        for key in ("functionResponse", "function_response"):
            response = part.get(key)
            if isinstance(response, dict) and "response" in response:
                out += [(p, s, "tool") for p, s in strings(response["response"], here + (key, "response"))]
    return out


def _gemini_role(msg: dict) -> str | None:
    return role(msg.get("role"), default_user=True) if msg.get("role") != "" else "user"


def _chunk_text(chunk: dict, sep: str, first_index: int) -> tuple[str, list[tuple[int, str]]]:
    """Text of each candidate (joined by ``sep``) and its function calls, numbered from ``first_index``."""
    texts: list[str] = []
    tools: list[tuple[int, str]] = []
    for candidate in dicts(chunk.get("candidates")):
        content = candidate.get("content")
        pieces: list[str] = []
        for part in dicts(content.get("parts") if isinstance(content, dict) else None):
            if part.get("thought") is True:
                continue
            if isinstance(part.get("text"), str):
                pieces.append(part["text"])
            call = part.get("functionCall") or part.get("function_call")
            if isinstance(call, dict) and (args := arguments_text(call.get("args", {}))) is not None:
                tools.append((first_index + len(tools), args))
        texts.append("".join(pieces))
    return sep.join(t for t in texts if t), tools


class Generate(Provider):
    name = "gemini.generate"
    output_cap_paths = (("generationConfig", "maxOutputTokens"), ("generation_config", "max_output_tokens"))
    description = "Google Gemini generateContent and streamGenerateContent (AI Studio and Vertex)"
    body_key = "contents"
    system_keys = ("systemInstruction", "system_instruction")

    def matches(self, tail: str, data: dict) -> bool:
        contents = data.get("contents")
        if not isinstance(contents, list) or not contents:
            return False
        for item in sample(contents):
            if not isinstance(item, dict) or not isinstance(item.get("parts"), list):
                return False
            if item.get("role") is not None and item.get("role") not in _ROLES:
                return False
        return True

    def streams_by_path(self, route: str, query: str) -> bool:
        return route.endswith(":streamgeneratecontent") or "alt=sse" in query

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        return messages(data.get("contents"), ("contents",), _gemini_role, "parts", gemini_parts, latest_only)

    def confirm_response(self, data: object) -> bool:
        if isinstance(data, list) and data:
            data = data[0]  # streamGenerateContent without alt=sse: a JSON array of responses
        return isinstance(data, dict) and (
            isinstance(data.get("candidates"), list) or isinstance(data.get("promptFeedback"), dict)
        )

    def response_text(self, data: object) -> ResponseText:
        if isinstance(data, dict):
            text, tools = _chunk_text(data, "\n", 0)
            return ResponseText(text, tuple(tools))
        if isinstance(data, list):  # a whole streamGenerateContent array: chunks carry deltas
            texts: list[str] = []
            tools = []
            for chunk in dicts(data):
                text, more = _chunk_text(chunk, "", len(tools))
                texts.append(text)
                tools += more
            return ResponseText("".join(texts), tuple(tools))
        return EMPTY

    def event_text(self, event: object) -> ResponseText:
        if not isinstance(event, dict):
            return EMPTY
        text, tools = _chunk_text(event, "", 0)
        return ResponseText(text, tuple(tools))

    def usage(self, data: object) -> Usage | None:
        if isinstance(data, list):  # the last chunk that reports usage has the totals
            found = [u for u in map(self.usage, data) if u is not None]
            return found[-1] if found else None
        meta = data.get("usageMetadata") if isinstance(data, dict) else None
        if not isinstance(meta, dict):
            return None
        prompt = add_counts(meta.get("promptTokenCount"), meta.get("toolUsePromptTokenCount"))
        completion = add_counts(meta.get("candidatesTokenCount"), meta.get("thoughtsTokenCount"))
        return None if prompt is None and completion is None else Usage(prompt, completion)

    def event_usage(self, event: object) -> Usage | None:
        return self.usage(event) if isinstance(event, dict) else None

    def error_body(
        self, message: str, status: int, extra: dict[str, object]
    ) -> tuple[dict[str, object], dict[str, str]]:
        return {"error": {"code": status, "message": message, "status": "PERMISSION_DENIED", **extra}}, {}
