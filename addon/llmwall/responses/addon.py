"""The response addon: LLM answers stream through in time and are screened on the way.

mitmproxy buffers a response body unless an addon sets ``flow.response.stream`` in
``responseheaders``; llmwall used to leave it off, so a streamed answer reached the
client only once complete. This addon turns streaming on for every screened LLM
flow: with no response rule the bytes pass untouched (only the first 64 KiB are
looked at, to confirm the endpoint); with one, a :class:`~.window.StreamScreener`
screens them incrementally. Non-streamed answers are screened whole in ``response``.

Rules that read ``cf.llm.response.*`` fields run here, with the request's values
alongside. The screening addon (``proxy.addon.LLMWall``) owns the rules and detectors
this addon uses; response events go to ``analytics.addon.Analytics``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from mitmproxy import ctx, exceptions, http

from llmwall import fields as F
from llmwall.analytics.addon import Analytics
from llmwall.detectors.base import Detector, Prompt, ScreenRequest, TextPart
from llmwall.providers import discovery, registry
from llmwall.proxy import actions
from llmwall.proxy.addon import LLMWall, request_fields
from llmwall.proxy.event import METADATA_KEY, RESPONSE_METADATA_KEY, STREAM_USAGE_KEY
from llmwall.proxy.orchestrator import ScreenResult, lower_priority, screen_here
from llmwall.proxy.redact import RedactError, redact_body
from llmwall.responses import framing
from llmwall.responses.formats import ResponseProvider, StreamReader, completion_tokens, segments, stream_ending
from llmwall.responses.window import (
    BLOCK,
    FINAL_WINDOW_FACTOR,
    HEAD_BYTES,
    REDACT,
    WAIT_S,
    StreamScreener,
    Verdict,
)
from llmwall.rules import RuleSet

log = logging.getLogger(__name__)

LAG_MODES: Final = ("hold", "release")
#: Threads screening stream windows (detectors run inline in them).
WINDOW_THREADS: Final = 2
#: Status of a response event in analytics.
RESPONSE_STATUS: Final = "response"
TOKENS_DETECTOR: Final = "tokens"
#: Escalation order of actions across the windows of one answer.
_RANK: Final = {None: 0, "log": 1, "redact": 2, "block": 3}


@dataclass
class _Answer:
    """What one screened answer has shown so far (fields merged over its windows)."""

    fmt: str
    provider: ResponseProvider
    ruleset: RuleSet
    detectors: list[Detector]
    wanted: frozenset[str]
    request_values: dict[str, object]
    start: float = field(default_factory=time.monotonic)
    fields: dict[str, object] = field(default_factory=dict)
    matched: list[str] = field(default_factory=list)
    action: str | None = None
    rule_id: str | None = None
    rule: object | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    not_scored: set[str] = field(default_factory=set)
    errors: set[str] = field(default_factory=set)
    token_count: int | None = None
    redacted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)  # windows may overlap after a lag
    #: Reads the request's latest user turn, when a detector judges answers in context (Llama Guard).
    context: Callable[[], str] | None = None
    _reply_to: str | None = None

    def reply_to(self) -> str | None:
        """The user turn this answer replies to, read once (blocking: call off the event loop);
        None when no detector wants it. In memory only, for the answer's lifetime."""
        if self.context is None:
            return None
        with self.lock:
            if self._reply_to is None:
                self._reply_to = self.context()
            return self._reply_to

    def merge(self, result: ScreenResult) -> None:
        for name, prompt_name in F.RESPONSE_FROM_PROMPT.items():
            if prompt_name not in result.fields:
                continue
            value = result.fields[prompt_name]
            if isinstance(value, list):
                old = self.fields.get(name)
                self.fields[name] = sorted(set(old if isinstance(old, list) else []) | set(map(str, value)))
            elif isinstance(value, bool):
                self.fields[name] = bool(self.fields.get(name)) or value
        for det, ms in result.timings_ms.items():
            self.timings_ms[det] = round(self.timings_ms.get(det, 0.0) + ms, 3)
        self.not_scored.update(result.not_scored)
        self.errors.update(result.errors)

    def decide(self) -> str | None:
        values = {**self.request_values, **self.fields, F.RESPONSE_DETECTED: True}
        if self.token_count is not None:
            values[F.RESPONSE_TOKEN_COUNT] = self.token_count
        decision = self.ruleset.evaluate(values, F.RESPONSE_PHASE)
        for rule_id in decision.matched:
            if rule_id not in self.matched:
                self.matched.append(rule_id)
        if _RANK[decision.action] > _RANK[self.action]:
            self.action = decision.action
            self.rule = decision.rule
            self.rule_id = decision.rule.id if decision.rule else None
        return decision.action

    def categories(self) -> list[str]:
        out: list[str] = []
        for name in ("unsafe_topic_categories", "pii_categories", "secret_categories"):
            value = self.fields.get(F.RESPONSE_PREFIX + name)
            if isinstance(value, list):
                out.extend(value)
        return out

    def message(self) -> str:
        """What a cut stream's ending says: the block message of a whole answer."""
        return actions.block_message(self.rule_id, self.categories(), actions.RESPONSE)


#: How much of a stream's end is kept to read its usage events (they come last).
TAIL_BYTES: Final = 16 * 1024


@dataclass
class _Stream:
    answer: _Answer | None  # None: pass-through (no response rule)
    screener: StreamScreener | None
    head: bytearray = field(default_factory=bytearray)
    #: The last TAIL_BYTES of the answer: usage events come at the end of a stream.
    tail: bytearray = field(default_factory=bytearray)
    framing: str = ""
    deadline_s: float = 0.05  # per window


class ResponseScreen:
    """Streams LLM responses and screens them for rules that read ``cf.llm.response.*``."""

    def __init__(self, wall: LLMWall, analytics: Analytics) -> None:
        self.wall = wall
        self.analytics = analytics
        self._streams: dict[str, _Stream] = {}
        # Windows of streamed answers are screened here, off the event loop: each runs its
        # detectors inline (``screen_here``) under the window's deadline, at the detector
        # threads' lower priority, so forwarding events comes first.
        self._windows = ThreadPoolExecutor(
            max_workers=WINDOW_THREADS, thread_name_prefix="llmwall-window", initializer=lower_priority
        )
        self._in_flight = 0  # windows submitted and not finished, across streams
        self._lock = threading.Lock()

    def load(self, loader) -> None:
        loader.add_option(
            "llmwall_response_holdback",
            int,
            256,
            "Most characters of a streamed answer held back while they could still grow into a PII value "
            "(0: none; every event is still screened before it is released).",
        )
        loader.add_option(
            "llmwall_response_deadline_ms",
            int,
            50,
            "Deadline for screening one window of a streamed answer, in milliseconds.",
        )
        loader.add_option(
            "llmwall_response_on_lag",
            str,
            "hold",
            "When response detectors miss their window deadline: hold (keep the text back; cut the stream "
            "if the lag persists) or release (let it through unscreened, recorded as not scored).",
        )
        loader.add_option(
            "llmwall_response_context",
            int,
            128,
            "Characters of already-released text screened again with each window, for context.",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "llmwall_response_holdback" in updated and not 0 <= opts.llmwall_response_holdback <= 65536:
            raise exceptions.OptionsError("llmwall_response_holdback must be between 0 and 65536")
        if "llmwall_response_deadline_ms" in updated and not 1 <= opts.llmwall_response_deadline_ms <= 60_000:
            raise exceptions.OptionsError("llmwall_response_deadline_ms must be between 1 and 60000")
        if "llmwall_response_on_lag" in updated and opts.llmwall_response_on_lag not in LAG_MODES:
            raise exceptions.OptionsError("llmwall_response_on_lag must be 'hold' or 'release'")
        if "llmwall_response_context" in updated and not 0 <= opts.llmwall_response_context <= 4096:
            raise exceptions.OptionsError("llmwall_response_context must be between 0 and 4096")

    def done(self) -> None:
        """Shutting down: flows still streaming are not recorded (the store is closing)."""
        self._streams.clear()
        self._windows.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ hooks
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._responseheaders(flow)
        except Exception as exc:  # never take the flow down; never log text
            log.error("llmwall: response set-up failed: %s", type(exc).__name__)

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata.get(METADATA_KEY)
        resp = flow.response
        if not meta or resp is None or meta.get("status") != "screened" or meta.get("action") == "block":
            return
        if not 200 <= resp.status_code < 300:
            return  # errors are small and not model text: buffered as before
        kind = framing.framing_for(resp.headers.get("content-type", ""), flow.request.path)
        if kind is None:
            return  # a whole JSON answer: screened in ``response``
        answer = self._answer(flow, meta)
        decode = _decoder(resp.headers.get("content-encoding", ""))
        if decode is None:  # an encoding we cannot read incrementally
            if answer is not None:
                self._unreadable(flow, meta, answer, "undecodable")
            return
        if resp.headers.get("content-encoding", "").strip().lower() not in ("", "identity"):
            # Screened text must be what the client reads: forward it decoded.
            del resp.headers["content-encoding"]
            resp.headers.pop("content-length", None)
        state = _Stream(answer, None, framing=kind, deadline_s=ctx.options.llmwall_response_deadline_ms / 1000.0)
        if answer is not None:
            state.screener = self._screener(answer, kind, state)
        self._streams[flow.id] = state
        settle_usage: Callable[[bytes], None] | None = None
        if STREAM_USAGE_KEY in flow.metadata:  # asked for by the token budgets (llmwall.ratelimit)
            provider = registry.for_format(meta.get("format"))

            def settle_usage(tail: bytes) -> None:
                flow.metadata[STREAM_USAGE_KEY] = {"completion_tokens": _tail_usage(provider, kind, tail)}

        resp.stream = _Pipe(state, decode, settle_usage)

    def _answer(self, flow: http.HTTPFlow, meta: dict) -> _Answer | None:
        """The per-answer state when some enabled rule reads a response field, else None."""
        wall = self.wall
        if wall.rules is None or wall.orchestrator is None:
            return None
        ruleset = wall.rules.current
        if not ruleset.response_fields:
            return None
        fmt = meta.get("format") or registry.DEFAULT_FORMAT
        provider = registry.for_format(meta.get("format"))
        wanted = frozenset(F.RESPONSE_FROM_PROMPT[f] for f in ruleset.response_fields if f in F.RESPONSE_FROM_PROMPT)
        detectors = [d for d in wall.detectors if d.provides & wanted]
        request_values = {**request_fields(flow, wall.trusted_proxies), **(meta.get("fields") or {})}
        answer = _Answer(fmt, provider, ruleset, detectors, wanted, request_values)
        if any(d.reads_reply_to for d in detectors):
            answer.context = functools.partial(wall.latest_user_turn, flow)
        return answer

    def _screener(self, answer: _Answer, kind: str, state: _Stream) -> StreamScreener:
        opts = ctx.options
        reader = StreamReader(answer.provider)
        tokens = next((d for d in self.wall.detectors if d.name == TOKENS_DETECTOR), None)

        def screen(text: str, final: bool) -> Future[Verdict]:
            with self._lock:
                self._in_flight += 1
            future = self._windows.submit(self._screen_window, answer, state, text, final)
            future.add_done_callback(self._window_done)
            return future

        def wait_s() -> float:
            # Waiting blocks the event loop: only worth it when no other stream is waiting.
            return WAIT_S if self._in_flight <= 1 and len(self._streams) <= 1 else 0.0

        def ending() -> bytes:
            released = screener.stats.released_events
            return stream_ending(answer.fmt, kind, answer.message(), reader, released)

        screener = StreamScreener(
            framing.FRAMERS[kind](),
            reader,
            screen,
            ending,
            holdback=opts.llmwall_response_holdback,
            context=opts.llmwall_response_context,
            hold_on_lag=opts.llmwall_response_on_lag == "hold",
            fail_closed=opts.llmwall_on_unparsed == "block",
            deadline_s=state.deadline_s,
            wait_s=wait_s,
            count_tokens=_counter(tokens),
        )
        return screener

    def _window_done(self, _: Future[Verdict]) -> None:
        with self._lock:
            self._in_flight -= 1

    def _screen_window(self, answer: _Answer, state: _Stream, text: str, final: bool) -> Verdict:
        """Screen one window (synchronously, under the per-window deadline) and decide."""
        reply_to = answer.reply_to()  # the first window reads it, before its deadline starts
        budget_s = state.deadline_s * (FINAL_WINDOW_FACTOR if final else 1)
        deadline = time.monotonic() + budget_s
        prompt = Prompt(answer.fmt, (TextPart((), text, "assistant"),))
        request = ScreenRequest(prompt, deadline, answer.wanted, reply_to=reply_to)
        # In this thread, one after the other: a hop to the detector pool per detector costs
        # more than the pattern detectors themselves on a short window (GIL hand-overs).
        result = screen_here(request, answer.detectors)
        with answer.lock:
            return self._decide_window(answer, state, result, final)

    def _decide_window(self, answer: _Answer, state: _Stream, result: ScreenResult, final: bool) -> Verdict:
        answer.merge(result)
        if final and state.screener is not None:
            stats = state.screener
            answer.token_count = stats.completion_tokens
            if answer.token_count is None and stats.count_tokens is not None:
                answer.token_count = stats.stats.counted_tokens
        action = answer.decide()
        lagged = bool(result.not_scored)
        if action == BLOCK:
            return Verdict(BLOCK)
        return Verdict(action if action == REDACT else None, result.spans, lagged)

    async def response(self, flow: http.HTTPFlow) -> None:
        try:
            await self._response(flow)
        except Exception as exc:
            log.error("llmwall: response screening failed: %s", type(exc).__name__)
            if ctx.options.llmwall_on_unparsed == "block" and flow.response is not None:
                flow.response = actions.block_response(None, None, ["internal error"], blocked=actions.RESPONSE)

    async def _response(self, flow: http.HTTPFlow) -> None:
        state = self._streams.pop(flow.id, None)
        meta = flow.metadata.get(METADATA_KEY)
        if state is not None:
            if meta is not None:
                flow.metadata[RESPONSE_METADATA_KEY] = {
                    "confirmed": discovery.confirm_stream(meta.get("format") or "", bytes(state.head))
                }
            if state.answer is not None and state.screener is not None:
                self._record_stream(flow, state.answer, state.screener, "complete")
            return
        if not meta or flow.response is None or meta.get("status") != "screened" or meta.get("action") == "block":
            return
        resp = flow.response
        if not 200 <= resp.status_code < 300:
            return
        answer = self._answer(flow, meta)
        if answer is None:
            return
        await self._screen_whole(flow, meta, answer)

    def error(self, flow: http.HTTPFlow) -> None:
        """Client or upstream went away mid-stream: drop the state, record what was screened."""
        state = self._streams.pop(flow.id, None)
        if state is not None and state.answer is not None and state.screener is not None:
            self._record_stream(flow, state.answer, state.screener, "interrupted")

    # ------------------------------------------------------------ whole answers
    async def _screen_whole(self, flow: http.HTTPFlow, meta: dict, answer: _Answer) -> None:
        resp = flow.response
        assert resp is not None
        limit = ctx.options.llmwall_max_body_kb * 1024
        try:
            body = resp.get_content(strict=True) or b""
        except ValueError:
            self._unreadable(flow, meta, answer, "undecodable")
            return
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(
            None,
            functools.partial(discovery.parse_body, max_bytes=limit),
            body,
            resp.headers.get("content-type"),
        )
        if parsed.error is not None or parsed.data is None:
            self._unreadable(flow, meta, answer, "oversize" if parsed.error == "too_large" else "parse_error")
            return
        data = parsed.data
        said = answer.provider.response_text(data)
        segs = segments(data, said)
        prompt = Prompt(answer.fmt, tuple(TextPart(s.path or (), s.text, "assistant") for s in segs))
        wanted = answer.wanted | (F.TOKEN_FIELDS if answer.provider.usage(data) is None else frozenset())
        detectors = [d for d in self.wall.detectors if d.provides & wanted]
        assert self.wall.orchestrator is not None
        reply_to = await loop.run_in_executor(None, answer.reply_to) if answer.context is not None else None
        deadline = time.monotonic() + ctx.options.llmwall_deadline_ms / 1000.0
        request = ScreenRequest(prompt, deadline, wanted, reply_to=reply_to)
        result = await self.wall.orchestrator.screen(request, detectors)
        answer.merge(result)
        usage = completion_tokens(answer.provider.usage(data))
        counted = result.fields.get(F.TOKEN_COUNT)
        answer.token_count = usage if usage is not None else counted if isinstance(counted, int) else None
        answer.decide()
        rule = answer.rule
        if answer.action == BLOCK:
            flow.response = actions.block_response(
                answer.fmt,
                answer.rule_id,
                answer.categories(),
                getattr(rule, "status", None),
                getattr(rule, "body", None),
                actions.RESPONSE,
            )
        elif answer.action == REDACT and result.spans:
            if any(s.path is None for s in segs):
                new = None
            else:
                try:
                    new, redacted = redact_body(body, prompt, result.spans)
                except RedactError:
                    new = None
            if new is None:  # the rule asked for the data not to reach the client: nothing does
                answer.action = BLOCK
                flow.response = actions.block_response(
                    answer.fmt, answer.rule_id, answer.categories(), blocked=actions.RESPONSE
                )
            else:
                resp.content = new
                answer.redacted = redacted
        flow.metadata[RESPONSE_METADATA_KEY] = {"confirmed": discovery.confirm_response(answer.fmt, data)}
        self._record(flow, answer, "whole", {"events": 1, "windows": 1})

    def _unreadable(self, flow: http.HTTPFlow, meta: dict, answer: _Answer, status: str) -> None:
        """An answer that response rules should see but cannot be read: pass, or block by option."""
        log.warning("llmwall: response of %s%s: %s", flow.request.pretty_host, meta.get("path_template"), status)
        if ctx.options.llmwall_on_unparsed == "block" and flow.response is not None:
            answer.action = BLOCK
            flow.response = actions.block_response(
                answer.fmt, None, [f"unreadable response: {status}"], blocked=actions.RESPONSE
            )
        self._record(flow, answer, status, {})

    # -------------------------------------------------------------- analytics
    def _record_stream(self, flow: http.HTTPFlow, answer: _Answer, screener: StreamScreener, end: str) -> None:
        stats = screener.stats
        if stats.redacted:
            answer.redacted = sorted(stats.redacted)
        if screener.cut and stats.cut_reason != "rule":
            answer.errors.add("cut:" + (stats.cut_reason or "").replace(" ", "_"))
        if answer.token_count is None:
            answer.token_count = screener.completion_tokens
        if answer.token_count is None and screener.count_tokens is not None:
            answer.token_count = stats.counted_tokens
        self._record(
            flow,
            answer,
            end if not screener.cut else "cut",
            {
                "events": stats.events,
                "windows": stats.windows,
                "lagged": stats.lagged,
                "max_held_chars": stats.max_held_chars,
            },
        )

    def _record(self, flow: http.HTTPFlow, answer: _Answer, end: str, stream: dict[str, int]) -> None:
        fields: dict[str, object] = {**answer.fields, F.RESPONSE_DETECTED: True}
        if answer.token_count is not None:
            fields[F.RESPONSE_TOKEN_COUNT] = answer.token_count
        meta = flow.metadata.get(METADATA_KEY) or {}
        event = {
            "ts": time.time(),
            "host": flow.request.pretty_host,
            "method": flow.request.method,
            "path_template": meta.get("path_template") or discovery.path_template(flow.request.path),
            "format": answer.fmt,
            "model": meta.get("model"),
            "action": answer.action,
            "rule": answer.rule_id,
            "matched": list(answer.matched),
            "fields": fields,
            "timings_ms": answer.timings_ms,
            "not_scored": sorted(answer.not_scored),
            "errors": sorted(e.replace(":", "-") for e in answer.errors),
            "total_ms": round((time.monotonic() - answer.start) * 1000.0, 3),
            "status": RESPONSE_STATUS,
            "response": {"end": end, **stream},
        }
        if answer.redacted:
            event["redacted"] = answer.redacted
        if answer.action:
            note = f"llmwall: response {answer.action}"
            if answer.rule_id:
                note += f" by rule {answer.rule_id}"
            flow.comment = (flow.comment + "\n" if flow.comment else "") + note
            flow.marked = actions.MARKERS.get(answer.action, ":warning:")
        self.analytics.record(event)


class _Pipe:
    """``flow.response.stream``: decode (when encoded), keep the head, screen or pass through."""

    def __init__(
        self, state: _Stream, decode: Callable[[bytes], bytes], at_end: Callable[[bytes], None] | None
    ) -> None:
        self.state = state
        self.decode = decode
        self.at_end = at_end  # called with the tail when the stream ends; None: no tail is kept

    def __call__(self, data: bytes) -> list[bytes]:
        """Called with each piece from upstream, and with b"" at the end. Returns a list:
        mitmproxy would send an empty bytes chunk as is, which in HTTP/1.1 chunked encoding
        is the end of the body."""
        plain = self.decode(data)
        head = self.state.head
        if len(head) < HEAD_BYTES:
            head += plain[: HEAD_BYTES - len(head)]
        if self.at_end is not None:
            tail = self.state.tail
            tail += plain
            del tail[: max(0, len(tail) - TAIL_BYTES)]
            if data == b"":
                self.at_end(bytes(tail))
        screener = self.state.screener
        if screener is None:
            out = plain
        elif data == b"":  # end of stream: what the decoder still held, then the screener's end
            out = (screener(plain) if plain else b"") + screener(b"")
        else:
            out = screener(plain) if plain else b""
        return [out] if out else []


def _tail_usage(provider: ResponseProvider, kind: str, tail: bytes) -> int | None:
    """Completion tokens from the last usage event in the end of a stream, or None.

    The tail may start inside an event: that piece does not parse and is skipped."""
    framer = framing.FRAMERS[kind]()
    found: int | None = None
    try:
        frames = framer.feed(tail) + framer.flush()
    except ValueError:
        return None
    for frame in frames:
        if frame.data is None:
            continue
        try:
            event = json.loads(frame.data)
        except ValueError:
            continue
        tokens = completion_tokens(provider.event_usage(event))
        if tokens is not None:
            found = tokens
    return found


def _decoder(encoding: str) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for a Content-Encoding (b"" at the end flushes), or None."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return lambda data: data
    if name in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(47 if name != "deflate" else 15)

        def inflate(data: bytes) -> bytes:
            return inflater.decompress(data) if data else inflater.flush()

        return inflate
    if name == "br":
        import brotli

        debrotli = brotli.Decompressor()
        return lambda data: debrotli.process(data) if data else b""
    if name == "zstd":
        # The zstd module mitmproxy itself decodes with (compression.zstd from Python 3.14).
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd

        dezstd = zstd.ZstdDecompressor()
        return lambda data: dezstd.decompress(data) if data else b""
    return None


def _counter(tokens: Detector | None) -> Callable[[str], int] | None:
    """A token counter from the tokens detector (its tokenizer), or None without one."""
    if tokens is None:
        return None

    def count(text: str) -> int:
        fields = tokens.detect(ScreenRequest(Prompt("", (TextPart((), text),)), float("inf"))).fields
        value = fields.get(F.TOKEN_COUNT)
        return value if isinstance(value, int) else 0

    return count
