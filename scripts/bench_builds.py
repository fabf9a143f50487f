"""Two or more llmwall checkouts (e.g. main and a branch) against plain mitmdump, rounds interleaved.

``bench_proxy.py`` and ``bench_stream.py`` measure one build per run, so on a shared machine a
difference of a millisecond between two runs is mostly the machine's load drifting. This runs
plain mitmdump and every checkout at once in front of one upstream and measures them in turn,
round after round (the order reversed every other round), with the same load as those scripts:

* ``proxy``: ``bench_proxy``'s distinct-prompt chat workload, default rules (p50, p99, req/s);
* ``stream``: ``bench_stream``'s streamed answers, ``tokens`` shape, rules that read no response
  field (time to first byte p50 and p99, event delay p50).

Each checkout is loaded from its own ``addon/`` (``PYTHONPATH``) with its own ``rules.yaml`` and
``models/``; this checkout's ``.venv`` runs them all. Cells are the median of the rounds, with
the range.

    .venv/bin/python scripts/bench_builds.py proxy --trees ../main . --rounds 4 --size 200 --concurrency 1 8
    .venv/bin/python scripts/bench_builds.py stream --trees ../main . --rounds 4 --size 3 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_proxy
import bench_stream

BIN = Path(sys.executable).parent


def start(cmd: list[str], port: int, log: Path, pythonpath: Path | None) -> subprocess.Popen[bytes]:
    """bench_proxy.start_proxy with PYTHONPATH set for this process only."""
    saved = os.environ.get("PYTHONPATH")
    if pythonpath is not None:
        os.environ["PYTHONPATH"] = str(pythonpath)
    try:
        return bench_proxy.start_proxy(cmd, port, log)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("proxy", "stream"))
    ap.add_argument("--trees", nargs="+", required=True, help="llmwall checkouts to compare")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--size", type=int, default=200, help="proxy: requests per cell; stream: streams per client")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmwall-builds-"))
    streaming = args.mode == "stream"
    upstream = bench_stream.start_upstream(40, 0.02) if streaming else bench_proxy.start_upstream()
    rules = tmp / "request-rules.yaml"
    rules.write_text(bench_stream.REQUEST_ONLY_RULES)
    common = ["--mode", f"reverse:http://127.0.0.1:{upstream.server_address[1]}", "--listen-host", "127.0.0.1", "-q"]
    procs, ports = [], {}
    port = bench_proxy.free_port()
    plain = [str(BIN / "mitmdump"), "-p", str(port), *common]
    if streaming:
        plain += ["--set", "stream_large_bodies=1"]  # plain mitmdump streams only when told
    procs.append(start(plain, port, tmp / "mitmdump.log", None))
    ports["mitmdump"] = port
    for i, tree in enumerate(Path(t).resolve() for t in args.trees):
        port = bench_proxy.free_port()
        cmd = [str(BIN / "mitmdump"), "-s", str(tree / "addon/llmwall/mitm_entry.py"), "-p", str(port), *common]
        settings = {
            "llmwall_rules": rules if streaming else tree / "rules.yaml",
            "llmwall_models": tree / "models",
            "llmwall_db": tmp / f"{i}.sqlite",
        }
        for key, value in settings.items():
            cmd += ["--set", f"{key}={value}"]
        name = f"llmwall {tree.name}"
        procs.append(start(cmd, port, tmp / f"{i}.log", tree / "addon"))
        ports[name] = port
    cells: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for r in range(args.rounds):
            for conc in args.concurrency:
                order = list(ports.items())
                if r % 2:
                    order.reverse()
                for name, p in order:
                    if streaming:
                        s = bench_stream.run(p, "tokens", conc, args.size)
                        cell = (s["ttfb_p50_ms"], s["ttfb_p99_ms"], s["delay_p50_ms"])
                    else:
                        path, body = bench_proxy.WORKLOADS["chat, distinct prompts (40-70 words)"]
                        s = bench_proxy.run_load(p, path, body, args.size, conc)
                        cell = (s["p50_ms"], s["p99_ms"], s["rps"])
                    cells.setdefault((name, conc), []).append(cell)
            print(f"round {r + 1} of {args.rounds} done, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        upstream.shutdown()
    cols = ("TTFB p50 ms", "TTFB p99 ms", "event delay p50 ms") if streaming else ("p50 ms", "p99 ms", "req/s")
    print(f"{args.mode}, {args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f}; median [range]\n")
    print("| proxy | conc. | " + " | ".join(cols) + " |\n|---|---|---|---|---|")
    for conc in args.concurrency:
        for name in ports:
            runs = cells[(name, conc)]

            def fmt(k: int, runs: list[tuple[float, float, float]] = runs) -> str:
                values = [run[k] for run in runs]
                return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"

            print(f"| {name} | {conc} | {fmt(0)} | {fmt(1)} | {fmt(2)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
