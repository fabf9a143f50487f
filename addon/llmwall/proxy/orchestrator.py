"""Runs detectors in parallel, off the event loop, under one hard deadline.

Detectors run in worker threads, grouped in lanes (``Detector.lane``): the detectors of
one lane run one after the other in one job, lanes run in parallel. Pure-Python
detectors share a lane because they hold the GIL anyway, and the two lite detectors
because one onnxruntime run serves both; a hand-off per detector cost more than it
gained (docs/benchmarks.md, "Where the time goes"). When the deadline passes the verdict is
made from what finished: unfinished detectors, and those that raise
:class:`~llmwall.detectors.base.NotScored`, are recorded as *not scored* and their
fields stay absent. A detector that raises is logged and treated the same
way; it never kills the flow. Work that was still queued when its request's
deadline passed is skipped, and work that could not finish in time is not queued
at all (admission control, see ``Orchestrator``), so a slow detector or a flood
of requests cannot build a backlog that delays later requests.

A prompt is screened turn by turn (a turn: the text parts of one message, or one
top-level field such as a system prompt), and each turn's detections are cached by
a hash of its text: SDKs resend the whole conversation with every request, so a
long conversation costs only its new turns (an answer's detections are keyed by the
hash of the user turn it replies to as well: Llama Guard judges it in that context). The turns' fields are merged (any
finding counts, the lowest injection score wins) and their spans mapped back onto
the whole prompt, so ``redact`` reaches every turn that carries PII.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from llmwall.detectors.base import Detection, Detector, NotScored, Prompt, ScreenRequest, Span
from llmwall.fields import (
    ARRAY_STRING,
    BOOL,
    FAILED_DETECTIONS,
    FLAGGED_ROLES,
    INJECTION_FIELDS,
    INJECTION_NOT_SCORED,
    INJECTION_SCORE,
    INT,
    MAP_INT,
    PII_DETECTED,
    SCHEMA,
    SECRET_DETECTED,
    UNSAFE_TOPIC_DETECTED,
)

log = logging.getLogger(__name__)

#: Assumed cost of a detector never run yet: small, so the first requests are admitted and measured.
FIRST_COST_S: Final = 0.005
#: Weight of the newest measurement in a detector's moving-average cost.
COST_WEIGHT: Final = 0.2
#: Headroom on a cost estimate when admitting a job (costs vary from prompt to prompt).
COST_MARGIN: Final = 1.5
#: Factor applied to a detector's estimate each time it is refused for its cost alone.
SHED_DECAY: Final = 0.9
#: Niceness added to detector worker threads (see lower_priority).
WORKER_NICE: Final = 5
#: Turn detections kept (hashes, fields and offsets only: never text).
TURN_CACHE_SIZE: Final = 20_000
#: A turn with any of these true is a finding; its role goes into FLAGGED_ROLES.
FINDING_FIELDS: Final = (UNSAFE_TOPIC_DETECTED, PII_DETECTED, SECRET_DETECTED)
#: Int fields merged across turns by their minimum (the most alarming); other ints add up.
MIN_FIELDS: Final = INJECTION_FIELDS


class DeadlinePassed(NotScored):
    """Raised inside a worker when a queued job starts after its request's deadline."""


@dataclass
class ScreenResult:
    """The merged outcome of one screening: fields, spans and bookkeeping."""

    fields: dict[str, object] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    not_scored: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shed: list[str] = field(default_factory=list)  # not run at all: no capacity before the deadline
    info: dict[str, dict[str, object]] = field(default_factory=dict)
    cached_turns: int = 0  # turn detections answered from the cache


@dataclass(frozen=True)
class Turn:
    """The part indexes of one turn, its own Prompt, and the cache key of its text."""

    indexes: tuple[int, ...]
    prompt: Prompt
    digest: bytes


def turns(prompt: Prompt) -> list[Turn]:
    """The prompt's parts grouped per message (or per top-level field), in order."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, part in enumerate(prompt.parts):
        path = part.path
        key = tuple(path[:2]) if len(path) >= 2 and isinstance(path[1], int) else tuple(path[:1])
        groups.setdefault(key, []).append(i)
    out = []
    for indexes in groups.values():
        parts = tuple(prompt.parts[i] for i in indexes)
        h = hashlib.sha256()
        for p in parts:
            h.update(p.role.encode() + b"\0" + p.text.encode("utf-8", "replace") + b"\0")
        out.append(Turn(tuple(indexes), Prompt(prompt.format, parts, prompt.model, prompt.stream), h.digest()))
    return out


#: One detector of a lane: its position among the request's detectors, and its turns to screen.
LaneItem = tuple[int, Detector, list[tuple[int, Turn]]]


class TurnCache:
    """Least-recently-used detections per (detector, turn digest, what the rules asked)."""

    def __init__(self, size: int = TURN_CACHE_SIZE) -> None:
        self._size = size
        self._data: OrderedDict[tuple[object, ...], Detection] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> Detection | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
            return hit

    def clear(self) -> None:
        """Forget everything (the detectors changed: their verdicts may differ)."""
        with self._lock:
            self._data.clear()

    def put(self, key: tuple[object, ...], detection: Detection) -> None:
        with self._lock:
            self._data[key] = detection
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class Orchestrator:
    """Owns the worker pool that detectors run in, and admits only work that can finish in time.

    Admission control: each detector's cost per turn is tracked (a moving average of its
    wall time) together with the work already queued. Jobs whose estimated start plus
    cost land past their request's deadline are not queued at all: the detectors are
    reported failed at once, so a request over capacity is answered immediately (per
    the rules, which see ``cf.llm.prompt.failed_detections``) instead of waiting behind
    work that cannot help it, and queued work never pushes a later request past its deadline.
    """

    def __init__(self, workers: int = 8) -> None:
        # Work queued ahead of a job drains at the speed of the CPUs, not of the threads:
        # eight threads on two cores each run at a quarter speed. Estimating the wait with
        # the thread count admitted four times too much work under overload.
        self._parallel = max(1, min(workers, _cpus()))
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="llmwall-detect", initializer=lower_priority
        )
        self._lock = threading.Lock()
        self._cost: dict[str, float] = {}  # detector name -> seconds per turn (moving average)
        self._backlog = 0.0  # estimated seconds of work queued or running, all detectors
        self._jobs = 0  # lane jobs queued or running
        self.cache = TurnCache()

    @property
    def busy(self) -> bool:
        """Whether detector work is queued or running right now."""
        with self._lock:
            return self._jobs > 0

    def _admit(
        self, lanes: Sequence[Sequence[LaneItem]], deadline: float
    ) -> tuple[list[tuple[list[LaneItem], float]], list[str]]:
        """Reserve room for a request's lanes (each: detectors with their turns to screen, run
        one after the other): (admitted lanes with their reservations, names refused).

        A detector too slow for the deadline even on an idle pool, after the detectors
        before it in its lane, is refused alone (the others still run). When the queue is
        what makes the jobs late, the whole request is refused: its cheap jobs would
        otherwise wait in line behind the backlog and hold it to the deadline.
        """
        now = time.monotonic()
        admitted: list[tuple[list[LaneItem], float]] = []
        refused: list[str] = []
        with self._lock:
            for lane in lanes:
                kept: list[LaneItem] = []
                total = 0.0
                for item in lane:
                    det, todo = item[1], item[2]
                    per_turn = self._cost.get(det.name, FIRST_COST_S)
                    cost = per_turn * len(todo)
                    if now + (total + cost) * COST_MARGIN > deadline:  # after those before it in its lane
                        # Let the estimate decay, or a one-off slow job would keep the
                        # detector from ever being measured again.
                        self._cost[det.name] = per_turn * SHED_DECAY
                        refused.append(det.name)
                    else:
                        kept.append(item)
                        total += cost
                if kept:
                    admitted.append((kept, total))
            wait = self._backlog / self._parallel
            slowest = max((cost for _, cost in admitted), default=0.0)
            if admitted and now + wait + slowest * COST_MARGIN > deadline:
                return [], refused + [det.name for lane, _ in admitted for _, det, _ in lane]
            self._backlog += sum(cost for _, cost in admitted)
            self._jobs += len(admitted)
        return admitted, refused

    def _release(self, reserved: float) -> None:
        with self._lock:
            self._jobs -= 1
            # With no job left the backlog is zero, whatever rounding the float sums left behind
            # (a residue of 1e-17 once kept ``busy`` true for good).
            self._backlog = max(0.0, self._backlog - reserved) if self._jobs else 0.0

    def _measured(self, det: Detector, per_turn: float) -> None:
        with self._lock:
            old = self._cost.get(det.name)
            self._cost[det.name] = per_turn if old is None else old + COST_WEIGHT * (per_turn - old)

    def _submit(
        self,
        lane: list[LaneItem],
        request: ScreenRequest,
        key: tuple[object, ...],
        reserved: float,
        outcomes: dict[int, tuple[dict[int, Detection], float] | BaseException],
    ) -> asyncio.Future:
        """Queue one lane: its detectors run one after the other in one worker thread.

        Each detector's outcome (its turns' detections and elapsed seconds, or the exception
        it raised) lands in ``outcomes`` under its position as soon as it finishes, so a lane
        cut off by the deadline still reports the detectors that finished before it.
        """

        def run() -> None:
            try:
                for position, det, todo in lane:
                    try:
                        start = time.monotonic()
                        found: dict[int, Detection] = {}
                        for index, turn in todo:
                            if time.monotonic() >= request.deadline:
                                raise DeadlinePassed(det.name)
                            sub = dataclasses.replace(request, prompt=turn.prompt)
                            found[index] = det.detect(sub)
                            self.cache.put((det.name, id(det), turn.digest, *key), found[index])
                        elapsed = time.monotonic() - start
                        self._measured(det, elapsed / max(1, len(todo)))
                        outcomes[position] = (found, elapsed)
                    except Exception as exc:  # one detector's failure never stops the others
                        outcomes[position] = exc
            finally:
                self._release(reserved)

        def dropped(fut: Future) -> None:
            if fut.cancelled():  # never started: release its reservation here
                self._release(reserved)

        cfut = self._pool.submit(run)
        cfut.add_done_callback(dropped)
        return asyncio.wrap_future(cfut)

    async def screen(
        self, request: ScreenRequest, detectors: Sequence[Detector], overloaded: bool = False
    ) -> ScreenResult:
        """Run ``detectors`` on every turn of ``request`` and return by ``request.deadline`` at the latest.

        Detectors sharing a lane (``Detector.lane``) run in one job, one after the other;
        lanes run in parallel. ``overloaded`` (the caller's own CPU is saturated) refuses
        every job that the turn cache cannot answer, so the request is decided at once.
        """
        result = ScreenResult(fields={FAILED_DETECTIONS: []})
        if not detectors:
            return result
        prompt_turns = turns(request.prompt) or [Turn((), request.prompt, b"")]
        key = (request.wanted, tuple(sorted(request.custom_topics.items())), _digest(request.reply_to))
        per_det: list[dict[int, Detection]] = [{} for _ in detectors]
        todo: list[list[tuple[int, Turn]]] = [[] for _ in detectors]
        lanes: dict[object, list[LaneItem]] = {}  # lane -> its detectors with work to do
        for d, det in enumerate(detectors):
            for index, turn in enumerate(prompt_turns):
                hit = self.cache.get((det.name, id(det), turn.digest, *key))
                if hit is None:
                    todo[d].append((index, turn))
                else:
                    per_det[d][index] = hit
                    result.cached_turns += 1
            if todo[d]:
                lanes.setdefault(det.lane or d, []).append((d, det, todo[d]))
        admitted: list[tuple[list[LaneItem], float]]
        if overloaded:
            admitted, refused = [], [det.name for lane in lanes.values() for _, det, _ in lane]
        else:
            admitted, refused = self._admit(list(lanes.values()), request.deadline)
        result.not_scored += refused
        result.shed += refused
        outcomes: dict[int, tuple[dict[int, Detection], float] | BaseException] = {}
        futures = [self._submit(lane, request, key, reserved, outcomes) for lane, reserved in admitted]
        if futures:
            timeout = max(0.0, request.deadline - time.monotonic())
            _, pending = await asyncio.wait(futures, timeout=timeout)
            for fut in pending:
                fut.cancel()  # a queued job is dropped; a running one finishes and is ignored
        finished = dict(outcomes)  # one copy: a lane still running may add to outcomes later
        scored = [d for d in range(len(detectors)) if not todo[d]]  # every turn from the cache
        for lane, _ in admitted:
            for d, det, _ in lane:
                outcome = finished.get(d)
                if outcome is None:
                    result.not_scored.append(det.name)
                elif isinstance(outcome, BaseException):
                    _failed(result, det, outcome)
                else:
                    found, elapsed_s = outcome
                    per_det[d].update(found)
                    result.timings_ms[det.name] = round(elapsed_s * 1000.0, 3)
                    scored.append(d)
        flagged: set[str] = set()
        for d in sorted(scored):
            detections = [per_det[d][i] for i in range(len(prompt_turns))]
            result.fields.update(merge_fields([x.fields for x in detections]))
            for turn, detection in zip(prompt_turns, detections, strict=True):
                result.spans += _whole_prompt_spans(request.prompt, turn, detection.spans)
                if any(detection.fields.get(name) is True for name in FINDING_FIELDS):
                    flagged.update(p.role for p in turn.prompt.parts)
                if detection.info:
                    result.info[detectors[d].name] = detection.info
        result.not_scored.sort()
        result.errors.sort()
        result.shed.sort()
        result.fields[FAILED_DETECTIONS] = sorted(set(result.not_scored) | set(result.errors))
        result.fields[FLAGGED_ROLES] = sorted(flagged)
        if any(INJECTION_FIELDS & d.provides for d in detectors):
            result.fields.setdefault(INJECTION_SCORE, INJECTION_NOT_SCORED)
        return result

    def close(self) -> None:
        """Stop accepting work; running detector calls finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def lower_priority() -> None:
    """Run this worker thread at a lower OS priority than the event loop (Linux: per thread).

    Out of CPU, the kernel then gives the event loop (accepting, forwarding and deciding
    requests, refusing work that cannot finish in time) the cores first and detectors what
    is left, instead of an equal share to every busy thread: the loop's lag is what holds
    a refused request past its deadline (docs/benchmarks.md, "Overload").
    """
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE))
    except (AttributeError, OSError):  # not Linux, or not allowed: same priority as the loop
        pass


def _cpus() -> int:
    """CPUs this process may run on (its affinity mask, as a container's cpuset limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def merge_fields(per_turn: Sequence[dict[str, object]]) -> dict[str, object]:
    """One detector's fields over all turns: a finding in any turn counts.

    Bool: any; Array<String>: union; Map<Int>: lowest score per label; injection score:
    lowest (the most alarming turn); other Int (token count): sum.
    """
    if len(per_turn) == 1:
        return dict(per_turn[0])
    out: dict[str, object] = {}
    for fields in per_turn:
        for name, value in fields.items():
            if name not in out:
                out[name] = _copy(value)
                continue
            kind, old = SCHEMA.get(name), out[name]
            if kind == BOOL:
                out[name] = bool(old) or bool(value)
            elif kind == ARRAY_STRING and isinstance(old, list) and isinstance(value, list):
                out[name] = sorted(set(old) | set(value))
            elif kind == MAP_INT and isinstance(old, dict) and isinstance(value, dict):
                for label, score in value.items():
                    old[label] = min(old.get(label, score), score)
            elif kind == INT and isinstance(old, int) and isinstance(value, int):
                out[name] = min(old, value) if name in MIN_FIELDS else old + value
            else:
                out[name] = value
    return out


def _digest(text: str | None) -> bytes | None:
    """A cache key for a text that must not be kept (an answer's user turn): its hash, or None."""
    return None if text is None else hashlib.sha256(text.encode("utf-8", "replace")).digest()


def _copy(value: object) -> object:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _whole_prompt_spans(prompt: Prompt, turn: Turn, spans: Sequence[Span]) -> list[Span]:
    """Spans of one turn's text mapped onto the whole prompt's text (cut at part boundaries)."""
    if not spans or not turn.indexes:
        return list(spans)
    whole = prompt.part_offsets()
    local = turn.prompt.part_offsets()
    out = []
    for span in spans:
        for k, (start, end) in enumerate(local):
            lo, hi = max(span.start, start), min(span.end, end)
            if lo < hi:
                base = whole[turn.indexes[k]][0] - start
                out.append(Span(lo + base, hi + base, span.category))
    return out


def screen_here(request: ScreenRequest, detectors: Sequence[Detector]) -> ScreenResult:
    """Run ``detectors`` one after the other in the calling thread (a worker of the caller's).

    For short texts screened often (windows of a streamed answer), where handing each
    detector to the pool costs more than running it. A detector that starts after
    ``request.deadline`` is not run and is reported not scored.
    """
    result = ScreenResult()
    for det in detectors:
        try:
            detection, elapsed_ms = _timed_detect(det, request)
        except Exception as exc:
            _failed(result, det, exc)
            continue
        result.fields.update(detection.fields)
        result.spans.extend(detection.spans)
        result.timings_ms[det.name] = round(elapsed_ms, 3)
        if detection.info:
            result.info[det.name] = detection.info
    result.not_scored.sort()
    result.errors.sort()
    if any(INJECTION_FIELDS & d.provides for d in detectors):
        result.fields.setdefault(INJECTION_SCORE, INJECTION_NOT_SCORED)
    return result


def _failed(result: ScreenResult, det: Detector, exc: BaseException | None) -> bool:
    """Record a detector that did not answer: not scored (NotScored, or a timeout let through
    from a wait) or failed (anything else); False when there was no exception."""
    if exc is None:
        return False
    if isinstance(exc, TimeoutError):
        result.not_scored.append(det.name)
    else:
        # Log the type only: an exception message could quote the prompt.
        log.warning("llmwall: detector %s failed: %s", det.name, type(exc).__name__)
        result.errors.append(det.name)
    return True


def _timed_detect(detector: Detector, request: ScreenRequest) -> tuple[Detection, float]:
    start = time.monotonic()
    if start >= request.deadline:
        raise DeadlinePassed(detector.name)
    detection = detector.detect(request)
    return detection, (time.monotonic() - start) * 1000.0
