"""Runs detectors in parallel, off the event loop, under one hard deadline.

Each detector runs in a worker thread. When the deadline passes the verdict is
made from what finished: unfinished detectors are recorded as *not scored* and
their fields stay absent. A detector that raises is logged and treated the same
way; it never kills the flow. Work that was still queued when its request's
deadline passed is skipped, and work that could not finish in time is not queued
at all (admission control, see ``Orchestrator``), so a slow detector or a flood
of requests cannot build a backlog that delays later requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from llmwall.detectors.base import Detection, Detector, ScreenRequest, Span
from llmwall.fields import FAILED_DETECTIONS, INJECTION_FIELDS, INJECTION_NOT_SCORED

log = logging.getLogger(__name__)

#: Assumed cost of a detector never run yet: small, so the first requests are admitted and measured.
FIRST_COST_S: Final = 0.005
#: Weight of the newest measurement in a detector's moving-average cost.
COST_WEIGHT: Final = 0.2
#: Headroom on a cost estimate when admitting a job (costs vary from prompt to prompt).
COST_MARGIN: Final = 1.5
#: Factor applied to a detector's estimate each time it is refused for its cost alone.
SHED_DECAY: Final = 0.9


class DeadlinePassed(Exception):
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


class Orchestrator:
    """Owns the worker pool that detectors run in, and admits only work that can finish in time.

    Admission control: each detector's cost is tracked (a moving average of its wall time
    per job) together with the work already queued. A job whose estimated start plus cost
    lands past its request's deadline is not queued at all: the detector is reported
    failed at once, so a request over capacity is answered immediately (per the rules,
    which see ``cf.llm.prompt.failed_detections``) instead of waiting behind work that
    cannot help it, and queued work never pushes a later request past its deadline.
    """

    def __init__(self, workers: int = 8) -> None:
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llmwall-detect")
        self._lock = threading.Lock()
        self._cost: dict[str, float] = {}  # detector name -> seconds per job (moving average)
        self._backlog = 0.0  # estimated seconds of work queued or running, all detectors

    def estimate(self, name: str) -> float:
        """Seconds one job of detector ``name`` is expected to take."""
        with self._lock:
            return self._cost.get(name, FIRST_COST_S)

    def _admit(self, det: Detector, deadline: float) -> float | None:
        """Reserve room for one job, or None when it could not finish by ``deadline``."""
        now = time.monotonic()
        with self._lock:
            cost = self._cost.get(det.name, FIRST_COST_S)
            wait = self._backlog / self._workers
            if now + wait + cost * COST_MARGIN > deadline:
                if now + cost * COST_MARGIN > deadline:
                    # Too slow even on an idle pool: let the estimate decay, or a one-off slow
                    # job would keep the detector from ever being measured again.
                    self._cost[det.name] = cost * SHED_DECAY
                return None
            self._backlog += cost
            return cost

    def _finished(self, det: Detector, reserved: float, elapsed: float | None) -> None:
        with self._lock:
            self._backlog = max(0.0, self._backlog - reserved)
            if elapsed is not None:
                old = self._cost.get(det.name)
                self._cost[det.name] = elapsed if old is None else old + COST_WEIGHT * (elapsed - old)

    def _submit(self, det: Detector, request: ScreenRequest, reserved: float) -> asyncio.Future:
        def run() -> tuple[Detection, float]:
            elapsed: float | None = None
            try:
                detection, elapsed = _timed_detect(det, request)
                return detection, elapsed
            finally:
                self._finished(det, reserved, elapsed)

        def dropped(fut: Future) -> None:
            if fut.cancelled():  # never started: release its reservation here
                self._finished(det, reserved, None)

        cfut = self._pool.submit(run)
        cfut.add_done_callback(dropped)
        return asyncio.wrap_future(cfut)

    async def screen(self, request: ScreenRequest, detectors: Sequence[Detector]) -> ScreenResult:
        """Run ``detectors`` on ``request`` and return by ``request.deadline`` at the latest."""
        result = ScreenResult(fields={FAILED_DETECTIONS: []})
        if not detectors:
            return result
        futures: dict[asyncio.Future, Detector] = {}
        for det in detectors:
            reserved = self._admit(det, request.deadline)
            if reserved is None:
                result.not_scored.append(det.name)
                result.shed.append(det.name)
            else:
                futures[self._submit(det, request, reserved)] = det
        done: set[asyncio.Future] = set()
        pending: set[asyncio.Future] = set()
        if futures:
            timeout = max(0.0, request.deadline - time.monotonic())
            done, pending = await asyncio.wait(futures, timeout=timeout)
        for fut in pending:
            fut.cancel()  # a queued job is dropped; a running one finishes and is ignored
            result.not_scored.append(futures[fut].name)
        for fut in done:
            det = futures[fut]
            exc = fut.exception()
            if isinstance(exc, (DeadlinePassed, TimeoutError)):
                result.not_scored.append(det.name)
            elif exc is not None:
                # Log the type only: an exception message could quote the prompt.
                log.warning("llmwall: detector %s failed: %s", det.name, type(exc).__name__)
                result.errors.append(det.name)
            else:
                detection, elapsed_s = fut.result()
                result.fields.update(detection.fields)
                result.spans.extend(detection.spans)
                result.timings_ms[det.name] = round(elapsed_s * 1000.0, 3)
                if detection.info:
                    result.info[det.name] = detection.info
        result.not_scored.sort()
        result.errors.sort()
        result.shed.sort()
        result.fields[FAILED_DETECTIONS] = sorted(set(result.not_scored) | set(result.errors))
        if any(INJECTION_FIELDS & d.provides for d in detectors):
            result.fields.setdefault("cf.llm.prompt.injection_score", INJECTION_NOT_SCORED)
        return result

    def close(self) -> None:
        """Stop accepting work; running detector calls finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _timed_detect(detector: Detector, request: ScreenRequest) -> tuple[Detection, float]:
    start = time.monotonic()
    if start >= request.deadline:
        raise DeadlinePassed(detector.name)
    detection = detector.detect(request)
    return detection, time.monotonic() - start
