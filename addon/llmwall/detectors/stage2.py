"""Second stage of the lite unsafe output: a second opinion on the uncertain band only.

The lite classifier's "unsafe" probability is uncertain on a band of prompts below its
threshold (short, blunt harmful requests next to long creative or security-training
prompts). For a prompt in that band only, the cascade adds one or two features that read
the prompt differently from the fine-tuned trunk, and combines them with the neural logit
by a small logistic regression fitted on the validation split; the prompt is flagged when
the combined probability reaches its own threshold, chosen under the same false-positive
budgets as the neural threshold plus a hard-negative budget of its own.

* **lexical**: a logistic regression over hashed word unigrams and bigrams (trained on the
  training split by ``scripts/train_lite.py``); pure arithmetic, tens of microseconds.
* **neighbours**: the frozen, unmodified MiniLM sentence embedding (``encoder.onnx``, the
  custom-topics encoder) compared with the embeddings of the training split's unsafe and
  safe requests: the mean cosine of the ``k`` nearest unsafe requests minus that of the
  ``k`` nearest safe ones, scaled. One 6-layer encoder run plus a matrix product.

Pure standard library + numpy, so it runs in the proxy and in the training venv (which
loads this file by path, without the ``llmwall`` package).
"""

from __future__ import annotations

import re
import zlib

import numpy as np

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
MAX_WORDS = 96  # the first and the last 96 words of a longer prompt (head+tail, as the model)
BANK_SCALE = 127.0  # neighbour banks are stored as int8 unit vectors times this


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
    embeddings: np.ndarray, unsafe_bank: np.ndarray, safe_bank: np.ndarray, k: int, scale: float
) -> np.ndarray:
    """Per row: scale x (mean cosine of the k nearest unsafe - of the k nearest safe rows)."""

    def top_k_mean(bank: np.ndarray) -> np.ndarray:
        sims = embeddings @ bank.T
        return np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:].mean(axis=1)

    return scale * (top_k_mean(unsafe_bank) - top_k_mean(safe_bank))


def combine(features: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """P(unsafe) of the second stage per row: sigmoid(features @ coef[:-1] + coef[-1])."""
    z = np.clip(features @ coef[:-1] + coef[-1], -40.0, 40.0)
    return 1.0 / (1.0 + np.exp(-z))
