"""Token budgets: rate limits that count LLM tokens, conditioned on detection fields (docs/rate-limits.md).

``rules`` parses the ``rate_limits:`` section of rules.yaml, ``window`` holds the
sliding-window arithmetic, ``backends`` the in-memory and Redis counters, ``usage``
the provider usage parsing, and ``addon`` the ``RateLimiter`` mitmproxy addon.
"""
