"""Llama Prompt Guard (2) injection/jailbreak detector, used instead of the lite head when exported.

The user exports a checkpoint with ``scripts/export_prompt_guard.py`` into
``models/prompt-guard/`` (``model.onnx``, ``tokenizer.json``, ``prompt_guard.json``).
Prompt Guard reads at most 512 tokens, and an injection often hides at the end of a
long document, so a long prompt is split into consecutive windows (up to
``MAX_WINDOWS``, the last one always ending at the end of the text) and the highest
attack probability wins.

Score mapping (Cloudflare semantics, 99 = surely benign):
``score = clip(round(1 + 98 * (1 - P(attack))), 1, 99)``, so P >= 0.82 falls in the
"high" band (< 20) and P > 0.5 in the "moderate" band (< 50).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from llmwall import fields
from llmwall.detectors.base import Detection, Detector, DetectorConfig, NotScored, ScreenRequest
from llmwall.detectors.onnx_session import make_session
from llmwall.fields import INJECTION_SCORE

SUBDIR = "prompt-guard"
MANIFEST = "prompt_guard.json"
FORMAT = "llmwall-prompt-guard/1"
MAX_WINDOWS = 8  # bounds the cost of a huge prompt: 8 x 512 tokens


def attack_score(p_attack: float) -> int:
    """P(attack) -> 1..99, lower = more likely an attack."""
    return int(np.clip(np.rint(1 + 98 * (1.0 - p_attack)), 1, 99))


class PromptGuardDetector(Detector):
    """Scores ``cf.llm.prompt.injection_score`` with an exported Prompt Guard model."""

    name = "prompt_guard"
    provides = fields.INJECTION_FIELDS

    def __init__(self, directory: Path, device: str = "auto") -> None:
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{directory / MANIFEST}: unsupported format {manifest.get('format')!r}")
        self.source = str(manifest.get("source", "prompt-guard"))
        self.benign_index = int(manifest["benign_index"])
        self.max_tokens = int(manifest["max_tokens"])
        self.cls_id, self.sep_id = int(manifest["cls_id"]), int(manifest["sep_id"])
        self.pad_id = int(manifest.get("pad_id", 0))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.session, self.device = make_session(directory / "model.onnx", device)

    def windows(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """[CLS] chunk [SEP] windows covering the text; the last window ends at the text's end."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        body = self.max_tokens - 2
        starts = list(range(0, max(len(ids) - body, 0) + 1, body))
        if starts[-1] + body < len(ids):
            starts.append(len(ids) - body)
        if len(starts) > MAX_WINDOWS:  # keep the head, the tail and evenly spread middles
            starts = sorted(set(np.linspace(0, len(ids) - body, MAX_WINDOWS).astype(int).tolist()))
        chunks = [ids[s : s + body] for s in starts]
        width = max(len(c) for c in chunks) + 2
        input_ids = np.full((len(chunks), width), self.pad_id, np.int64)
        mask = np.zeros((len(chunks), width), np.int64)
        for i, c in enumerate(chunks):
            row = [self.cls_id, *c, self.sep_id]
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return input_ids, mask

    def p_attack(self, text: str) -> float:
        """Highest P(not benign) over the windows."""
        ids, mask = self.windows(text)
        logits = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return float((1.0 - probs[:, self.benign_index]).max())

    def detect(self, request: ScreenRequest) -> Detection:
        text = request.prompt.text
        if time.monotonic() > request.deadline:
            raise NotScored("prompt guard: deadline passed")
        if not text.strip():
            return Detection(fields={INJECTION_SCORE: 99}, info={"scores": {"injection": 0.0}})
        p = self.p_attack(text)
        return Detection(
            fields={INJECTION_SCORE: attack_score(p)},
            info={"scores": {"injection": round(p, 4)}, "model": self.source},
        )

    def describe(self) -> str:
        return f"prompt_guard: {self.source} ({self.device})"


def create(config: DetectorConfig) -> Detector | None:
    """The Prompt Guard detector when ``models_dir/prompt-guard`` holds an export, else None."""
    directory = Path(config.models_dir) / SUBDIR
    if not (directory / MANIFEST).is_file():
        return None
    return PromptGuardDetector(directory, config.device)
