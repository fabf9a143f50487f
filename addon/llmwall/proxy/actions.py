"""What a decision does to a flow: provider-shaped block responses and annotations.

A blocked request never goes upstream: the client receives an HTTP error in its
provider's own error schema, so official SDKs raise their usual exception with a
readable message instead of failing to parse an unfamiliar body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final

from mitmproxy import http

from llmwall.categories import labels
from llmwall.providers import registry
from llmwall.providers.base import openai_error
from llmwall.proxy.event import METADATA_KEY, Event

#: Marker shown in mitmweb / mitmproxy's flow list for each action.
MARKERS: Mapping[str, str] = {"block": ":no_entry:", "redact": ":pencil2:", "log": ":warning:"}


#: What a block stopped: the client's request, or the model's answer (response screening).
REQUEST: Final = "Request"
RESPONSE: Final = "Response"


def block_message(rule_id: str | None, categories: Sequence[str], blocked: str = REQUEST) -> str:
    """The human-readable reason, safe to show: what was blocked, rule id and categories (S-codes
    with their names) only."""
    msg = f"{blocked} blocked by llmwall"
    if rule_id:
        msg += f" (rule {rule_id})"
    if categories:
        msg += ": " + ", ".join(labels(categories))
    return msg


def error_body(
    fmt: str | None, message: str, status: int, rule_id: str | None, categories: Sequence[str]
) -> tuple[dict[str, object], dict[str, str]]:
    """The provider-shaped error body and extra headers for a block.

    Shaped by the format's family (``providers/<family>.py``); unknown and custom
    formats get OpenAI's schema, which most clients understand.
    """
    extra: dict[str, object] = {"rule": rule_id, "categories": list(categories), "category_names": labels(categories)}
    provider = registry.family((fmt or "openai").split(".", 1)[0])
    if provider is None:
        return openai_error(message, extra)
    return provider.error_body(message, status, extra)


def block_response(
    fmt: str | None,
    rule_id: str | None,
    categories: Sequence[str],
    status: int | None = None,
    body: object | None = None,
    blocked: str = REQUEST,
) -> http.Response:
    """Build the response that replaces a blocked request (or, with ``blocked=RESPONSE``, a
    blocked whole answer: the message then says the response was blocked).

    A rule's ``status`` and ``body`` override the defaults; a string body is sent
    as text, any other value as JSON.
    """
    status = status or 403
    message = block_message(rule_id, categories, blocked)
    if body is None:
        payload, headers = error_body(fmt, message, status, rule_id, categories)
        content = json.dumps(payload).encode()
        ctype = "application/json"
    elif isinstance(body, str):
        content, headers, ctype = body.encode(), {}, "text/plain; charset=utf-8"
    else:
        content, headers, ctype = json.dumps(body).encode(), {}, "application/json"
    return http.Response.make(status, content, {"content-type": ctype, "x-llmwall-action": "block", **headers})


def annotate(flow: http.HTTPFlow, event: Event) -> None:
    """Leave the decision on the flow for the console and analytics addons
    (``flow.metadata["llmwall"]``) and mark acted-on flows in mitmweb/mitmproxy's flow list.

    The comment and mitmdump's line come from the console addon (``llmwall.proxy.console``).
    """
    flow.metadata[METADATA_KEY] = event.to_dict()
    if event.action is not None:
        flow.marked = MARKERS.get(event.action, ":warning:")
