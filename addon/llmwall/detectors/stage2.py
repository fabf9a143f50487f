"""Second stages of the lite outputs: a second opinion on the uncertain band only.

The lite classifier's "unsafe" and "injection" probabilities are uncertain on a band of
prompts below their thresholds (short, blunt harmful requests next to long creative or
security-training prompts; hijacks phrased unlike the training attacks). For a prompt in
an output's band only, the cascade adds one or two features that read
the prompt differently from the fine-tuned trunk, and combines them with the neural logit
by a small logistic regression fitted on the validation split; the prompt is flagged when
the combined probability reaches its own threshold, chosen under the same false-positive
budgets as the neural threshold plus a hard-negative budget of its own.

* **lexical**: a logistic regression over hashed word unigrams and bigrams (trained on the
  training split by ``scripts/train_lite.py``); pure arithmetic, tens of microseconds.
* **neighbours**: the frozen, unmodified MiniLM sentence embedding (``encoder.onnx``, the
  custom-topics encoder) compared with the embeddings of the training split's positive
  and negative rows for that output: the mean cosine of the ``k`` nearest positives minus
  that of the ``k`` nearest negatives, scaled. One 6-layer encoder run (shared by both
  outputs' stages) plus a matrix product.

Pure standard library + numpy, so it runs in the proxy and in the training venv (which
loads this file by path, without the ``llmwall`` package).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
MAX_WORDS = 96  # the first and the last 96 words of a longer prompt (head+tail, as the model)
BANK_SCALE = 127.0  # neighbour banks are stored as int8 unit vectors times this
SURE_ATTACK_SCORE = 19.0  # a fired injection stage scores at most this: inside the "< 20" band


def words(text: str) -> list[str]:
    """Lower-cased words of the prompt's head and tail."""
    w = WORD.findall(text.lower())
    return w if len(w) <= 2 * MAX_WORDS else w[:MAX_WORDS] + w[-MAX_WORDS:]


def feature_ids(text: str, dim: int) -> np.ndarray:
    """Distinct hashed unigram and bigram ids (with a bias feature at 0) of ``text``."""
    w = words(text)
    grams = [*w, *(f"{a} {b}" for a, b in zip(w, w[1:], strict=False))]
    ids = {1 + zlib.crc32(g.encode()) % (dim - 1) for g in grams}
    return np.array([0, *sorted(ids)], np.int64)


def lexical_logit(weights: np.ndarray, text: str) -> float:
    """The lexical model's unsafe logit: the sum of the weights of the present features."""
    return float(weights[feature_ids(text, len(weights))].astype(np.float32).sum())


def quantize_bank(embeddings: np.ndarray) -> np.ndarray:
    """Unit-length embeddings as int8 (cosines survive to about 1 %)."""
    return np.clip(np.rint(embeddings * BANK_SCALE), -127, 127).astype(np.int8)


def load_bank(quantized: np.ndarray) -> np.ndarray:
    """The float32 bank the runtime multiplies with."""
    return quantized.astype(np.float32) / BANK_SCALE


def neighbour_logits(
    embeddings: np.ndarray, positive_bank: np.ndarray, negative_bank: np.ndarray, k: int, scale: float
) -> np.ndarray:
    """Per row: scale x (mean cosine of the k nearest positive - of the k nearest negative rows)."""

    def top_k_mean(bank: np.ndarray) -> np.ndarray:
        sims = embeddings @ bank.T
        return np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:].mean(axis=1)

    return scale * (top_k_mean(positive_bank) - top_k_mean(negative_bank))


def sure_attack_floor(knots: np.ndarray) -> float:
    """The first-stage P(injection) that the score knots map to ``SURE_ATTACK_SCORE``."""
    return float(np.interp(-SURE_ATTACK_SCORE, -knots[:, 1], knots[:, 0]))  # scores fall as P rises


def rescale(p2, threshold: float, floor: float):
    """A fired stage's P (scalar or array) mapped from [``threshold``, 1] onto [``floor``, 1]."""
    return floor + (1 - floor) * (p2 - threshold) / max(1 - threshold, 1e-9)


def combine(features: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """P(unsafe) of the second stage per row: sigmoid(features @ coef[:-1] + coef[-1])."""
    z = np.clip(features @ coef[:-1] + coef[-1], -40.0, 40.0)
    return 1.0 / (1.0 + np.exp(-z))


class SecondStage:
    """One output's second stage, loaded from its ``lite.json`` entry and files.

    Entry: ``band`` [low, high) (high at or above the output's threshold; inside the band
    the stage decides: for "unsafe" it can add or clear a flag, for "injection" high is the
    threshold, so it only adds), ``coef`` (neural, then lexical and/or
    neighbours, then bias), ``threshold``, optional ``lexical`` (file of weights) and
    ``neighbours`` ({file, k, scale}; the file holds ``positive`` and ``negative`` banks).
    """

    def __init__(self, directory: Path, entry: dict) -> None:
        self.low, self.high = float(entry["band"][0]), float(entry["band"][1])
        self.coef = np.array(entry["coef"], np.float64)
        self.threshold = float(entry["threshold"])
        self.lexical = np.load(directory / entry["lexical"]) if "lexical" in entry else None
        self.banks: tuple[np.ndarray, np.ndarray] | None = None
        if "neighbours" in entry:
            nb = entry["neighbours"]
            self.k, self.scale = int(nb["k"]), float(nb["scale"])
            with np.load(directory / nb["file"]) as banks:
                self.banks = (load_bank(banks["positive"]), load_bank(banks["negative"]))

    @property
    def features(self) -> list[str]:
        return [name for name, part in (("lexical", self.lexical), ("neighbours", self.banks)) if part is not None]

    def in_band(self, p: float) -> bool:
        return self.low <= p < self.high

    def probability(self, p: float, text: str, embedding: Callable[[], np.ndarray]) -> float:
        """The stage's P for a prompt with first-stage probability ``p`` (in the band).

        ``embedding`` returns the prompt's (1, dim) encoder embedding; it is called only when
        this stage reads neighbours, so the caller can compute it once for both stages.
        """
        q = min(max(p, 1e-7), 1 - 1e-7)
        features = [float(np.log(q / (1 - q)))]
        if self.lexical is not None:
            features.append(lexical_logit(self.lexical, text))
        if self.banks is not None:
            features.append(float(neighbour_logits(embedding(), *self.banks, self.k, self.scale)[0]))
        return float(combine(np.array([features]), self.coef)[0])

    def fired(self, p2: float) -> bool:
        return p2 >= self.threshold

    def rescaled(self, p2: float, floor: float) -> float:
        """A fired stage's P mapped onto [``floor``, 1] (``sure_attack_floor`` of the knots)."""
        return float(rescale(p2, self.threshold, floor))
