"""Shared fixtures: a recording fake upstream, real mitmdump processes running llmwall, a real redis-server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from mitmproxy.test import tflow, tutils

from llmwall.analytics.store import Store

ROOT = Path(__file__).resolve().parent.parent
REDIS = shutil.which("redis-server")
ENTRY = ROOT / "addon" / "llmwall" / "mitm_entry.py"
SUPPORT = Path(__file__).resolve().parent / "support"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class FakeUpstream:
    """A loopback HTTP server that records every request and answers from a table."""

    port: int
    received: list[Received] = field(default_factory=list)
    responses: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)  # path prefix -> reply
    delay_s: float = 0.0  # how long each reply takes (requests in flight at once)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply_for(self, path: str) -> tuple[int, str, bytes]:
        for prefix in sorted(self.responses, key=len, reverse=True):
            if path.startswith(prefix):
                return self.responses[prefix]
        return 200, "application/json", b'{"ok": true}'


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with serve_upstream() as state:
        yield state


@contextlib.contextmanager
def serve_upstream() -> Iterator[FakeUpstream]:
    """A FakeUpstream on a free loopback port for the duration of the ``with`` block."""
    state = FakeUpstream(port=0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            state.received.append(
                Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            status, ctype, payload = state.reply_for(self.path)
            time.sleep(state.delay_s)
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = _handle

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Proxy:
    """A running ``mitmdump`` with llmwall in reverse mode in front of the fake upstream."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    db_path: Path
    rules_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not in proxy log:\n{self.log()[-3000:]}")


DEFAULT_TEST_RULES = """\
rules:
  - id: block-unsafe
    expression: cf.llm.prompt.unsafe_topic_detected
    action: block
  - id: block-pii
    expression: cf.llm.prompt.pii_detected
    action: block
"""


@pytest.fixture
def start_proxy(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Proxy]]:
    """Factory: ``start_proxy(rules=..., extra_scripts=[...], **options)`` starts a real mitmdump."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        rules: str = DEFAULT_TEST_RULES,
        extra_scripts: tuple[Path, ...] = (),
        models: str | Path = ROOT / "models",
        **options: object,
    ) -> Proxy:
        proxy = launch_proxy(tmp_path, upstream, rules, extra_scripts, models, **options)
        procs.append(proxy.process)
        return proxy

    yield start
    for proc in procs:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def launch_proxy(
    tmp_path: Path,
    upstream: FakeUpstream,
    rules: str = DEFAULT_TEST_RULES,
    extra_scripts: tuple[Path, ...] = (),
    models: str | Path = ROOT / "models",
    mode: str | None = None,
    **options: object,
) -> Proxy:
    """Start mitmdump with llmwall (reverse mode in front of ``upstream`` unless ``mode`` says otherwise)."""
    port = free_port()
    rules_path = tmp_path / f"rules-{port}.yaml"
    rules_path.write_text(rules)
    db_path = tmp_path / f"events-{port}.sqlite"
    log_path = tmp_path / f"mitmdump-{port}.log"
    mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or "mitmdump"
    cmd = [
        mitmdump,
        "--mode",
        mode or f"reverse:{upstream.url}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        "-s",
        str(ENTRY),
    ]
    for script in extra_scripts:
        cmd += ["-s", str(script)]
    settings = {
        "llmwall_rules": rules_path,
        "llmwall_db": db_path,
        "llmwall_models": models,
        "termlog_verbosity": "info",
        **options,
    }
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    proc = start_process(cmd, port, log_path, cwd=tmp_path)
    return Proxy(port, proc, log_path, db_path, rules_path)


def start_process(
    cmd: list[str], port: int, log_path: Path, cwd: Path | None = None, timeout: float = 90.0
) -> subprocess.Popen[bytes]:
    """Start a server process with output to ``log_path``; return once ``port`` accepts connections."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or log_path.parent, env=env)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(
                f"{cmd[0]} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{cmd[0]} did not start:\n{log_path.read_text(errors='replace')[-3000:]}")


def post(
    url: str, body: bytes | dict | str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """POST with the stdlib; returns (status, headers, body) also for error statuses."""
    import urllib.error
    import urllib.request

    if isinstance(body, dict):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class RedisServer:
    """A redis-server process on a fixed loopback port that can be stopped and started again."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None, "redis-server is missing: scripts/test.sh installs it (apt-get install redis-server)"
        cmd = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.dir), "--daemonize", "no"]
        with open(self.dir / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start: " + (self.dir / "redis.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own for one test (stopped afterwards; no persistence)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def completion_reply(tokens: int) -> tuple[int, str, bytes]:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "One, two, three."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens},
    }
    return 200, "application/json", json.dumps(body).encode()


def stored_rows(proxy: Proxy, table: str, at_least: int = 1, timeout: float = 10.0) -> list[dict]:
    """Rows of one table of the proxy's analytics database, oldest first, once ``at_least``
    were written (writes are batched) or ``timeout`` passed."""
    end = time.monotonic() + timeout
    while True:
        store = Store(proxy.db_path)
        try:
            rows = [dict(r) for r in store._query(f"SELECT * FROM {table} ORDER BY id")]
        finally:
            store.close()
        if len(rows) >= at_least or time.monotonic() > end:
            return rows
        time.sleep(0.1)


def rate_limit_events(proxy: Proxy, at_least: int = 1, timeout: float = 10.0) -> list[dict]:
    """The proxy's rate-limit events, oldest first, once ``at_least`` were written."""
    return stored_rows(proxy, "rate_limit_events", at_least, timeout)


def chat_request_flow(
    auth: str = "",
    content: str = "What is the capital of France?",
    fmt_extra: dict | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> tflow.HTTPFlow:
    """An OpenAI chat completion request to api.openai.com as a test flow (for addons in process)."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **(fmt_extra or {})}
    sent = [(b"content-type", b"application/json"), *headers]
    if auth:
        sent.append((b"authorization", auth.encode()))
    req = tutils.treq(
        host="api.openai.com",
        port=443,
        scheme=b"https",
        path=b"/v1/chat/completions",
        method=b"POST",
        headers=sent,
        content=json.dumps(body).encode(),
    )
    return tflow.tflow(req=req)
