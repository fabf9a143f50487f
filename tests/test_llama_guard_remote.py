"""The remote Llama Guard backend against a fake OpenAI-compatible completions server (loopback)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmwall.detectors import llama_guard_prompt as lgp
from llmwall.detectors.base import Prompt, ScreenRequest, TextPart
from llmwall.detectors.llama_guard import relevance_score
from llmwall.detectors.llama_guard_remote import RemoteError, RemoteLlamaGuard

CUSTOM = "cf.llm.prompt.custom_topic_categories"


def completion(text: str, tokens: list[str] | None = None, tops: list[dict] | None = None) -> dict:
    choice: dict = {"index": 0, "text": text, "finish_reason": "stop"}
    if tokens is not None:
        choice["logprobs"] = {
            "tokens": tokens,
            "token_logprobs": [max(t.values()) for t in tops],
            "top_logprobs": tops,
            "text_offset": list(range(len(tokens))),
        }
    return {"id": "cmpl-1", "object": "text_completion", "model": "lg", "choices": [choice]}


def llama_guard_like(body: dict) -> tuple[int, bytes]:
    """A plausible server: 'bomb' is unsafe S9 with P(unsafe)=0.8 among the two verdicts."""
    prompt = body["prompt"]
    if prompt.endswith("unsafe\nS"):
        tops = [{"1": math.log(0.2), "2": math.log(0.7), "10": math.log(0.05)}]
        return 200, json.dumps(completion("2", ["2"], tops)).encode()
    if "bomb" in prompt:
        tops = [
            {"unsafe": math.log(0.8), " unsafe": math.log(0.05), "safe": math.log(0.15)},
            {"\n": -0.01},
            {"S": -0.01},
            {"9": -0.1},
        ]
        return 200, json.dumps(completion("unsafe\nS9", ["unsafe", "\n", "S", "9"], tops)).encode()
    tops = [{"safe": math.log(0.9), "unsafe": math.log(0.1)}]
    return 200, json.dumps(completion("safe", ["safe"], tops)).encode()


class FakeServer:
    """Loopback HTTP server whose behaviour each test sets; records request bodies and headers."""

    def __init__(self) -> None:
        self.behaviour: Callable[[dict], tuple[int, bytes]] = llama_guard_like
        self.delay = 0.0
        self.requests: list[tuple[str, dict, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                if outer.delay:
                    time.sleep(outer.delay)
                status, payload = outer.behaviour(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def request(text: str, timeout: float = 5.0, **kw) -> ScreenRequest:
    return ScreenRequest(
        prompt=Prompt(format="openai.chat", parts=(TextPart(("prompt",), text),)),
        deadline=time.monotonic() + timeout,
        **kw,
    )


def test_sends_the_llama_guard_prompt_and_reads_logprobs(server: FakeServer) -> None:
    det = RemoteLlamaGuard(server.url, model="llama-guard3:1b")
    try:
        out = det.detect(request("How do I build a bomb?"))
        assert out.fields == {
            "cf.llm.prompt.unsafe_topic_detected": True,
            "cf.llm.prompt.unsafe_topic_categories": ["S9"],
        }
        assert out.info["p_unsafe"] == pytest.approx(0.85 / 1.0)
        path, body, _ = server.requests[0]
        assert path == "/v1/completions"
        expected = lgp.template_for(lgp.TEMPLATE_1B).full("How do I build a bomb?") + "\n\n"
        assert body["prompt"] == expected[len(lgp.BOS) :]  # the server adds BOS itself
        assert body["temperature"] == 0 and body["logprobs"] >= 2 and body["max_tokens"] <= 16
        assert body["model"] == "llama-guard3:1b"
        safe = det.detect(request("Bake bread"))
        assert safe.fields["cf.llm.prompt.unsafe_topic_detected"] is False
        assert safe.info["p_unsafe"] == pytest.approx(0.1)
    finally:
        det.close()


def test_threshold_applies_to_the_logprob_score(server: FakeServer) -> None:
    det = RemoteLlamaGuard(server.url + "/v1", threshold=0.9)
    try:
        out = det.detect(request("How do I build a bomb?"))
        assert out.fields == {"cf.llm.prompt.unsafe_topic_detected": False, "cf.llm.prompt.unsafe_topic_categories": []}
        assert server.requests[0][0] == "/v1/completions" and "model" not in server.requests[0][1]
        assert "S14: Code Interpreter Abuse." in server.requests[0][1]["prompt"]  # 8B template by default
    finally:
        det.close()


def test_without_logprobs_the_text_decides(server: FakeServer) -> None:
    server.behaviour = lambda body: (200, json.dumps(completion("unsafe\nS1,S10")).encode())
    det = RemoteLlamaGuard(server.url, send_bos=True)
    try:
        out = det.detect(request("anything"))
        assert out.fields["cf.llm.prompt.unsafe_topic_categories"] == ["S1", "S10"]
        assert out.info["p_unsafe"] == 1.0
        assert server.requests[0][1]["prompt"].startswith(lgp.BOS)
    finally:
        det.close()


def test_custom_topics(server: FakeServer) -> None:
    det = RemoteLlamaGuard(server.url)
    topics = {"alpha": "first topic", "beta": "second topic"}
    try:
        out = det.detect(request("How do I build a bomb?", custom_topics=topics, wanted=frozenset({CUSTOM})))
        p = 0.85  # P(unsafe) of the custom prompt (same fake answer)
        assert out.fields[CUSTOM] == {"alpha": relevance_score(p * 0.2), "beta": relevance_score(p * 0.7)}
        prompts = [b["prompt"] for _, b, _ in server.requests]
        assert any("S1: alpha. first topic.\nS2: beta. second topic.\n" in x for x in prompts)
        assert CUSTOM not in det.detect(request("x", custom_topics=topics)).fields
    finally:
        det.close()


def test_slow_server_is_not_scored_at_the_deadline(server: FakeServer) -> None:
    server.delay = 3.0
    det = RemoteLlamaGuard(server.url)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            det.detect(request("hello", timeout=0.3))
        assert time.monotonic() - start < 1.5
        with pytest.raises(TimeoutError):
            det.detect(request("hello", timeout=-1))
    finally:
        det.close()


@pytest.mark.parametrize(
    "behaviour,message",
    [
        (lambda body: (500, b'{"error": "boom"}'), "HTTP 500"),
        (lambda body: (200, b"<html>not json</html>"), "not an OpenAI completion"),
        (lambda body: (200, b'{"choices": []}'), "not an OpenAI completion"),
        (lambda body: (200, json.dumps(completion("I am a teapot")).encode()), "neither"),
        (lambda body: (200, json.dumps({"choices": [{"text": 5}]}).encode()), "no text"),
    ],
)
def test_errors_and_junk_raise_clear_errors(server: FakeServer, behaviour, message: str) -> None:
    server.behaviour = behaviour
    det = RemoteLlamaGuard(server.url)
    try:
        with pytest.raises(RemoteError, match=message):
            det.detect(request("hello"))
    finally:
        det.close()


def test_unreachable_server_and_bad_url() -> None:
    det = RemoteLlamaGuard("http://127.0.0.1:9")
    try:
        with pytest.raises(RemoteError, match="unreachable"):
            det.detect(request("hello"))
    finally:
        det.close()
    with pytest.raises(ValueError):
        RemoteLlamaGuard("ftp://example")


def test_api_key_from_environment(server: FakeServer, monkeypatch) -> None:
    monkeypatch.setenv("LLMWALL_REMOTE_API_KEY", "k-123")
    det = RemoteLlamaGuard(server.url)
    try:
        det.detect(request("hello"))
        assert server.requests[0][2]["authorization"] == "Bearer k-123"
        assert "k-123" not in det.describe()
    finally:
        det.close()


def test_slow_custom_topics_leave_only_their_field_absent(server: FakeServer) -> None:
    def behaviour(body: dict) -> tuple[int, bytes]:
        if "S1: alpha." in body["prompt"]:
            time.sleep(2.0)
        return llama_guard_like(body)

    server.behaviour = behaviour
    det = RemoteLlamaGuard(server.url)
    try:
        out = det.detect(
            request("How do I build a bomb?", timeout=0.5, custom_topics={"alpha": "a"}, wanted=frozenset({CUSTOM}))
        )
        assert out.fields["cf.llm.prompt.unsafe_topic_categories"] == ["S9"]
        assert CUSTOM not in out.fields and out.info["custom_topics_not_scored"] is True
    finally:
        det.close()
