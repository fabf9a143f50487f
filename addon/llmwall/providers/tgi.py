"""Hugging Face Text Generation Inference ``/generate`` and ``/generate_stream``, and bare Inference API calls.

TGI's OpenAI-compatible ``/v1/chat/completions`` is openai.chat.
"""

from __future__ import annotations

from typing import ClassVar

from llmwall.providers.base import (
    EMPTY,
    Provider,
    ResponseText,
    Turn,
    Usage,
    dicts,
    joined,
    prompt_turns,
    sample,
    usage_of,
)


class Generate(Provider):
    name = "tgi.generate"
    output_cap_paths = (("parameters", "max_new_tokens"),)
    description = "Hugging Face Text Generation Inference /generate and /generate_stream"
    body_key: ClassVar[str | None] = "inputs"

    def matches(self, tail: str, data: dict) -> bool:
        inputs = data.get("inputs")
        if not (
            isinstance(inputs, str)
            or (isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in sample(inputs)))
        ):
            return False
        if isinstance(data.get("parameters"), dict) or isinstance(data.get("stream"), bool):
            return True
        if tail.endswith(("/generate", "/generate_stream")):
            return True
        return set(data) <= {"inputs", "options"}  # bare HF Inference API call

    def streams_by_path(self, route: str, query: str) -> bool:
        return route.endswith("/generate_stream")

    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        return prompt_turns(data, "inputs")

    def confirm_response(self, data: object) -> bool:
        if isinstance(data, list) and data:
            data = data[0]
        return isinstance(data, dict) and isinstance(data.get("generated_text"), str)

    def confirm_event(self, event: dict) -> bool:
        return isinstance(event.get("token"), dict)

    def response_text(self, data: object) -> ResponseText:
        items = [data] if isinstance(data, dict) else list(dicts(data))
        return ResponseText(joined([t for item in items if isinstance(t := item.get("generated_text"), str)]))

    def event_text(self, event: object) -> ResponseText:
        token = event.get("token") if isinstance(event, dict) else None
        if not isinstance(token, dict) or token.get("special") is True or not isinstance(token.get("text"), str):
            return EMPTY  # the last event also repeats the whole generated_text: not a delta
        return ResponseText(token["text"])

    def usage(self, data: object) -> Usage | None:
        if isinstance(data, list):
            data = data[0] if data else None
        details = data.get("details") if isinstance(data, dict) else None
        if not isinstance(details, dict):
            return None
        prefill = details.get("prefill")  # the prompt's tokens, with decoder_input_details only
        return usage_of(
            len(prefill) if isinstance(prefill, list) and prefill else None, details.get("generated_tokens")
        )

    def event_usage(self, event: object) -> Usage | None:
        return self.usage(event)  # the last event carries "details"

    def error_body(
        self, message: str, status: int, extra: dict[str, object]
    ) -> tuple[dict[str, object], dict[str, str]]:
        return {"error": message, "error_type": "llmwall_blocked", **extra}, {}
