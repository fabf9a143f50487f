"""Where the counters live: in process memory (one llmwall) or in Redis (several sharing one budget).

Both keep a sliding-window counter per key (see ``window``): the count of the
current and of the previous fixed window.  The admission check and the charge are
one atomic step — a Lua script in Redis, a call without ``await`` inside on the
event loop in memory — so parallel requests cannot both take the last tokens.

Redis keys are ``<prefix>:<window index>`` with a TTL that ends when the window
stops counting (at most two periods).  The script reads the time from Redis itself
(``TIME``), so instances with skewed clocks still agree on the window.  When Redis
cannot be reached the backend raises :class:`BackendError` at once for
``RETRY_S`` seconds instead of waiting on a dead socket for every request, then
tries again; the outage and the recovery are each logged once.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Protocol
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from llmwall.ratelimit.window import Outcome, admits, estimate, retry_after_s

log = logging.getLogger(__name__)

#: Seconds a Redis call may take before it counts as a failure.
REDIS_TIMEOUT_S: Final = 0.5
#: After a failure, seconds during which Redis is not tried again (requests follow on_error).
RETRY_S: Final = 1.0
#: Connections to Redis per llmwall process, and how long a request waits for a free one.
MAX_CONNECTIONS: Final = 32
POOL_WAIT_S: Final = 1.0
#: Default bound on the keys the in-memory backend keeps.
DEFAULT_MAX_KEYS: Final = 100_000

# KEYS[1]: key prefix.  ARGV: period (ms), limit, cost.
# Returns {admitted (0/1), current count, previous count, ms into the window, window index}.
ACQUIRE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local win = math.floor(now / period)
local elapsed = now - win * period
local ck = KEYS[1] .. ':' .. win
local cur = tonumber(redis.call('GET', ck) or '0')
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (win - 1)) or '0')
local used = prev * (period - elapsed) / period + cur
if used >= limit or used + cost > limit then
  return {0, cur, prev, elapsed, win}
end
if cost > 0 then
  redis.call('INCRBY', ck, cost)
  redis.call('PEXPIRE', ck, 2 * period - elapsed)
end
return {1, cur + cost, prev, elapsed, win}
"""

# KEYS[1]: key prefix.  ARGV: period (ms), window of the original charge, delta.
# A positive delta (more tokens than reserved) goes to the current window; a refund goes back
# to the window that was charged while it still counts, never below zero.
ADJUST_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local delta = tonumber(ARGV[3])
local win = math.floor(now / period)
local target = win
if delta < 0 then
  target = tonumber(ARGV[2])
  if target < win - 1 then return 0 end
end
local k = KEYS[1] .. ':' .. target
if delta < 0 and redis.call('EXISTS', k) == 0 then return 0 end
local v = redis.call('INCRBY', k, delta)
if v < 0 then redis.call('SET', k, 0, 'KEEPTTL') end
if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, (target + 2) * period - now) end
return v
"""


class BackendError(Exception):
    """The shared counters could not be reached; the caller applies ``llmwall_ratelimit_on_error``."""


class Backend(Protocol):
    """A counter store: admission check plus charge, and later corrections."""

    name: str

    async def acquire(self, key: str, period_s: int, limit: int, cost: int) -> Outcome: ...

    async def adjust(self, key: str, period_s: int, window: int, delta: int) -> None: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Counters in a bounded, least-recently-used ordered dict; for a single llmwall instance."""

    name = "memory"

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.time) -> None:
        self.max_keys = max_keys
        self._clock = clock
        # key -> [period ms, window index, current count, previous count]
        self._keys: OrderedDict[str, list[int]] = OrderedDict()
        self._warned_full = False

    def __len__(self) -> int:
        return len(self._keys)

    def _entry(self, key: str, period_ms: int) -> tuple[list[int], int, int]:
        now = int(self._clock() * 1000)
        win, elapsed = divmod(now, period_ms)
        entry = self._keys.get(key)
        if entry is None or entry[0] != period_ms:
            if entry is None:
                self._make_room(now)
            entry = [period_ms, win, 0, 0]
            self._keys[key] = entry
        elif entry[1] != win:
            entry[3] = entry[2] if entry[1] == win - 1 else 0
            entry[1], entry[2] = win, 0
        self._keys.move_to_end(key)
        return entry, win, elapsed

    def _make_room(self, now_ms: int) -> None:
        if len(self._keys) < self.max_keys:
            return
        for key in list(self._keys):  # least recently used first: drop what no longer counts
            period_ms, win = self._keys[key][:2]
            if win >= now_ms // period_ms - 1:
                break
            del self._keys[key]
        while len(self._keys) >= self.max_keys:
            self._keys.popitem(last=False)
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "llmwall: rate limit: %d keys in memory; the least recently used are forgotten "
                    "(raise llmwall_ratelimit_max_keys or use Redis)",
                    self.max_keys,
                )

    def acquire_now(self, key: str, period_s: int, limit: int, cost: int) -> Outcome:
        """The synchronous check-and-charge (atomic on the event loop: nothing in it awaits)."""
        period_ms = period_s * 1000
        entry, win, elapsed = self._entry(key, period_ms)
        cur, prev = entry[2], entry[3]
        used = estimate(prev, cur, elapsed, period_ms)
        if not admits(used, cost, limit):
            return Outcome(False, int(used), retry_after_s(prev, cur, elapsed, period_ms, cost, limit), win)
        entry[2] += cost
        return Outcome(True, int(used + cost), 0, win)

    async def acquire(self, key: str, period_s: int, limit: int, cost: int) -> Outcome:
        return self.acquire_now(key, period_s, limit, cost)

    async def adjust(self, key: str, period_s: int, window: int, delta: int) -> None:
        entry, win, _ = self._entry(key, period_s * 1000)
        if delta >= 0:
            entry[2] += delta
        elif window == win:
            entry[2] = max(0, entry[2] + delta)
        elif window == win - 1:
            entry[3] = max(0, entry[3] + delta)

    async def close(self) -> None:
        self._keys.clear()


class RedisBackend:
    """Counters in Redis, shared by every llmwall pointed at the same server."""

    name = "redis"

    def __init__(self, url: str, timeout_s: float = REDIS_TIMEOUT_S, retry_s: float = RETRY_S) -> None:
        parts = urlsplit(url)
        #: Where Redis is, for logs: never the password.
        self.where = f"{parts.hostname or parts.path}:{parts.port or 6379}" if parts.hostname else url.split("@")[-1]
        # A blocking pool: a burst of requests waits briefly for a connection instead of failing.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),  # one immediate retry: reconnects a connection a restart closed
        )
        self._client = redis.asyncio.Redis(connection_pool=pool)
        self._acquire = self._client.register_script(ACQUIRE_LUA)
        self._adjust = self._client.register_script(ADJUST_LUA)
        self._retry_s = retry_s
        self._down_until = 0.0
        self.healthy = True

    def _failed(self, exc: BaseException) -> BackendError:
        self._down_until = time.monotonic() + self._retry_s
        if self.healthy:
            self.healthy = False
            log.error("llmwall: rate limit: Redis at %s unreachable (%s)", self.where, type(exc).__name__)
        return BackendError(type(exc).__name__)

    def _check(self) -> None:
        if time.monotonic() < self._down_until:
            raise BackendError("Redis unreachable (retrying)")

    def _recovered(self) -> None:
        if not self.healthy:
            self.healthy = True
            log.info("llmwall: rate limit: Redis at %s reachable again", self.where)

    async def acquire(self, key: str, period_s: int, limit: int, cost: int) -> Outcome:
        self._check()
        period_ms = period_s * 1000
        try:
            ok, cur, prev, elapsed, win = await self._acquire(keys=[key], args=[period_ms, limit, cost])
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from None
        self._recovered()
        cur, prev, elapsed = int(cur), int(prev), int(elapsed)
        used = estimate(prev, cur, elapsed, period_ms)
        if ok:
            return Outcome(True, int(used), 0, int(win))
        return Outcome(False, int(used), retry_after_s(prev, cur, elapsed, period_ms, cost, limit), int(win))

    async def adjust(self, key: str, period_s: int, window: int, delta: int) -> None:
        self._check()
        try:
            await self._adjust(keys=[key], args=[period_s * 1000, window, delta])
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from None
        self._recovered()

    async def close(self) -> None:
        await self._client.aclose(close_connection_pool=True)
