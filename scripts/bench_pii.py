#!/usr/bin/env python3
"""Latency of the PII and secrets detectors per prompt, on one core.

Prompts are built from two fixed pools of sentences, cut to about 50, 100, 500
and 5,000 tokens (tokens estimated as characters / 4): "mixed" (support mail, code,
logs, SQL: numbers in every sentence, a few PII values) and "prose" (meeting notes
with one e-mail address).  Each detector's ``detect`` is timed on the
whole prompt after a warm-up; the process is pinned to one CPU.

    .venv/bin/python scripts/bench_pii.py            # markdown table
    .venv/bin/python scripts/bench_pii.py --json     # machine-readable
    .venv/bin/python scripts/bench_pii.py --compare  # PII only: Presidio's AnalyzerEngine path
                                                     # vs llmwall's FastAnalyzer, interleaved call
                                                     # by call, on response-window and prompt sizes
    .venv/bin/python scripts/bench_pii.py --scan .venv/lib/python3.12/site-packages --glob '*.py'
                                                     # findings per category in real files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addon"))

from llmwall.detectors import pii, secrets  # noqa: E402
from llmwall.detectors.base import DetectorConfig, Prompt, ScreenRequest, TextPart  # noqa: E402

POOL = [
    "Hi team, the customer Jane wrote again about order #112-3456789-1234567 which has not arrived.",
    "She asked us to call her back on +44 20 7946 0958 or to email jane.doe@example.com before Friday.",
    "Can you summarise the thread below and draft a polite reply that explains the shipping delay?",
    "def retry(fn, attempts=3):\n    for i in range(attempts):\n        time.sleep(2 ** i)\n",
    "2024-03-15T10:30:00Z INFO worker-7 started pid=48213 version=1.2.3 build=20240315",
    "The request id is 123e4567-e89b-12d3-a456-426614174000 and the trace shows a timeout after 3600 ms.",
    "Our refund policy allows returns within 30 days; shipping fees are not refundable.",
    "SELECT id, total FROM orders WHERE customer_id = 987654 AND created_at > '2024-01-01';",
    "Please charge the Visa 4111 1111 1111 1111 again and confirm the new invoice 9876543210.",
    "export OPENAI_BASE_URL=https://api.example.com/v1 and set the timeout to 30 seconds.",
    "The meeting notes mention the Q3 roadmap, the hiring plan and the office move in September.",
    "Traceback (most recent call last): File \"main.py\", line 42, in <module> KeyError: 'total'",
]
#: Mostly prose, one e-mail address per ~400 tokens: a long document to summarise.
PROSE = [
    "The committee reviewed the proposal in detail and agreed that the budget should be revisited.",
    "Several members noted that the timeline was ambitious, given the staffing constraints this quarter.",
    "A follow-up meeting will be scheduled once the finance team has circulated the revised figures.",
    "Questions about the draft can be sent to the programme office at office@example.org as usual.",
    "In the meantime, each working group should summarise its open risks and proposed mitigations.",
    "The chair thanked everyone for their contributions and closed the session on a positive note.",
    "Background reading includes last year's evaluation report and the stakeholder survey results.",
    "Attendees asked for clearer guidance on procurement rules and on travel reimbursement policy.",
]
SIZES = (50, 100, 500, 5000)
#: Characters: the windows response screening runs the detector on (issue 13).
WINDOWS = (64, 256, 1024)


def make_prompt(tokens: int, pool: list[str] = POOL) -> str:
    """About ``tokens`` tokens of text from ``pool`` (4 characters per token)."""
    out, i = [], 0
    while sum(len(s) + 1 for s in out) < tokens * 4:
        out.append(pool[i % len(pool)])
        i += 1
    return " ".join(out)[: tokens * 4]


def _request(text: str) -> ScreenRequest:
    prompt = Prompt(format="openai.chat", parts=(TextPart(path=("messages", 0, "content"), text=text),))
    return ScreenRequest(prompt=prompt, deadline=time.monotonic() + 3600)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure(detector, text: str, runs: int) -> dict[str, float]:
    """Wall-clock and CPU (this thread) milliseconds per ``detect`` call.

    On a shared machine the wall clock includes time spent waiting for a core;
    the thread's CPU time is what one call costs on one core."""
    req = _request(text)
    for _ in range(5):
        detector.detect(req)
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.thread_time()
        detector.detect(req)
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return {
        "p50_ms": statistics.median(wall),
        "p99_ms": _pct(wall, 0.99),
        "cpu_p50_ms": statistics.median(cpu),
        "cpu_p99_ms": _pct(cpu, 0.99),
        "runs": runs,
    }


def compare(text: str, runs: int) -> dict[str, float]:
    """CPU milliseconds per ``detect`` call of the stock path (Presidio's
    ``AnalyzerEngine.analyze``) and of the fast path, alternating call by call so that
    a change in machine load hits both alike; the two must give the same detection."""
    stock = pii.PiiDetector(stock_engine=True)
    fast = pii.PiiDetector()
    req = _request(text)
    if stock.detect(req) != fast.detect(req):
        raise SystemExit("the fast path and the stock path disagree")
    for _ in range(5):
        stock.detect(req)
        fast.detect(req)
    times: dict[str, list[float]] = {"stock": [], "fast": []}
    for _ in range(runs):
        for name, det in (("stock", stock), ("fast", fast)):
            c0 = time.thread_time()
            det.detect(req)
            times[name].append((time.thread_time() - c0) * 1000)
    out: dict[str, float] = {"runs": runs}
    for name, samples in times.items():
        out[f"{name}_cpu_p50_ms"] = statistics.median(samples)
        out[f"{name}_cpu_p99_ms"] = _pct(samples, 0.99)
    out["speedup"] = out["stock_cpu_p50_ms"] / out["fast_cpu_p50_ms"]
    return out


def _printed_json(args: argparse.Namespace, meta: dict[str, object], rows: list[dict[str, object]]) -> bool:
    """Print the results as JSON when ``--json`` was given; say whether it was."""
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return bool(args.json)


def compare_table(args: argparse.Namespace) -> int:
    """Stock vs fast PII path on windows of 64-1024 characters and on prompts."""
    texts = []
    for kind, pool in (("mixed", POOL), ("prose", PROSE)):
        texts += [(kind, f"{n} chars", make_prompt(n // 4 + 1, pool)[:n]) for n in WINDOWS]
        texts += [(kind, f"{n} tokens", make_prompt(n, pool)) for n in SIZES]
    load_before = os.getloadavg()
    rows = []
    for kind, size, text in texts:
        runs = max(30, args.runs * 256 // max(len(text), 256))
        rows.append({"prompt": kind, "size": size, "chars": len(text)} | compare(text, runs))
    meta = {"load_average_before": load_before, "load_average_after": os.getloadavg(), "cpus": os.cpu_count()}
    if _printed_json(args, meta, rows):
        return 0
    print(
        f"PII detect() CPU per call, one core pinned, stock and fast alternating; load average "
        f"{load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} before, "
        f"{meta['load_average_after'][0]:.1f} after, on {os.cpu_count()} CPUs\n"
    )
    print("| text | size | chars | stock CPU p50 ms | fast CPU p50 ms | stock / fast | stock p99 | fast p99 | runs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['prompt']} | {r['size']} | {r['chars']} | {r['stock_cpu_p50_ms']:.3f} | {r['fast_cpu_p50_ms']:.3f} "
            f"| {r['speedup']:.2f}x | {r['stock_cpu_p99_ms']:.3f} | {r['fast_cpu_p99_ms']:.3f} | {r['runs']} |"
        )
    return 0


def scan(root: Path, pattern: str, limit: int, seed: int) -> dict[str, object]:
    """Findings per category over a random sample of files (only counts are reported:
    the files are a stand-in for developer traffic, where most findings are false)."""
    import collections
    import random

    files = sorted(p for p in root.rglob(pattern) if p.is_file())
    sample = random.Random(seed).sample(files, min(limit, len(files)))
    detectors = (pii.create(DetectorConfig()), secrets.create(DetectorConfig()))
    counts: collections.Counter[str] = collections.Counter()
    chars = 0
    for path in sample:
        text = path.read_text(errors="replace")[:20_000]
        chars += len(text)
        for det in detectors:
            counts.update(s.category for s in det.detect(_request(text)).spans)
    return {"files": len(sample), "chars": chars, "counts": dict(counts.most_common())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    parser.add_argument("--runs", type=int, default=300, help="timed runs for the smallest prompt")
    parser.add_argument("--compare", action="store_true", help="PII stock vs fast path, interleaved")
    parser.add_argument("--scan", type=Path, help="instead: count findings in files under this folder")
    parser.add_argument("--glob", default="*.py", help="file pattern for --scan")
    parser.add_argument("--limit", type=int, default=400, help="files sampled for --scan")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for --scan")
    args = parser.parse_args()

    if args.scan:
        result = scan(args.scan, args.glob, args.limit, args.seed)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{result['files']} files, {result['chars'] / 1e6:.2f} M characters")
            for category, n in result["counts"].items():
                print(f"  {category}: {n}")
        return 0

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    if args.compare:
        return compare_table(args)
    start = time.perf_counter()
    pii_det = pii.create(DetectorConfig())
    build_s = time.perf_counter() - start
    detectors = {"pii (default)": pii_det, "secrets": secrets.create(DetectorConfig())}

    rows = []
    for tokens in SIZES:
        runs = max(30, args.runs * 50 // max(tokens, 50))
        for kind, pool in (("mixed", POOL), ("prose", PROSE)):
            text = make_prompt(tokens, pool)
            for name, det in detectors.items():
                row = {"detector": name, "prompt": kind, "tokens": tokens, "chars": len(text)}
                rows.append(row | measure(det, text, runs))

    meta = {
        "load_average_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "pii_build_s": round(build_s, 3),
        "pii_categories": len(pii_det.categories),
    }
    if _printed_json(args, meta, rows):
        return 0
    print(
        f"PII engine build: {build_s:.2f} s, {len(pii_det.categories)} categories; one core pinned; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
    )
    print("| detector | prompt | tokens (≈chars/4) | wall p50 ms | wall p99 ms | CPU p50 ms | CPU p99 ms | runs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['detector']} | {r['prompt']} | {r['tokens']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['cpu_p50_ms']:.2f} | {r['cpu_p99_ms']:.2f} | {r['runs']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
