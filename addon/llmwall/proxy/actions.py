"""What a decision does to a flow: provider-shaped block responses and annotations.

A blocked request never goes upstream: the client receives an HTTP error in its
provider's own error schema, so official SDKs raise their usual exception with a
readable message instead of failing to parse an unfamiliar body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from mitmproxy import http

from llmwall.categories import labels

#: Marker shown in mitmweb / mitmproxy's flow list for each action.
MARKERS: Mapping[str, str] = {"block": ":no_entry:", "redact": ":pencil2:", "log": ":warning:"}


def block_message(rule_id: str | None, categories: Sequence[str]) -> str:
    """The human-readable reason, safe to show: rule id and categories (S-codes with their names) only."""
    msg = "Request blocked by llmwall"
    if rule_id:
        msg += f" (rule {rule_id})"
    if categories:
        msg += ": " + ", ".join(labels(categories))
    return msg


def error_body(
    fmt: str | None, message: str, status: int, rule_id: str | None, categories: Sequence[str]
) -> tuple[dict[str, object], dict[str, str]]:
    """The provider-shaped error body and extra headers for a block."""
    family = (fmt or "openai").split(".", 1)[0]
    extra = {"rule": rule_id, "categories": list(categories), "category_names": labels(categories)}
    if family == "anthropic":
        return {"type": "error", "error": {"type": "permission_error", "message": message, **extra}}, {}
    if family == "gemini":
        return {"error": {"code": status, "message": message, "status": "PERMISSION_DENIED", **extra}}, {}
    if family in ("ollama", "tgi"):
        return {"error": message, "error_type": "llmwall_blocked", **extra}, {}
    if family == "cohere":
        return {"message": message, **extra}, {}
    if family == "bedrock":
        return {"message": message, **extra}, {"x-amzn-ErrorType": "AccessDeniedException"}
    return {"error": {"message": message, "type": "llmwall_blocked", "param": None, "code": "blocked", **extra}}, {}


def block_response(
    fmt: str | None,
    rule_id: str | None,
    categories: Sequence[str],
    status: int | None = None,
    body: object | None = None,
) -> http.Response:
    """Build the response that replaces a blocked request.

    A rule's ``status`` and ``body`` override the defaults; a string body is sent
    as text, any other value as JSON.
    """
    status = status or 403
    message = block_message(rule_id, categories)
    if body is None:
        payload, headers = error_body(fmt, message, status, rule_id, categories)
        content = json.dumps(payload).encode()
        ctype = "application/json"
    elif isinstance(body, str):
        content, headers, ctype = body.encode(), {}, "text/plain; charset=utf-8"
    else:
        content, headers, ctype = json.dumps(body).encode(), {}, "application/json"
    return http.Response.make(status, content, {"content-type": ctype, "x-llmwall-action": "block", **headers})


def annotate(flow: http.HTTPFlow, action: str | None, summary: Mapping[str, object]) -> None:
    """Record the decision on the flow and mark acted-on flows in mitmweb/mitmproxy's flow list.

    The comment and mitmdump's line come from the console addon (``llmwall.proxy.console``).
    """
    flow.metadata["llmwall"] = dict(summary)
    if action is not None:
        flow.marked = MARKERS.get(action, ":warning:")
