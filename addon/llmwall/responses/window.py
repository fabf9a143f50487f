"""Incremental screening of a streamed answer with a bounded hold-back.

A :class:`StreamScreener` is the callable mitmproxy calls with each piece of a
streamed response body (``flow.response.stream``). It cuts the bytes into events,
reads each event's text, screens a sliding window (a little already-released text
for context, plus everything not yet released) and releases every event whose text
is screened and cannot be the start of a longer sensitive value. What it keeps back
is bounded: the trailing run that could still grow into a PII value (a word, a group
of digits), and a detected span that touches the end of the window, never more than
``holdback`` characters. Events are atomic: an event goes out whole, with its bytes
unchanged unless a redaction rewrote its text.

A ``block`` verdict cuts the stream: the held events are dropped and the provider's
own ending is sent. A ``redact`` verdict rewrites the detected spans in the events
about to go out; a value split across events gets one placeholder in its first
event and is removed from the others; a redaction that cannot be applied cuts. The
screener never raises into mitmproxy; other failures are decided by ``fail_closed``
(cut) or not (the rest passes unscreened).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Final

from llmwall.detectors.base import Span
from llmwall.proxy.redact import RedactError, locate_string, placeholder
from llmwall.responses.framing import Frame, Framer, FrameTooLarge

log = logging.getLogger(__name__)

#: Bytes of the stream's start kept to confirm the endpoint from its first event.
HEAD_BYTES: Final = 65536
#: Placed between texts of different channels (answer, each tool call) in the window.
CHANNEL_SEPARATOR: Final = "\n"
#: How long the event loop may wait for a window's verdict before moving on (the stream's
#: text then waits for the next piece from upstream; other connections do not wait).
#: The addon waits only while no other window is in flight: under load every wait
#: would stall every connection, while the windows batch up on their own.
WAIT_S: Final = 0.003
#: The last window of a stream may take this many window deadlines: the answer is
#: complete, and held text that cannot be screened would otherwise have to be cut.
FINAL_WINDOW_FACTOR: Final = 4
#: Characters of a number written in groups ("+1 (555) 123-4567", "4111 1111 1111 1111").
_DIGIT_GROUPS: Final = frozenset("0123456789 \t().-/+")

#: Under ``hold_on_lag``, unscreened text beyond this many hold-backs (at least
#: LAG_LIMIT_FLOOR characters each) cuts the stream instead of growing the buffer.
LAG_LIMIT_FACTOR: Final = 16
LAG_LIMIT_FLOOR: Final = 256

BLOCK: Final = "block"
REDACT: Final = "redact"


@dataclass(frozen=True)
class Segment:
    """One piece of model text inside an event: its JSON path in the event's payload."""

    path: tuple[str | int, ...] | None  # None: not splicable (e.g. base64-wrapped payloads)
    text: str
    channel: Hashable = "text"
    counted: bool = True  # False for text the stream repeats (not new tokens)


@dataclass(frozen=True)
class Delta:
    """What one event adds: text segments and, when reported, the completion token total."""

    segments: tuple[Segment, ...] = ()
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Verdict:
    """The outcome of screening one window. Spans are in window coordinates."""

    action: str | None = None
    spans: Sequence[Span] = ()
    lagged: bool = False


@dataclass
class _Pending:
    """An event not yet released, with its segments' current (possibly redacted) texts."""

    frame: Frame
    delta: Delta
    texts: list[str] = field(default_factory=list)


@dataclass
class _Job:
    """A window being screened: its future, how much pending text it saw, its context length."""

    future: Future[Verdict]
    upto: int
    offset: int
    deadline: float


@dataclass
class StreamStats:
    """What analytics record about a stream (never text)."""

    events: int = 0
    released_events: int = 0
    windows: int = 0
    waits: int = 0  # calls that found their window still running
    lagged: int = 0
    max_held_chars: int = 0
    released_chars: int = 0
    redacted: set[str] = field(default_factory=set)
    cut_reason: str | None = None
    counted_tokens: int = 0
    error: str | None = None


class StreamScreener:
    """The ``flow.response.stream`` callable for one screened stream."""

    def __init__(
        self,
        framer: Framer,
        parse: Callable[[Frame], Delta],
        screen: Callable[[str, bool], Future[Verdict]],
        ending: Callable[[], bytes],
        *,
        holdback: int,
        context: int,
        hold_on_lag: bool,
        fail_closed: bool,
        deadline_s: float,
        wait_s: Callable[[], float] = lambda: WAIT_S,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.framer = framer
        self.parse = parse
        self.screen = screen
        self.ending = ending
        self.deadline_s = deadline_s
        self.wait_s = wait_s
        self.holdback = holdback
        self.context_chars = context
        self.hold_on_lag = hold_on_lag
        self.fail_closed = fail_closed
        self.count_tokens = count_tokens
        self.stats = StreamStats()
        self.head = bytearray()
        self.completion_tokens: int | None = None
        self.finished = False
        self._pending: list[_Pending] = []
        self._context = ""
        self._last_channel: Hashable | None = None
        self._cut = False
        self._passthrough = False
        self._job: _Job | None = None
        self._fresh = False  # text arrived that no window has screened yet

    @property
    def cut(self) -> bool:
        return self._cut

    # ---------------------------------------------------------------- the callable
    def __call__(self, data: bytes) -> bytes:
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        if self._cut:
            return b""
        if self._passthrough:
            return data
        try:
            return self._finish() if data == b"" else self._feed(data)
        except FrameTooLarge:
            return self._fail("oversize event")
        except RedactError:  # the rule asked for the value not to leave: nothing more does
            self.stats.error = "redaction failed"
            return self._cut_stream("redaction failed")
        except Exception as exc:  # never raise into mitmproxy; never log text
            log.error("llmwall: response screening failed: %s", type(exc).__name__)
            return self._fail(f"internal error: {type(exc).__name__}")

    def _feed(self, data: bytes) -> bytes:
        for frame in self.framer.feed(data):
            self._add(frame)
        return self._advance(final=False)

    def _finish(self) -> bytes:
        self.finished = True
        for frame in self.framer.flush():
            self._add(frame)
        return self._advance(final=True)

    def _add(self, frame: Frame) -> None:
        delta = self.parse(frame)
        if delta.completion_tokens is not None:
            self.completion_tokens = delta.completion_tokens
        if frame.data is not None:
            self.stats.events += 1
        if self.count_tokens:
            for seg in delta.segments:
                self.stats.counted_tokens += self.count_tokens(seg.text) if seg.text and seg.counted else 0
        self._pending.append(_Pending(frame, delta, [seg.text for seg in delta.segments]))
        self._fresh = self._fresh or any(seg.text for seg in delta.segments)

    def _fail(self, reason: str) -> bytes:
        """Cut the stream (fail closed), or let the rest through unscreened."""
        self.stats.error = reason
        if self.fail_closed:
            return self._cut_stream(reason)
        self._passthrough = True
        held = b"".join(p.frame.raw for p in self._pending) + b"".join(f.raw for f in self.framer.flush())
        self._pending.clear()
        return held

    def _cut_stream(self, reason: str) -> bytes:
        self._cut = True
        self.stats.cut_reason = reason
        self._pending.clear()
        return self.ending()

    # ---------------------------------------------------------------- screening
    def _layout(self) -> tuple[str, list[tuple[int, int, int, int]]]:
        """The pending text and (event index, segment index, start, end) of each segment in it."""
        pieces: list[str] = []
        layout: list[tuple[int, int, int, int]] = []
        pos, channel = 0, self._last_channel
        for fi, pending in enumerate(self._pending):
            for si, seg in enumerate(pending.delta.segments):
                text = pending.texts[si]
                if not seg.text:
                    continue
                if channel is not None and seg.channel != channel:
                    pieces.append(CHANNEL_SEPARATOR)
                    pos += len(CHANNEL_SEPARATOR)
                channel = seg.channel
                pieces.append(text)
                layout.append((fi, si, pos, pos + len(text)))
                pos += len(text)
        return "".join(pieces), layout

    def _advance(self, final: bool) -> bytes:
        """Collect a finished window, release what it cleared, and start the next window.

        The event loop waits at most ``wait_s()`` for a window (longer at the end of the
        stream); a window still running is collected on a later call, so a slow detector
        delays this stream's text, never the proxy's other connections.
        """
        out = bytearray()
        while not self._cut:
            text, layout = self._layout()
            if self._job is None:
                if not layout:
                    out += self._emit(len(text), layout)  # no text pending: everything goes
                    break
                if not self._fresh and not final:
                    out += self._emit(0, layout)  # only the held tail is pending: wait for more
                    break
                self._submit(text, final)
                continue
            job = self._job
            now = time.monotonic()
            if final:  # the answer is complete: its last windows get a longer grace
                job.deadline = max(job.deadline, now + self.deadline_s * FINAL_WINDOW_FACTOR)
                timeout = job.deadline - now
            else:
                timeout = min(self.wait_s(), max(0.0, job.deadline - now))
            try:
                verdict = job.future.result(timeout)
            except FutureTimeout:
                late = time.monotonic() >= job.deadline
                if late and (final or not self.hold_on_lag):
                    # The window missed its deadline: hold cuts at the end of the stream,
                    # release lets its text go unscreened (the late window is dropped).
                    job.future.cancel()
                    verdict = Verdict(None, (), lagged=True)
                elif late and len(text) > LAG_LIMIT_FACTOR * max(self.holdback, LAG_LIMIT_FLOOR):
                    job.future.cancel()
                    self.stats.lagged += 1
                    out += self._cut_stream("screening lagged")
                    break
                else:  # keep waiting for this window on a later call; one window at a time
                    self.stats.waits += 1
                    out += self._emit(0, layout)
                    break
            self._job = None
            if verdict.action == BLOCK:
                out += self._cut_stream("rule")
                break
            if verdict.lagged:  # detectors missed the window's deadline (or the window did)
                self.stats.lagged += 1
                if self.hold_on_lag:
                    if final or len(text) > LAG_LIMIT_FACTOR * max(self.holdback, LAG_LIMIT_FLOOR):
                        out += self._cut_stream("screening lagged")
                        break
                    self._fresh = True  # screen the held text again with the next window
                    out += self._emit(0, layout)
                    break
            out += self._apply(verdict, job, final and not self._fresh)
            if not self._fresh and not (final and self._pending):
                break
        return bytes(out)

    def _submit(self, text: str, final: bool) -> None:
        self.stats.windows += 1
        self.stats.max_held_chars = max(self.stats.max_held_chars, len(text))
        self._fresh = False
        future = self.screen(self._context + text, final)
        budget = self.deadline_s * (FINAL_WINDOW_FACTOR if final else 1)
        self._job = _Job(future, len(text), len(self._context), time.monotonic() + budget)

    def _apply(self, verdict: Verdict, job: _Job, final: bool) -> bytes:
        """Release what ``verdict`` cleared of the text its window saw (``job.upto`` characters)."""
        text, layout = self._layout()
        upto = job.upto
        groups = _groups(
            [Span(s.start - job.offset, s.end - job.offset, s.category) for s in verdict.spans if s.end > job.offset]
        )
        # A value reaching the end of the window may still grow: it is held, not yet redacted.
        open_groups = [] if final else [g for g in groups if max(s.end for s in g) >= upto]
        closed = [g for g in groups if g not in open_groups]
        if verdict.action == REDACT and closed:
            self._redact(layout, closed)
            before = len(text)
            text, layout = self._layout()
            upto += len(text) - before
        if final:
            return self._emit(len(text), layout)
        # Whether the end of the screened text can still grow is read from all the text there
        # is, screened or not: a piece that arrived meanwhile may already have ended the word.
        hold = min(growable_start(text, max(0, upto - self.holdback)), upto)
        for group in open_groups:
            hold = min(hold, max(0, group[0].start + upto - job.upto))
        return self._emit(max(hold, upto - self.holdback), layout)

    def _redact(self, layout: list[tuple[int, int, int, int]], groups: list[list[Span]]) -> None:
        """Replace each group of spans in the pending texts: a placeholder where it starts,
        its other pieces (in later events) removed."""
        cuts: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
        for group in groups:
            lo, hi = max(group[0].start, 0), max(s.end for s in group)
            label = min(group, key=lambda s: (-(s.end - s.start), s.category)).category
            first = True
            for fi, si, start, end in layout:
                a, b = max(lo, start), min(hi, end)
                if a >= b:
                    continue
                cuts.setdefault((fi, si), []).append((a - start, b - start, label if first else ""))
                first = False
            self.stats.redacted.update(s.category for s in group)
        for (fi, si), seg_cuts in cuts.items():
            pending = self._pending[fi]
            pending.texts[si] = _apply(pending.texts[si], seg_cuts)

    def _emit(self, hold: int, layout: list[tuple[int, int, int, int]]) -> bytes:
        """Release, in order, every event whose text lies before ``hold``."""
        ends: dict[int, int] = {}
        for fi, _, _, end in layout:
            ends[fi] = max(ends.get(fi, 0), end)
        count = 0
        for fi in range(len(self._pending)):
            if ends.get(fi, 0) > hold:
                break
            count = fi + 1
        if count == 0:
            return b""
        out = bytearray()
        released: list[str] = []
        for pending in self._pending[:count]:
            changed = any(t != seg.text for t, seg in zip(pending.texts, pending.delta.segments, strict=True))
            out += self._rewrite(pending) if changed else pending.frame.raw
            for seg, text in zip(pending.delta.segments, pending.texts, strict=True):
                if not seg.text:
                    continue
                if self._last_channel is not None and seg.channel != self._last_channel:
                    released.append(CHANNEL_SEPARATOR)
                self._last_channel = seg.channel
                released.append(text)
        self.stats.released_events += sum(p.frame.data is not None for p in self._pending[:count])
        del self._pending[:count]
        done = "".join(released)
        self.stats.released_chars += len(done)
        self._context = (self._context + done)[-self.context_chars :] if self.context_chars else ""
        return bytes(out)

    def _rewrite(self, pending: _Pending) -> bytes:
        """The event with its redacted segments spliced into the payload's JSON."""
        data = pending.frame.data
        if data is None:
            raise RedactError("event without a payload")
        splices: list[tuple[int, int, bytes]] = []
        for seg, text in zip(pending.delta.segments, pending.texts, strict=True):
            if text == seg.text:
                continue
            if seg.path is None:
                raise RedactError("segment cannot be rewritten in place")
            start, end = locate_string(data, seg.path)
            literal = data[start:end]
            if json.loads(literal) != seg.text:
                raise RedactError("event text differs from the screened text")
            splices.append((start, end, _encode_like(text, literal)))
        splices.sort()
        out, pos = bytearray(), 0
        for start, end, replacement in splices:
            if start < pos:
                raise RedactError("two segments claim the same string")
            out += data[pos:start] + replacement
            pos = end
        out += data[pos:]
        return pending.frame.with_data(bytes(out))


def growable_start(text: str, lo: int = 0) -> int:
    """Start of the end of ``text`` that could still grow into a value: the last run of
    non-space characters, widened over digit groups before it (numbers are often written
    with spaces). Looks no further back than ``lo``."""
    start = len(text)
    while start > lo and not text[start - 1].isspace():
        start -= 1
    if start == len(text) or text[start].isdigit() or text[start] in "+(":
        wider = start
        while wider > lo and text[wider - 1] in _DIGIT_GROUPS:
            wider -= 1
        while wider < start and not (text[wider].isdigit() or text[wider] in "+("):
            wider += 1  # a number starts with a digit, "+" or "("...
        if wider < start and (wider == 0 or not text[wider - 1].isalnum()):  # ...not inside a word
            start = wider
    return start


def _groups(spans: Sequence[Span]) -> list[list[Span]]:
    """Overlapping spans grouped, in order: each group becomes one placeholder."""
    groups: list[list[Span]] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.end <= span.start:
            continue
        if groups and span.start < max(s.end for s in groups[-1]):
            groups[-1].append(span)
        else:
            groups.append([span])
    return groups


def _apply(text: str, cuts: Sequence[tuple[int, int, str]]) -> str:
    if not cuts:
        return text
    pieces, pos = [], 0
    for start, end, category in sorted(cuts):
        pieces.append(text[pos:start])
        if category:
            pieces.append(placeholder(category))
        pos = max(pos, end)
    pieces.append(text[pos:])
    return "".join(pieces)


def _encode_like(text: str, literal: bytes) -> bytes:
    """JSON-encode ``text`` as the original literal was (ASCII-escaped or raw UTF-8)."""
    if literal.isascii() and not text.isascii():
        return json.dumps(text, ensure_ascii=True).encode("ascii")
    try:
        return json.dumps(text, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(text, ensure_ascii=True).encode("ascii")
