"""What every provider format module implements, and the helpers they share.

A provider module (``providers/openai.py``, ``providers/anthropic.py``...) holds one
:class:`Provider` subclass per request format of that family. Each owns, for its format:

* **request evidence**: how discovery recognises its bodies (:class:`ChatEvidence` for
  ``{"messages": [...]}`` bodies, :class:`CompletionEvidence` for ``{"prompt": ...}``
  bodies, or ``body_key`` + :meth:`Provider.matches` for a shape of its own) and the
  URL paths that stream or break ties;
* **prompt extraction**: :meth:`Provider.turns`, every text with its exact JSON path
  (``redact.redact_body`` rewrites the literal at that path);
* **response confirmation**: :meth:`Provider.confirm_response` and
  :meth:`Provider.confirm_stream`;
* **response text**: :meth:`Provider.response_text` on a whole body and
  :meth:`Provider.event_text` on one stream event (SSE ``data:``, NDJSON line, JSON-array
  item, or for Bedrock one decoded event-stream message);
* **usage**: :meth:`Provider.usage` / :meth:`Provider.event_usage`, the token counts the
  provider reports, :meth:`Provider.read_answer` for a whole answer body (plain or a stream
  buffered whole), and :meth:`Provider.max_output_tokens`, the output cap a request asks
  for (token budgets reserve it until the answer's usage is known);
* **block error**: :meth:`Provider.error_body`, the body of a block in the provider's own
  error schema so that official SDKs raise their usual exception.

All of it is pure functions over parsed JSON. Nothing here raises on odd shapes: a
wrong type anywhere just yields less. ``providers/registry.py`` lists the formats.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Final

from llmwall.providers import events

#: A JSON path from the parsed body to one string: keys and list indexes.
Path = tuple[str | int, ...]
#: (path, text, role) candidates of one message, before the latest-turn selection.
Turn = list[tuple[Path, str, str]]

#: Content types of text streams (SSE, NDJSON): a body of one is read event by event.
STREAM_CONTENT_TYPES: Final = ("event-stream", "ndjson", "jsonl")
#: How many messages/items at each end of a list discovery inspects: enough to decide, cheap on 100k.
SAMPLE: Final = 32

#: Roles a chat message may carry in any chat format.
CHAT_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

_ASSISTANT_ROLES: Final = frozenset({"assistant", "model", "chatbot"})
_TOOL_ROLES: Final = frozenset({"tool", "function", "ipython"})
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Usage:
    """Token counts a provider reports for one exchange.

    ``prompt_tokens`` counts every input token the provider billed (cached ones
    included); ``completion_tokens`` every generated token (reasoning included). None
    when the body does not say. In a stream, counts are totals so far: a later event's
    value replaces an earlier one (see :class:`StreamText`).
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class ResponseText:
    """Model-written text in a response body, or the increment one stream event carries.

    ``text`` is what a user reads (text parts and refusals, in order, several choices or
    candidates joined by newlines); reasoning/thinking is left out, as in prompt
    extraction. ``tool_arguments`` holds (tool call index, arguments) pairs: the complete
    JSON arguments of each call in a whole body, a piece to append in a stream event.
    """

    text: str = ""
    tool_arguments: tuple[tuple[int, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.text or self.tool_arguments)


EMPTY: Final = ResponseText()


@dataclass
class StreamText:
    """Accumulates the :meth:`Provider.event_text` and :meth:`Provider.event_usage` of a stream."""

    provider: Provider
    parts: list[str] = field(default_factory=list)
    tools: dict[int, list[str]] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def feed(self, event: object) -> ResponseText:
        """Add one event; returns what it added."""
        delta = self.provider.event_text(event)
        self.add(delta, self.provider.event_usage(event))
        return delta

    def add(self, delta: ResponseText, usage: Usage | None) -> None:
        """Add text, tool-call argument pieces and usage totals (later counts replace earlier ones)."""
        if delta.text:
            self.parts.append(delta.text)
        for index, piece in delta.tool_arguments:
            self.tools.setdefault(index, []).append(piece)
        if usage is not None:
            if usage.prompt_tokens is not None:
                self.prompt_tokens = usage.prompt_tokens
            if usage.completion_tokens is not None:
                self.completion_tokens = usage.completion_tokens

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tool_arguments(self) -> dict[int, str]:
        return {index: "".join(pieces) for index, pieces in sorted(self.tools.items())}

    @property
    def usage(self) -> Usage | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return Usage(self.prompt_tokens, self.completion_tokens)


# --------------------------------------------------------------------------- request evidence


@dataclass(frozen=True)
class ChatEvidence:
    """How discovery tells a ``{"messages": [...]}`` body of this format from the other chat formats.

    Every chat format starts possible with a score of 0. A message role outside
    ``roles``, a string content when not ``string_content``, a list content when not
    ``list_content`` or a block without ``"type"`` when not ``untyped_blocks`` rules
    the format out. Points: one per top-level key in ``keys``; one per message that
    has any of ``message_keys``; one per content block whose ``type`` is in
    ``block_types`` (the block counts for the first format in registry order that lists
    its type); two per block without a type that has any of ``untyped_block_keys``; plus
    what :meth:`Provider.chat_body_score`, :meth:`Provider.chat_message_score` and, for a
    block no format lists, :meth:`Provider.chat_block_score` add. The best score wins;
    on a tie the format whose ``paths`` end the route, else the first in registry order.
    The declarative fields are indexed once (``discovery._ChatTable``): classification
    runs on every JSON request.
    """

    keys: frozenset[str]
    roles: frozenset[str] = CHAT_ROLES
    paths: tuple[str, ...] = ()
    string_content: bool = True
    list_content: bool = True
    untyped_blocks: bool = False
    message_keys: frozenset[str] = frozenset()
    block_types: frozenset[str] = frozenset()
    untyped_block_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CompletionEvidence:
    """How discovery tells a ``{"prompt": ...}`` body of this format from the other completion formats.

    A body is completion-style when it names a string ``model``, its route matches any
    completion format's ``paths``/``path_markers``, or it carries any format's
    ``params``. A list prompt rules out formats without ``list_prompt``; each key in
    ``keys`` scores one point; ties go to the format whose path matched, else the first
    in registry order.
    """

    keys: frozenset[str]
    params: frozenset[str]
    paths: tuple[str, ...] = ()
    path_markers: tuple[str, ...] = ()
    list_prompt: bool = True

    def path_matches(self, tail: str) -> bool:
        return (bool(self.paths) and tail.endswith(self.paths)) or any(m in tail for m in self.path_markers)


# --------------------------------------------------------------------------- the protocol


class Provider:
    """One request format. Subclasses set the class attributes and override what applies."""

    #: Stable format name ("family.api"): it appears in rules (``cf.llm.request.format``),
    #: analytics and block responses.
    name: ClassVar[str]
    #: What it covers, for docs and the inventory.
    description: ClassVar[str]
    #: Discovery evidence: at most one of ``chat``, ``completion`` or ``body_key``.
    chat: ClassVar[ChatEvidence | None] = None
    completion: ClassVar[CompletionEvidence | None] = None
    #: A top-level key that only this format's bodies carry; :meth:`matches` decides.
    body_key: ClassVar[str | None] = None
    #: Top-level keys holding a system prompt or instructions (read by :meth:`system_turns`).
    system_keys: ClassVar[tuple[str, ...]] = ()
    #: Where a request body asks for an output cap, in order of preference (read by
    #: :meth:`max_output_tokens`).
    output_cap_paths: ClassVar[tuple[tuple[str, ...], ...]] = (("max_tokens",),)

    @property
    def family(self) -> str:
        """The part of the name before the dot: block errors are shaped per family."""
        return self.name.split(".", 1)[0]

    def __repr__(self) -> str:
        return f"<provider {self.name}>"

    # ------------------------------------------------------------- discovery
    def matches(self, tail: str, data: dict) -> bool:
        """For ``body_key`` formats: whether ``data`` (which has that key) is this format."""
        return False

    def chat_body_score(self, data: dict) -> int:
        """Chat formats: evidence from top-level values (beyond ``ChatEvidence.keys``)."""
        return 0

    def chat_message_score(self, message: dict) -> int:
        """Chat formats: evidence from one message beyond ``ChatEvidence.message_keys``."""
        return 0

    def chat_block_score(self, block: dict, kind: str | None) -> int:
        """Chat formats: evidence from a content block no format's ``block_types`` lists
        (``kind`` is its ``type``, or None)."""
        return 0

    def streams_by_path(self, route: str, query: str) -> bool:
        """Whether the URL asks for a streamed response (route lower-cased, no trailing slash)."""
        return False

    # ------------------------------------------------------------- extraction
    def turns(self, data: dict, latest_only: bool) -> list[Turn]:
        """The candidate (path, text, role) parts of each turn, in order (see ``extraction``).

        ``latest_only`` allows stopping at the latest turn with user-written text.
        """
        return []

    def system_turns(self, data: dict) -> list[Turn]:
        """The system prompt fields (``system_keys``), one turn each, role ``system``.

        A string value is one part; in a structured value (content blocks, Gemini's
        ``{"parts": [{"text": ...}]}``) every string under a ``text`` key is.
        """
        out: list[Turn] = []
        for key in self.system_keys:
            value = data.get(key)
            if isinstance(value, str):
                out.append([((key,), value, "system")])
            elif isinstance(value, (dict, list)):
                turn = [(p, s, "system") for p, s in strings(value, (key,)) if p[-1] == "text"]
                if turn:
                    out.append(turn)
        return out

    def stream_requested(self, data: dict) -> bool:
        """Whether the request body asks for a streamed response."""
        return data.get("stream") is True

    def max_output_tokens(self, data: object) -> int | None:
        """The output cap a request body asks for (``output_cap_paths``), or None."""
        for path in self.output_cap_paths:
            cap = as_int(dig(data, *path))
            if cap is not None and cap >= 0:
                return cap
        return None

    # ------------------------------------------------------------- responses
    def confirm_response(self, data: object) -> bool:
        """True when a (non-streamed) response body looks like this format's response."""
        return isinstance(data, dict) and self.response_shape(data)

    def response_shape(self, data: dict) -> bool:
        return False

    def confirm_event(self, event: dict) -> bool:
        """True when the first event of a stream looks like this format's (default: a response chunk)."""
        return self.confirm_response(event)

    def confirm_stream(self, first_bytes: bytes) -> bool:
        """True when the start of a streamed response (SSE, NDJSON, JSON array) looks like this format."""
        event = events.first_event(first_bytes)
        return isinstance(event, dict) and self.confirm_event(event)

    def response_text(self, data: object) -> ResponseText:
        """Model-written text and tool-call arguments of a whole response body."""
        return EMPTY

    def event_text(self, event: object) -> ResponseText:
        """The text and tool-call argument pieces one stream event adds."""
        return EMPTY

    def usage(self, data: object) -> Usage | None:
        """Token counts of a whole response body, or None when it reports none."""
        return None

    def event_usage(self, event: object) -> Usage | None:
        """Token counts (totals so far) one stream event reports, or None."""
        return None

    def read_answer(self, body: bytes, content_type: str) -> StreamText:
        """A whole answer body: its text, tool-call arguments and usage.

        Plain JSON is read with :meth:`response_text` and :meth:`usage`; a stream buffered
        whole (an event-stream or NDJSON content type, or a body that is not one JSON
        document) event by event, with :meth:`event_text` and :meth:`event_usage`. Text
        streams only: Bedrock's binary event stream yields nothing here.
        """
        found = StreamText(self)
        if not any(kind in content_type for kind in STREAM_CONTENT_TYPES):
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                pass  # a stream sent without its content type
            else:
                found.add(self.response_text(data), self.usage(data))
                return found
        for event in events.iter_events(body):
            found.feed(event)
        return found

    # ------------------------------------------------------------- block error
    def error_body(
        self, message: str, status: int, extra: dict[str, object]
    ) -> tuple[dict[str, object], dict[str, str]]:
        """The provider-shaped error body and extra headers for a block (default: OpenAI's)."""
        return openai_error(message, extra)


def openai_error(message: str, extra: dict[str, object]) -> tuple[dict[str, object], dict[str, str]]:
    """OpenAI's error schema: also the answer to clients of unknown or custom formats."""
    return {"error": {"message": message, "type": "llmwall_blocked", "param": None, "code": "blocked", **extra}}, {}


# --------------------------------------------------------------------------- shared helpers


def as_str(value: object) -> str | None:
    """``value`` if it is a string: body values are used as set members, so no lists."""
    return value if isinstance(value, str) else None


def as_int(value: object) -> int | None:
    """``value`` if it is a whole number (not a bool)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def add_counts(*values: object) -> int | None:
    """The sum of the whole numbers among ``values``; None when there are none."""
    counts = [v for v in map(as_int, values) if v is not None]
    return sum(counts) if counts else None


def usage_of(prompt: object, completion: object) -> Usage | None:
    """A Usage from two raw values, None when neither is a count."""
    p, c = as_int(prompt), as_int(completion)
    return None if p is None and c is None else Usage(p, c)


def sample(items: list) -> list:
    """Both ends of a long list: enough to decide a format, cheap on 100k items."""
    return items if len(items) <= 2 * SAMPLE else items[:SAMPLE] + items[-SAMPLE:]


def dig(data: object, *keys: str | int) -> object:
    """``data[k1][k2]...`` through dicts and lists, or None where the shape differs."""
    for key in keys:
        if isinstance(key, str) and isinstance(data, dict):
            data = data.get(key)
        elif isinstance(key, int) and isinstance(data, list) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def dicts(value: object) -> Iterator[dict]:
    """The dict items of ``value`` when it is a list."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def first_choice(data: dict) -> dict:
    """OpenAI-style ``choices[0]``, or an empty dict."""
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def arguments_text(value: object) -> str | None:
    """Tool-call arguments as JSON text: kept as sent when a string, serialised when an object."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return None


def joined(texts: list[str]) -> str:
    return "\n".join(t for t in texts if t)


def role(raw: object, default_user: bool = False) -> str | None:
    """Normalise a provider role to user / assistant / tool / system; None for unknowns.

    System and developer messages come back as ``system``: extraction keeps them only
    when every turn is screened (they are client-supplied text like any other).
    """
    if raw is None and default_user:
        return "user"
    if not isinstance(raw, str):
        return None
    lowered = raw.lower()
    if lowered == "user":
        return "user"
    if lowered in _ASSISTANT_ROLES:
        return "assistant"
    if lowered in _TOOL_ROLES:
        return "tool"
    if lowered in _SYSTEM_ROLES:
        return "system"
    return None


def role_key(msg: dict) -> str | None:
    return role(msg.get("role"))


def strings(value: object, path: Path, limit: int = 1000) -> Iterator[tuple[Path, str]]:
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


def text_at(container: object, key: str | int, path: Path, role: str) -> Turn:
    """The string at ``container[key]`` as a one-part turn (empty when absent/not a string)."""
    if isinstance(container, dict) and isinstance(key, str):
        value = container.get(key)
    elif isinstance(container, list) and isinstance(key, int) and 0 <= key < len(container):
        value = container[key]
    else:
        return []
    return [(path + (key,), value, role)] if isinstance(value, str) else []


def messages(
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
        kept = role_of(msg)
        if kept is None:
            continue
        turn = reader(msg.get(content_key), base + (i, content_key), kept)
        if kept == "tool":
            turn = [(p, t, "tool") for p, t, _ in turn]
        if latest_only and any(r == "user" and t for _, t, r in turn):
            return [turn]
        turns.append(turn)
    return [] if latest_only else turns


def prompt_turns(data: dict, key: str) -> list[Turn]:
    """Completion-style bodies: ``key`` is a string or a list of strings; plus ``suffix``."""
    value = data.get(key)
    turn: Turn = []
    if isinstance(value, str):
        turn.append(((key,), value, "user"))
    elif isinstance(value, list):
        turn += [((key, i), s, "user") for i, s in enumerate(value) if isinstance(s, str)]
    turn += text_at(data, "suffix", (), "user")
    return [turn]
