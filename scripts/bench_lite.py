"""Latency of the embedded lite classifiers (models/lite) per prompt, end to end.

Measures `LiteModels.classify` (tokenisation + ONNX + calibration) and custom-topic scoring on
prompts of 128 tokens of the model's own tokenizer (special tokens included), each call on a
new text so no cache helps. Run it with one
onnxruntime thread to get the "one core" figure the targets are stated in:

    LLMWALL_ORT_THREADS=1 .venv/bin/python scripts/bench_lite.py --runs 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer

from llmwall.detectors.base import DetectorConfig
from llmwall.detectors.lite import load

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "I am planning a trip to Portugal next spring and would love some advice on the route.",
    "We want to spend a few days in Lisbon, then drive along the coast towards the Algarve.",
    "My partner is vegetarian, so restaurant tips that cater for that would be very welcome.",
    "We are also curious about the history of the old town and which museums are worth it.",
    "Could you suggest a rough budget per day, including hotels, food and the rental car?",
    "Finally, what should we pack for the weather at that time of year, and any safety tips?",
]
TOPICS = {
    "cooking": "recipes, ingredients and cooking techniques",
    "travel": "trips, holidays, flights and hotels",
    "finance": "money, investing, budgets and banking",
    "health": "symptoms, medicines and doctors",
    "legal": "laws, contracts and legal advice",
    "sports": "matches, athletes and training",
    "coding": "programming, software bugs and code",
    "hr-internal": "internal HR policies and salaries",
    "politics": "elections, parties and politicians",
    "gaming": "video games and consoles",
}


def prompt_of(tokens: int, seed: int, tokenizer: Tokenizer, one_sentence: bool) -> str:
    """A prompt of at most `tokens` tokens, different for every seed (so no cache can answer it)."""
    words: list[str] = []
    i = seed
    while len(tokenizer.encode(" ".join(words)).ids) < tokens:
        sentence = SENTENCES[i % len(SENTENCES)]
        for word in [
            f"({seed}-{i})",
            *(sentence.rstrip(".?") if one_sentence else sentence).split(),
        ]:
            if len(tokenizer.encode(" ".join(words + [word])).ids) > tokens:
                return " ".join(words)
            words.append(word)
        i += 1
    return " ".join(words)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--models", default=str(ROOT / "models"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = load(DetectorConfig(models_dir=args.models, device="cpu"))
    if models is None:
        print(f"no lite models under {args.models}", file=sys.stderr)
        return 1
    tokenizer = Tokenizer.from_file(str(Path(args.models) / "lite" / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    results = {}
    for name, one_sentence in (
        ("classifier, one sentence", True),
        ("classifier, several sentences", False),
    ):
        texts = [prompt_of(args.tokens, s, tokenizer, one_sentence) for s in range(args.runs + 5)]
        for t in texts[:5]:
            models.classify(t)  # warm-up
        times = []
        for t in texts[5:]:
            start = time.perf_counter()
            models.classify(t)
            times.append((time.perf_counter() - start) * 1000)
        results[name] = times
        sizes = [len(tokenizer.encode(t).ids) for t in texts]
        if min(sizes) < 0.9 * args.tokens:  # guards the benchmark against measuring empty prompts
            raise SystemExit(f"prompt builder produced {min(sizes)} tokens, wanted {args.tokens}")
    for output, stage in models.stages.items():  # a cascade's extra cost inside its band (a few % of prompts)
        texts = [prompt_of(args.tokens, 20_000 + s, tokenizer, False) for s in range(args.runs // 4 + 3)]
        times = []
        for t in texts:
            window = models.windows(t)[0]
            start = time.perf_counter()
            stage.probability((stage.low + stage.high) / 2, t, lambda w=window: models.embed(*w))
            times.append((time.perf_counter() - start) * 1000)
        results[f"{output} second stage, when it fires (extra)"] = times[3:]
    texts = [prompt_of(args.tokens, 10_000 + s, tokenizer, False) for s in range(args.runs // 4 + 3)]
    models.topic_scores(texts[0], TOPICS)  # embeds the topics once, as the proxy does
    times = []
    for t in texts[1:]:
        start = time.perf_counter()
        models.topic_scores(t, TOPICS)
        times.append((time.perf_counter() - start) * 1000)
    results["custom topics (10)"] = times
    summary = {
        k: {"p50_ms": statistics.median(v), "p99_ms": percentile(v, 0.99), "n": len(v)} for k, v in results.items()
    }
    if args.json:
        print(
            json.dumps(
                {
                    "threads": os.environ.get("LLMWALL_ORT_THREADS", "default"),
                    "tokens": args.tokens,
                    "results": summary,
                },
                indent=2,
            )
        )
        return 0
    threads = os.environ.get("LLMWALL_ORT_THREADS", "default")
    print(f"{args.tokens} model tokens per prompt, LLMWALL_ORT_THREADS={threads}\n")
    print("| what | p50 ms | p99 ms | runs |\n|---|---|---|---|")
    for k, v in summary.items():
        print(f"| {k} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['n']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
