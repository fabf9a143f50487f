"""What happened to one LLM request: the record the proxy leaves for analytics.

The screening addon (``proxy/addon.py``) builds one :class:`Event` per LLM request it
handles and puts it, as a plain dict, in ``flow.metadata["llmwall"]``: plain JSON
types because mitmproxy saves metadata with flows (``-w``, mitmweb). The analytics
addon (``analytics/addon.py``) reads it back from there to write the store and the
metrics. An event holds outcomes only (rule ids, categories, timings), never text:
``analytics.store.validate_event`` refuses unknown keys for that reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

#: The flow metadata key that carries the event (also shown by mitmweb).
METADATA_KEY = "llmwall"
#: The flow metadata key where response screening (``llmwall.responses``) leaves what it
#: learnt of the answer for analytics: ``{"confirmed": bool}``, judged from the first
#: bytes of a stream (a streamed body is not kept) or from the whole answer before any
#: block replaced it.
RESPONSE_METADATA_KEY = "llmwall_response"
#: The flow metadata key for a streamed answer's completion tokens: the token budgets
#: (``llmwall.ratelimit``) set it to ``{}`` at the request to ask for them, and response
#: screening fills it (``{"completion_tokens": int | None}``, from the usage events in the
#: stream's last 16 KiB) when the stream ends, since a streamed body is never kept. Streams
#: nobody asked about keep no tail.
STREAM_USAGE_KEY = "llmwall_stream_usage"


@dataclass
class Event:
    """One screened (or unscreenable) LLM request."""

    ts: float  # when the decision was taken (epoch seconds)
    host: str
    method: str
    path_template: str  # discovery.path_template: ids and model names replaced
    format: str | None = None  # provider format, "custom" for force-included endpoints
    model: str | None = None
    action: str | None = None  # block | redact | log | None (allowed)
    rule: str | None = None  # the deciding rule
    matched: list[str] = field(default_factory=list)  # every rule that matched
    fields: dict[str, object] = field(default_factory=dict)  # cf.llm.* values (outcomes, never text)
    timings_ms: dict[str, float] = field(default_factory=dict)  # per detector
    not_scored: list[str] = field(default_factory=list)  # detectors that could not answer in time
    errors: list[str] = field(default_factory=list)  # detectors that failed
    total_ms: float = 0.0
    status: str = "screened"  # or why it could not be: parse_error | oversize | undecodable | empty
    redacted: list[str] = field(default_factory=list)  # categories redacted, never values

    def to_dict(self) -> dict[str, object]:
        """The metadata/store form (copies of the lists and maps); ``redacted`` only when something was.

        Built by hand: ``dataclasses.asdict`` deep-copies through ``copy.deepcopy`` and took
        11 % of the event loop's GIL time under overload (docs/benchmarks.md, "Overload").
        """
        out = {name: _plain(getattr(self, name)) for name in _FIELD_ORDER}
        if not self.redacted:
            del out["redacted"]
        return out

    @classmethod
    def from_dict(cls, data: object) -> Event | None:
        """The event in ``data`` (a :meth:`to_dict` result), or None when it is not one."""
        if not isinstance(data, Mapping):
            return None
        if not set(data) <= _FIELD_NAMES or not {"ts", "host", "method", "path_template"} <= set(data):
            return None
        try:
            return cls(**{k: v for k, v in data.items() if k in _FIELD_NAMES})
        except TypeError:
            return None


#: The names of the event's fields, in order (and as a set).
_FIELD_ORDER: Final = tuple(f.name for f in dataclasses.fields(Event))
_FIELD_NAMES: Final = frozenset(_FIELD_ORDER)


def _plain(value: object) -> object:
    """A copy of a JSON-like value: lists and maps copied all the way down, other values as they are."""
    if isinstance(value, list):
        return [_plain(x) for x in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
