"""The analytics addon: turns the screening addon's events into metrics, stored events and the endpoint inventory.

It comes after ``LLMWall`` in the addon chain (``mitm_entry.py``), so by the time its
``request`` hook runs the flow's event is in ``flow.metadata["llmwall"]``. It owns the
options of the SQLite store (``llmwall_db``, ``llmwall_retention_days``,
``llmwall_db_max_mb``), the store and the Prometheus metrics; the dashboard addon
reads both. Database writes go to one worker thread, response parsing to others, so
the event loop never waits on either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mitmproxy import ctx, exceptions, http

from llmwall.analytics import sanitize
from llmwall.analytics.metrics import Metrics
from llmwall.analytics.store import DEFAULT_DB, Store
from llmwall.providers import discovery
from llmwall.proxy import body
from llmwall.proxy.event import METADATA_KEY, RESPONSE_METADATA_KEY, Event

log = logging.getLogger(__name__)

#: flow.metadata key marking a flow whose event was recorded (so it is recorded once).
RECORDED_KEY = "llmwall_recorded"
STORE_OPTIONS = frozenset({"llmwall_db", "llmwall_retention_days", "llmwall_db_max_mb"})
#: Size limit for confirming a response when ``llmwall_max_body_kb`` (the screening
#: addon's option) is not loaded, as in a chain without the screening addon.
DEFAULT_MAX_BODY_KB = 4096
#: How much of a streamed response is read to confirm its format.
STREAM_PREFIX = 65536
#: An endpoint's confirmation is written again only when it changes or after this many
#: seconds (so an endpoint pruned from the inventory meanwhile gets it back).
CONFIRM_REFRESH_S = 60.0
#: Endpoints whose last written confirmation is remembered (bounded memory).
CONFIRMATIONS_KEPT = 4096
#: A store write: the store method and its arguments.
Write = tuple[Callable[..., object], tuple[object, ...]]


class Analytics:
    """Owns the store and the metrics; records every event the screening addon leaves on a flow."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.metrics = Metrics()
        self._listeners: list[Callable[[], None]] = []
        #: (host, method, path template, format) -> (confirmed, when written): see response().
        self._confirmations: OrderedDict[tuple[str, str, str, str], tuple[object, float]] = OrderedDict()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmwall-store")
        self._parse = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmwall-confirm")

    def on_store_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after the store is opened, replaced or closed (the dashboard rebuilds)."""
        self._listeners.append(callback)

    # ----------------------------------------------------------------- options
    def load(self, loader: Any) -> None:
        loader.add_option(
            "llmwall_db", str, DEFAULT_DB, "SQLite file for analytics and the endpoint inventory; empty to disable."
        )
        loader.add_option("llmwall_retention_days", int, 30, "Delete analytics events older than this many days.")
        loader.add_option(
            "llmwall_db_max_mb", int, 256, "Delete the oldest analytics events when the database grows past this size."
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & STORE_OPTIONS:
            return
        opts = ctx.options
        if opts.llmwall_retention_days < 1 or opts.llmwall_db_max_mb < 1:
            raise exceptions.OptionsError("llmwall_retention_days and llmwall_db_max_mb must be at least 1")
        self._open_store(opts.llmwall_db)
        for callback in self._listeners:
            callback()

    def _open_store(self, path: str) -> None:
        if self.store:
            self.store.close()
            self.store = None
        if not path:
            return
        try:
            self.store = Store(
                os.path.expanduser(path),
                retention_days=ctx.options.llmwall_retention_days,
                max_mb=ctx.options.llmwall_db_max_mb,
            )
        except Exception as exc:
            raise exceptions.OptionsError(f"llmwall: cannot open database {path}: {exc}") from None

    def done(self) -> None:
        self._parse.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=True)
        if self.store:
            self.store.close()

    # ------------------------------------------------------------------ hooks
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Record an event left at the headers (a streamed body refused before it left):
        a killed flow never reaches the request hook."""
        self.request(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        """Record the event the screening addon left on the flow, if any, once."""
        event = Event.from_dict(flow.metadata.get(METADATA_KEY))
        if event is None or flow.metadata.get(RECORDED_KEY):
            return
        flow.metadata[RECORDED_KEY] = True
        record = sanitize.event(event.to_dict())  # bounded labels only; an odd value never costs the event
        self.metrics.observe(record)
        if not self.store:
            return
        writes: list[Write] = []
        if event.status == "screened" and event.format:
            host, template = record["host"], record["path_template"]
            writes.append((self.store.upsert_endpoint, (host, event.method, template, event.format, event.ts)))
        writes.append((self.store.record_event, (record,)))
        self._submit(*writes)  # one hand-off per request: each costs the event loop more than the write

    def record(self, record: dict[str, Any]) -> None:
        """Count and store one event record (response events from ``llmwall.responses``)."""
        self.metrics.observe(record)
        if self.store:
            self._submit((self.store.record_event, (record,)))

    async def response(self, flow: http.HTTPFlow) -> None:
        """Confirm a discovered endpoint from the shape of its response."""
        event = Event.from_dict(flow.metadata.get(METADATA_KEY))
        if event is None or event.action == "block" or not self.store or not flow.response:
            return
        fmt = event.format
        if not fmt or fmt == "custom":
            return
        key = (event.host, event.method, event.path_template, fmt)
        last = self._confirmations.get(key)
        if last is not None and last[0] is True and time.time() - last[1] < CONFIRM_REFRESH_S:
            # Confirmation is sticky in the store (a later non-LLM answer does not undo it), so
            # this answer cannot change the inventory: not parsing it saves every such answer's
            # parse on the event loop (~0.15 ms for a small chat completion).
            return
        handed = flow.metadata.get(RESPONSE_METADATA_KEY)
        confirmed = handed.get("confirmed") if isinstance(handed, dict) else None
        if not isinstance(confirmed, bool):  # response screening did not look: read the body
            limit = getattr(ctx.options, "llmwall_max_body_kb", DEFAULT_MAX_BODY_KB) * 1024
            if body.parse_inline(flow.response.raw_content, flow.response.headers):
                confirmed = confirm(fmt, flow.response, limit)
            else:
                loop = asyncio.get_running_loop()
                confirmed = await loop.run_in_executor(self._parse, confirm, fmt, flow.response, limit)
        now = time.time()
        if last is not None and last[0] == confirmed and now - last[1] < CONFIRM_REFRESH_S:
            return  # the inventory already says so; the request's own write refreshed last_seen
        self._confirmations[key] = (confirmed, now)
        self._confirmations.move_to_end(key)
        while len(self._confirmations) > CONFIRMATIONS_KEPT:
            self._confirmations.popitem(last=False)
        self._submit((self.store.upsert_endpoint, (*key, now, confirmed)))

    def _submit(self, *writes: Write) -> None:
        """Run store writes off the event loop, in order, in one job; a failure is logged
        (never raised into a flow) and does not stop the writes after it."""

        def run() -> None:
            for fn, args in writes:
                try:
                    fn(*args)
                except Exception as exc:
                    log.error("llmwall: analytics write failed: %s", exc)

        self._io.submit(run)


def confirm(fmt: str, resp: http.Response, limit: int) -> bool:
    """Whether a response (whole or streamed) has the shape of ``fmt``'s responses."""
    try:
        body = resp.get_content(strict=True) or b""
    except ValueError:
        return False
    ctype = resp.headers.get("content-type", "")
    if any(s in ctype for s in ("event-stream", "eventstream", "ndjson")):
        return discovery.confirm_stream(fmt, body[:STREAM_PREFIX])
    if len(body) > limit:
        return False
    parsed = discovery.parse_body(body, resp.headers.get("content-type"), max_bytes=limit)
    return parsed.error is None and discovery.confirm_response(fmt, parsed.data)
