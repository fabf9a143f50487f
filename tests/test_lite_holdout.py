"""Regression test: `llmwall eval` on the team's held-out split meets the model card's limits.

``training/holdout.jsonl`` is written by ``scripts/train_lite.py`` from template families
never seen in training or calibration; the limits are the held-out figures measured at
training time (``models/lite/lite.json`` -> ``regression``) with a small margin, so a
broken tokenizer, window rule, calibration or a worse retrained model fails here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmwall.cli import evaluate

ROOT = Path(__file__).resolve().parent.parent


def test_holdout_meets_recorded_limits(capsys, tmp_path):
    (tmp_path / "lite").symlink_to(ROOT / "models/lite")  # the lite model alone, even if Llama Guard is exported
    limits = json.loads((ROOT / "models/lite/lite.json").read_text())["regression"]
    parser = argparse.ArgumentParser()
    evaluate.register_cli(parser.add_subparsers())
    args = parser.parse_args(["eval", str(ROOT / "training/holdout.jsonl"), "--json",
                              "--models", str(tmp_path)])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["detectors"] == ["lite_topics", "lite_injection"]
    assert report["unsafe"]["recall"] >= limits["unsafe_recall_min"]
    assert report["unsafe"]["fpr"] <= limits["unsafe_fpr_max"]
    assert report["hard_negatives"]["fpr"] <= limits["hard_negative_fpr_max"]
    assert report["injection"]["recall"] >= limits["injection_recall_min"]
    assert report["injection"]["fpr"] <= limits["injection_fpr_max"]
