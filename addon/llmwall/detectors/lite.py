"""Embedded ("lite") classifiers: unsafe topics (S1..S14), prompt injection, custom topics.

Shipped with the project in ``models/lite/`` so llmwall protects from the first command,
with no GPU, no network and no exported Llama Guard:

* ``classifier.onnx``: the first layers of all-MiniLM-L6-v2, fine-tuned with one
  multi-label head (unsafe, S1..S14, injection), int8. One run serves both the topics
  and the injection detector: results are shared through a small in-memory cache.
* ``encoder.onnx``: the unmodified all-MiniLM-L6-v2 sentence encoder, int8, for zero-shot
  custom topics and for the second stages' neighbour feature.
* ``lexical.npy``, ``neighbours_*.npz``: the second stages (``stage2.py``), which score again
  only the prompts whose unsafe or injection probability falls in an uncertain band.
* ``lite.json``: calibration (Platt scaling per output), thresholds and the score
  mappings, all chosen on the validation split by ``scripts/train_lite.py``.

A prompt longer than 128 tokens gets unsafe topics from its head+tail window; the
injection output takes the maximum over that window, short chunks spread over the text
and the first and last sentences, because an attack often hides at the end of a long
document. Design and figures: docs/lite-models.md, models/lite/MODEL_CARD.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from llmwall import fields
from llmwall.detectors import stage2
from llmwall.detectors.base import LITE_LANE, Detection, Detector, DetectorConfig, NotScored, ScreenRequest
from llmwall.detectors.onnx_session import env_threads, make_session

log = logging.getLogger(__name__)

MANIFEST = "lite.json"
FORMAT = "llmwall-lite/1"
_CACHE_SIZE = 256  # prompts whose classifier outputs are kept (in memory only)
_TOPIC_SETS = 16  # custom-topic mappings whose embeddings are kept
MAX_CUSTOM_TOPICS = 20
LITE_THREADS = 1  # onnxruntime intra-op threads per lite session (see LiteModels.__init__)
CHUNK_TOKENS = 64  # short windows of a long prompt (see LiteModels.windows)
MAX_CHUNKS = 8  # bounds a long prompt's cost: 1 x 128 + 8 x 64 tokens
SENTENCE_TOKENS = 48  # a sentence window is cut to this many word pieces
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MIN_SENTENCE_CHARS = 12


class LiteModels:
    """The loaded lite models; thread-safe, shared by the lite detectors of one directory."""

    def __init__(self, directory: Path, device: str = "auto") -> None:
        self.directory = directory
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{directory / MANIFEST}: unsupported format {manifest.get('format')!r}")
        self.manifest = manifest
        self.outputs: list[str] = manifest["outputs"]
        self.max_tokens = int(manifest["max_tokens"])
        self.head_tokens = int(manifest["head_tokens"])
        self.cls_id, self.sep_id = int(manifest["cls_id"]), int(manifest["sep_id"])
        cal = manifest["calibration"]
        self.cal_a = np.array([cal[o]["a"] for o in self.outputs], np.float32)
        self.cal_b = np.array([cal[o]["b"] for o in self.outputs], np.float32)
        self.thresholds = {o: float(cal[o]["threshold"]) for o in self.outputs}
        self.injection_knots = np.array(cal["injection"]["score_knots"], np.float64)
        # Optional second stages for the uncertain bands of "unsafe" and "injection"
        # (detectors/stage2.py); classify() appends their probabilities ("<output>_stage2").
        self.stages = {
            output: stage2.SecondStage(directory, entry) for output, entry in manifest.get("stage2", {}).items()
        }
        self.names = [*self.outputs, *(f"{output}_stage2" for output in self.stages)]
        self.topic_a = float(manifest["topics"]["a"])
        self.topic_b = float(manifest["topics"]["b"])
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        # One intra-op thread unless LLMWALL_ORT_THREADS says otherwise: this model's runs are
        # too short to split (measured, 2 vCPU: one run of a chat prompt 5.6 ms on one thread,
        # 6.2 ms on two that sleep between parallel sections, 4.6 ms on two that spin, burning
        # the CPU the other detectors and the event loop need; docs/benchmarks.md "Where the
        # time goes"), and concurrent requests use the other cores.
        self.classifier, self.device = make_session(
            directory / "classifier.onnx", device, threads=env_threads() or LITE_THREADS
        )
        self._encoder = None
        self._encoder_path = directory / "encoder.onnx"
        self._device_pref = device
        self._lock = threading.Lock()
        self._encoder_lock = threading.Lock()
        self._results: OrderedDict[bytes, Future] = OrderedDict()
        self._topic_cache: OrderedDict[frozenset, tuple[list[str], np.ndarray]] = OrderedDict()
        if any(stage.banks is not None for stage in self.stages.values()):
            self.encoder_session()  # load now, not on the first prompt in a band

    # -- tokenisation -----------------------------------------------------------------

    def _pack(self, pieces: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """[CLS] piece [SEP] rows, padded to the longest row of this batch only."""
        width = max(len(p) for p in pieces) + 2
        input_ids = np.zeros((len(pieces), width), np.int64)
        mask = np.zeros_like(input_ids)
        for i, piece in enumerate(pieces):
            row = [self.cls_id, *piece, self.sep_id]
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return input_ids, mask

    def windows(self, text: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Batches of token windows: the whole prompt when it fits, else head+tail plus chunks.

        A prompt over ``max_tokens`` gets the head+tail window the model was trained on,
        plus ``CHUNK_TOKENS``-token chunks covering the text (evenly spread, at most
        ``MAX_CHUNKS``, the last ending at the text's end) in a second batch, so that the
        short rows are not padded to 128: mean pooling over a short chunk keeps an
        instruction inside a long document from being diluted.
        """
        return self._windows(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _windows(self, ids: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        body = self.max_tokens - 2
        if len(ids) <= body:
            return [self._pack([ids])]
        head_tail = ids[: self.head_tokens] + ids[len(ids) - (body - self.head_tokens) :]
        n_chunks = min(MAX_CHUNKS, -(-len(ids) // CHUNK_TOKENS))
        starts = np.linspace(0, len(ids) - CHUNK_TOKENS, n_chunks).astype(int)
        return [
            self._pack([head_tail]),
            self._pack([ids[s : s + CHUNK_TOKENS] for s in starts]),
        ]

    def sentence_windows(self, text: str, encoding: Encoding | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """The first and the last two sentences of a multi-sentence prompt, as short windows.

        Measured weakness of the mean-pooled model: one declarative sentence in front of
        "ignore all previous instructions ..." is enough to hide it. Scoring the edge
        sentences alone (where injected instructions usually sit) restores detection for
        the injection output only; unsafe topics keep their full context.

        A sentence's word pieces are taken from the whole text's ``encoding`` (by their
        offsets) rather than by tokenising it again: sentences end at whitespace, where the
        tokenizer splits anyway, so the pieces are the same (checked on 56,783 public
        texts: no difference) and one tokenizer call serves every window.
        """
        spans: dict[str, tuple[int, int]] = {}  # stripped sentence -> its (start, end) in text
        order: list[str] = []
        start = 0
        for end, resume in [*((m.start(), m.end()) for m in _SENTENCE_END.finditer(text)), (len(text), len(text))]:
            piece = text[start:end]
            stripped = piece.strip()
            if len(stripped) >= _MIN_SENTENCE_CHARS:
                lo = start + len(piece) - len(piece.lstrip())
                spans.setdefault(stripped, (lo, lo + len(stripped)))
                order.append(stripped)
            start = resume
        if len(order) < 2:
            return None
        if encoding is None:
            encoding = self.tokenizer.encode(text, add_special_tokens=False)
        picked = [spans[x] for x in dict.fromkeys([order[0], *order[-2:]])]
        pieces = [
            [i for i, (a, b) in zip(encoding.ids, encoding.offsets, strict=True) if a >= lo and b <= hi][
                :SENTENCE_TOKENS
            ]
            for lo, hi in picked
        ]
        return self._pack(pieces)

    def _probs(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        logits = self.classifier.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        z = np.clip(logits * self.cal_a + self.cal_b, -40.0, 40.0)
        return (1.0 / (1.0 + np.exp(-z))).max(axis=0)

    # -- classifier -------------------------------------------------------------------

    def classify(self, text: str, timeout: float | None = None) -> np.ndarray:
        """Calibrated probabilities per output (max over windows), computed once per text.

        Both lite detectors ask for the same prompt at the same time from different
        threads; the first computes, the other waits on its future (at most ``timeout``
        seconds, then ``concurrent.futures.TimeoutError``).
        """
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            cached = self._results.get(key)
            if cached is None:
                fut: Future = Future()
                self._results[key] = fut
                while len(self._results) > _CACHE_SIZE:
                    self._results.popitem(last=False)
            else:
                self._results.move_to_end(key)
        if cached is not None:  # another thread computes (or computed) this prompt
            return cached.result(timeout)
        try:
            # Unsafe topics come from the first window only (the whole prompt, or the head+tail
            # window the model was trained on): the max over many short chunks of a long prompt
            # fired on ordinary long prompts (measured: 3.8 % vs 1.6 % of held-out Arena-Hard
            # prompts flagged). Injection takes the max over every window.
            encoding = self.tokenizer.encode(text, add_special_tokens=False)
            windows = self._windows(encoding.ids)
            per_window = [self._probs(ids, mask) for ids, mask in windows]
            result = per_window[0].copy()
            inj = self.outputs.index("injection")
            result[inj] = max(p[inj] for p in per_window)
            sentences = self.sentence_windows(text, encoding)
            if sentences is not None:  # separate batch: short rows are not padded to 128
                result[inj] = max(result[inj], self._probs(*sentences)[inj])
            if self.stages:
                result = np.append(result, self._second_stages(text, result, windows[0]))
        except BaseException as exc:
            with self._lock:
                self._results.pop(key, None)
            fut.set_exception(exc)
            raise
        result.setflags(write=False)  # shared through the cache
        fut.set_result(result)
        return result

    def _second_stages(self, text: str, first: np.ndarray, first_window: tuple[np.ndarray, np.ndarray]) -> list[float]:
        """Each stage's probability, or 0.0 when the first stage's is outside its band.

        The neighbour features embed the window the unsafe head read (the whole prompt or
        its head+tail) with the custom-topics encoder, once for both stages.
        """
        embedded: list[np.ndarray] = []

        def embedding() -> np.ndarray:
            if not embedded:
                embedded.append(self.embed(*first_window))
            return embedded[0]

        out = []
        for output, stage in self.stages.items():
            p = float(first[self.outputs.index(output)])
            out.append(stage.probability(p, text, embedding) if stage.in_band(p) else 0.0)
        return out

    def unsafe_fields(self, probs: Mapping[str, float]) -> tuple[bool, list[str]]:
        """(detected, categories): categories above their thresholds when the unsafe head fires.

        Inside the second stage's band the stage's own threshold decides (the band can reach
        above the head's threshold, so the stage can also clear a weak first-stage flag);
        outside it, the unsafe head's threshold. As in Cloudflare, detected is
        true exactly when the category list is non-empty: when no category passes its own
        threshold, the most likely category is reported.
        """
        stage = self.stages.get("unsafe")
        if stage is not None and stage.in_band(probs["unsafe"]):
            detected = stage.fired(probs["unsafe_stage2"])  # inside its band the stage decides
        else:
            detected = probs["unsafe"] >= self.thresholds["unsafe"]
        if not detected:
            return False, []
        cats = [c for c in self.outputs[1:15] if probs[c] >= self.thresholds[c]]
        if not cats:
            cats = [max(self.outputs[1:15], key=lambda c: probs[c])]
        return True, cats

    def injection_probability(self, probs: Mapping[str, float]) -> float:
        """P(injection), or the injection second stage's rescaled P when that stage fired.

        A fired stage passed the same validation budgets as the first stage's threshold, so
        it lands where a first-stage detection does: at or above the P that scores
        ``stage2.SURE_ATTACK_SCORE`` (the knots put nearly every first-stage detection there).
        """
        stage = self.stages.get("injection")
        if stage is not None and stage.fired(probs["injection_stage2"]):
            floor = stage2.sure_attack_floor(self.injection_knots)
            return max(probs["injection"], stage.rescaled(probs["injection_stage2"], floor))
        return probs["injection"]

    def injection_score(self, probs: Mapping[str, float]) -> int:
        """1..99 (99 = surely benign) from ``injection_probability`` by the calibrated knots."""
        xs, ys = self.injection_knots[:, 0], self.injection_knots[:, 1]
        return int(np.clip(np.rint(np.interp(self.injection_probability(probs), xs, ys)), 1, 99))

    # -- custom topics ----------------------------------------------------------------

    def encoder_session(self):
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder, _ = make_session(
                    self._encoder_path, self._device_pref, threads=env_threads() or LITE_THREADS
                )
            return self._encoder

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.encoder_session().run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def topic_embeddings(self, topics: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
        """Label+description embeddings, computed once per distinct topics mapping."""
        key = frozenset(topics.items())
        with self._lock:
            hit = self._topic_cache.get(key)
            if hit is not None:
                self._topic_cache.move_to_end(key)
                return hit
        labels = sorted(topics)[:MAX_CUSTOM_TOPICS]
        body = self.max_tokens - 2
        ids, mask = self._pack(
            [
                self.tokenizer.encode(f"{label}: {topics[label]}", add_special_tokens=False).ids[:body]
                for label in labels
            ]
        )
        value = (labels, self.embed(ids, mask))
        with self._lock:
            self._topic_cache[key] = value
            while len(self._topic_cache) > _TOPIC_SETS:
                self._topic_cache.popitem(last=False)
        return value

    def topic_scores(self, text: str, topics: Mapping[str, str]) -> dict[str, int]:
        """label -> 1..99 (lower = more relevant): max cosine over windows, calibrated."""
        labels, topic_emb = self.topic_embeddings(topics)
        if not text.strip():
            return {label: 99 for label in labels}
        sims = np.max(
            [(self.embed(ids, mask) @ topic_emb.T).max(axis=0) for ids, mask in self.windows(text)],
            axis=0,
        )
        p = 1.0 / (1.0 + np.exp(-np.clip(self.topic_a * sims + self.topic_b, -40.0, 40.0)))
        return {label: int(np.clip(np.rint(1 + 98 * (1 - pi)), 1, 99)) for label, pi in zip(labels, p, strict=False)}


_LOADED: dict[tuple[str, str], LiteModels] = {}
_LOADED_LOCK = threading.Lock()


def load(config: DetectorConfig) -> LiteModels | None:
    """The lite models under ``models_dir/lite``, loaded once per (directory, device); None if absent."""
    directory = (Path(config.models_dir) / "lite").resolve()
    if not (directory / MANIFEST).is_file():
        return None
    key = (str(directory), config.device)
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = LiteModels(directory, config.device)
        return _LOADED[key]


def _stage_note(models: LiteModels, output: str) -> str:
    """How a detector describes its output's second stage, if any."""
    stage = models.stages.get(output)
    return f", second stage ({' + '.join(stage.features)}) from P {stage.low}" if stage else ""


def _past_deadline(request: ScreenRequest) -> bool:
    return time.monotonic() > request.deadline


def _classify(models: LiteModels, request: ScreenRequest) -> dict[str, float] | None:
    """Output name -> probability, or None when the deadline passed while waiting."""
    try:
        probs = models.classify(request.prompt.text, timeout=max(0.0, request.deadline - time.monotonic()))
    except FutureTimeout:
        return None
    return dict(zip(models.names, map(float, probs), strict=False))


class LiteTopicsDetector(Detector):
    """Unsafe topics (Llama Guard's S1..S14) and zero-shot custom topics."""

    name = "lite_topics"
    lane = LITE_LANE
    provides = fields.UNSAFE_FIELDS | fields.CUSTOM_TOPIC_FIELDS

    def __init__(self, models: LiteModels) -> None:
        self.models = models
        try:  # ~0.1 s now, so the first request with custom topics does not pay it
            models.encoder_session()
        # unsafe topics still work; custom topics will report the error
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            log.warning("llmwall: lite topic encoder not loaded: %s", exc)

    def detect(self, request: ScreenRequest) -> Detection:
        text = request.prompt.text
        wanted = request.wanted
        out: dict[str, object] = {}
        info: dict[str, object] = {}
        if _past_deadline(request):
            raise NotScored(self.name)
        if not wanted or wanted & fields.UNSAFE_FIELDS:
            if text.strip():
                probs = _classify(self.models, request)
                if probs is None:
                    raise NotScored(self.name)
                detected, cats = self.models.unsafe_fields(probs)
                info["scores"] = {k: round(v, 4) for k, v in probs.items() if not k.startswith("injection")}
            else:
                detected, cats = False, []
            out[fields.UNSAFE_TOPIC_DETECTED] = detected
            out[fields.UNSAFE_TOPIC_CATEGORIES] = cats
        if request.custom_topics and fields.CUSTOM_TOPIC_CATEGORIES in wanted:
            if _past_deadline(request):
                return Detection(fields=out, info=info)
            out[fields.CUSTOM_TOPIC_CATEGORIES] = self.models.topic_scores(text, request.custom_topics)
        return Detection(fields=out, info=info)

    def describe(self) -> str:
        second = _stage_note(self.models, "unsafe")
        return f"lite_topics: embedded MiniLM classifier S1..S14{second} + zero-shot topics ({self.models.device})"


class LiteInjectionDetector(Detector):
    """Prompt injection / jailbreak score from the same shared classifier run."""

    name = "lite_injection"
    lane = LITE_LANE
    provides = fields.INJECTION_FIELDS

    def __init__(self, models: LiteModels) -> None:
        self.models = models

    def detect(self, request: ScreenRequest) -> Detection:
        text = request.prompt.text
        if _past_deadline(request):
            raise NotScored(self.name)
        if not text.strip():
            return Detection(
                fields={fields.INJECTION_SCORE: 99},
                info={"scores": {"injection": 0.0}},
            )
        probs = _classify(self.models, request)
        if probs is None:
            raise NotScored(self.name)
        scores = {k: round(v, 4) for k, v in probs.items() if k.startswith("injection")}
        return Detection(fields={fields.INJECTION_SCORE: self.models.injection_score(probs)}, info={"scores": scores})

    def describe(self) -> str:
        second = _stage_note(self.models, "injection")
        return f"lite_injection: embedded MiniLM injection head{second} ({self.models.device})"


def create_topics(config: DetectorConfig) -> Detector | None:
    """The embedded unsafe/custom topics detector, or None when models/lite is absent."""
    models = load(config)
    return LiteTopicsDetector(models) if models else None


def create_injection(config: DetectorConfig) -> Detector | None:
    """The embedded injection detector, or None when models/lite is absent."""
    models = load(config)
    return LiteInjectionDetector(models) if models else None
