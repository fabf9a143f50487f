"""llmwall.detectors.onnx_session: device parsing, provider choice and honest device reporting."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from llmwall.detectors import onnx_session

MODEL = Path(__file__).resolve().parent / "fixtures" / "tiny-llama-guard" / "fp32" / "kv_expand.onnx"


@pytest.mark.parametrize(
    "device,expected",
    [
        ("auto", ("auto", 0)),
        ("CPU", ("cpu", 0)),
        ("cuda", ("cuda", 0)),
        ("cuda:3", ("cuda", 3)),
        (" cuda:1 ", ("cuda", 1)),
    ],
)
def test_parse_device(device: str, expected: tuple[str, int]) -> None:
    assert onnx_session.parse_device(device) == expected


@pytest.mark.parametrize("device", ["gpu", "cpu:1", "cuda:x", "", "tpu:0"])
def test_parse_device_rejects(device: str) -> None:
    with pytest.raises(ValueError):
        onnx_session.parse_device(device)


def test_resolve_device_without_cuda(monkeypatch, caplog) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_session.resolve_device("auto") == "cpu"
    assert onnx_session.resolve_device("cuda") == "cpu"
    assert "onnxruntime-gpu" in caplog.text


def test_resolve_device_with_cuda(monkeypatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_session.resolve_device("auto") == "cuda"
    assert onnx_session.resolve_device("cpu") == "cpu"


def test_make_session_on_cpu() -> None:
    session, device = onnx_session.make_session(MODEL, "cpu")
    assert device == "cpu" and session.get_providers() == ["CPUExecutionProvider"]


def test_make_session_reports_cpu_when_cuda_fails_to_load(monkeypatch) -> None:
    """A GPU build whose CUDA libraries are missing must not be reported as running on CUDA."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a real CUDA build: nothing to simulate")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    session, device = onnx_session.make_session(MODEL, "cuda:0")
    assert device == "cpu" and "CUDAExecutionProvider" not in session.get_providers()


def test_thread_cap_from_environment(monkeypatch) -> None:
    monkeypatch.setenv(onnx_session.THREADS_ENV, "1")
    assert onnx_session.session_options().intra_op_num_threads == 1
    monkeypatch.setenv(onnx_session.THREADS_ENV, "lots")
    assert onnx_session.session_options().intra_op_num_threads == 0  # onnxruntime's default
    assert onnx_session.session_options(threads=2).intra_op_num_threads == 2


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_make_session_on_cuda() -> None:
    session, device = onnx_session.make_session(MODEL, "cuda")
    assert device == "cuda:0" and session.get_providers()[0] == "CUDAExecutionProvider"
