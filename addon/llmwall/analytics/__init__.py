"""Analytics without prompt text: the SQLite event store, Prometheus metrics and the dashboard."""
