"""Lexical second stage of the lite unsafe output: hashed word n-grams, one linear layer.

The lite classifier's "unsafe" probability is uncertain on a band of prompts below its
threshold (short, blunt harmful requests next to long creative or security-training
prompts). For a prompt in that band only, a logistic regression over hashed word
unigrams and bigrams (trained on the training split by ``scripts/train_lite.py``) is
combined with the neural logit by a two-feature logistic regression fitted on the
validation split; the prompt is flagged when the combined probability reaches its own
threshold, chosen under the same false-positive budgets as the neural threshold.

Pure standard library + numpy, so it runs in the proxy and in the training venv (which
loads this file by path, without the ``llmwall`` package). Cost: tokenising and hashing
at most ``MAX_WORDS`` words, a few tens of microseconds, only for prompts in the band.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
MAX_WORDS = 96  # the first and the last 96 words of a longer prompt (head+tail, as the model)


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


def logit(weights: np.ndarray, text: str) -> float:
    """The lexical model's unsafe logit: the sum of the weights of the present features."""
    return float(weights[feature_ids(text, len(weights))].astype(np.float32).sum())


def combine(z_neural: float, z_lexical: float, coef: tuple[float, float, float]) -> float:
    """P(unsafe) of the second stage: sigmoid(a * neural logit + b * lexical logit + c)."""
    a, b, c = coef
    z = max(-40.0, min(40.0, a * z_neural + b * z_lexical + c))
    return 1.0 / (1.0 + float(np.exp(-z)))
