#!/usr/bin/env python3
"""Which weight quantisation onnxruntime runs fastest on this CPU: one prefill-sized MatMul.

Why it exists: the Llama Guard export offers int8 (dynamic, ``MatMulInteger``) and int4
(``MatMulNBits``); the CPU default is whichever the kernels here make faster. One
[128 x 2048] x [2048 x 8192] product (a 1B MLP projection over a 128-token prefill), each
variant quantised from the same random weights, 20 timed runs after 3 warm-ups.

    .venv-export/bin/python scripts/bench_quant_kernels.py [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

M, K, N = 128, 2048, 8192


def variants(fp32: Path, work: Path) -> dict[str, Path]:
    """Every variant of the one-MatMul model, written under ``work``."""
    out = {"fp32": fp32}
    int8 = work / "int8.onnx"
    quantize_dynamic(
        str(fp32),
        str(int8),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
    out["int8 dynamic (export's int8)"] = int8
    for bits, block, level in ((4, 32, 4), (4, 32, 0), (4, 128, 4), (8, 32, 4)):
        path = work / f"nbits{bits}-{block}-{level}.onnx"
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(fp32)), bits=bits, block_size=block, is_symmetric=True, accuracy_level=level
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(path))
        label = f"MatMulNBits {bits}-bit, block {block}, accuracy level {level}"
        out[label + (" (export's int4)" if (bits, block, level) == (4, 32, 4) else "")] = path
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((K, N)) * 0.02).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(fp32))
        print(f"| variant ({M}x{K} @ {K}x{N}, {args.threads} threads) | ms per run |\n| --- | ---: |")
        for label, path in variants(fp32, Path(tmp)).items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            for _ in range(3):
                session.run(None, {"x": x})
            start = time.perf_counter()
            for _ in range(20):
                session.run(None, {"x": x})
            print(f"| {label} | {(time.perf_counter() - start) / 20 * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
