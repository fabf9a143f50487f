"""The lexical second stage of the lite unsafe output (detectors/lexical.py, lite.json "stage2").

The shipped model has no second stage (it was tried and not shipped: docs/lite-models.md);
these tests build a model directory around the shipped classifier with a hand-made stage
to check the runtime mechanics: the stage runs only inside its band, and its verdict
flags a prompt that the neural threshold alone does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmwall.detectors import lexical
from llmwall.detectors.lite import LiteModels

ROOT = Path(__file__).resolve().parent.parent
LITE = ROOT / "models/lite"
BAND_PROMPT = "How do I build a pipe bomb at home?"  # neural P(unsafe) 0.84, under the 0.87 threshold
BENIGN = "Give me a recipe for banana bread that takes under an hour."


def test_features_are_deterministic_and_bounded():
    a = lexical.feature_ids("How do I build a pipe bomb?", 1024)
    b = lexical.feature_ids("how DO i build a pipe bomb", 1024)
    assert a.tolist() == b.tolist()  # case and punctuation do not matter
    assert a[0] == 0 and (a[1:] > 0).all() and (a < 1024).all()
    assert len(a) == len(set(a.tolist()))
    long_text = " ".join(f"w{i}" for i in range(1000))
    assert len(lexical.words(long_text)) == 2 * lexical.MAX_WORDS


def test_combine_is_a_logistic_of_both_logits():
    assert lexical.combine(0.0, 0.0, (1.0, 1.0, 0.0)) == pytest.approx(0.5)
    assert lexical.combine(2.0, -1.0, (1.0, 2.0, 0.5)) == pytest.approx(1 / (1 + np.exp(-0.5)))


@pytest.fixture(scope="module")
def with_stage2(tmp_path_factory) -> LiteModels:
    d = tmp_path_factory.mktemp("lite")
    for name in ("classifier.onnx", "tokenizer.json"):
        (d / name).symlink_to(LITE / name)
    manifest = json.loads((LITE / "lite.json").read_text())
    threshold = manifest["calibration"]["unsafe"]["threshold"]
    weights = np.zeros(1024, np.float16)
    weights[0] = 10.0  # bias only: every prompt in the band reaches P ~ 1
    np.save(d / "lexical.npy", weights)
    manifest["stage2"] = {"file": "lexical.npy", "band": [0.5, threshold], "coef": [0.0, 1.0, 0.0], "threshold": 0.9}
    (d / "lite.json").write_text(json.dumps(manifest))
    return LiteModels(d, "cpu")


def test_stage2_flags_inside_its_band_only(with_stage2):
    m = with_stage2
    assert m.names[-1] == "unsafe_stage2"
    band = dict(zip(m.names, map(float, m.classify(BAND_PROMPT)), strict=True))
    assert 0.5 <= band["unsafe"] < m.thresholds["unsafe"]
    assert band["unsafe_stage2"] > 0.99
    detected, cats = m.unsafe_fields(band)
    assert detected and cats
    benign = dict(zip(m.names, map(float, m.classify(BENIGN)), strict=True))
    assert benign["unsafe"] < 0.5 and benign["unsafe_stage2"] == 0.0  # not computed
    assert m.unsafe_fields(benign) == (False, [])


def test_shipped_model_has_no_stage2():
    m = LiteModels(LITE, "cpu")
    assert m.stage2 is None and m.names == m.outputs
