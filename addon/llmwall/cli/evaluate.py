"""``llmwall eval DATASET.jsonl``: measure the installed detectors on a labelled prompt file.

Each line is a JSON object ``{"text", "label": "safe"|"unsafe", "categories": [...],
"injection": true|false}``; every field but ``text`` is optional, and a line only counts
towards the figures it has labels for. An optional ``"hard_negative": true`` marks safe
prompts written to look alarming; their false-positive rate is reported separately.
The detectors are the real ones, built the way the proxy builds them, so the figures
describe what the proxy will do. Nothing about the prompts is written anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmwall import bundled, fields
from llmwall.detectors import build_detectors
from llmwall.detectors.base import Detector, DetectorConfig, Prompt, ScreenRequest, TextPart

CATEGORIES = tuple(f"S{i}" for i in range(1, 15))
_DETECTOR_DEADLINE_S = 60.0  # generous: eval measures quality, not the proxy's deadline


class DatasetError(ValueError):
    """A malformed dataset line (the message names the line)."""


@dataclass
class Example:
    text: str
    label: bool | None  # True = unsafe
    categories: tuple[str, ...] | None
    injection: bool | None
    hard_negative: bool = False


@dataclass
class Scored:
    unsafe: bool | None = None
    unsafe_score: float | None = None
    categories: set[str] = field(default_factory=set)
    category_scores: dict[str, float] = field(default_factory=dict)
    injection_score: int | None = None


# ----------------------------------------------------------------------------- metrics


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision: mean of the precision at the rank of each positive.

    Ties are broken pessimistically (negatives first) so a constant score cannot
    look better than it is. NaN when there is no positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return float("nan")
    order = np.lexsort((labels, -scores))  # by score desc, negatives before positives on ties
    y = labels[order]
    precision_at_k = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float(precision_at_k[y].mean())


def binary_metrics(pred: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    """Precision, recall, F1, FPR and the confusion counts (NaN where undefined)."""
    pred = np.asarray(pred, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    tn = int((~pred & ~labels).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    fpr = fp / (fp + tn) if fp + tn else math.nan
    return {"precision": precision, "recall": recall, "f1": f1, "fpr": fpr, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


# ----------------------------------------------------------------------------- data


def load_dataset(path: Path) -> list[Example]:
    """Parse the JSONL file; raises DatasetError naming the first bad line."""
    out: list[Example] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(d, dict) or not isinstance(d.get("text"), str):
                raise DatasetError(f"{path}:{n}: expected an object with a string 'text'")
            label = d.get("label")
            if label not in (None, "safe", "unsafe"):
                raise DatasetError(f"{path}:{n}: label must be 'safe' or 'unsafe', got {label!r}")
            cats = d.get("categories")
            if cats is not None:
                if not isinstance(cats, list) or any(c not in CATEGORIES for c in cats):
                    raise DatasetError(f"{path}:{n}: categories must be a list of S1..S14")
                cats = tuple(cats)
            inj = d.get("injection")
            if inj is not None and not isinstance(inj, bool):
                raise DatasetError(f"{path}:{n}: injection must be true or false")
            out.append(
                Example(
                    d["text"],
                    None if label is None else label == "unsafe",
                    cats,
                    inj,
                    bool(d.get("hard_negative", False)),
                )
            )
    return out


# ----------------------------------------------------------------------------- scoring


#: The fields eval measures.
MEASURED = fields.UNSAFE_FIELDS | fields.INJECTION_FIELDS


def build(models_dir: str, device: str = "auto") -> list[Detector]:
    """The unsafe-topic and injection detectors the proxy would run: the proxy's own selection
    (``detectors.build_detectors``), limited to those fields so PII's spaCy model is not loaded."""
    return build_detectors(DetectorConfig(models_dir=models_dir, device=device), only=MEASURED)


def score(detectors: list, text: str, threshold: float | None) -> Scored:
    """Run every relevant detector on one prompt and collect its decisions and scores."""
    req = ScreenRequest(
        prompt=Prompt(format="eval", parts=(TextPart(path=("text",), text=text),)),
        deadline=time.monotonic() + _DETECTOR_DEADLINE_S,
        wanted=MEASURED,
    )
    s = Scored()
    for det in detectors:
        res = det.detect(req)
        vals = res.fields
        scores = res.info.get("scores") if isinstance(res.info.get("scores"), dict) else {}
        if fields.UNSAFE_TOPIC_DETECTED in vals and s.unsafe is None:
            s.unsafe = bool(vals[fields.UNSAFE_TOPIC_DETECTED])
            s.categories = set(vals.get(fields.UNSAFE_TOPIC_CATEGORIES) or [])
            s.unsafe_score = float(scores["unsafe"]) if "unsafe" in scores else float(s.unsafe)
            if threshold is not None and "unsafe" in scores:
                s.unsafe = s.unsafe_score >= threshold
                if not s.unsafe:
                    s.categories = set()
                elif not s.categories:
                    s.categories = {max(CATEGORIES, key=lambda c: float(scores.get(c, 0.0)))}
            s.category_scores = {c: float(scores[c]) if c in scores else float(c in s.categories) for c in CATEGORIES}
        if fields.INJECTION_SCORE in vals and s.injection_score is None:
            s.injection_score = int(vals[fields.INJECTION_SCORE])
    return s


def compute(examples: list[Example], scored: list[Scored], injection_below: int = 50) -> dict:
    """All figures for the report; sections are absent when the file has no labels for them."""
    report: dict[str, object] = {"n": len(examples)}
    idx = [i for i, e in enumerate(examples) if e.label is not None and scored[i].unsafe is not None]
    if idx:
        y = np.array([examples[i].label for i in idx])
        pred = np.array([scored[i].unsafe for i in idx])
        sc = np.array([scored[i].unsafe_score for i in idx])
        report["unsafe"] = {**binary_metrics(pred, y), "auprc": auprc(sc, y), "n": len(idx)}
        hard = [k for k, i in enumerate(idx) if examples[i].hard_negative and not examples[i].label]
        if hard:
            report["hard_negatives"] = {"n": len(hard), "fpr": float(pred[hard].mean())}
            ordinary = [k for k, i in enumerate(idx) if not examples[i].hard_negative and not examples[i].label]
            if ordinary:
                report["ordinary_negatives"] = {"n": len(ordinary), "fpr": float(pred[ordinary].mean())}
        per: dict[str, dict] = {}
        cat_idx = [i for i in idx if not examples[i].label or examples[i].categories]
        for c in CATEGORIES:
            yc = np.array([bool(examples[i].label and c in (examples[i].categories or ())) for i in cat_idx])
            if not yc.any():
                continue
            pc = np.array([c in scored[i].categories for i in cat_idx])
            sc_c = np.array([scored[i].category_scores.get(c, 0.0) for i in cat_idx])
            per[c] = {**binary_metrics(pc, yc), "auprc": auprc(sc_c, yc), "support": int(yc.sum())}
        report["categories"] = per
    idx = [i for i, e in enumerate(examples) if e.injection is not None and scored[i].injection_score is not None]
    if idx:
        y = np.array([examples[i].injection for i in idx])
        s = np.array([scored[i].injection_score for i in idx])
        report["injection"] = {
            **binary_metrics(s < injection_below, y),
            "auprc": auprc(100 - s, y),
            "n": len(idx),
            "threshold": f"score < {injection_below}",
            "benign_high_band": float((s[~y] < 20).mean()) if (~y).any() else math.nan,
            "attack_high_band": float((s[y] < 20).mean()) if y.any() else math.nan,
        }
    return report


# ----------------------------------------------------------------------------- output


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "  -  " if math.isnan(v) else f"{v:.3f}"
    return str(v)


def format_table(report: dict) -> str:
    """A plain-text table: one row per figure group."""
    cols = ("precision", "recall", "f1", "fpr", "auprc", "tp", "fp", "fn", "tn")
    lines = [f"{'':14}" + "".join(f"{c:>10}" for c in cols)]
    rows: list[tuple[str, dict]] = []
    if "unsafe" in report:
        rows.append(("unsafe", report["unsafe"]))
    rows += [(f"  {c}", m) for c, m in report.get("categories", {}).items()]
    if "injection" in report:
        rows.append(("injection", report["injection"]))
    for name, m in rows:
        lines.append(f"{name:14}" + "".join(f"{_fmt(m.get(c, math.nan)):>10}" for c in cols))
    if "hard_negatives" in report:
        h = report["hard_negatives"]
        lines.append(f"hard negatives: n={h['n']} false-positive rate {_fmt(h['fpr'])}")
    if "ordinary_negatives" in report:
        o = report["ordinary_negatives"]
        lines.append(f"other safe prompts: n={o['n']} false-positive rate {_fmt(o['fpr'])}")
    if "injection" in report:
        i = report["injection"]
        lines.append(
            f"injection bands: attacks < 20: {_fmt(i['attack_high_band'])}, benign < 20: {_fmt(i['benign_high_band'])}"
        )
    lines.append(f"examples: {report['n']}")
    return "\n".join(lines)


def _json_safe(obj: object) -> object:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    return obj


def run(args: argparse.Namespace) -> int:
    """The ``eval`` subcommand."""
    try:
        examples = load_dataset(Path(args.dataset))
    except (OSError, DatasetError) as exc:
        print(f"llmwall eval: {exc}", file=sys.stderr)
        return 2
    models = bundled.resolve_models(args.models)
    detectors = build(models, args.device)
    if not detectors:
        print(f"llmwall eval: no unsafe-topic or injection detector found under {models}", file=sys.stderr)
        return 2
    print(f"llmwall eval: detectors from {models}: {', '.join(d.name for d in detectors)}", file=sys.stderr)
    from tqdm import tqdm

    scored = [
        score(detectors, e.text, args.threshold)
        for e in tqdm(
            examples, desc="eval", unit="prompt", file=sys.stderr, disable=len(examples) < 20 or not sys.stderr.isatty()
        )
    ]
    report = compute(examples, scored, args.injection_below)
    report["detectors"] = [d.name for d in detectors]
    for d in detectors:
        d.close()
    print(json.dumps(_json_safe(report), indent=1) if args.json else format_table(report))
    return 0


def register_cli(subparsers) -> None:
    """Add ``eval DATASET.jsonl [--json] [--models DIR] [--threshold P]``."""
    p = subparsers.add_parser(
        "eval",
        help="measure the detectors on a labelled JSONL prompt file",
        description=(
            "Measure the unsafe-topic and injection detectors on a labelled JSONL prompt file: precision, recall, "
            "F1, false-positive rate, AUPRC and per-category figures. Each line: "
            '{"text": ..., "label": "safe" or "unsafe", "categories": [...], "injection": true or false}.'
        ),
    )
    p.add_argument("dataset", help="JSONL: text, label (safe|unsafe), categories, injection")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--models", help="models directory (default: the models shipped with llmwall)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="unsafe probability threshold overriding the model's own (lite model)",
    )
    p.add_argument(
        "--injection-below", type=int, default=50, help="an injection score below this counts as an attack (default 50)"
    )
    p.set_defaults(func=run)
