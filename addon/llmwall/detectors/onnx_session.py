"""One place that decides where an ONNX model runs and how its session is tuned.

Every ONNX detector asks ``make_session`` instead of building ``InferenceSession``
itself, so that device selection ("auto" prefers CUDA when the onnxruntime-gpu
build is installed), thread counts and log noise are the same everywhere, and
the device string that the start-up log prints is the one the session really got
(onnxruntime silently drops to CPU when the CUDA libraries fail to load).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

#: Environment variable that caps onnxruntime's intra-op threads per session; the
#: default (onnxruntime's: one per physical core) oversubscribes small machines when
#: several detectors run at once.
THREADS_ENV = "LLMWALL_ORT_THREADS"
#: Session config key that lets intra-op threads spin between parallel sections.
SPINNING_KEY = "session.intra_op.allow_spinning"


def cuda_available() -> bool:
    """True when the installed onnxruntime build offers the CUDA execution provider."""
    return CUDA_PROVIDER in ort.get_available_providers()


def parse_device(device: str) -> tuple[str, int]:
    """Split ``"auto" | "cpu" | "cuda" | "cuda:N"`` into (kind, device id); raises ValueError."""
    kind, _, index = device.strip().lower().partition(":")
    if kind not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N")
    if index and (kind != "cuda" or not index.isdigit()):
        raise ValueError(f"bad device index in {device!r}")
    return kind, int(index or 0)


def resolve_device(device: str = "auto") -> str:
    """The device a session for ``device`` would be asked to use: ``"cuda"`` or ``"cpu"``.

    An explicit ``cuda`` without the GPU build falls back to CPU with a warning,
    because a missing GPU must never stop the proxy from starting.
    """
    kind, _ = parse_device(device)
    if kind == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if kind == "cuda":
        log.warning(
            "device=cuda requested but this onnxruntime build has no CUDAExecutionProvider "
            "(install onnxruntime-gpu instead of onnxruntime); using CPU"
        )
    return "cpu"


def env_threads() -> int | None:
    """The thread cap set in ``LLMWALL_ORT_THREADS``, or None."""
    env = os.environ.get(THREADS_ENV, "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options shared by all detectors: full graph optimisation, quiet logs."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: shape-inference warnings are noise here
    if threads is None:
        threads = env_threads()
    if threads:
        opts.intra_op_num_threads = threads
    # onnxruntime's idle pool threads spin-wait for the next parallel section by default:
    # on a proxy they burn the CPU the event loop and the other detectors need (measured:
    # 25 -> 15-17 ms of CPU per screened request, docs/benchmarks.md "Where the time goes").
    opts.add_session_config_entry(SPINNING_KEY, "0")
    return opts


def _cuda_provider_options(device_id: int) -> dict[str, str]:
    """CUDA EP options: grow the arena only as needed (several models share one GPU)."""
    return {
        "device_id": str(device_id),
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1",
    }


def make_session(
    path: str | Path,
    device: str = "auto",
    *,
    threads: int | None = None,
    options: ort.SessionOptions | None = None,
) -> tuple[ort.InferenceSession, str]:
    """Load ``path`` on the best device for ``device``; return (session, ``"cuda:N"`` or ``"cpu"``).

    The returned string reflects the providers the session actually holds, so a
    CUDA build whose libraries are broken reports ``cpu`` rather than lying.
    """
    _, device_id = parse_device(device)
    target = resolve_device(device)
    opts = options if options is not None else session_options(threads)
    if target == "cuda":
        preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21: CUDA libs from pip
        if preload is not None:
            try:
                preload()
            except Exception as exc:  # a missing optional library only means CPU later
                log.debug("onnxruntime.preload_dlls failed: %s", exc)
        providers: list = [(CUDA_PROVIDER, _cuda_provider_options(device_id)), CPU_PROVIDER]
    else:
        providers = [CPU_PROVIDER]
    session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    if target == "cuda" and CUDA_PROVIDER not in session.get_providers():
        log.warning("CUDA provider failed to initialise for %s; running on CPU", Path(path).name)
        return session, "cpu"
    return session, (f"cuda:{device_id}" if target == "cuda" else "cpu")
