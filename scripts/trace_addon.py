"""mitmproxy script for scripts/trace_request.py: llmwall's addon chain with time stamps.

Loaded instead of ``mitm_entry.py`` (``mitmdump -s scripts/trace_addon.py``): the same addons,
between two stamping addons, with the hooks and the stages of screening wrapped to note
``time.perf_counter()`` (CLOCK_MONOTONIC, the client's clock too) as they start and end, and
each detector's thread CPU. One JSON line per flow goes to ``$TRACE_OUT`` when its response
hook ends; ``x-trace-id`` names the flow. ``TRACE_PLAIN=1`` loads the stamping addons alone
(plain mitmdump's own stages). A measuring tool, not part of llmwall: it patches llmwall's
classes in this process only.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
from collections.abc import Callable
from typing import Any

import llmwall.mitm_entry as entry
from llmwall.proxy import actions, orchestrator
from llmwall.proxy import addon as wall_module
from llmwall.rules import ruleset

OUT = open(os.environ["TRACE_OUT"], "a", buffering=1)  # noqa: SIM115 - open for the process's life
#: time.time() - time.perf_counter(): mitmproxy stamps flows with time.time().
OFFSET = time.time() - time.perf_counter()
HOOKS = ("request", "responseheaders", "response")
#: Stamps of the flows in flight, by flow id.
_flows: dict[str, dict[str, Any]] = {}
#: The flow being screened right now (detector threads and the orchestrator have no flow at hand;
#: exact at one connection, which is what the critical-path breakdown measures).
_screening: list[dict[str, Any]] = []


def _stamps(flow: Any) -> dict[str, Any]:
    return _flows.setdefault(flow.id, {"t": {}, "detectors": []})


def _mark(flow: Any, name: str) -> None:
    _stamps(flow)["t"][name] = time.perf_counter()


def _wrap_flow_call(owner: Any, name: str, label: str) -> None:
    """Stamp ``label>`` and ``label<`` around ``owner.name(flow, ...)`` (sync or async)."""
    fn = getattr(owner, name)
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_stamped(*args: Any, **kwargs: Any) -> Any:
            flow = args[0] if not inspect.isclass(owner) else args[1]
            _mark(flow, label + ">")
            try:
                return await fn(*args, **kwargs)
            finally:
                _mark(flow, label + "<")

        setattr(owner, name, async_stamped)
        return

    @functools.wraps(fn)
    def stamped(*args: Any, **kwargs: Any) -> Any:
        flow = args[0] if not inspect.isclass(owner) else args[1]
        _mark(flow, label + ">")
        try:
            return fn(*args, **kwargs)
        finally:
            _mark(flow, label + "<")

    setattr(owner, name, stamped)


def _stamp_current(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` stamping ``label>``/``label<`` on the flow being screened."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_stamped(*args: Any, **kwargs: Any) -> Any:
            t = _screening[0]["t"] if _screening else {}
            t[label + ">"] = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                t[label + "<"] = time.perf_counter()

        return async_stamped

    @functools.wraps(fn)
    def stamped(*args: Any, **kwargs: Any) -> Any:
        t = _screening[0]["t"] if _screening else {}
        t.setdefault(label + ">", time.perf_counter())  # the first call (submit: the first lane)
        try:
            return fn(*args, **kwargs)
        finally:
            t[label + "<"] = time.perf_counter()

    return stamped


class First:
    """First in the chain: when mitmproxy hands each hook over, and mitmproxy's own timestamps."""

    def request(self, flow: Any) -> None:
        stamps = _stamps(flow)
        stamps["t"]["first.request"] = time.perf_counter()
        stamps["id"] = flow.request.headers.get("x-trace-id")
        stamps["t"]["request.read"] = flow.request.timestamp_end - OFFSET
        _screening[:] = [stamps]
        _wrap_detectors()

    def responseheaders(self, flow: Any) -> None:
        stamps = _stamps(flow)
        stamps["t"]["first.responseheaders"] = time.perf_counter()
        stamps["t"]["response.headers_read"] = flow.response.timestamp_start - OFFSET

    def response(self, flow: Any) -> None:
        _mark(flow, "first.response")


class Last:
    """Last in the chain: the end of each hook; the flow's line is written after its response hook."""

    def request(self, flow: Any) -> None:
        _mark(flow, "last.request")

    def responseheaders(self, flow: Any) -> None:
        _mark(flow, "last.responseheaders")
        stamps, inner = _stamps(flow), flow.response.stream

        def first_piece(data: bytes) -> Any:
            stamps["t"].setdefault("stream.first_piece", time.perf_counter())
            return data if inner is True else inner(data)

        if inner:
            flow.response.stream = first_piece

    def response(self, flow: Any) -> None:
        stamps = _flows.pop(flow.id, None)
        if stamps is not None:
            stamps["t"]["last.response"] = time.perf_counter()
            OUT.write(json.dumps(stamps) + "\n")


_wrapped: set[int] = set()


def _wrap_detectors() -> None:
    """Stamp each detector's call (wall and thread CPU) on the flow being screened."""
    for det in entry.wall.detectors:
        if id(det) in _wrapped:
            continue
        _wrapped.add(id(det))

        def detect(request: Any, _detect: Callable[..., Any] = det.detect, _name: str = det.name) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return _detect(request)
            finally:
                if _screening:
                    _screening[0]["detectors"].append((_name, start, time.perf_counter(), time.thread_time() - cpu))

        det.detect = detect


if os.environ.get("TRACE_PLAIN"):
    addons: list[Any] = [First(), Last()]
else:
    for chain_addon in entry.addons:
        label = type(chain_addon).__name__
        for hook in HOOKS:
            if hasattr(chain_addon, hook):
                _wrap_flow_call(chain_addon, hook, label + "." + hook)
    _wrap_flow_call(wall_module.LLMWall, "_analyse", "analyse")
    orchestrator.Orchestrator.screen = _stamp_current("orchestrator", orchestrator.Orchestrator.screen)
    orchestrator.Orchestrator._submit = _stamp_current("submit", orchestrator.Orchestrator._submit)
    ruleset.RuleSet.evaluate = _stamp_current("rules", ruleset.RuleSet.evaluate)
    wall_module.actions.annotate = _stamp_current("annotate", actions.annotate)
    addons = [First(), *entry.addons, Last()]
