"""Sliding-window counter arithmetic, shared by the in-memory backend and the Redis script's caller.

Each key keeps one integer per fixed window of ``period`` (the current and the
previous one); the usage "in the last period" is estimated as the current count plus
the previous count weighted by how much of the previous window still overlaps the
sliding one.  This is the approximation Cloudflare describes for its own rate
limiting ("How we built rate limiting capable of scaling to millions of domains",
2017): two integers per key, O(1) work, a key lives at most two periods.  It suits
charges of any size that arrive after the fact (completion tokens) — they are added
to a window like any other charge — which GCRA would have to turn into a debt on a
theoretical arrival time.  docs/rate-limits.md has the full reasoning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """The result of one admission check on one key."""

    allowed: bool
    used: int  # usage in the sliding window, including this charge when allowed
    retry_after: int  # whole seconds until the refused charge would fit (0 when allowed)
    window: int  # index of the window the charge went to (for later refunds)


def estimate(prev: float, cur: float, elapsed_ms: float, period_ms: float) -> float:
    """Usage over the last period: the current window plus the overlapping share of the previous one."""
    return prev * (period_ms - elapsed_ms) / period_ms + cur


def admits(used: float, cost: int, limit: int) -> bool:
    """Whether a charge of ``cost`` fits: nothing is admitted once the budget is spent, and a
    charge is refused when it alone would overrun it (the prompt is charged before the model runs)."""
    return used < limit and used + cost <= limit


def retry_after_s(prev: float, cur: float, elapsed_ms: float, period_ms: float, cost: int, limit: int) -> int:
    """Seconds until a charge of ``cost`` would be admitted if nothing else were charged (at least 1).

    The estimate falls linearly while the previous window's weight shrinks, and drops to
    a weighted ``cur`` when the window turns over.  A charge larger than the whole budget
    never fits; the answer is then one period.
    """
    if cost > limit:
        return max(1, math.ceil(period_ms / 1000.0))
    # The estimate must come down to ``target`` (strictly below the limit for a zero charge).
    target = limit - cost if cost else limit - 1e-6
    if cur <= target:
        wait_ms = period_ms - elapsed_ms - (period_ms * (target - cur) / prev if prev > 0 else period_ms)
    else:
        wait_ms = (period_ms - elapsed_ms) + period_ms * (1.0 - target / cur)
    return max(1, math.ceil(wait_ms / 1000.0))
