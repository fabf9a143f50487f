"""llmwall: a firewall for LLM traffic, as a mitmproxy addon."""

__version__ = "0.1.0"
