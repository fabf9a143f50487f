"""The mitmproxy side: the addon, the detector orchestrator, and what the proxy does to a flow (block, redact)."""
