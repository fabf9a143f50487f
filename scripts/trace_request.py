"""Where a request's time goes inside the proxy: time stamps along its critical path, per stage.

Runs llmwall with ``scripts/trace_addon.py`` (the addon chain between two stamping addons,
screening's stages and each detector wrapped), and plain mitmdump through the same stamping
addons, in front of one local upstream, and sends requests to each in turn (interleaved, so
the machine's load hits all alike). Prints the median and mean of each stage, per proxy.
``--trees`` traces several checkouts of llmwall side by side (e.g. main and a branch), each
loaded by its own path: the ``.venv`` of this checkout runs them all.

Two workloads:

* the default: distinct-prompt chat requests (``bench_proxy.distinct_chat``) one at a time
  on one connection per proxy: the issue-15 critical path, detectors included;
* ``--streams N``: N clients open a streamed answer each at the same moment (``bench_stream``'s
  upstream and request, rules that read no response field), ``--rounds`` times: where the
  time to first byte goes when requests arrive together (issue 13).

    .venv/bin/python scripts/trace_request.py --requests 300
    .venv/bin/python scripts/trace_request.py --requests 300 --trees ../main .
    .venv/bin/python scripts/trace_request.py --streams 8 --rounds 6 --trees ../main .
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bench_proxy
import bench_stream

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TRACE_ADDON = Path(__file__).resolve().parent / "trace_addon.py"
WARM_UP = 5
#: A stage: its name and how to compute it (seconds) from one flow's stamps and the client's times.
Stage = tuple[str, Callable[[dict[str, Any], float, float], float | None]]


def _span(start: str, end: str) -> Callable[[dict[str, Any], float, float], float | None]:
    def span(s: dict[str, Any], sent: float, got: float) -> float | None:
        t = s["t"]
        return t[end] - t[start] if start in t and end in t else None

    return span


def _from_client(end: str) -> Callable[[dict[str, Any], float, float], float | None]:
    return lambda s, sent, got: s["t"][end] - sent


def _to_client(start: str) -> Callable[[dict[str, Any], float, float], float | None]:
    return lambda s, sent, got: got - s["t"][start]


def _detector(name: str, what: str) -> Callable[[dict[str, Any], float, float], float | None]:
    def value(s: dict[str, Any], sent: float, got: float) -> float | None:
        for det, start, end, cpu in s["detectors"]:
            if det == name:
                return {"wall": end - start, "cpu": cpu, "start": start - s["t"]["orchestrator>"]}[what]
        return None

    return value


def _after_detectors(s: dict[str, Any], sent: float, got: float) -> float | None:
    ends = [end for _, _, end, _ in s["detectors"]]
    return s["t"]["orchestrator<"] - max(ends) if ends else None


REQUEST_STAGES: list[Stage] = [
    ("client sends -> proxy has read the request", _from_client("request.read")),
    ("request read -> first request hook", _span("request.read", "first.request")),
    ("DashboardAddon.request", _span("DashboardAddon.request>", "DashboardAddon.request<")),
    ("LLMWall: parse, classify, extract (_analyse)", _span("analyse>", "analyse<")),
    ("LLMWall: hook start -> orchestrator", _span("LLMWall.request>", "orchestrator>")),
    ("orchestrator -> lite_topics starts (hand-off)", _detector("lite_topics", "start")),
    ("orchestrator -> pii starts (hand-off)", _detector("pii", "start")),
    ("  lite_topics (wall)", _detector("lite_topics", "wall")),
    ("  lite_topics (thread CPU)", _detector("lite_topics", "cpu")),
    ("  lite_injection (wall)", _detector("lite_injection", "wall")),
    ("  pii (wall)", _detector("pii", "wall")),
    ("  pii (thread CPU)", _detector("pii", "cpu")),
    ("  tokens (wall)", _detector("tokens", "wall")),
    ("last detector ends -> orchestrator returns (wake-up)", _after_detectors),
    ("orchestrator total", _span("orchestrator>", "orchestrator<")),
    ("orchestrator returns -> rules (request fields)", _span("orchestrator<", "rules>")),
    ("rules evaluate", _span("rules>", "rules<")),
    ("rules -> event annotated", _span("rules<", "annotate<")),
    ("LLMWall.request total", _span("LLMWall.request>", "LLMWall.request<")),
    ("RateLimiter.request", _span("RateLimiter.request>", "RateLimiter.request<")),
    ("Console.request", _span("Console.request>", "Console.request<")),
    ("Analytics.request", _span("Analytics.request>", "Analytics.request<")),
    ("request hooks, first -> last", _span("first.request", "last.request")),
    (
        "hooks done -> response headers read (upstream)",
        _span("last.request", "response.headers_read"),
    ),
    (
        "response headers read -> responseheaders hook",
        _span("response.headers_read", "first.responseheaders"),
    ),
    ("response hooks, first -> last", _span("first.response", "last.response")),
    ("  Analytics.response", _span("Analytics.response>", "Analytics.response<")),
    ("last response hook -> client has the answer", _to_client("last.response")),
    ("total (client)", lambda s, sent, got: got - sent),
]
STREAM_STAGES: list[Stage] = [
    ("client sends -> proxy has read the request", _from_client("request.read")),
    ("request read -> first request hook", _span("request.read", "first.request")),
    ("request hooks, first -> last", _span("first.request", "last.request")),
    ("  LLMWall.request", _span("LLMWall.request>", "LLMWall.request<")),
    ("  Analytics.request", _span("Analytics.request>", "Analytics.request<")),
    ("  Console.request", _span("Console.request>", "Console.request<")),
    (
        "hooks done -> response headers read (upstream)",
        _span("last.request", "response.headers_read"),
    ),
    (
        "response headers read -> responseheaders hook",
        _span("response.headers_read", "first.responseheaders"),
    ),
    ("responseheaders hooks", _span("first.responseheaders", "last.responseheaders")),
    ("responseheaders done -> first piece from upstream", _span("last.responseheaders", "stream.first_piece")),
    ("first piece -> client has it", _to_client("stream.first_piece")),
    ("time to first byte (client)", lambda s, sent, got: got - sent),
]


def start(
    name: str, tree: Path | None, upstream_port: int, rules: Path | None, tmp: Path, streaming: bool
) -> tuple[int, Any, Path]:
    """One traced proxy: llmwall from ``tree``, or plain mitmdump (``tree`` None)."""
    port, out = bench_proxy.free_port(), tmp / f"{name}.jsonl"
    cmd = [str(BIN / "mitmdump"), "-s", str(TRACE_ADDON), "-p", str(port), "--listen-host", "127.0.0.1", "-q"]
    cmd += ["--mode", f"reverse:http://127.0.0.1:{upstream_port}"]
    env = {**os.environ, "TRACE_OUT": str(out)}
    if tree is None:
        env["TRACE_PLAIN"] = "1"
        if streaming:
            cmd += ["--set", "stream_large_bodies=1"]  # plain mitmdump streams only when told
    else:
        env["PYTHONPATH"] = str(tree / "addon")
        for key, value in (("llmwall_rules", rules or tree / "rules.yaml"), ("llmwall_models", tree / "models")):
            cmd += ["--set", f"{key}={value}"]
        cmd += ["--set", f"llmwall_db={tmp / name}.sqlite"]
    return port, bench_proxy.start_proxy(cmd, port, tmp / f"{name}.log", env), out


def ask(conn: http.client.HTTPConnection, body: bytes, trace_id: str) -> tuple[float, float]:
    """One chat request on a kept connection: (sent, whole answer read), perf_counter clock."""
    sent = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json", "x-trace-id": trace_id})
    conn.getresponse().read()
    return sent, time.perf_counter()


def stream(port: int, trace_id: str) -> tuple[float, float]:
    """One streamed answer on a new connection, as bench_stream does: (sent, first body byte)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = time.perf_counter()
    headers = {"content-type": "application/json", "x-trace-id": trace_id}
    conn.request("POST", "/v1/chat/completions/tokens", bench_stream.REQUEST, headers)
    resp = conn.getresponse()
    first = 0.0
    while resp.read1(65536):
        first = first or time.perf_counter()
    conn.close()
    return sent, first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="requests per proxy (one connection each)")
    ap.add_argument("--streams", type=int, help="concurrent streamed answers instead (TTFB breakdown)")
    ap.add_argument("--rounds", type=int, default=6, help="--streams: rounds of simultaneous streams")
    ap.add_argument("--trees", nargs="+", default=[str(ROOT)], help="llmwall checkouts to trace side by side")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmwall-trace-"))
    streaming = args.streams is not None
    if streaming:
        upstream = bench_stream.start_upstream(40, 0.02)
        rules: Path | None = tmp / "request-rules.yaml"
        rules.write_text(bench_stream.REQUEST_ONLY_RULES)
    else:
        upstream, rules = bench_proxy.start_upstream(), None
    names = ["mitmdump"] + [f"llmwall {Path(t).resolve().name}" for t in args.trees]
    trees: list[Path | None] = [None, *(Path(t).resolve() for t in args.trees)]
    proxies = [start(f"p{i}", tree, upstream.server_address[1], rules, tmp, streaming) for i, tree in enumerate(trees)]
    client: dict[str, tuple[float, float]] = {}
    try:
        if streaming:
            for r in range(-1, args.rounds):  # round -1 warms up
                for i, (port, _, _) in enumerate(proxies):
                    ids = [f"{'w' if r < 0 else ''}{i}-{r}-{k}" for k in range(args.streams)]
                    with ThreadPoolExecutor(args.streams) as pool:
                        client.update(zip(ids, pool.map(lambda t, p=port: stream(p, t), ids), strict=True))
        else:
            conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for port, _, _ in proxies]
            serial = 7_000_000 + int(time.time()) % 100_000 * 20
            for n in range(-WARM_UP, args.requests):
                for i, conn in enumerate(conns):
                    body = bench_proxy.distinct_chat(serial + n * len(conns) + i)
                    trace_id = f"{'w' if n < 0 else ''}{i}-{n}"
                    client[trace_id] = ask(conn, body, trace_id)
        time.sleep(0.5)
    finally:
        for _, proc, _ in proxies:
            proc.terminate()
            proc.wait(timeout=30)
        upstream.shutdown()
    stages = STREAM_STAGES if streaming else REQUEST_STAGES
    table: dict[str, list[str]] = {name: [] for name, _ in stages}
    for _, _, out in proxies:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        rows = [r for r in rows if r.get("id") in client and not r["id"].startswith("w")]
        for name, compute in stages:
            values = []
            for r in rows:
                try:
                    v = compute(r, *client[r["id"]])
                except KeyError:
                    v = None
                if v is not None:
                    values.append(v * 1000)
            table[name].append(f"{statistics.median(values):.2f} / {statistics.mean(values):.2f}" if values else "")
    load = os.getloadavg()
    what = f"{args.streams} simultaneous streams x {args.rounds} rounds" if streaming else f"{args.requests} requests"
    print(f"{what} per proxy, interleaved; load average {load[0]:.1f} {load[1]:.1f}; ms, median / mean\n")
    print("| stage | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for name, cells in table.items():
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
