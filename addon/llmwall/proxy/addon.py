"""The screening addon: discovery, detectors, rules and actions for each flow.

Modelled on mitmproxy's own addons: options are registered in ``load``, checked
in ``configure`` (raising ``OptionsError`` with a clear message), and the work
happens in an async ``request`` hook that never blocks the event loop: body
parsing and detectors run in worker threads.

It is one of three addons (``mitm_entry.py`` lists them): the dashboard addon comes
before it and answers the dashboard's own host; the analytics addon comes after it
and records the :class:`~llmwall.proxy.event.Event` this addon leaves in
``flow.metadata["llmwall"]``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import gc
import logging
import posixpath
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mitmproxy import ctx, exceptions, http

from llmwall import bundled
from llmwall import fields as F
from llmwall.analytics import sanitize
from llmwall.detectors import build_detectors, pii
from llmwall.detectors.base import Detector, DetectorConfig, Prompt, ScreenRequest
from llmwall.providers import discovery, extraction
from llmwall.proxy import actions, body, coverage, forwarded
from llmwall.proxy.event import Event
from llmwall.proxy.orchestrator import Orchestrator, ScreenResult
from llmwall.proxy.redact import RedactError, redact_body
from llmwall.rules import RulesError, RuleSet, RulesWatcher

log = logging.getLogger(__name__)

#: Options whose change means the detectors must be rebuilt.
DETECTOR_OPTIONS = frozenset(
    {
        "llmwall_models",
        "llmwall_device",
        "llmwall_pii_entities",
        "llmwall_pii_min_score",
        "llmwall_spacy_model",
        "llmwall_unsafe_threshold",
        "llmwall_remote_llama_guard",
        "llmwall_remote_model",
    }
)
DEVICES = ("auto", "cpu", "cuda")
#: llmwall_on_unparsed: ``auto`` blocks what an upstream could still read but llmwall could not
#: (oversize and bomb bodies, streamed bodies) and passes what an upstream would reject too.
UNPARSED_MODES = ("auto", "pass", "block")
#: Status of a body with prompt-like text that no format recognises: recorded, and blocked
#: with llmwall_on_unparsed=block (``auto`` passes it: ordinary APIs reuse these keys too).
UNRECOGNISED = "unrecognised"
#: Statuses that ``auto`` blocks: the upstream may read these bodies, llmwall did not.
AUTO_BLOCKED = frozenset({body.OVERSIZE, "streamed"})
#: Methods whose body is looked at (PATCH included: servers route it like POST).
BODY_METHODS = discovery.GENERATION_METHODS
#: Event-loop lag probe interval, the lag that means "out of CPU", and its decay per probe.
LAG_PROBE_S = 0.05
OVERLOADED_LAG_S = 0.1
LAG_DECAY = 0.8
#: A request that finished arriving longer ago than this was replayed or loaded, not queued.
MAX_QUEUED_S = 60.0
#: llmwall_turns values, widest first.
TURN_MODES = ("all", "conversation", "latest")
#: Default of llmwall_max_body_kb: room for a few inline images.
DEFAULT_MAX_BODY_KB = 16384
#: JSON nesting accepted as is; deeper subtrees are read as null (see body.prune_deep).
MAX_DEPTH = 64
#: The token counter is cheap and feeds analytics, so it runs even when no rule reads it.
ALWAYS_RUN = frozenset({"tokens"})
#: Detection fields that are recorded in analytics (never text, only outcomes).
RECORDED_PREFIX = F.LLM_PREFIX


@dataclass
class Analysis:
    """What the worker thread learnt from a request body."""

    status: str  # screened | not_llm | parse_error | oversize | undecodable | empty
    fmt: str | None = None
    prompt: Prompt | None = None
    body: bytes | None = None  # the decoded body, kept for redaction
    error: str | None = None


class LLMWall:
    """Screens LLM requests; owns the options, detectors, rules and worker threads of screening."""

    def __init__(self) -> None:
        self.rules: RulesWatcher | None = None
        self.detectors: list[Detector] = []
        self.orchestrator: Orchestrator | None = None
        # Body parsing gets its own threads so it never waits behind detectors.
        self._parse = ThreadPoolExecutor(max_workers=4, thread_name_prefix="llmwall-parse")
        self._reload_task: asyncio.Task[None] | None = None
        self._started = False  # past start-up: an option error is refused instead of stopping the proxy
        self._lag_task: asyncio.Task[None] | None = None
        #: How late the event loop runs timers (seconds; the latest lag, decaying): past
        #: OVERLOADED_LAG_S, while detector work is in flight, the process is out of CPU and
        #: detector work is refused until the loop is on time again (a few probes later).
        self.loop_lag = 0.0
        #: llmwall_trusted_proxies, parsed: peers whose X-Forwarded-For says who the client is.
        self.trusted_proxies: tuple[forwarded.Network, ...] = ()
        #: llmwall_include and llmwall_exclude, kept from configure: mitmproxy deep-copies a list
        #: option on every read, which cost more per request than matching the patterns.
        self._include: tuple[str, ...] = ()
        self._exclude: tuple[str, ...] = ()

    # ----------------------------------------------------------------- options
    def load(self, loader: Any) -> None:
        loader.add_option(
            "llmwall_rules",
            str,
            "rules.yaml",
            "Path of the rules file (Cloudflare Rules-language expressions); hot-reloaded.",
        )
        loader.add_option(
            "llmwall_deadline_ms",
            int,
            2000,
            "Hard deadline for screening one request, in milliseconds; "
            "past it the verdict uses the detectors that finished.",
        )
        loader.add_option(
            "llmwall_models",
            str,
            "",
            "Directory scanned for models (lite/, llama-guard-*/, prompt-guard-*/); "
            "empty: the models shipped with llmwall.",
        )
        loader.add_option("llmwall_device", str, "auto", "Device for ONNX models: auto, cpu or cuda.")
        loader.add_option(
            "llmwall_max_body_kb",
            int,
            DEFAULT_MAX_BODY_KB,
            "Request bodies larger than this (after decompression) are not screened: recorded as oversize and "
            "handled per llmwall_on_unparsed.",
        )
        loader.add_option(
            "llmwall_on_unparsed",
            str,
            "auto",
            "Fail mode for a request that looks like LLM traffic (or is force-included) but cannot be read: "
            "auto blocks oversize, decompression-bomb and streamed bodies (an upstream could read them) and passes "
            "malformed ones (an upstream rejects them too); block blocks all of them and internal errors; "
            "pass passes all.",
        )
        loader.add_option(
            "llmwall_turns",
            str,
            "all",
            "Which turns are screened: all (every client-supplied turn: system and developer prompts, earlier "
            "user turns, assistant turns and prefill, tool results), conversation (all but system prompts) or "
            "latest (the latest user turn only). Each turn is screened once: verdicts are cached by hash.",
        )
        loader.add_option(
            "llmwall_include",
            Sequence[str],
            [],
            "Force-include endpoints: glob patterns on host+path, e.g. 'llm.internal/api/*'.",
        )
        loader.add_option(
            "llmwall_exclude", Sequence[str], [], "Never screen endpoints matching these host+path glob patterns."
        )
        loader.add_option("llmwall_workers", int, 8, "Detector worker threads.")
        loader.add_option(
            "llmwall_pii_entities", Sequence[str], [], "PII entities to detect (empty: llmwall's defaults)."
        )
        loader.add_option("llmwall_pii_min_score", str, "0.5", "Minimum Presidio score for a PII finding (0-1).")
        loader.add_option(
            "llmwall_spacy_model",
            str | None,
            None,
            "Installed spaCy model for PERSON/LOCATION/NRP, e.g. en_core_web_lg.",
        )
        loader.add_option("llmwall_unsafe_threshold", str, "0.5", "P(unsafe) threshold for Llama Guard (0-1).")
        loader.add_option(
            "llmwall_remote_llama_guard",
            str | None,
            None,
            "Base URL of an OpenAI-compatible server running Llama Guard (uses /v1/completions).",
        )
        loader.add_option(
            "llmwall_remote_model", str | None, None, "Model name to send to the remote Llama Guard server."
        )
        loader.add_option(
            "llmwall_trusted_proxies",
            str,
            "",
            "Comma-separated addresses and CIDR networks of load balancers in front of llmwall, e.g. "
            "'10.0.0.5,10.1.0.0/16'. When the connection comes from one of them, ip.src is the right-most "
            "X-Forwarded-For address that is not itself a trusted proxy; from anyone else the header is "
            "ignored. Empty: trust nobody (ip.src is the connection's peer).",
        )

    def configure(self, updated: set[str]) -> None:
        try:
            self._configure(updated)
        except exceptions.OptionsError as exc:
            if self._started:
                raise  # a live option change is refused; the proxy keeps its settings
            # At start-up a user error is logged without a traceback (raising from a script's
            # configure prints one); mitmproxy's start-up error check then exits with status 1.
            log.error("%s", exc)

    def _configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "llmwall_deadline_ms" in updated and not 1 <= opts.llmwall_deadline_ms <= 600_000:
            raise exceptions.OptionsError("llmwall_deadline_ms must be between 1 and 600000")
        if "llmwall_max_body_kb" in updated and opts.llmwall_max_body_kb < 1:
            raise exceptions.OptionsError("llmwall_max_body_kb must be at least 1")
        if "llmwall_device" in updated and opts.llmwall_device not in DEVICES:
            raise exceptions.OptionsError(f"llmwall_device must be one of {', '.join(DEVICES)}")
        if "llmwall_turns" in updated and opts.llmwall_turns not in TURN_MODES:
            raise exceptions.OptionsError(f"llmwall_turns must be one of {', '.join(TURN_MODES)}")
        if "llmwall_on_unparsed" in updated and opts.llmwall_on_unparsed not in UNPARSED_MODES:
            raise exceptions.OptionsError(f"llmwall_on_unparsed must be one of {', '.join(UNPARSED_MODES)}")
        if "llmwall_include" in updated:
            self._include = tuple(opts.llmwall_include)
        if "llmwall_exclude" in updated:
            self._exclude = tuple(opts.llmwall_exclude)
        if "llmwall_trusted_proxies" in updated:
            try:
                self.trusted_proxies = forwarded.parse_trusted(opts.llmwall_trusted_proxies)
            except ValueError as exc:
                raise exceptions.OptionsError(f"llmwall_trusted_proxies: {exc}") from None
            if any(net.prefixlen == 0 for net in self.trusted_proxies):
                log.warning(
                    "llmwall: llmwall_trusted_proxies trusts every address: any client can set its own ip.src "
                    "with X-Forwarded-For"
                )
        if "stream_large_bodies" in updated and opts.stream_large_bodies:
            log.warning(
                "llmwall: stream_large_bodies=%s: request bodies larger than that are sent upstream as they "
                "arrive and cannot be screened; they are handled per llmwall_on_unparsed (auto and block refuse "
                "JSON ones). Set it at least as large as llmwall_max_body_kb to screen them.",
                opts.stream_large_bodies,
            )
        if "llmwall_workers" in updated:
            if not 1 <= opts.llmwall_workers <= 256:
                raise exceptions.OptionsError("llmwall_workers must be between 1 and 256")
            if self.orchestrator:
                self.orchestrator.close()
            self.orchestrator = Orchestrator(opts.llmwall_workers)
        if "llmwall_rules" in updated:
            try:
                self.rules = RulesWatcher(opts.llmwall_rules)
            except RulesError as exc:
                raise exceptions.OptionsError(f"llmwall: cannot load rules: {exc}") from None
            log.info("llmwall: %d rules loaded from %s", len(self.rules.current.rules), opts.llmwall_rules)
        if updated & DETECTOR_OPTIONS:
            self._rebuild_detectors(self._detector_config())
        if updated & (DETECTOR_OPTIONS | {"llmwall_rules"}) and self.rules:
            missing = coverage.uncovered(self.rules.current, self.detectors, _models_dir(opts))
            if missing:
                raise exceptions.OptionsError(
                    "llmwall: the rules cannot work with the loaded detectors: " + "; ".join(missing)
                )

    def _detector_config(self) -> DetectorConfig:
        """The detector settings from the options, plus what the current rules ask of PII."""
        opts = ctx.options
        unknown = sorted(set(opts.llmwall_pii_entities) - set(pii.CLOUDFLARE_CATEGORIES))
        if unknown:
            raise exceptions.OptionsError(
                f"llmwall_pii_entities: unknown categories {', '.join(unknown)}; "
                f"known: {', '.join(pii.CLOUDFLARE_CATEGORIES)}"
            )
        config = _options_config(opts)
        extras = _pii_extras(self.rules.current) if self.rules else frozenset()
        if extras:
            config = dataclasses.replace(
                config, pii_entities=tuple(sorted(set(config.pii_entities or pii.DEFAULT_CATEGORIES) | extras))
            )
        return config

    def _rebuild_detectors(self, config: DetectorConfig) -> None:
        old = self.detectors
        self.detectors = build_detectors(config)
        if self.orchestrator:
            self.orchestrator.cache.clear()  # cached turn verdicts came from the old detectors
        for det in old:
            det.close()
        for det in self.detectors:
            log.info("llmwall: detector %s; loaded in %.0f ms", det.describe(), det.load_ms)
        _freeze_heap()
        provided = set().union(*(d.provides for d in self.detectors)) if self.detectors else set()
        if F.UNSAFE_TOPIC_DETECTED not in provided:
            log.warning(
                "llmwall: no unsafe-topic model in %s: export Llama Guard with "
                "scripts/export_llama_guard.py or rebuild models/lite (see README)",
                config.models_dir,
            )

    # ------------------------------------------------------------- lifecycle
    def running(self) -> None:
        self._started = True
        if self._reload_task is None:
            self._reload_task = asyncio.get_running_loop().create_task(self._watch_rules())
        if self._lag_task is None:
            self._lag_task = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        """Measure how late the event loop wakes up: the proxy's own overload signal.

        Detector threads compete with the event loop for the CPU (and the GIL). When the
        loop falls behind, requests queue inside mitmproxy before llmwall sees them, where
        no deadline can help; refusing detector work frees the CPU so the queue drains.
        """
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            late = max(0.0, time.monotonic() - before - LAG_PROBE_S)
            self.loop_lag = max(late, self.loop_lag * LAG_DECAY)

    async def _watch_rules(self) -> None:
        """Poll the rules file; a bad edit is reported and the last good rules stay active."""
        while True:
            await asyncio.sleep(1.0)
            if self.rules is None:
                continue
            before = self.rules.current
            error = await asyncio.to_thread(self.rules.poll)
            if error is not None:
                log.error("llmwall: rules file not reloaded, keeping the last good rules: %s", error)
            elif self.rules.current is not before and (
                missing := coverage.uncovered(self.rules.current, self.detectors, _models_dir(ctx.options))
            ):
                self.rules.current = before
                log.error("llmwall: rules file not reloaded, keeping the last good rules: %s", "; ".join(missing))
            elif self.rules.current is not before:
                log.info("llmwall: rules reloaded: %d rules", len(self.rules.current.rules))
                if _pii_extras(self.rules.current) != _pii_extras(before):
                    await asyncio.to_thread(self._reload_pii)

    def _reload_pii(self) -> None:
        """Rebuild only the PII detector when the rules start or stop naming DATE_TIME or URL."""
        try:
            fresh = pii.create(self._detector_config())
        except ValueError as exc:
            log.warning("llmwall: PII detector not rebuilt: %s", exc)
            return
        old = [d for d in self.detectors if d.name == fresh.name]
        self.detectors = [fresh if d.name == fresh.name else d for d in self.detectors]
        if self.orchestrator:
            self.orchestrator.cache.clear()
        for det in old:
            det.close()

    def done(self) -> None:
        for task in (self._reload_task, self._lag_task):
            if task:
                task.cancel()
        if self.orchestrator:
            self.orchestrator.close()
        for det in self.detectors:
            det.close()
        self._parse.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ hooks
    async def request(self, flow: http.HTTPFlow) -> None:
        _announce_length(flow.request)
        try:
            await self._request(flow)
        except Exception as exc:
            # A bug in llmwall must not take the request down with it, nor leak the prompt
            # through a traceback: log the exception type only; pass, or block when failing closed.
            log.error(
                "llmwall: internal error on %s %s%s: %s",
                flow.request.method,
                flow.request.pretty_host,
                discovery.path_template(flow.request.path),
                type(exc).__name__,
            )
            if ctx.options.llmwall_on_unparsed == "block" and flow.response is None:
                flow.response = actions.block_response(None, None, ["internal error"])

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Decide on a body mitmproxy will stream (``stream_large_bodies``) before any of it leaves.

        A streamed body goes upstream as it arrives, so it can never be screened, and
        mitmproxy re-enables streaming on its own once a buffered body passes the
        threshold; the only safe moment is now, with the Content-Length announced.
        """
        req = flow.request
        if req.stream and req.method in BODY_METHODS and not _matches(_target(flow), self._exclude):
            self._finish_streamed(flow, time.monotonic())

    async def _request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if flow.response or req.method not in BODY_METHODS or STREAMED_KEY in flow.metadata:
            return
        target = _target(flow)
        if _matches(target, self._exclude):
            return
        # The deadline runs from the request's arrival (its last byte: a slow upload is not the
        # proxy's delay): time spent queued inside mitmproxy since then counts.
        waited = time.time() - (req.timestamp_end or time.time())
        if not 0.0 <= waited <= MAX_QUEUED_S:  # a replayed or loaded flow, not queueing
            waited = 0.0
        start = time.monotonic() - waited
        deadline = start + ctx.options.llmwall_deadline_ms / 1000.0
        forced = bool(self._include) and (
            _matches(target, self._include) or _matches(req.pretty_host + _route(req.path), self._include)
        )
        if req.stream:  # mitmproxy streamed a body of unknown length (chunked) past stream_large_bodies
            self._finish_streamed(flow, start)
            return
        if not req.raw_content:
            return
        if (
            not forced
            and not req.headers.get("content-encoding")
            and not body.needs_full_look(req.raw_content)
            and not (body.is_form(req.headers.get("content-type")) and body.form_looks_llm(req.raw_content))
        ):
            return  # fast path for ordinary APIs: no thread hop, no JSON parse
        if body.parse_inline(req.raw_content, req.headers):
            analysis = self._analyse(flow, forced)
        else:
            analysis = await asyncio.get_running_loop().run_in_executor(self._parse, self._analyse, flow, forced)
        if analysis.status == "not_llm":
            return
        template = sanitize.path(discovery.path_template(req.path))
        if analysis.status != "screened":
            self._finish_unparsed(flow, analysis, template, start)
            return
        await self._screen(flow, analysis, template, start, deadline)

    def latest_user_turn(self, flow: http.HTTPFlow) -> str:
        """The latest user turn of a flow's request, read again from its body ("" when it has none).

        For response screening: Llama Guard judges an answer together with the question it
        answers. Blocking (runs in a worker thread); the text stays in memory, never in metadata.
        """
        analysis = self._analyse(flow, forced=False, turns="latest")
        return analysis.prompt.text if analysis.status == "screened" and analysis.prompt is not None else ""

    def _analyse(self, flow: http.HTTPFlow, forced: bool, turns: str | None = None) -> Analysis:
        """Decode, parse, classify and extract (the turns of ``llmwall_turns`` unless ``turns``
        says which); runs in a worker thread, or inline for small bodies; never raises."""
        req = flow.request
        limit = ctx.options.llmwall_max_body_kb * 1024
        decoded = body.decode(req.raw_content or b"", req.headers.get_all("content-encoding"), limit)
        if decoded.status != body.OK:
            suspicious = forced or body.looks_llm(decoded.prefix) or body.looks_json(decoded.prefix)
            return Analysis(decoded.status if suspicious else "not_llm", error=decoded.note)
        text = body.to_utf8(decoded.data)
        if len(text) > limit:  # UTF-16 transcoded can grow
            return Analysis(body.OVERSIZE, error=f"{len(text)} bytes")
        ctype = req.headers.get("content-type")
        parsed = discovery.parse_body(text, ctype, max_depth=MAX_DEPTH, max_bytes=limit)
        if parsed.error == "too_deep":
            # Padding nested past the limit must not hide the prompt beside it: read it as null.
            pruned = body.prune_deep(text.decode("utf-8"), MAX_DEPTH).encode("utf-8")
            parsed = discovery.parse_body(pruned, ctype, max_depth=MAX_DEPTH, max_bytes=limit)
        if parsed.error is not None and not (parsed.error in discovery.SUSPICIOUS and parsed.data is not None):
            if not forced and body.is_form(ctype) and body.form_looks_llm(text):
                # A provider's JSON inside a form field: only a custom gateway reads that, so it
                # is recorded (and blocked with llmwall_on_unparsed=block), not screened.
                return Analysis(UNRECOGNISED, error="prompt-like JSON inside a form body")
            # Unreadable: recorded (and handled by llmwall_on_unparsed) when it looks like LLM traffic.
            return Analysis("parse_error" if forced or body.looks_llm(text) else "not_llm", error=parsed.error)
        # Duplicate keys and lone surrogates are valid JSON that providers accept: screen them
        # (last key wins, as in most JSON parsers; a lone surrogate read as U+FFFD, which the
        # tokenizers accept) rather than let them pass unseen.
        data = body.scrub_surrogates(parsed.data) if parsed.error == "lone_surrogate" else parsed.data
        if discovery.has_case_variants(text):
            data = discovery.fold_keys(data)  # "Messages" reaches a case-insensitive server as messages
        fmt = discovery.classify(req.method, req.path, data)
        if fmt is not None:
            turns = turns or ctx.options.llmwall_turns
            prompt = extraction.extract(fmt, data, whole_conversation=turns != "latest", system=turns == "all")
            hints = discovery.path_hints(fmt, req.path)
            if (prompt.model is None and hints.model) or (hints.stream and not prompt.stream):
                prompt = dataclasses.replace(
                    prompt, model=prompt.model or hints.model, stream=prompt.stream or hints.stream
                )
        elif forced:
            fmt = "custom"
            prompt = extraction.extract_all_strings(data, fmt)
        elif discovery.unrecognised_prompt(req.path, data):
            return Analysis(UNRECOGNISED, error="prompt-like text in no known format")
        else:
            return Analysis("not_llm")
        return Analysis("screened", fmt=fmt, prompt=prompt, body=text)

    async def _screen(
        self, flow: http.HTTPFlow, analysis: Analysis, template: str, start: float, deadline: float
    ) -> None:
        assert analysis.prompt is not None and self.rules is not None and self.orchestrator is not None
        ruleset = self.rules.current
        prompt = analysis.prompt
        wanted = ruleset.fields
        detectors = [d for d in self.detectors if d.provides & wanted or d.name in ALWAYS_RUN]
        request = ScreenRequest(prompt=prompt, deadline=deadline, wanted=wanted, custom_topics=ruleset.custom_topics)
        # Out of CPU: the loop runs late while detectors hold the CPU (a late loop with an idle
        # pool is something else, such as models loading, and refusing work would not help).
        overloaded = self.loop_lag > OVERLOADED_LAG_S and self.orchestrator.busy
        result = await self.orchestrator.screen(request, detectors, overloaded=overloaded)
        values = {
            **request_fields(flow, self.trusted_proxies, wanted),
            **result.fields,
            F.PROMPT_DETECTED: bool(prompt.text.strip()),
            F.REQUEST_FORMAT: analysis.fmt,
        }
        if prompt.model:
            values[F.REQUEST_MODEL] = prompt.model
        decision = ruleset.evaluate(values)
        action, rule = decision.action, decision.rule
        categories = _categories(result)
        redacted: list[str] = []
        if action == "block":
            flow.response = actions.block_response(
                analysis.fmt,
                rule.id if rule else None,
                categories,
                rule.status if rule else None,
                rule.body if rule else None,
            )
        elif action == "redact":
            try:
                new_body, redacted = redact_body(analysis.body or b"", prompt, result.spans)
            except RedactError as exc:
                # The rule asked for the PII not to leave; if we cannot remove it, nothing leaves.
                log.warning("llmwall: redaction failed (%s); blocking instead", type(exc).__name__)
                action = "block"
                flow.response = actions.block_response(analysis.fmt, rule.id if rule else None, categories)
            else:
                if redacted:
                    flow.request.content = new_body  # re-encodes and fixes Content-Length
        event = Event(
            ts=time.time(),
            host=sanitize.host(flow.request.host),
            method=flow.request.method,
            path_template=template,
            format=analysis.fmt,
            model=prompt.model,
            action=action,
            rule=rule.id if rule else None,
            matched=list(decision.matched),
            fields={k: v for k, v in values.items() if k.startswith(RECORDED_PREFIX)},
            timings_ms=result.timings_ms,
            not_scored=result.not_scored,
            errors=result.errors,
            total_ms=round((time.monotonic() - start) * 1000.0, 3),
            redacted=redacted,
        )
        actions.annotate(flow, event)

    def _finish_unparsed(self, flow: http.HTTPFlow, analysis: Analysis, template: str, start: float) -> None:
        """A body that looks like LLM traffic could not be read: record it, pass or block by policy."""
        action = "block" if _fails_closed(analysis.status) else None
        if action == "block":
            flow.response = actions.block_response(None, None, [f"unreadable body: {analysis.status}"])
        self._unscreened(flow, analysis.status, action, template, start, analysis.error)

    def _finish_streamed(self, flow: http.HTTPFlow, start: float) -> None:
        """A body mitmproxy streams (stream_large_bodies) cannot be screened: block by killing the
        flow before the upstream has the whole request, or pass, by policy; recorded either way."""
        flow.metadata[STREAMED_KEY] = True
        req = flow.request
        forced = _matches(_target(flow), self._include)
        action = "block" if _fails_closed("streamed") and (_may_carry_json(req) or forced) else None
        if action == "block" and flow.killable:
            if req.stream:
                _withhold_end(req)
            flow.kill()
        template = sanitize.path(discovery.path_template(req.path))
        self._unscreened(flow, "streamed", action, template, start, "stream_large_bodies")

    def _unscreened(
        self, flow: http.HTTPFlow, status: str, action: str | None, template: str, start: float, why: str | None
    ) -> None:
        event = Event(
            ts=time.time(),
            host=sanitize.host(flow.request.host),
            method=flow.request.method,
            path_template=template,
            action=action,
            total_ms=round((time.monotonic() - start) * 1000.0, 3),
            status=status,
        )
        log.warning("llmwall: %s %s%s: %s (%s)", flow.request.method, event.host, template, status, why)
        actions.annotate(flow, event)


#: How each of Cloudflare's ordinary request fields is read from a request (``ip.src`` aside).
REQUEST_FIELD_READERS: dict[str, Callable[[http.Request], object]] = {
    F.HTTP_HOST: lambda req: req.pretty_host,
    F.HTTP_METHOD: lambda req: req.method,
    F.HTTP_URI: lambda req: req.path,
    F.HTTP_URI_PATH: lambda req: req.path.partition("?")[0],
    F.HTTP_URI_QUERY: lambda req: req.path.partition("?")[2],
    F.HTTP_FULL_URI: lambda req: req.pretty_url,
    F.HTTP_USER_AGENT: lambda req: req.headers.get("user-agent", ""),
}


def request_fields(
    flow: http.HTTPFlow, trusted_proxies: tuple[forwarded.Network, ...], wanted: frozenset[str] | None = None
) -> dict[str, object]:
    """Cloudflare's ordinary request fields for a flow, only those in ``wanted`` when given (the
    fields some rule reads); ``ip.src`` read through the trusted proxies
    (``LLMWall.trusted_proxies``), so every addon keys on the same client address."""
    req = flow.request
    fields = {name: read(req) for name, read in REQUEST_FIELD_READERS.items() if wanted is None or name in wanted}
    if flow.client_conn.peername and (wanted is None or F.IP_SRC in wanted):
        peer = str(flow.client_conn.peername[0])
        fields[F.IP_SRC] = forwarded.client_address(peer, req.headers.get_all(forwarded.HEADER), trusted_proxies)
    return fields


def _categories(result: ScreenResult) -> list[str]:
    """Category names to show a blocked user (never values)."""
    out: list[str] = []
    for name in F.CATEGORY_FIELDS:
        value = result.fields.get(name)
        if isinstance(value, list):
            out.extend(str(v) for v in value)
    return out


def _pii_extras(ruleset: RuleSet) -> frozenset[str]:
    """Noisy PII categories (DATE_TIME, URL) are detected only when an enabled rule compares
    ``cf.llm.prompt.pii_categories`` or ``cf.llm.response.pii_categories`` with them (read
    from the compiled rules, not their text)."""
    named = ruleset.literals.get(F.PII_CATEGORIES, frozenset())
    named |= ruleset.literals.get(F.RESPONSE_PII_CATEGORIES, frozenset())
    return pii.OFF_BY_DEFAULT & named


#: flow.metadata key set once a streamed body has been handled (in requestheaders or request).
STREAMED_KEY = "llmwall_streamed"


#: Content types whose bodies llmwall reads as JSON when buffered (parse_body tries JSON whatever
#: the declared type for these), so a streamed one must be refused like a JSON one.
_JSON_READ_TYPES = ("json", "text/", "application/x-www-form-urlencoded")


def _may_carry_json(req: http.Request) -> bool:
    """Whether a body llmwall cannot see could be JSON an upstream reads: no Content-Type, a JSON
    one, or one that JSON is commonly sent as (``curl -d``, text/plain); not multipart or media."""
    ctype = req.headers.get("content-type", "").lower()
    return not ctype.strip() or any(t in ctype for t in _JSON_READ_TYPES)


def _withhold_end(req: http.Request) -> None:
    """Keep the end of a streamed request body from the upstream, so it never has a whole request.

    When llmwall first sees a chunked body that mitmproxy switched to streaming, its data
    has already gone upstream, and mitmproxy sends the end of the message after the request
    hook even for a killed flow (a flow in transit cannot be killed: mitmproxy issue 4711).
    Its HTTP/1 client frames that end from the request's headers at that moment: with
    ``chunked`` it sends the last chunk, which completes the request upstream. A body framed
    "until the connection closes" instead makes it half-close the connection, so the
    upstream reads a chunked body cut off before its end. The headers went out long ago;
    this only changes how mitmproxy ends the message. (An HTTP/2 upstream connection ends
    the stream regardless: see the threat model in docs/architecture.md.)
    """
    if "chunked" in req.headers.get("transfer-encoding", "").lower():
        req.headers["transfer-encoding"] = "gzip"  # no Content-Length: "read until close"


def _announce_length(req: http.Request) -> None:
    """Give an HTTP/2 or HTTP/3 body of unannounced length a Content-Length before it goes upstream.

    Such a body is legal (its frames carry the length), but mitmproxy 12 forwards it to an
    HTTP/1 upstream with neither Content-Length nor chunked framing: the upstream reads an
    empty body and takes the bytes after it as a request of its own, which llmwall screened
    as a body, not as a prompt (request smuggling: a complete HTTP/1.1 request with an unsafe
    prompt inside the body reached the upstream unscreened). Announcing the length makes
    the upstream read exactly the body llmwall screened; over HTTP/2 it is merely redundant.
    Streamed bodies (``stream_large_bodies``) have left by now and cannot be fixed here.
    """
    if (
        (req.is_http2 or req.is_http3)
        and not req.stream
        and req.raw_content
        and "content-length" not in req.headers
        and "transfer-encoding" not in req.headers
    ):
        req.headers["content-length"] = str(len(req.raw_content))


def _fails_closed(status: str) -> bool:
    """Whether llmwall_on_unparsed blocks a request left unscreened for ``status``."""
    mode = ctx.options.llmwall_on_unparsed
    return mode == "block" or (mode == "auto" and status in AUTO_BLOCKED)


def _route(path: str) -> str:
    """The path as the upstream resolves it: no query, percent-decoded, dot-segments resolved."""
    route = unquote(path.split("?", 1)[0].split("#", 1)[0])
    return posixpath.normpath(route) if route.startswith("/") else "/" + route


def _target(flow: http.HTTPFlow) -> str:
    """host+path of the real destination for include/exclude: ``request.host`` is where
    mitmproxy connects, never the client's Host header (which ``pretty_host`` prefers)."""
    return flow.request.host + _route(flow.request.path)


def _freeze_heap() -> None:
    """Keep the models' objects out of Python's cyclic garbage collector from now on.

    The loaded detectors are ~200,000 long-lived objects (Presidio's recognizers, the
    tokenizers' vocabularies), and a full collection walks all of them while holding the
    GIL: 140 ms measured, a stall of every request and stream in flight, due every few
    tens of thousands of surviving allocations. Frozen, a full collection takes 1.5-3 ms.
    The freed garbage is collected first, so nothing unreachable is frozen.
    """
    gc.collect()
    gc.freeze()


def _matches(target: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(target, p) for p in patterns)


def _models_dir(opts: Any) -> str:
    return bundled.resolve_models(opts.llmwall_models)


def _options_config(opts: Any) -> DetectorConfig:
    def unit_float(name: str) -> float:
        try:
            value = float(getattr(opts, name))
        except ValueError:
            raise exceptions.OptionsError(f"{name} must be a number between 0 and 1") from None
        if not 0.0 <= value <= 1.0:
            raise exceptions.OptionsError(f"{name} must be between 0 and 1")
        return value

    models = _models_dir(opts)
    if not Path(models).is_dir():
        log.warning("llmwall: models directory %s does not exist; only pattern detectors will run", models)
    return DetectorConfig(
        models_dir=models,
        device=opts.llmwall_device,
        pii_entities=tuple(opts.llmwall_pii_entities) or None,
        pii_min_score=unit_float("llmwall_pii_min_score"),
        spacy_model=opts.llmwall_spacy_model,
        unsafe_threshold=unit_float("llmwall_unsafe_threshold"),
        remote_llama_guard=opts.llmwall_remote_llama_guard,
        remote_model=opts.llmwall_remote_model,
    )
