"""Response screening: LLM answers stream through in time and are screened as they stream.

``framing`` cuts a byte stream into events (SSE, NDJSON, JSON array, AWS event stream),
``formats`` reads each provider's text deltas and writes its stream endings,
``window`` holds back only the unscreened tail of the text, and ``addon`` wires them
to mitmproxy's ``responseheaders``/``response`` hooks. See docs/architecture.md.
"""
