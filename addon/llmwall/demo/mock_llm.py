"""A deterministic OpenAI-compatible mock LLM for the demo and tests (stdlib only).

It answers ``/v1/chat/completions`` and ``/v1/completions`` (also with
``stream: true`` as server-sent events ending in ``data: [DONE]``) and
``/v1/models``, and serves the demo chat page at ``/`` so that the page and the
API share one origin through llmwall's reverse proxy.  Answers are canned and
derived from the prompt's word count only: the prompt text is never echoed, logged
or stored, so privacy tests can grep everything the demo writes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
MODEL: Final = "llmwall-demo"
#: Files of static/ the chat page needs; nothing else is served.
CHAT_FILES: Final = ("chat.html", "chat.js", "chat.css")
MAX_BODY: Final = 1 << 20
REPLIES: Final = (
    "Here is a demo answer. Your message had {words} words; a real model would reply to its content, "
    "this mock only counts them. llmwall screened the prompt before it reached me.",
    "Mock model speaking: I received {words} words that passed llmwall's checks. "
    "Try a prompt with an email address or an unsafe request to see a block.",
    "Answer #{n} from the demo backend: {words} words arrived after screening. "
    "Open the dashboard to see this request counted, without its text.",
)
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def _text_of(content: Any) -> str:
    """Text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def reply_for(prompt: str) -> str:
    """The canned answer for ``prompt``: depends only on a hash and the word count."""
    words = len(prompt.split())
    digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()
    return REPLIES[digest[0] % len(REPLIES)].format(words=words, n=digest[1] % 100)


def _chunks(text: str) -> Iterator[str]:
    """Split an answer into word-sized stream deltas (keeping the spaces)."""
    words = text.split(" ")
    for i, w in enumerate(words):
        yield w if i == len(words) - 1 else w + " "


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmwall-mock"
    sys_version = ""
    config: Mapping[str, Any] = MappingProxyType({})  # replaced per server by serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the demo terminal shows mitmdump's flow lines instead."""

    # ---- helpers

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str, typ: str = "invalid_request_error") -> None:
        self._json(status, {"error": {"message": message, "type": typ, "param": None, "code": None}})

    # ---- GET

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            path = "/static/chat.html"
        if path == "/v1/models":
            self._json(
                200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "llmwall"}]}
            )
        elif path == "/demo-config.json":
            self._json(200, {"dashboard_url": self.config.get("dashboard_url"), "model": MODEL})
        elif path.startswith("/static/") and path[len("/static/") :] in CHAT_FILES:
            f = STATIC_DIR / path[len("/static/") :]
            self._send(
                200,
                f.read_bytes(),
                _TYPES[f.suffix],
                {
                    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                    "connect-src 'self'; img-src 'self' data:; base-uri 'none'",
                    "X-Content-Type-Options": "nosniff",
                },
            )
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._error(404, f"unknown path {path[:100]}", "not_found")

    do_HEAD = do_GET

    # ---- POST

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._error(413, "request too large")
            return
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            self._error(400, "the body must be a JSON object")
            return
        if path == "/v1/chat/completions":
            messages = data.get("messages")
            if not isinstance(messages, list) or not messages:
                self._error(400, "'messages' must be a non-empty list")
                return
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            prompt = _text_of(users[-1].get("content")) if users else ""
            self._answer(data, reply_for(prompt), chat=True)
        elif path == "/v1/completions":
            given = data.get("prompt")
            text = given if isinstance(given, str) else " ".join(p for p in given or [] if isinstance(p, str))
            self._answer(data, reply_for(text), chat=False)
        else:
            self._error(404, f"unknown path {path[:100]}", "not_found")

    def _answer(self, data: dict[str, Any], answer: str, chat: bool) -> None:
        model = data.get("model") if isinstance(data.get("model"), str) else MODEL
        created = int(time.time())
        ident = ("chatcmpl-" if chat else "cmpl-") + hashlib.sha256(f"{created}{answer}".encode()).hexdigest()[:24]
        obj = "chat.completion" if chat else "text_completion"
        if not data.get("stream"):
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": answer}
            else:
                choice["text"] = answer
            n = len(answer.split())
            self._json(
                200,
                {
                    "id": ident,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": {"prompt_tokens": 0, "completion_tokens": n, "total_tokens": n},
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True
        obj += ".chunk" if chat else ""
        events: list[dict[str, Any]] = []
        if chat:
            events.append({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        for piece in _chunks(answer):
            events.append(
                {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                if chat
                else {"index": 0, "text": piece, "finish_reason": None}
            )
        events.append(
            {"index": 0, "delta": {}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": "", "finish_reason": "stop"}
        )
        for choice in events:
            chunk = {"id": ident, "object": obj, "created": created, "model": model, "choices": [choice]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def serve(port: int, bind: str = "127.0.0.1", dashboard_url: str | None = None) -> ThreadingHTTPServer:
    """Start the mock on ``bind:port`` in a daemon thread; stop it with ``server.shutdown()``."""
    handler = type("MockHandler", (_Handler,), {"config": {"dashboard_url": dashboard_url}})
    server = ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="llmwall-mock-llm", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    """``python -m llmwall.demo.mock_llm --port N``: run the mock in the foreground."""
    p = argparse.ArgumentParser(prog="python -m llmwall.demo.mock_llm", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8800)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--dashboard-url", help="dashboard link shown by the chat page")
    args = p.parse_args(argv)
    server = serve(args.port, args.bind, args.dashboard_url)
    print(f"mock LLM on http://{args.bind}:{server.server_address[1]}/v1 (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
