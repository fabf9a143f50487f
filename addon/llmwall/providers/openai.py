"""OpenAI formats: Chat Completions, legacy Completions and the Responses API.

Also every server that copies them: Azure OpenAI, vLLM, llama.cpp, LM Studio,
OpenRouter, Together, Groq, Mistral, Workers AI's ``/ai/run/@cf/...``. OpenAI's error
schema is the default block answer for clients of unknown or custom formats too.
"""

from __future__ import annotations

from typing import ClassVar, Final

from llmwall.providers.base import (
    CHAT_ROLES,
    EMPTY,
    ChatEvidence,
    CompletionEvidence,
    Path,
    Provider,
    ResponseText,
    Turn,
    Usage,
    arguments_text,
    as_str,
    dicts,
    dig,
    first_choice,
    joined,
    messages,
    prompt_turns,
    role,
    role_key,
    sample,
    strings,
    text_at,
    usage_of,
)

_TEXT_PARTS: Final = ("text", "input_text", "output_text")
_PART_TYPES: Final = frozenset({"image_url", "input_audio", "file", "refusal"})

_CHAT_KEYS: Final = frozenset(
    {
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
        # shared with Cohere v2
        "seed",
        "response_format",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
    }
)

_COMPLETION_KEYS: Final = frozenset(
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
_COMPLETION_PARAMS: Final = frozenset(
    {"max_tokens", "temperature", "top_p", "stop", "stream", "n", "echo", "best_of", "logprobs", "suffix", "n_predict"}
)

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
_TOOL_OUTPUTS: Final = (
    "function_call_output",
    "custom_tool_call_output",
    "computer_call_output",
    "local_shell_call_output",
)


def openai_content(content: object, path: Path, role: str) -> Turn:
    """String content, or a list of parts where {"type": "text"} parts carry text."""
    if isinstance(content, str):
        return [(path, content, role)]
    out: Turn = []
    if isinstance(content, list):
        for i, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in _TEXT_PARTS:
                out += text_at(part, "text", path + (i,), role)
            elif isinstance(part, str):  # not in the spec, but lenient servers read it as text
                out.append((path + (i,), part, role))
    return out


#: Responses input items that are earlier tool calls, and the key of their text.
_TOOL_CALL_ITEMS: Final = {"function_call": "arguments", "custom_tool_call": "input"}


def assistant_extras(items: object) -> list[Turn]:
    """Text of earlier assistant messages outside ``content``: ``refusal`` and the arguments of
    ``tool_calls``. The client writes the history it resends, and the model reads these as
    its own earlier words, so an instruction planted there reaches it like any other turn.
    Arguments are a JSON string (OpenAI) or an object (Ollama): every string in it counts."""
    out: list[Turn] = []
    for i, msg in enumerate(items if isinstance(items, list) else []):
        if not isinstance(msg, dict) or role_key(msg) != "assistant":
            continue
        turn = text_at(msg, "refusal", ("messages", i), "assistant")
        calls = msg.get("tool_calls")
        for j, call in enumerate(calls if isinstance(calls, list) else []):
            here: Path = ("messages", i, "tool_calls", j, "function", "arguments")
            turn += [(p, s, "assistant") for p, s in strings(dig(call, "function", "arguments"), here)]
        if turn:
            out.append(turn)
    return out


def _content_text(content: object) -> list[str]:
    """Response-side text of a message content: a string, or text/refusal parts."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for part in dicts(content):
        if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            out.append(part["refusal"])
    return out


def _chat_message_text(message: dict, tools: list[tuple[int, str]], delta: bool) -> list[str]:
    """Text of a chat ``message`` (or stream ``delta``); tool-call arguments go to ``tools``."""
    texts = _content_text(message.get("content"))
    if isinstance(message.get("refusal"), str):
        texts.append(message["refusal"])
    for position, call in enumerate(dicts(message.get("tool_calls"))):
        # a stream numbers its calls ("index"), pieces of one call share the number
        index = call["index"] if delta and isinstance(call.get("index"), int) else position
        function = call.get("function")
        args = arguments_text(function.get("arguments")) if isinstance(function, dict) else None
        if args:
            tools.append((index, args))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        args = arguments_text(legacy.get("arguments"))
        if args:
            tools.append((0, args))
    return texts


class ChatCompletions(Provider):
    name = "openai.chat"
    output_cap_paths = (("max_completion_tokens",), ("max_tokens",))  # the first replaces the second
    description = "OpenAI Chat Completions (and every OpenAI-compatible server)"
    chat: ClassVar[ChatEvidence | None] = ChatEvidence(
        keys=_CHAT_KEYS,
        roles=CHAT_ROLES,
        paths=("/chat/completions",),
        message_keys=frozenset({"tool_calls", "tool_call_id", "name"}),
        block_types=_PART_TYPES,
    )

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        turns = messages(data.get("messages"), ("messages",), role_key, "content", openai_content, latest_only)
        return turns if latest_only else turns + assistant_extras(data.get("messages"))

    def response_shape(self, data: dict) -> bool:
        return data.get("object") == "chat.completion" or isinstance(first_choice(data).get("message"), dict)

    def confirm_event(self, event: dict) -> bool:
        return event.get("object") == "chat.completion.chunk" or isinstance(first_choice(event).get("delta"), dict)

    def response_text(self, data: object) -> ResponseText:
        return self._choices_text(data, "message", "\n")

    def event_text(self, event: object) -> ResponseText:
        return self._choices_text(event, "delta", "")

    @staticmethod
    def _choices_text(data: object, key: str, sep: str) -> ResponseText:
        if not isinstance(data, dict):
            return EMPTY
        texts: list[str] = []
        tools: list[tuple[int, str]] = []
        for choice in dicts(data.get("choices")):
            message = choice.get(key)
            if isinstance(message, dict):
                texts.append("".join(_chat_message_text(message, tools, delta=key == "delta")))
        return ResponseText(sep.join(t for t in texts if t), tuple(tools))

    def usage(self, data: object) -> Usage | None:
        return _openai_usage(data)

    def event_usage(self, event: object) -> Usage | None:
        return _openai_usage(event)  # the last chunk, when stream_options.include_usage is set


def _openai_usage(data: object) -> Usage | None:
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage_of(usage.get("prompt_tokens"), usage.get("completion_tokens")) if isinstance(usage, dict) else None


class Completions(Provider):
    name = "openai.completions"
    description = "OpenAI legacy Completions ({model, prompt})"
    completion: ClassVar[CompletionEvidence | None] = CompletionEvidence(
        keys=_COMPLETION_KEYS,
        params=_COMPLETION_PARAMS,
        paths=("/completions", "/completion"),
        path_markers=("/ai/run/@",),  # Workers AI
        list_prompt=True,
    )

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        return prompt_turns(data, "prompt")

    def response_shape(self, data: dict) -> bool:
        return data.get("object") == "text_completion" or isinstance(first_choice(data).get("text"), str)

    def response_text(self, data: object) -> ResponseText:
        return self._choices_text(data, "\n")

    def event_text(self, event: object) -> ResponseText:
        return self._choices_text(event, "")

    @staticmethod
    def _choices_text(data: object, sep: str) -> ResponseText:
        if not isinstance(data, dict):
            return EMPTY
        return ResponseText(sep.join(t for c in dicts(data.get("choices")) if isinstance(t := c.get("text"), str)))

    def usage(self, data: object) -> Usage | None:
        return _openai_usage(data)

    def event_usage(self, event: object) -> Usage | None:
        return _openai_usage(event)


class Responses(Provider):
    name = "openai.responses"
    output_cap_paths = (("max_output_tokens",),)
    description = "OpenAI Responses API ({model, input})"
    body_key = "input"
    system_keys = ("instructions",)

    def matches(self, tail: str, data: dict) -> bool:
        inp = data.get("input")
        path_says = tail.endswith("/responses")
        if isinstance(inp, str):
            return path_says or bool(data.keys() & _RESPONSES_KEYS)
        if not isinstance(inp, list) or not inp:
            return False
        for item in sample(inp):
            if not isinstance(item, dict):
                return False
            msg_role, kind = as_str(item.get("role")), as_str(item.get("type"))
            if msg_role is None and "role" in item:
                return False
            if msg_role is None and kind not in _RESPONSES_ITEM_TYPES:
                return False
            if msg_role is not None and msg_role not in CHAT_ROLES:
                return False
        return True

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        inp = data.get("input")
        if isinstance(inp, str):
            return [[(("input",), inp, "user")]]
        turns: list[Turn] = []
        for i, item in enumerate(inp if isinstance(inp, list) else []):
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind in _TOOL_OUTPUTS:
                output = item.get("output")
                if isinstance(output, str):
                    turns.append([(("input", i, "output"), output, "tool")])
                else:
                    turns.append([(p, t, "tool") for p, t, _ in openai_content(output, ("input", i, "output"), "tool")])
            elif kind in _TOOL_CALL_ITEMS:  # earlier calls the client resends: the model reads them
                turns.append(text_at(item, _TOOL_CALL_ITEMS[kind], ("input", i), "assistant"))
            elif kind in (None, "message"):
                kept = role(item.get("role"))
                if kept is not None:
                    turns.append(openai_content(item.get("content"), ("input", i, "content"), kept))
        return turns

    def response_shape(self, data: dict) -> bool:
        return data.get("object") == "response" and isinstance(data.get("output"), list)

    def confirm_event(self, event: dict) -> bool:
        kind = as_str(event.get("type"))
        return isinstance(kind, str) and kind.startswith("response.")

    def response_text(self, data: object) -> ResponseText:
        if not isinstance(data, dict):
            return EMPTY
        texts: list[str] = []
        tools: list[tuple[int, str]] = []
        output = data.get("output")
        for index, item in enumerate(output if isinstance(output, list) else []):
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "message":
                texts.append("".join(_content_text(item.get("content"))))
            elif kind == "function_call" and isinstance(item.get("arguments"), str):
                tools.append((index, item["arguments"]))
            elif kind == "custom_tool_call" and isinstance(item.get("input"), str):
                tools.append((index, item["input"]))
        return ResponseText(joined(texts), tuple(tools))

    def event_text(self, event: object) -> ResponseText:
        if not isinstance(event, dict) or not isinstance(delta := event.get("delta"), str):
            return EMPTY
        kind = event.get("type")
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return ResponseText(delta)
        if kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            index = event.get("output_index")
            return ResponseText("", ((index if isinstance(index, int) else 0, delta),))
        return EMPTY

    def usage(self, data: object) -> Usage | None:
        usage = data.get("usage") if isinstance(data, dict) else None
        return usage_of(usage.get("input_tokens"), usage.get("output_tokens")) if isinstance(usage, dict) else None

    def event_usage(self, event: object) -> Usage | None:
        # response.completed / response.incomplete / response.failed carry the whole response
        return self.usage(event.get("response")) if isinstance(event, dict) else None
