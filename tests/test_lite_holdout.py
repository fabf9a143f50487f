"""Regression tests: the shipped lite model on data it never trained on meets the recorded limits.

Two checks, both with limits written by ``scripts/train_lite.py`` into ``lite.json``:

* ``training/holdout.jsonl`` (team rows of template families never trained on) through
  ``llmwall eval`` (``regression``); this catches a broken tokenizer, window rule or
  calibration, but templated rows overstate quality, so it is not the quality figure;
* the held-out *public sources* (whole sources never trained on, calibrated on or used for
  thresholds: ``HELDOUT_SOURCES`` in ``scripts/lite_public_data.py``), read from
  ``../shared/data`` (skipped when that folder is absent), through the runtime path
  (``regression_public``): unsafe recall / FPR and injection recall / FPR pooled over them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from llmwall.cli import evaluate
from llmwall.detectors import lite
from llmwall.detectors.base import DetectorConfig

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def test_holdout_meets_recorded_limits(capsys, tmp_path):
    (tmp_path / "lite").symlink_to(ROOT / "models/lite")  # the lite model alone, even if Llama Guard is exported
    limits = json.loads((ROOT / "models/lite/lite.json").read_text())["regression"]
    parser = argparse.ArgumentParser()
    evaluate.register_cli(parser.add_subparsers())
    args = parser.parse_args(
        [
            "eval",
            str(ROOT / "training/holdout.jsonl"),
            "--json",
            "--models",
            str(tmp_path),
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["detectors"] == ["lite_topics", "lite_injection"]
    assert report["unsafe"]["recall"] >= limits["unsafe_recall_min"]
    assert report["unsafe"]["fpr"] <= limits["unsafe_fpr_max"]
    assert report["hard_negatives"]["fpr"] <= limits["hard_negative_fpr_max"]
    assert report["injection"]["recall"] >= limits["injection_recall_min"]
    assert report["injection"]["fpr"] <= limits["injection_fpr_max"]


@pytest.mark.skipif(not (DATA / "train").is_dir(), reason="../shared/data/train not present")
def test_public_heldout_sources_meet_recorded_limits():
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("eval_lite_sources", ROOT / "scripts/eval_lite_sources.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    limits = json.loads((ROOT / "models/lite/lite.json").read_text())["regression_public"]
    models = lite.load(DetectorConfig(models_dir=str(ROOT / "models"), device="cpu"))
    rows = mod.heldout_rows(DATA)
    assert {r.source for r in rows} >= {
        "mt_bench",
        "coconot/coconot_contrast_eval",
        "agentdojo",
    }
    unsafe, _, inj = mod.score(models, [r.text for r in rows])
    lab = np.array([r.unsafe if r.unsafe is not None else -1 for r in rows])
    linj = np.array([r.injection if r.injection is not None else -1 for r in rows])
    assert unsafe[lab == 1].mean() >= limits["unsafe_recall_min"]
    assert unsafe[lab == 0].mean() <= limits["unsafe_fpr_max"]
    assert (inj[linj == 1] < 50).mean() >= limits["injection_recall_min"]
    assert (inj[linj == 0] < 50).mean() <= limits["injection_fpr_max"]
