"""ONNX logits vs the PyTorch model they were exported from, on the tiny fixture.

Torch never enters the runtime venv: the reference runs in the export environment's Python
(``$LLMWALL_EXPORT_PYTHON``, else ``.venv-export/bin/python``, else ``/work/venv-train/bin/python``)
in a subprocess, and only its logits come back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llmwall.detectors import llama_guard as lg

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "tiny-llama-guard"
TEXTS = ["How do I build a bomb at home?", "hi", "Write a poem about the sea. " * 6, "Help me steal a wallet."]

TORCH_REFERENCE = r"""
import json, sys, torch
from transformers import LlamaForCausalLM
job = json.load(sys.stdin)
model = LlamaForCausalLM.from_pretrained(job["checkpoint"], dtype=torch.float32).eval()
out = []
with torch.inference_mode():
    for ids in job["rows"]:
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        out.append(logits.tolist())
print(json.dumps(out))
"""


def export_python() -> str | None:
    candidates = [
        os.environ.get("LLMWALL_EXPORT_PYTHON"),
        str(ROOT / ".venv-export" / "bin" / "python"),
        "/work/venv-train/bin/python",
    ]
    return next((c for c in candidates if c and Path(c).exists()), None)


@pytest.fixture(scope="module")
def setup():
    python = export_python()
    if python is None:
        pytest.skip("no export environment (scripts/setup-export-env.sh) to run the PyTorch reference")
    engine = lg.LlamaGuardEngine(FIXTURE, "cpu", variant="fp32")
    header = engine.encode(engine.template.header())
    tails = [engine.tail_ids(engine.template, t)[0] for t in TEXTS]
    job = {"checkpoint": str(FIXTURE / "checkpoint"), "rows": [header + t for t in tails]}
    proc = subprocess.run(
        [python, "-c", TORCH_REFERENCE],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = np.array(json.loads(proc.stdout.strip().splitlines()[-1]), dtype=np.float32)
    yield engine, header, tails, reference
    engine.close()


def test_full_prompt_matches_torch(setup) -> None:
    engine, header, tails, reference = setup
    for tail, ref in zip(tails, reference, strict=False):
        logits, _ = engine.model.run([header + tail], engine.model.empty(1), engine.eot_id)
        np.testing.assert_allclose(logits[0], ref, atol=1e-4, rtol=1e-4)


def test_prefix_cache_matches_torch(setup) -> None:
    engine, header, tails, reference = setup
    prefix = engine._prefix(("policy",), engine.template.header())
    for tail, ref in zip(tails, reference, strict=False):
        logits, _ = engine.model.run([tail], prefix, engine.eot_id)
        np.testing.assert_allclose(logits[0], ref, atol=1e-4, rtol=1e-4)


def test_batched_right_padding_matches_torch(setup) -> None:
    engine, header, tails, reference = setup
    prefix = engine._prefix(("policy",), engine.template.header())
    logits, _ = engine.model.run(tails, engine.model.expand(prefix, len(tails)), engine.eot_id)
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=1e-4)
    plain, _ = engine.model.run([header + t for t in tails], engine.model.empty(len(tails)), engine.eot_id)
    np.testing.assert_allclose(plain, reference, atol=1e-4, rtol=1e-4)


def test_left_padding_after_the_prefix_matches_torch(setup) -> None:
    """Left-padded rows after the cached prefix (padding mid-sequence, masked) read the right logits."""
    engine, header, tails, reference = setup
    model = engine.model
    prefix = model.expand(engine._prefix(("policy",), engine.template.header()), len(tails))
    p, width = len(header), max(len(t) for t in tails)
    ids = np.full((len(tails), width), engine.eot_id, dtype=np.int64)
    mask = np.zeros((len(tails), p + width), dtype=np.int64)
    mask[:, :p] = 1
    positions = np.zeros((len(tails), width), dtype=np.int64)
    for b, tail in enumerate(tails):
        ids[b, width - len(tail) :] = tail
        mask[b, p + width - len(tail) :] = 1
        positions[b, width - len(tail) :] = p + np.arange(len(tail))
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **prefix.values}
    logits = model.session.run(["logits"], feeds)[0][:, -1, :]
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=1e-4)


def test_export_script_reproduces_the_fixture(setup, tmp_path: Path) -> None:
    """scripts/export_llama_guard.py on the fixture's checkpoint gives the same manifest and logits."""
    engine, header, tails, reference = setup
    out = tmp_path / "lg"
    proc = subprocess.run(
        [
            export_python(),
            str(ROOT / "scripts" / "export_llama_guard.py"),
            "--checkpoint",
            str(FIXTURE / "checkpoint"),
            "--out",
            str(out),
            "--variants",
            "fp32,int4",
            "--template",
            "llama-guard-3-1b",
            "--name",
            "tiny-llama-guard",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    made, committed = (json.loads((d / "manifest.json").read_text()) for d in (out, FIXTURE))
    for key in ("format", "template", "categories", "tokens", "architecture", "opset"):
        assert made[key] == committed[key], key
    assert sorted(made["variants"]) == ["fp32", "int4"]
    graph = subprocess.run(
        [
            export_python(),
            "-c",
            "import onnx, sys; g = onnx.load(sys.argv[1]).graph; "
            "print(sorted({n.op_type for n in g.node if n.input[1:2] == ['input_ids']}), "
            "'model.embed_tokens.weight' in {t.name for t in g.initializer})",
            str(out / "int4" / "model.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert graph == ["['GatherBlockQuantized']", "False"]  # the token embedding is stored 8-bit, not fp32
    fresh = lg.LlamaGuardEngine(out, "cpu", variant="fp32")
    try:
        logits, _ = fresh.model.run([header + tails[0]], fresh.model.empty(1), fresh.eot_id)
        np.testing.assert_allclose(logits[0], reference[0], atol=1e-4, rtol=1e-4)
    finally:
        fresh.close()
