"""Command-line entry points: ``llmwall`` (proxy, scan, rules, eval, endpoints, stats, demo)."""
