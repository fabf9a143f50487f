"""Runs detectors in parallel, off the event loop, under one hard deadline.

Each detector runs in a worker thread. When the deadline passes the verdict is
made from what finished: unfinished detectors, and those that raise
:class:`~llmwall.detectors.base.NotScored`, are recorded as *not scored* and their
fields stay absent. A detector that raises is logged and treated the same
way; it never kills the flow. Work that was still queued when its request's
deadline passed is skipped, so a slow detector cannot build an ever-growing
backlog that delays later requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from llmwall.detectors.base import Detection, Detector, NotScored, ScreenRequest, Span
from llmwall.fields import INJECTION_FIELDS, INJECTION_NOT_SCORED, INJECTION_SCORE

log = logging.getLogger(__name__)


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
    info: dict[str, dict[str, object]] = field(default_factory=dict)


class Orchestrator:
    """Owns the worker pool that detectors run in."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llmwall-detect")

    async def screen(self, request: ScreenRequest, detectors: Sequence[Detector]) -> ScreenResult:
        """Run ``detectors`` on ``request`` and return by ``request.deadline`` at the latest."""
        if not detectors:
            return ScreenResult()
        loop = asyncio.get_running_loop()
        futures = {loop.run_in_executor(self._pool, _timed_detect, det, request): det for det in detectors}
        timeout = max(0.0, request.deadline - time.monotonic())
        done, pending = await asyncio.wait(futures, timeout=timeout)
        return _merge(futures, done, pending, detectors)

    def close(self) -> None:
        """Stop accepting work; running detector calls finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def screen_here(request: ScreenRequest, detectors: Sequence[Detector]) -> ScreenResult:
    """Run ``detectors`` one after the other in the calling thread (a worker of the caller's).

    For short texts screened often (windows of a streamed answer), where handing each
    detector to the pool costs more than running it. A detector that starts after
    ``request.deadline`` is not run and is reported not scored.
    """
    futures: dict[concurrent.futures.Future[tuple[Detection, float]], Detector] = {}
    for det in detectors:
        fut: concurrent.futures.Future[tuple[Detection, float]] = concurrent.futures.Future()
        try:
            fut.set_result(_timed_detect(det, request))
        except Exception as exc:  # recorded like a pool job's failure
            fut.set_exception(exc)
        futures[fut] = det
    return _merge(futures, futures, (), detectors)


def _merge(
    futures: Mapping[Any, Detector], done: Iterable[Any], pending: Iterable[Any], detectors: Sequence[Detector]
) -> ScreenResult:
    """One ScreenResult from finished and unfinished detector futures (asyncio or concurrent)."""
    result = ScreenResult()
    for fut in pending:
        fut.cancel()  # a queued job is dropped; a running one finishes and is ignored
        result.not_scored.append(futures[fut].name)
    for fut in done:
        det = futures[fut]
        exc = fut.exception()
        if isinstance(exc, TimeoutError):  # NotScored, or a timeout let through from a wait
            result.not_scored.append(det.name)
        elif exc is not None:
            # Log the type only: an exception message could quote the prompt.
            log.warning("llmwall: detector %s failed: %s", det.name, type(exc).__name__)
            result.errors.append(det.name)
        else:
            detection, elapsed_ms = fut.result()
            if detection.info.get("skipped"):
                # The lite detectors' form of NotScored until their rewrite raises it: same count.
                result.not_scored.append(det.name)
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


def _timed_detect(detector: Detector, request: ScreenRequest) -> tuple[Detection, float]:
    start = time.monotonic()
    if start >= request.deadline:
        raise DeadlinePassed(detector.name)
    detection = detector.detect(request)
    return detection, (time.monotonic() - start) * 1000.0
