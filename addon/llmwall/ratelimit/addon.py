"""The ``RateLimiter`` addon: token and request budgets from the ``rate_limits:`` section of rules.yaml.

It runs after the main ``LLMWall`` addon in the addon list, so its request hook sees
the detection fields the main addon left in ``flow.metadata["llmwall"]`` (the prompt's
token count among them) and the rules the main addon hot-reloads.  It only looks at
screened LLM requests that no rule already blocked.

Per request, every enabled rate limit whose expression matches charges its key: the
prompt tokens (``cf.llm.prompt.token_count``) and the output cap the request asks for
(``max_tokens``), or one request.  A charge that does not fit is refused before the
request leaves: ``block`` answers 429 in the provider's error schema with
``Retry-After``; ``log`` lets it pass, charged and recorded.  When the response comes,
the reserved output cap is replaced by the completion tokens the provider reports
(or the tokenizer counts in the response text).  Counting keys are HMAC-SHA256 of the
rule and the characteristic values under a per-install secret: API keys, addresses
and header values are never stored, logged or sent to Redis.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path
from typing import Any, Final

from mitmproxy import ctx, exceptions, http
from tokenizers import Tokenizer

from llmwall import fields
from llmwall.detectors.tokens import load_tokenizer
from llmwall.providers import registry
from llmwall.providers.base import Provider
from llmwall.proxy.addon import request_fields
from llmwall.proxy.event import STREAM_USAGE_KEY
from llmwall.ratelimit.backends import DEFAULT_MAX_KEYS, Backend, BackendError, MemoryBackend, RedisBackend
from llmwall.ratelimit.rules import (
    ACTION_BLOCK,
    ACTION_LOG,
    COMPLETION_UNITS,
    UNIT_COMPLETION,
    UNIT_REQUESTS,
    RateLimitRule,
)
from llmwall.rules.ruleset import coerce_value

log = logging.getLogger(__name__)

#: Where the main addon leaves its summary of a screened request, and where this addon keeps its charges.
MAIN_META: Final = "llmwall"
META: Final = "llmwall_ratelimit"
MAIN_ADDON: Final = "llmwall"
#: The analytics addon (``llmwall.analytics.addon.Analytics``) owns the store and the metrics.
ANALYTICS_ADDON: Final = "analytics"
TOKEN_FIELD: Final = fields.TOKEN_COUNT
ON_ERROR_OPEN: Final = "open"
ON_ERROR_CLOSED: Final = "closed"
ON_ERROR_MODES: Final = (ON_ERROR_OPEN, ON_ERROR_CLOSED)
DEFAULT_SECRET: Final = "~/.llmwall/ratelimit.key"
KEY_PREFIX: Final = "llmwall:rl:"
#: Hex digits of the HMAC kept as the counting key (128 bits).
KEY_HEX: Final = 32
#: Event actions besides the rule actions.
ALLOW: Final = "allow"
FAIL_OPEN: Final = "fail_open"
FAIL_CLOSED: Final = "fail_closed"
PHASE_REQUEST: Final = "request"
PHASE_RESPONSE: Final = "response"
#: Bodies up to this size are parsed on the event loop (microseconds); larger ones in a thread.
INLINE_BYTES: Final = 16 * 1024
#: Events are written in batches: at most this often, and at most this many waiting (oldest dropped).
FLUSH_S: Final = 0.25
MAX_PENDING_EVENTS: Final = 10_000
#: Retry-After for a request refused because the counters could not be reached.
UNAVAILABLE_RETRY_S: Final = 1
#: Error ``type``/``status`` per provider family for 429 (over budget) and 503 (counters unreachable).
_ERROR_TYPES: Final = {
    "openai": {429: "rate_limit_exceeded", 503: "server_error"},
    "anthropic": {429: "rate_limit_error", 503: "api_error"},
    "gemini": {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"},
    "bedrock": {429: "ThrottlingException", 503: "ServiceUnavailableException"},
}


class RateLimiter:
    """Owns the counter backend and the key secret; reads the rules from the main addon and the
    store and metrics from the analytics addon."""

    def __init__(self) -> None:
        self.backend: Backend = MemoryBackend()
        self._secret = b""
        self._tokenizer: Tokenizer | None = None
        # Event writes only; body parsing uses asyncio's default pool so it never waits behind the database.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmwall-ratelimit")
        self._tokenizer_lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._warned_backlog = False

    # ----------------------------------------------------------------- options
    def load(self, loader) -> None:
        loader.add_option(
            "llmwall_ratelimit_redis",
            str | None,
            None,
            "Redis URL (redis://host:6379/0) holding the rate-limit counters, shared by every llmwall using it; "
            "unset: counters in this process's memory.",
        )
        loader.add_option(
            "llmwall_ratelimit_on_error",
            str,
            ON_ERROR_OPEN,
            "When Redis cannot be reached: open (let requests through uncounted) or closed (answer 503).",
        )
        loader.add_option(
            "llmwall_ratelimit_secret",
            str,
            DEFAULT_SECRET,
            "File with the per-install secret that rate-limit keys are hashed with (created if missing); "
            "instances sharing Redis must share it.",
        )
        loader.add_option(
            "llmwall_ratelimit_max_keys",
            int,
            DEFAULT_MAX_KEYS,
            "Most rate-limit keys kept in memory (least recently used forgotten first).",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "llmwall_ratelimit_on_error" in updated and opts.llmwall_ratelimit_on_error not in ON_ERROR_MODES:
            raise exceptions.OptionsError("llmwall_ratelimit_on_error must be 'open' or 'closed'")
        if "llmwall_ratelimit_max_keys" in updated and opts.llmwall_ratelimit_max_keys < 1:
            raise exceptions.OptionsError("llmwall_ratelimit_max_keys must be at least 1")
        if "llmwall_ratelimit_secret" in updated:
            self._secret = _load_secret(opts.llmwall_ratelimit_secret)
        if updated & {"llmwall_ratelimit_redis", "llmwall_ratelimit_max_keys"}:
            self._set_backend(opts.llmwall_ratelimit_redis, opts.llmwall_ratelimit_max_keys)

    def _set_backend(self, url: str | None, max_keys: int) -> None:
        try:
            backend: Backend = RedisBackend(url) if url else MemoryBackend(max_keys)
        except ValueError as exc:
            raise exceptions.OptionsError(f"llmwall_ratelimit_redis: {exc}") from None
        old, self.backend = self.backend, backend
        _close_later(old)
        where = f"Redis at {backend.where}" if isinstance(backend, RedisBackend) else "memory"
        log.info("llmwall: rate-limit counters in %s", where)

    def _load_tokenizer(self) -> Tokenizer:
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = load_tokenizer()
            return self._tokenizer

    def done(self) -> None:
        self._flush()
        _close_later(self.backend)
        self._io.shutdown(wait=True)

    # ------------------------------------------------------------------ hooks
    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._request(flow)
        except Exception as exc:  # never take a request down; never log values
            log.error("llmwall: rate limit: internal error on %s: %s", flow.request.pretty_host, type(exc).__name__)
            # As for the main addon: pass, or refuse when failing closed (llmwall_on_unparsed=block).
            if ctx.options.llmwall_on_unparsed == ACTION_BLOCK and flow.response is None:
                fmt = (flow.metadata.get(MAIN_META) or {}).get("format")
                message = "llmwall: rate limit could not be checked"
                flow.response = _error_response(fmt, 503, message, UNAVAILABLE_RETRY_S, "internal-error")

    async def _request(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata.get(MAIN_META)
        if flow.response is not None or not isinstance(meta, dict) or meta.get("status") != "screened":
            return
        main = ctx.master.addons.get(MAIN_ADDON)
        rules = getattr(main, "rules", None)
        limits = [r for r in rules.current.rate_limits if r.enabled] if rules else []
        if not limits:
            return
        values = {**request_fields(flow, getattr(main, "trusted_proxies", ())), **(meta.get("fields") or {})}
        prompt_tokens = _nonneg(values.get(TOKEN_FIELD))
        reserve = -1  # the request's output cap, read once and only when a completion budget needs it
        charges: list[dict[str, Any]] = []
        for rule in limits:
            if not _matches(rule, values):
                continue
            if rule.unit in COMPLETION_UNITS and reserve < 0:
                reserve = await self._requested_output(flow, registry.for_format(meta.get("format")))
            reserved = reserve if rule.unit in COMPLETION_UNITS else 0
            cost = (
                1 if rule.unit == UNIT_REQUESTS else reserved + (0 if rule.unit == UNIT_COMPLETION else prompt_tokens)
            )
            key = self._key(rule, flow, values)
            event = _event(rule, key, PHASE_REQUEST, cost)
            try:
                outcome = await self.backend.acquire(key, rule.period, rule.limit, cost)
            except BackendError:
                if ctx.options.llmwall_ratelimit_on_error == ON_ERROR_OPEN:
                    self._record({**event, "action": FAIL_OPEN})
                    continue
                await self._refund(charges)
                self._record({**event, "action": FAIL_CLOSED, "retry_after": UNAVAILABLE_RETRY_S})
                message = "llmwall: rate-limit counters unavailable; try again shortly"
                self._refuse(flow, meta, rule, 503, message, UNAVAILABLE_RETRY_S)
                return
            event.update(used=outcome.used, retry_after=outcome.retry_after)
            if not outcome.allowed and rule.action == ACTION_BLOCK:
                await self._refund(charges)
                self._record({**event, "action": ACTION_BLOCK})
                message = f"Rate limit exceeded (llmwall rule {rule.id}); retry after {outcome.retry_after} s"
                self._refuse(flow, meta, rule, 429, message, outcome.retry_after)
                return
            window = outcome.window
            if not outcome.allowed:  # a log rule: the request goes on and is counted
                try:
                    await self.backend.adjust(key, rule.period, outcome.window, cost)
                except BackendError:
                    pass
                event["used"] = outcome.used + cost
            self._record({**event, "action": ALLOW if outcome.allowed else ACTION_LOG})
            charges.append(
                {
                    "rule": rule.id,
                    "key": key,
                    "unit": rule.unit,
                    "period": rule.period,
                    "limit": rule.limit,
                    "window": window,
                    "cost": cost,
                    "reserved": reserved,
                    "used": event["used"],
                }
            )
        if charges:
            flow.metadata[META] = charges
            if any(c["unit"] in COMPLETION_UNITS for c in charges):
                flow.metadata[STREAM_USAGE_KEY] = {}  # ask response screening for a stream's usage

    async def response(self, flow: http.HTTPFlow) -> None:
        """Replace the reserved output cap by the completion tokens actually produced."""
        charges = flow.metadata.pop(META, None)
        pending = [c for c in charges or () if c["unit"] in COMPLETION_UNITS]
        if not pending or flow.response is None:
            return
        try:
            resp = flow.response
            provider = registry.for_format((flow.metadata.get(MAIN_META) or {}).get("format"))
            if resp.stream:  # streamed through unbuffered: the usage response screening read at its end
                streamed = flow.metadata.get(STREAM_USAGE_KEY) or {}
                completion = streamed.get("completion_tokens") if resp.status_code < 400 else 0
            # A thread hop costs more than a small parse; the tokenizer's first load (about 0.3 s, only
            # once a response without usage needs it) must not block the loop.
            elif len(resp.raw_content or b"") <= INLINE_BYTES and self._tokenizer is not None:
                completion = self._completion_tokens(provider, resp)
            else:
                completion = await asyncio.to_thread(self._completion_tokens, provider, resp)
            for charge in pending:
                delta = 0 if completion is None else completion - charge["reserved"]
                await self._settle(charge, delta, completion)
        except Exception as exc:
            log.error("llmwall: rate limit: internal error on a response: %s", type(exc).__name__)

    async def error(self, flow: http.HTTPFlow) -> None:
        """The upstream failed: no completion was produced, so the reserved output cap is given back."""
        charges = flow.metadata.pop(META, None)
        for charge in charges or ():
            if charge["unit"] in COMPLETION_UNITS and charge["reserved"]:
                await self._settle(charge, -charge["reserved"], 0)

    # ---------------------------------------------------------------- helpers
    async def _settle(self, charge: dict[str, Any], delta: int, completion: int | None) -> None:
        if delta:
            try:
                await self.backend.adjust(charge["key"], charge["period"], charge["window"], delta)
            except BackendError:
                return
        event = {
            "ts": time.time(),
            "rule": charge["rule"],
            "key": charge["key"][len(KEY_PREFIX) :],
            "phase": PHASE_RESPONSE,
            "action": ALLOW,
            "unit": charge["unit"],
            "cost": delta,
            "completion": completion,
            "used": max(0, charge["used"] + delta),
            "limit": charge["limit"],
            "period": charge["period"],
        }
        self._record(event)

    async def _refund(self, charges: list[dict[str, Any]]) -> None:
        """Give back what earlier rate limits charged for a request that is refused after all."""
        for charge in charges:
            try:
                await self.backend.adjust(charge["key"], charge["period"], charge["window"], -charge["cost"])
            except BackendError:
                continue

    def _key(self, rule: RateLimitRule, flow: http.HTTPFlow, values: dict[str, object]) -> str:
        """``llmwall:rl:`` + HMAC-SHA256(secret, rule, unit, characteristic values); no raw value survives."""
        parts = [rule.id, rule.unit]
        for ch in rule.characteristics:
            value = flow.request.headers.get(ch.header, "") if ch.header else values.get(ch.name)
            parts.append(f"{ch.name}={'' if value is None else value}")
        digest = hmac.new(self._secret, "\0".join(parts).encode("utf-8", "surrogatepass"), sha256).hexdigest()
        return KEY_PREFIX + digest[:KEY_HEX]

    async def _requested_output(self, flow: http.HTTPFlow, provider: Provider) -> int:
        """The request's output cap (``max_tokens`` and its per-provider names), reserved until
        the response says what was used."""
        try:
            if len(flow.request.raw_content or b"") <= INLINE_BYTES:
                data = _json_body(flow.request)
            else:
                data = await asyncio.to_thread(_json_body, flow.request)
        except (ValueError, RecursionError):
            return 0
        return provider.max_output_tokens(data) or 0

    def _completion_tokens(self, provider: Provider, response: http.Response) -> int | None:
        """Completion tokens from the provider's usage, else counted in the answer's text and
        tool-call arguments (thread).

        None when the body was streamed through unbuffered: the reservation then stands.
        """
        if response.status_code >= 400:
            return 0
        if response.stream or response.raw_content is None:
            return None
        try:
            body = response.get_content(strict=True) or b""
        except ValueError:
            return 0
        found = provider.read_answer(body, response.headers.get("content-type", ""))
        if found.completion_tokens is not None:
            return found.completion_tokens
        texts = [t for t in (found.text, *found.tool_arguments.values()) if t]
        if not texts:
            return 0
        tokenizer = self._load_tokenizer()
        return sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))

    def _refuse(
        self, flow: http.HTTPFlow, meta: dict, rule: RateLimitRule, status: int, message: str, retry: int
    ) -> None:
        flow.response = _error_response(meta.get("format"), status, message, retry, rule.id)
        meta["action"], meta["rule"] = ACTION_BLOCK, rule.id
        flow.marked = ":no_entry:"
        flow.comment = f"llmwall: rate limit {rule.id} ({status})"

    def _record(self, event: dict[str, Any]) -> None:
        """Count the decision now; queue it for the database, written in batches off the event loop."""
        analytics = ctx.master.addons.get(ANALYTICS_ADDON)
        metrics = getattr(analytics, "metrics", None)
        if metrics is not None:
            metrics.observe_rate_limit(event)
        if getattr(analytics, "store", None) is None:
            return
        if len(self._pending) >= MAX_PENDING_EVENTS:
            self._pending.pop(0)
            if not self._warned_backlog:
                self._warned_backlog = True
                log.warning("llmwall: rate-limit events are arriving faster than the database takes them; dropping")
        self._pending.append(event)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        store = getattr(ctx.master.addons.get(ANALYTICS_ADDON), "store", None)
        if not batch or store is None:
            return

        def write() -> None:
            try:
                store.record_rate_limits(batch)
            except Exception as exc:
                log.error("llmwall: rate-limit events not recorded: %s", exc)

        self._io.submit(write)


def _event(rule: RateLimitRule, key: str, phase: str, cost: int) -> dict[str, Any]:
    return {
        "ts": time.time(),
        "rule": rule.id,
        "key": key[len(KEY_PREFIX) :],
        "phase": phase,
        "unit": rule.unit,
        "cost": cost,
        "used": None,
        "limit": rule.limit,
        "period": rule.period,
    }


def _matches(rule: RateLimitRule, values: dict[str, object]) -> bool:
    vals = {name: coerce_value(name, values.get(name)) for name in rule.fields}
    try:
        return bool(rule.test(vals))
    except Exception as exc:
        log.warning("llmwall: rate limit %r failed to evaluate (%s); not applied", rule.id, type(exc).__name__)
        return False


def _nonneg(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _json_body(request: http.Request) -> object:
    return json.loads(request.get_content(strict=True) or b"null")


def _error_response(fmt: str | None, status: int, message: str, retry_after: int, rule_id: str) -> http.Response:
    """429/503 in the provider's own error schema, so SDKs raise their usual rate-limit error."""
    family = (fmt or "openai").split(".", 1)[0]
    kind = _ERROR_TYPES.get(family, _ERROR_TYPES["openai"])[status]
    extra: dict[str, str] = {}
    body: dict[str, object]
    if family == "anthropic":
        body = {"type": "error", "error": {"type": kind, "message": message}}
    elif family == "gemini":
        body = {"error": {"code": status, "message": message, "status": kind}}
    elif family in ("ollama", "tgi"):
        body = {"error": message}
    elif family in ("cohere", "bedrock"):
        body = {"message": message}
        if family == "bedrock":
            extra["x-amzn-ErrorType"] = kind
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    headers = {
        "content-type": "application/json",
        "retry-after": str(retry_after),
        "x-llmwall-action": ACTION_BLOCK,
        "x-llmwall-rate-limit": rule_id,
        **extra,
    }
    return http.Response.make(status, json.dumps(body).encode(), headers)


def _load_secret(path: str) -> bytes:
    """The per-install secret keyed into every counting key; created (owner-only) when missing."""
    file = Path(os.path.expanduser(path))
    try:
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
        secret = file.read_bytes().strip()
    except FileExistsError:  # another instance created it first
        secret = file.read_bytes().strip()
    except OSError as exc:
        raise exceptions.OptionsError(f"llmwall_ratelimit_secret: cannot read or create {path}: {exc}") from None
    if len(secret) < 16:
        raise exceptions.OptionsError(f"llmwall_ratelimit_secret: {path} must hold at least 16 bytes")
    return secret


def _close_later(backend: Backend) -> None:
    """Close a replaced backend on the event loop when there is one (Redis connections are async)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.create_task(backend.close())
