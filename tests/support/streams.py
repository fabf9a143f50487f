"""Streamed LLM answers for tests: provider-shaped events from text pieces, and a mock
upstream that sends any bytes in any pieces, with delays, and can hang up mid-stream."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SSE = "text/event-stream"


def sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data).encode() + b"\n\n"


def openai_chat_events(pieces: Sequence[str], tool_pieces: Sequence[str] = (), usage: int | None = None) -> bytes:
    """An OpenAI Chat Completions stream whose content deltas are ``pieces`` (then tool-call
    argument deltas ``tool_pieces``), ending like OpenAI's: finish_reason, then ``[DONE]``."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test"}
    out = sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    for piece in pieces:
        out += sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    for i, piece in enumerate(tool_pieces):
        call: dict[str, object] = {"index": 0, "function": {"arguments": piece}}
        if i == 0:
            call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "send", "arguments": piece}}
        out += sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
    finish = "tool_calls" if tool_pieces else "stop"
    out += sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        out += sse(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": usage, "total_tokens": 5 + usage},
            }
        )
    return out + b"data: [DONE]\n\n"


def openai_chat_json(text: str, tool_args: str | None = None) -> bytes:
    message: dict[str, object] = {"role": "assistant", "content": text}
    if tool_args is not None:
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": tool_args}}
        ]
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-test",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
    ).encode()


def anthropic_events(pieces: Sequence[str]) -> bytes:
    """An Anthropic Messages stream with one text block made of ``pieces``."""
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    out = sse({"type": "message_start", "message": message}, "message_start")
    out += sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    for piece in pieces:
        out += sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            "content_block_delta",
        )
    out += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    out += sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        "message_delta",
    )
    return out + sse({"type": "message_stop"}, "message_stop")


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the byte offsets ``cuts`` (any byte: inside events, inside UTF-8)."""
    points = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def events_of(data: bytes) -> list[bytes]:
    """``data`` cut after every SSE event (the way a provider flushes)."""
    return [part + b"\n\n" for part in data.split(b"\n\n") if part]


@dataclass
class Reply:
    """One scripted answer: status, content type and the pieces of the body, sent as HTTP
    chunks ``delay`` seconds apart; ``hang_up_after`` closes the connection mid-stream."""

    chunks: Sequence[bytes]
    content_type: str = SSE
    status: int = 200
    delay: float = 0.0
    hang_up_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Sent:
    """What the mock saw of one exchange."""

    path: str
    body: bytes
    chunk_times: list[float] = field(default_factory=list)
    client_gone: bool = False
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class StreamUpstream:
    """A loopback LLM upstream; ``answer(path, body) -> Reply`` picks the reply per request."""

    port: int = 0
    answer: Callable[[str, bytes], Reply] = lambda path, body: Reply([b'{"ok": true}'], "application/json")
    exchanges: list[Sent] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve(state: StreamUpstream) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            sent = Sent(self.path, body)
            state.exchanges.append(sent)
            reply = state.answer(self.path, body)
            try:
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                self.send_header("transfer-encoding", "chunked")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.flush()
                for i, chunk in enumerate(reply.chunks):
                    if i and reply.delay:
                        time.sleep(reply.delay)
                    if reply.hang_up_after is not None and i == reply.hang_up_after:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                    sent.chunk_times.append(time.monotonic())
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                sent.client_gone = True
                self.close_connection = True
            finally:
                sent.done.set()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- one stream per format, text made of ``pieces`` ----------------------------------------


def _ndjson(items: Sequence[object]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def format_stream(fmt: str, pieces: Sequence[str]) -> tuple[bytes, str, str]:
    """(body, content type, request path) of a streamed answer in ``fmt`` whose text deltas are ``pieces``."""
    whole = "".join(pieces)
    if fmt == "openai.chat":
        return openai_chat_events(pieces), SSE, "/v1/chat/completions"
    if fmt == "openai.completions":
        body = b"".join(
            sse({"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": p}]}) for p in pieces
        )
        return body + b"data: [DONE]\n\n", SSE, "/v1/completions"
    if fmt == "openai.responses":
        body = sse(
            {"type": "response.created", "response": {"id": "resp_1", "object": "response", "output": []}},
            "response.created",
        )
        for p in pieces:
            body += sse(
                {
                    "type": "response.output_text.delta",
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": p,
                },
                "response.output_text.delta",
            )
        body += sse(
            {
                "type": "response.output_text.done",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "text": whole,
            },
            "response.output_text.done",
        )
        done = {
            "id": "resp_1",
            "object": "response",
            "status": "completed",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": whole}]}],
            "usage": {"input_tokens": 3, "output_tokens": 11},
        }
        return body + sse({"type": "response.completed", "response": done}, "response.completed"), SSE, "/v1/responses"
    if fmt == "anthropic.messages":
        return anthropic_events(pieces), SSE, "/v1/messages"
    gemini_items = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}]} for p in pieces
    ]
    if fmt == "gemini.generate":
        return (
            b"".join(sse(item) for item in gemini_items),
            SSE,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        )
    if fmt == "gemini.array":
        body = "[" + ",\r\n".join(json.dumps(item) for item in gemini_items) + "]"
        return body.encode(), "application/json", "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    if fmt == "ollama.chat":
        items: list[object] = [
            {"model": "llama3", "message": {"role": "assistant", "content": p}, "done": False} for p in pieces
        ]
        items.append(
            {"model": "llama3", "message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 12}
        )
        return _ndjson(items), "application/x-ndjson", "/api/chat"
    if fmt == "ollama.generate":
        items = [{"model": "llama3", "response": p, "done": False} for p in pieces]
        return (
            _ndjson(items + [{"model": "llama3", "response": "", "done": True, "eval_count": 12}]),
            "application/x-ndjson",
            "/api/generate",
        )
    if fmt == "tgi.generate":
        body = b"".join(
            sse(
                {
                    "token": {"id": i, "text": p, "logprob": 0.0, "special": False},
                    "generated_text": None,
                    "details": None,
                }
            )
            for i, p in enumerate(pieces)
        )
        body += sse(
            {
                "token": {"id": 99, "text": "", "logprob": 0.0, "special": True},
                "generated_text": whole,
                "details": {"generated_tokens": 12},
            }
        )
        return body, SSE, "/generate_stream"
    if fmt == "cohere.chat":
        body = b"".join(
            sse({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": p}}}}, "content-delta")
            for p in pieces
        )
        return (
            body + sse({"type": "message-end", "delta": {"finish_reason": "COMPLETE"}}, "message-end"),
            SSE,
            "/v2/chat",
        )
    raise ValueError(fmt)


STREAM_FORMATS = (
    "openai.chat",
    "openai.completions",
    "openai.responses",
    "anthropic.messages",
    "gemini.generate",
    "gemini.array",
    "ollama.chat",
    "ollama.generate",
    "tgi.generate",
    "cohere.chat",
)
