"""Llama Guard 3 on onnxruntime: unsafe-topic verdicts, hazard categories and custom topics.

Cost model, and the design that follows from it:

* One prefill per prompt. The prompt is Llama Guard's own (``llama_guard_prompt``) plus the
  ``"\\n\\n"`` the model always writes first, so the prefill's last logits are the verdict
  distribution: P(unsafe) = softmax over {safe, unsafe}. Categories are decoded only for
  rows judged unsafe, two small steps per category: the line's fixed tokens (``\\n``,
  ``S``, ``,S``) are fed, only the numbers and the decision to go on are predicted.
* The policy header (instructions and category list, 138 tokens for the 1B template)
  is identical for every request of a role (a prompt is judged as the User's turn, an
  answer as the Agent's, whose header differs): its key/value cache is computed once per
  role and fed as ``past_key_values``, so each request pays only for its own tokens.
* Concurrent ``detect`` calls (worker threads) put jobs on a queue; one model thread takes
  what arrives within a few milliseconds and runs it in batches, each no larger than lets it
  finish before its earliest deadline at the measured cost per token. Rows are right-padded
  after the cached prefix (a padded row never has a query position that sees nothing, so no
  NaN rows), and the exported graph returns logits at each row's last attended position.
* On CUDA the prefix cache and every ``present`` tensor stay on the device (IOBinding), and
  the prefix is broadcast over the batch by a small ``kv_expand.onnx`` graph on the GPU.
* ``request.deadline`` bounds the wait: a caller gives up with ``NotScored`` (the
  orchestrator records "not scored"), and the model thread skips jobs nobody waits for or
  that could not finish in time at the measured cost per token.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmwall import fields
from llmwall.detectors import llama_guard_prompt as lgp
from llmwall.detectors.base import Detection, Detector, DetectorConfig, NotScored, ScreenRequest
from llmwall.detectors.llama_guard_prompt import relevance_score
from llmwall.fields import CUSTOM_TOPIC_CATEGORIES, UNSAFE_TOPIC_CATEGORIES, UNSAFE_TOPIC_DETECTED

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "llmwall-llama-guard"
#: Variant preference per device; the first one the model directory has wins.
VARIANT_ORDER = {"cuda": ("fp16", "fp32"), "cpu": ("int8", "int4", "fp32")}
VARIANT_ENV = "LLMWALL_LLAMA_GUARD_VARIANT"
#: Padded tokens per batch. A CPU prefill is compute-bound: 8 rows of 122 tokens in one batch
#: gave no more prompts/s than one by one and doubled the median latency (docs/benchmarks.md),
#: so a CPU batches only short prompts; the category steps after them are where it pays.
MAX_BATCH_TOKENS = {"cuda": 16384, "cpu": 256}
EXPORT_HINT = (
    "export one with: .venv-export/bin/python scripts/export_llama_guard.py "
    "--checkpoint <Llama-Guard-3-1B dir> --out models/llama-guard-3-1b (see docs/llama-guard.md)"
)


# --------------------------------------------------------------------------- model directory


@dataclass(frozen=True)
class Manifest:
    """What ``scripts/export_llama_guard.py`` wrote next to the ONNX files."""

    root: Path
    model: str
    template: str
    categories: tuple[tuple[str, str], ...]
    tokens: Mapping[str, Any]
    variants: Mapping[str, Mapping[str, Any]]

    @classmethod
    def load(cls, root: Path) -> Manifest:
        """Read and check ``root/manifest.json``; raises ValueError with the reason."""
        data = json.loads((root / MANIFEST).read_text())
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{root / MANIFEST} is not a Llama Guard manifest")
        for key in ("template", "categories", "tokens", "variants"):
            if key not in data:
                raise ValueError(f"{root / MANIFEST} lacks {key!r}")
        return cls(
            root=root,
            model=str(data.get("model") or root.name),
            template=data["template"],
            categories=tuple((str(c), str(n)) for c, n in data["categories"]),
            tokens=data["tokens"],
            variants=data["variants"],
        )

    def pick_variant(self, device: str, wanted: str | None = None) -> str:
        """The variant for ``device`` ("cuda"/"cpu"), or ``wanted`` when the directory has it."""
        if wanted:
            if wanted not in self.variants:
                raise ValueError(f"variant {wanted!r} not in {sorted(self.variants)}")
            return wanted
        for name in VARIANT_ORDER["cuda" if device.startswith("cuda") else "cpu"]:
            if name in self.variants:
                return name
        return next(iter(self.variants))


def find_model(models_dir: str | Path) -> Path | None:
    """The first directory under ``models_dir`` holding a Llama Guard manifest (1B before 8B)."""
    root = Path(models_dir)
    if not root.is_dir():
        return None
    found = []
    for manifest in sorted(root.glob(f"*/{MANIFEST}")):
        try:
            if json.loads(manifest.read_text()).get("format") == MANIFEST_FORMAT:
                found.append(manifest.parent)
        except (OSError, ValueError):
            log.warning("unreadable manifest %s ignored", manifest)
    found.sort(key=lambda p: ("8b" in p.name.lower(), p.name))
    return found[0] if found else None


# --------------------------------------------------------------------------- onnx model


@dataclass
class KV:
    """A key/value cache: per-name tensors (numpy, or OrtValues on the GPU), its mask and row lengths."""

    values: dict[str, Any]
    mask: np.ndarray  # [batch, past] int64, 1 = attended
    lengths: np.ndarray  # [batch] real tokens per row (the next position id)

    @property
    def batch(self) -> int:
        return int(self.mask.shape[0])


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _host(value: Any) -> np.ndarray:
    """A cache tensor as a host array (OrtValues are copied down from their device)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


class OnnxLlama:
    """One exported decoder session with the two operations Llama Guard needs: run and expand.

    Not thread-safe by design: only the detector's model thread calls it.
    """

    def __init__(
        self, model_path: Path, device: str = "auto", kv_expand: Path | None = None, iobinding: bool | None = None
    ):
        """``iobinding`` defaults to on for CUDA; forcing it on a CPU runs the same binding code (tests)."""
        from llmwall.detectors.onnx_session import make_session

        self.session, self.device = make_session(model_path, device)
        inputs = {i.name: i for i in self.session.get_inputs()}
        for name in ("input_ids", "attention_mask", "position_ids"):
            if name not in inputs:
                raise ValueError(f"{model_path}: input {name!r} missing (not a text-generation-with-past export)")
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        if not self.past_names:
            raise ValueError(f"{model_path}: no past_key_values inputs")
        first = inputs[self.past_names[0]]
        self.kv_dtype = _NP_TYPES[first.type]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.present_of = {n: "present." + n[len("past_key_values.") :] for n in self.past_names}
        self.on_cuda = self.device.startswith("cuda")
        self.device_id = int(self.device.partition(":")[2] or 0) if self.on_cuda else 0
        self.bound = self.on_cuda if iobinding is None else iobinding
        self.bind_device = "cuda" if self.on_cuda else "cpu"  # where bound caches live
        self.expander = None
        if self.bound and kv_expand is not None and kv_expand.exists():
            self.expander, _ = make_session(kv_expand, self.device)

    # -- cache helpers -------------------------------------------------------

    def empty(self, batch: int) -> KV:
        """A zero-length cache, for a run without a prefix."""
        shape = (batch, self.kv_heads, 0, self.head_dim)
        values = {n: np.zeros(shape, dtype=self.kv_dtype) for n in self.past_names}
        return KV(values, np.zeros((batch, 0), dtype=np.int64), np.zeros(batch, dtype=np.int64))

    def expand(self, prefix: KV, batch: int) -> KV:
        """The batch-1 ``prefix`` repeated ``batch`` times (on the GPU when it lives there)."""
        if batch == 1:
            return prefix
        mask = np.repeat(prefix.mask, batch, axis=0)
        lengths = np.repeat(prefix.lengths, batch, axis=0)
        if not self.bound:
            return KV({n: np.repeat(v, batch, axis=0) for n, v in prefix.values.items()}, mask, lengths)
        if self.expander is None:
            values = {n: self._to_device(np.repeat(_host(v), batch, axis=0)) for n, v in prefix.values.items()}
            return KV(values, mask, lengths)
        past_len = int(prefix.mask.shape[1])
        binding = self.expander.io_binding()
        binding.bind_cpu_input("shape", np.array([batch, self.kv_heads, past_len, self.head_dim], dtype=np.int64))
        outs = []
        for name, value in prefix.values.items():
            binding.bind_ortvalue_input(name, value)
            out = "expanded." + name[len("past_key_values.") :]
            binding.bind_output(out, self.bind_device, self.device_id)
            outs.append(name)
        self.expander.run_with_iobinding(binding)
        return KV(dict(zip(outs, binding.get_outputs(), strict=False)), mask, lengths)

    def select(self, kv: KV, rows: Sequence[int]) -> KV:
        """The cache of some rows only (rare path: unsafe rows go on decoding)."""
        idx = np.asarray(rows, dtype=np.int64)
        if self.bound:
            values = {n: self._to_device(_host(v)[idx]) for n, v in kv.values.items()}
        else:
            values = {n: np.ascontiguousarray(v[idx]) for n, v in kv.values.items()}
        return KV(values, kv.mask[idx], kv.lengths[idx])

    def _to_device(self, array: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.bind_device, self.device_id)

    # -- forward -------------------------------------------------------------

    def run(self, rows: Sequence[Sequence[int]], past: KV, pad_id: int) -> tuple[np.ndarray, KV]:
        """Feed one new token sequence per row after ``past``; return last-token logits [B, V] and the cache.

        Rows are right-padded; position ids continue each row's own length, and the mask
        hides the padding (also from later steps, where it sits mid-sequence).
        """
        batch = len(rows)
        if past.batch != batch:
            raise ValueError(f"cache has {past.batch} rows, got {batch}")
        width = max(len(r) for r in rows)
        if width == 0:
            raise ValueError("empty row")
        ids = np.full((batch, width), pad_id, dtype=np.int64)
        new_mask = np.zeros((batch, width), dtype=np.int64)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = row
            new_mask[b, : len(row)] = 1
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        positions = past.lengths[:, None] + np.arange(width, dtype=np.int64)[None, :]
        mask = np.concatenate([past.mask, new_mask], axis=1)
        if self.bound:
            logits, present = self._run_bound(ids, mask, positions, past)
        else:
            feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past.values}
            outputs = dict(zip(self.output_names, self.session.run(None, feeds), strict=False))
            logits = outputs["logits"]
            present = {n: outputs[self.present_of[n]] for n in self.past_names}
        return np.asarray(logits, dtype=np.float32)[:, -1, :], KV(present, mask, past.lengths + lengths)

    def _run_bound(self, ids, mask, positions, past: KV):
        """IOBinding: small int inputs are copied up, the cache stays on the GPU, logits come down."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_cpu_input("position_ids", positions)
        for name, value in past.values.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            if name == "logits":
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, self.bind_device, self.device_id)
        self.session.run_with_iobinding(binding)
        outputs = dict(zip(self.output_names, binding.get_outputs(), strict=False))
        logits = outputs["logits"].numpy()
        return logits, {n: outputs[self.present_of[n]] for n in self.past_names}


# --------------------------------------------------------------------------- scoring


def p_unsafe(logits: np.ndarray, safe_id: int, unsafe_id: int) -> np.ndarray:
    """P(unsafe) per row, normalised over the two verdict tokens (a numerically safe sigmoid)."""
    diff = logits[:, unsafe_id].astype(np.float64) - logits[:, safe_id].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(diff, -60, 60)))


def softmax_at(logits: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """Full-vocabulary softmax probabilities of ``ids`` per row."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    denom = np.exp(shifted).sum(axis=1, keepdims=True)
    return np.exp(shifted[:, list(ids)]) / denom


@dataclass
class _Job:
    """One prompt waiting for the model thread."""

    key: tuple  # prefix cache key
    header: str
    tail_ids: list[int]
    custom_codes: Mapping[str, str] | None  # code -> label for a custom-topic job
    deadline: float
    future: Future = field(default_factory=Future)


@dataclass(frozen=True)
class Result:
    """What one job produced."""

    p_unsafe: float
    categories: tuple[str, ...] = ()
    custom: Mapping[str, int] | None = None


class LlamaGuardEngine:
    """Tokenises, queues, batches and scores; the part of the detector that owns the model."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        *,
        variant: str | None = None,
        threshold: float = 0.5,
        prefix_cache: bool = True,
        max_batch: int = 16,
        max_wait_ms: float = 3.0,
        max_batch_tokens: int | None = None,
        max_user_tokens: int = 2048,
        iobinding: bool | None = None,
    ):
        from tokenizers import Tokenizer

        from llmwall.detectors.onnx_session import resolve_device

        self.manifest = Manifest.load(Path(model_dir))
        target = resolve_device(device)
        self.variant = self.manifest.pick_variant(target, variant or os.environ.get(VARIANT_ENV) or None)
        entry = self.manifest.variants[self.variant]
        root = self.manifest.root
        self.model = OnnxLlama(
            root / entry["model"], device, root / entry["kv_expand"] if entry.get("kv_expand") else None, iobinding
        )
        self.device = self.model.device
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.template = lgp.template_for(self.manifest.template, self.manifest.categories)
        tok = self.manifest.tokens
        self.safe_id, self.unsafe_id, self.eot_id = int(tok["safe"]), int(tok["unsafe"]), int(tok["eot"])
        self.blank_id = int(tok["blank_line"])
        self._check_tokens()
        self.line = lgp.category_line(self.encode, self.unsafe_id, self.template.categories)
        self.threshold = threshold
        self.prefix_cache = prefix_cache
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_tokens = max_batch_tokens or MAX_BATCH_TOKENS["cuda" if self.model.on_cuda else "cpu"]
        self.max_user_tokens = max_user_tokens
        self._prefixes: OrderedDict[tuple, KV] = OrderedDict()  # model thread only
        self._header_ids: OrderedDict[tuple, list[int]] = OrderedDict()  # model thread only
        self.stats = {"batches": 0, "rows": 0, "expired": 0}  # written by the model thread only
        self.sec_per_token: float | None = None  # measured prefill cost, for deadline-aware batching
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="llama-guard", daemon=True)
        self._thread.start()

    def _check_tokens(self) -> None:
        """The manifest's ids must be what this tokenizer produces, or scores would be silently wrong."""
        for text, expected in (("safe", self.safe_id), ("unsafe", self.unsafe_id), ("\n\n", self.blank_id)):
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
            if ids != [expected]:
                raise ValueError(f"manifest token id for {text!r} is {expected}, tokenizer says {ids}")

    # -- prompt side (caller threads) -------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def tail_ids(self, template: lgp.PromptTemplate, text: str, user_text: str = "") -> tuple[list[int], bool]:
        """Token ids of the request's part (+ the verdict's leading blank line); truncated flag.

        ``text`` is the judged message; ``user_text`` the user turn before it (agent role only),
        already bounded by ``lgp.context_of``. Long messages keep their beginning and end (an
        attack can sit in either), cut by characters first so the token boundaries stay those
        of the real text.
        """
        text, truncated = text.strip(), False
        limit_chars = self.max_user_tokens * 4
        while True:
            ids = self.encode(template.tail(text, user_text)) + [self.blank_id]
            if len(ids) <= self.max_user_tokens + 96 or len(text) < 64:
                return ids, truncated
            limit_chars = min(limit_chars, len(text)) * 3 // 4
            text, truncated = lgp.shorten(text, limit_chars), True

    def submit(
        self,
        key: tuple,
        template: lgp.PromptTemplate,
        text: str,
        deadline: float,
        custom_codes: Mapping[str, str] | None = None,
        user_text: str = "",
    ) -> tuple[_Job, bool]:
        """Queue one prompt; the returned job's future resolves to a ``Result``.

        ``key`` names the prompt's header (the cached prefix): jobs are batched per key, so two
        templates must never share one (the role is part of every key the detector uses)."""
        tail, truncated = self.tail_ids(template, text, user_text)
        job = _Job(key=key, header=template.header(), tail_ids=tail, custom_codes=custom_codes, deadline=deadline)
        self._queue.put(job)
        return job, truncated

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    # -- model thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, stop = [job], False
            until = time.monotonic() + self.max_wait
            while len(jobs) < self.max_batch:
                try:
                    wait = until - time.monotonic()
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._process(jobs)
            if stop:
                return

    def _process(self, jobs: list[_Job]) -> None:
        live = [j for j in jobs if self._claim(j)]
        groups: dict[tuple, list[_Job]] = {}
        for j in live:
            groups.setdefault(j.key, []).append(j)
        for group in groups.values():
            group.sort(key=lambda j: (j.deadline, len(j.tail_ids)))
            for batch in self._split(group, time.monotonic()):
                now = time.monotonic()
                batch = [j for j in batch if self._can_finish(j, now) or self._expire(j)]
                if not batch:
                    continue
                self.stats["batches"] += 1
                self.stats["rows"] += len(batch)
                try:
                    if self.prefix_cache:  # a new policy's prefix is a one-off cost, not a per-token one
                        self._prefix(batch[0].key, batch[0].header)
                    started = time.monotonic()
                    results = self._score(batch)
                except Exception as exc:  # one bad batch must not kill the model thread
                    log.warning("llama guard batch failed: %s", type(exc).__name__)
                    for j in batch:
                        j.future.set_exception(exc)
                    continue
                self._observe(batch, time.monotonic() - started)
                for j, r in zip(batch, results, strict=False):
                    j.future.set_result(r)

    def _claim(self, job: _Job) -> bool:
        """Mark a job running; False when its caller already gave up or its deadline passed."""
        if not job.future.set_running_or_notify_cancel():
            self.stats["expired"] += 1  # its caller gave up at its deadline
            return False
        return job.deadline > time.monotonic() or self._expire(job)

    def _expire(self, job: _Job) -> bool:
        """Fail a job that cannot be scored before its deadline (always False, for filters)."""
        self.stats["expired"] += 1
        job.future.set_exception(TimeoutError("not scorable before the deadline"))
        return False

    def _can_finish(self, job: _Job, now: float) -> bool:
        """Whether ``job`` alone would end before its deadline at the measured cost per token.

        A job that would end later is answered "not scored" at once: its caller gives up at the
        deadline anyway, and under load the compute goes to the jobs behind it instead.
        """
        return now + (self.sec_per_token or 0.0) * self._width(job) < job.deadline

    def _width(self, job: _Job) -> int:
        return len(job.tail_ids) + (0 if self.prefix_cache else len(self._header(job)))

    def _observe(self, batch: list[_Job], seconds: float) -> None:
        """Update the seconds-per-padded-token estimate (EMA) that deadline-aware batching uses."""
        tokens = len(batch) * max(self._width(j) for j in batch)
        rate = seconds / max(1, tokens)
        self.sec_per_token = rate if self.sec_per_token is None else 0.7 * self.sec_per_token + 0.3 * rate

    def _split(self, group: list[_Job], now: float) -> list[list[_Job]]:
        """Deadline-ordered sub-batches within the row and padded-token budgets.

        On a slow device (a CPU) one big batch finishes everyone late: a batch is closed
        when, by the measured cost per token, adding the next job would end it after the
        earliest deadline in it, so the earliest requests are scored in time instead.
        """
        out: list[list[_Job]] = []
        current: list[_Job] = []
        width, clock = 0, now
        spt = self.sec_per_token
        for j in group:
            w = max(width, self._width(j))
            if current:
                rows = len(current) + 1
                too_big = rows > self.max_batch or w * rows > self.max_batch_tokens
                late = spt is not None and clock + spt * w * rows > current[0].deadline
                if too_big or late:
                    clock += (spt or 0.0) * width * len(current)
                    out.append(current)
                    current, w = [], self._width(j)
            current.append(j)
            width = w
        if current:
            out.append(current)
        return out

    def _header(self, job: _Job) -> list[int]:
        """The policy header's token ids (cached like the prefix, for runs without the KV cache)."""
        ids = self._header_ids.get(job.key)
        if ids is None:
            ids = self._header_ids[job.key] = self.encode(job.header)
            while len(self._header_ids) > 8:
                self._header_ids.popitem(last=False)
        return ids

    def _prefix(self, key: tuple, header: str) -> KV:
        """The header's cache, computed once per policy (a few custom-topic policies kept, LRU)."""
        kv = self._prefixes.get(key)
        if kv is None:
            model = self.model
            _, kv = model.run([self.encode(header)], model.empty(1), self.eot_id)
            self._prefixes[key] = kv
            while len(self._prefixes) > 8:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(key)
        return kv

    def _score(self, batch: list[_Job]) -> list[Result]:
        model, n = self.model, len(batch)
        if self.prefix_cache:
            past = model.expand(self._prefix(batch[0].key, batch[0].header), n)
            rows = [j.tail_ids for j in batch]
        else:
            past = model.empty(n)
            rows = [self._header(j) + j.tail_ids for j in batch]
        logits, kv = model.run(rows, past, self.eot_id)
        probs = p_unsafe(logits, self.safe_id, self.unsafe_id)
        if batch[0].custom_codes is not None:
            return self._custom(batch, probs, kv)
        unsafe_rows = [i for i in range(n) if probs[i] >= self.threshold]
        cats: dict[int, tuple[str, ...]] = {}
        if unsafe_rows:
            found = self._categories(model.select(kv, unsafe_rows) if len(unsafe_rows) < n else kv)
            cats = dict(zip(unsafe_rows, found, strict=False))
        return [Result(float(probs[i]), cats.get(i, ())) for i in range(n)]

    def _categories(self, kv: KV) -> list[tuple[str, ...]]:
        """The category list after a forced ``unsafe``, for every row of ``kv``.

        Each round feeds the fixed tokens before a number and picks the most likely policy
        code not yet listed (an unsafe verdict always names one), then feeds that number and
        goes on only where the model's most likely next token starts ``,S``, the way greedy
        decoding would. Two model steps per category instead of one per token, and a model
        that wanders off the format costs two steps, not a run to a token limit.
        """
        model, n = self.model, kv.batch
        chosen: list[list[str]] = [[] for _ in range(n)]
        active = list(range(n))
        codes = self.line.codes
        step = [[self.unsafe_id, *self.line.lead]] * n
        while active:
            logits, kv = model.run(step, kv, self.eot_id)
            picks = []
            for row, i in enumerate(active):
                best = max((c for c in codes if c not in chosen[i]), key=lambda c: logits[row, codes[c]])
                chosen[i].append(best)
                picks.append([codes[best]])
            logits, kv = model.run(picks, kv, self.eot_id)
            going = [
                row
                for row, i in enumerate(active)
                if int(logits[row].argmax()) == self.line.separator[0] and len(chosen[i]) < len(codes)
            ]
            if going and len(going) < len(active):
                kv = model.select(kv, going)
            active = [active[row] for row in going]
            step = [list(self.line.separator)] * len(active)
        return [tuple(c) for c in chosen]

    def _custom(self, batch: list[_Job], probs: np.ndarray, kv: KV) -> list[Result]:
        """Relevance of each custom topic = P(unsafe) x P(its code after ``unsafe\\nS``)."""
        logits, _ = self.model.run([[self.unsafe_id, *self.line.lead]] * len(batch), kv, self.eot_id)
        results = []
        for i, job in enumerate(batch):
            labels = job.custom_codes or {}
            codes = list(labels)
            ids = [self._code_token(c) for c in codes]
            p_code = softmax_at(logits[i : i + 1], ids)[0]
            custom = {labels[c]: relevance_score(float(probs[i] * p)) for c, p in zip(codes, p_code, strict=False)}
            results.append(Result(float(probs[i]), (), custom))
        return results

    def _code_token(self, code: str) -> int:
        """The token of a code's number (its first token when the vocabulary splits it)."""
        if code in self.line.codes:
            return self.line.codes[code]
        return self.encode(f"unsafe\n{code}")[len(self.line.lead) + 1]


# --------------------------------------------------------------------------- detector


class LlamaGuardDetector(Detector):
    """Llama Guard 3 as an llmwall detector (local ONNX)."""

    name = "llama_guard"
    provides = fields.UNSAFE_FIELDS | fields.CUSTOM_TOPIC_FIELDS
    reads_reply_to = True

    def __init__(self, model_dir: str | Path, device: str = "auto", threshold: float = 0.5, **engine_options: Any):
        self.engine = LlamaGuardEngine(model_dir, device, threshold=threshold, **engine_options)

    def describe(self) -> str:
        e = self.engine
        codes = [c for c, _ in e.template.categories]
        return (
            f"llama_guard: {e.manifest.model} ({e.variant}) on {e.device}, {codes[0]}..{codes[-1]}, "
            f"threshold {e.threshold}, prefix cache {'on' if e.prefix_cache else 'off'}, batch <= {e.max_batch}"
        )

    def detect(self, request: ScreenRequest) -> Detection:
        e = self.engine
        text = request.prompt.text
        if time.monotonic() >= request.deadline:
            raise NotScored("deadline already passed")
        if not text.strip():
            return Detection(
                fields={UNSAFE_TOPIC_DETECTED: False, UNSAFE_TOPIC_CATEGORIES: []},
                info={"p_unsafe": 0.0, "device": e.device},
            )
        # An answer is judged as the Agent's turn after the user turn it answers; a prompt as the User's.
        template, user_text = e.template, ""
        if request.reply_to is not None:
            template, user_text = e.template.agent(), lgp.context_of(request.reply_to)
        job, truncated = e.submit(("policy", template.role), template, text, request.deadline, user_text=user_text)
        custom_job = None
        if request.custom_topics and CUSTOM_TOPIC_CATEGORIES in request.wanted:
            cats, codes = lgp.custom_categories(request.custom_topics)
            custom = replace(template, categories=cats)
            key = ("custom", template.role, cats)
            custom_job, _ = e.submit(key, custom, text, request.deadline, codes, user_text)
        result = _wait(job, request.deadline)
        out: dict[str, object] = {
            UNSAFE_TOPIC_DETECTED: result.p_unsafe >= e.threshold,
            UNSAFE_TOPIC_CATEGORIES: list(result.categories) if result.p_unsafe >= e.threshold else [],
        }
        info: dict[str, object] = {"p_unsafe": round(result.p_unsafe, 6), "device": e.device, "variant": e.variant}
        if truncated:
            info["truncated"] = True
        if custom_job is not None:
            try:
                out[CUSTOM_TOPIC_CATEGORIES] = dict(_wait(custom_job, request.deadline).custom or {})
            except NotScored:  # the verdict stands; the custom-topic field stays absent (not scored)
                info["custom_topics_not_scored"] = True
        return Detection(fields=out, info=info)

    def close(self) -> None:
        self.engine.close()


def _wait(job: _Job, deadline: float) -> Result:
    """The job's result, or NotScored at the deadline (the model thread then skips it)."""
    remaining = deadline - time.monotonic()
    try:
        if remaining <= 0:
            raise TimeoutError
        return job.future.result(timeout=remaining)
    except TimeoutError:  # concurrent.futures.TimeoutError is this builtin since Python 3.11
        job.future.cancel()
        raise NotScored("llama guard: not scored before the deadline") from None


def create(config: DetectorConfig) -> Detector | None:
    """The local Llama Guard detector for ``config``, or None.

    None also when a remote server is configured: ``llama_guard_remote.create`` comes first
    in ``detectors._FACTORIES`` and the local model is then not even loaded.
    """
    if config.remote_llama_guard:
        return None
    model_dir = find_model(config.models_dir)
    if model_dir is None:
        log.info("no Llama Guard model under %s; %s", config.models_dir, EXPORT_HINT)
        return None
    try:
        return LlamaGuardDetector(model_dir, config.device, config.unsafe_threshold)
    except Exception as exc:  # a broken model directory must not stop the proxy
        log.error(
            "Llama Guard model in %s could not be loaded (%s: %s); %s", model_dir, type(exc).__name__, exc, EXPORT_HINT
        )
        return None
