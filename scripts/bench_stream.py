"""Time to first byte and per-event added latency of streamed answers: direct, through plain
mitmdump (streaming on) and through llmwall with response screening on, for 1, 8 and 32
concurrent streams.

A local upstream streams OpenAI Chat Completions events ``--interval-ms`` apart; each event
carries the upstream's ``time.monotonic()`` at sending (one clock for every process on
the machine), so the client measures each event's delay from upstream to client. llmwall
runs with rules that read response fields (PII redaction and a secrets block, which never
fire on this text), so every event is screened before it is released.

Two stream shapes: ``tokens`` (OpenAI-like pieces, " word", so each event ends inside a
word that the next event may continue: llmwall holds it back until then) and ``words``
(each event ends on a space: nothing needs holding). ``--holdback 0`` shows the cost of
screening alone.

    .venv/bin/python scripts/bench_stream.py --streams 3 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RULES = """\
rules:
  - id: redact-answer-pii
    expression: cf.llm.response.pii_detected
    action: redact
  - id: block-answer-secrets
    expression: cf.llm.response.secret_detected
    action: block
"""
#: The same proxy without response rules: answers stream through untouched (the baseline
#: for what response screening costs).
REQUEST_ONLY_RULES = """\
rules:
  - id: block-prompt-secrets
    expression: cf.llm.prompt.secret_detected
    action: block
"""
REQUEST = json.dumps(
    {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me about the history of the Lisbon tram network."}],
    }
).encode()
WORDS = (
    "The first trams in Lisbon ran in 1873 pulled by horses and the network was electrified in 1901 "
    "with cars built in the United States while the steep hills shaped the narrow gauge and short "
    "wheelbase that the famous yellow trams still use today on route twenty eight through the old town"
).split()
SHAPES = ("tokens", "words")


def pieces(shape: str, count: int) -> list[str]:
    words = [WORDS[i % len(WORDS)] for i in range(count)]
    return [" " + w for w in words] if shape == "tokens" else [w + " " for w in words]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_upstream(events: int, interval: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            shape = self.path.rsplit("/", 1)[-1]
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            base = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
            texts = ["", *pieces(shape, events)]
            try:
                for i, text in enumerate(texts):
                    if i:
                        time.sleep(interval)
                    delta = {"content": text} if i else {"role": "assistant", "content": ""}
                    event = {**base, "t": time.monotonic(), "choices": [{"index": 0, "delta": delta}]}
                    self._chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
                self._chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 256  # 32 clients connect at once
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_proxy(cmd: list[str], port: int, log: Path, ready: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"proxy exited:\n{log.read_text()[-2000:]}")
        if ready in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("proxy did not start")


def one_stream(port: int, shape: str) -> tuple[float, list[float], bool]:
    """(time to first body byte, [delay of each event from upstream send to client receipt], cut)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.monotonic()
    conn.request("POST", f"/v1/chat/completions/{shape}", REQUEST, {"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"unexpected status {resp.status}")
    ttfb: float | None = None
    delays: list[float] = []
    cut = False
    buf = b""
    while chunk := resp.read1(65536):
        now = time.monotonic()
        if ttfb is None:
            ttfb = now - start
        buf += chunk
        *events, buf = buf.split(b"\n\n")
        for event in events:
            if event.startswith(b"data: {"):
                sent = json.loads(event[6:]).get("t")
                if sent is None:  # llmwall's own ending: the stream was cut
                    cut = True
                else:
                    delays.append(now - sent)
    conn.close()
    return ttfb or 0.0, delays, cut


def run(port: int, shape: str, concurrency: int, streams: int) -> dict[str, float]:
    def worker(_: int) -> list[tuple[float, list[float], bool]]:
        return [one_stream(port, shape) for _ in range(streams)]

    worker(0)  # warm-up: connection, detectors' first calls
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for chunk in pool.map(worker, range(concurrency)) for r in chunk]
    ttfb = sorted(r[0] for r in results)
    delays = sorted(d for r in results for d in r[1])

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000

    return {
        "ttfb_p50_ms": statistics.median(ttfb) * 1000,
        "ttfb_p99_ms": pct(ttfb, 0.99),
        "delay_p50_ms": statistics.median(delays) * 1000,
        "delay_p99_ms": pct(delays, 0.99),
        "events": len(delays),
        "cut": sum(r[2] for r in results),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--streams", type=int, default=3, help="streams per concurrent client")
    ap.add_argument("--events", type=int, default=40, help="text events per stream")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="upstream pause between events")
    ap.add_argument("--holdback", type=int, nargs="+", default=[256, 0], help="llmwall_response_holdback values")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    upstream = start_upstream(args.events, args.interval_ms / 1000.0)
    target = f"http://127.0.0.1:{upstream.server_address[1]}"
    tmp = Path(tempfile.mkdtemp(prefix="llmwall-bench-stream-"))
    (tmp / "rules.yaml").write_text(RULES)
    (tmp / "request-rules.yaml").write_text(REQUEST_ONLY_RULES)
    lanes: list[tuple[str, int, subprocess.Popen[bytes] | None]] = [("direct", upstream.server_address[1], None)]
    common = ["--mode", f"reverse:{target}", "--listen-host", "127.0.0.1", "--set", "termlog_verbosity=info"]
    port = free_port()
    plain = [str(BIN / "mitmdump"), *common, "-p", str(port), "--set", "stream_large_bodies=1"]
    lanes.append(("mitmdump (streaming)", port, start_proxy(plain, port, tmp / "plain.log", "listening at")))
    variants = [("llmwall, no response rules", "request-rules.yaml", 0)]
    variants += [(f"llmwall, holdback {h}", "rules.yaml", h) for h in args.holdback]
    for name, rules, holdback in variants:
        port = free_port()
        cmd = [str(BIN / "mitmdump"), *common, "-p", str(port), "-s", str(ROOT / "addon/llmwall/mitm_entry.py")]
        for key, value in {
            "llmwall_rules": tmp / rules,
            "llmwall_db": tmp / f"events-{port}.sqlite",
            "llmwall_models": ROOT / "models",
            "llmwall_response_holdback": holdback,
        }.items():
            cmd += ["--set", f"{key}={value}"]
        proc = start_proxy(cmd, port, tmp / f"llmwall-{port}.log", "listening at")
        lanes.append((name, port, proc))

    rows = []
    try:
        for shape in args.shapes:
            for conc in args.concurrency:
                for name, lane_port, _ in lanes:
                    result = run(lane_port, shape, conc, args.streams)
                    rows.append({"shape": shape, "concurrency": conc, "lane": name, **result})
                    print(f"{shape:6} c={conc:<3} {name:26} {json.dumps(result)}", file=sys.stderr)
    finally:
        for _, _, proc in lanes:
            if proc:
                proc.terminate()
                proc.wait(timeout=20)
        upstream.shutdown()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, "
        f"{args.events} events {args.interval_ms} ms apart"
    )
    print("| shape | streams | lane | TTFB p50 / p99 ms | event delay p50 / p99 ms | events | cut |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['shape']} | {r['concurrency']} | {r['lane']} | {r['ttfb_p50_ms']:.1f} / {r['ttfb_p99_ms']:.1f} "
            f"| {r['delay_p50_ms']:.1f} / {r['delay_p99_ms']:.1f} | {r['events']} | {r['cut']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
