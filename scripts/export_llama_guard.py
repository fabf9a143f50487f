#!/usr/bin/env python3
"""Export a Llama Guard 3 checkpoint (Hugging Face directory) to llmwall's ONNX model directory.

Run it with the export environment (``scripts/setup-export-env.sh``), never the proxy's:

    .venv-export/bin/python scripts/export_llama_guard.py \\
        --checkpoint ~/Llama-Guard-3-1B --out models/llama-guard-3-1b --variants fp32,fp16,int8,int4

Steps: optimum's ONNX exporter (task ``text-generation-with-past``: inputs ``input_ids``,
``attention_mask``, ``position_ids``, ``past_key_values.N.key/value``); one graph edit so the
model returns logits only at each row's last real token (a 128k-wide vocabulary times every
position would be gigabytes per batch); then fp16 (CUDA), int8 dynamic and int4 MatMulNBits
(CPU) variants, a small ``kv_expand.onnx`` per variant that broadcasts the cached policy
prefix over a batch on the GPU, the tokenizer and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
MANIFEST_FORMAT = "llmwall-llama-guard"
VARIANTS = ("fp32", "fp16", "int8", "int4")
#: Protobuf's 2 GB limit: above this the weights go to an external data file.
EXTERNAL_DATA_BYTES = 1_800_000_000
#: Embedding values per int8 scale (see quantize_embedding).
EMBEDDING_BLOCK = 32


def _load_prompt_module():
    """The runtime's prompt module, loaded by path: this script runs under another Python."""
    path = ROOT / "addon" / "llmwall" / "detectors" / "llama_guard_prompt.py"
    spec = importlib.util.spec_from_file_location("llama_guard_prompt", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


prompt = _load_prompt_module()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def guess_template(checkpoint: Path) -> str:
    """1B (16 layers, S1..S13) or 8B (32 layers, S1..S14) from config.json."""
    config = json.loads((checkpoint / "config.json").read_text())
    layers = config.get("num_hidden_layers")
    if layers == 16:
        return prompt.TEMPLATE_1B
    if layers == 32:
        return prompt.TEMPLATE_8B
    raise SystemExit(
        f"cannot tell Llama Guard 3 1B from 8B ({layers} layers): pass --template "
        f"{prompt.TEMPLATE_1B} or {prompt.TEMPLATE_8B}"
    )


def run_optimum(checkpoint: Path, out: Path, opset: int | None, validate: bool) -> None:
    """optimum's exporter, fp32 on CPU: every other variant is derived from this one."""
    from optimum.exporters.onnx import main_export

    main_export(
        str(checkpoint),
        output=str(out),
        task="text-generation-with-past",
        opset=opset,
        device="cpu",
        library_name="transformers",
        local_files_only=True,
        do_validation=validate,
    )


def last_token_logits(model_path: Path) -> None:
    """Edit the graph so ``logits`` is [batch, 1, vocab] at each row's last attended token.

    The row's last position is the last 1 in ``attention_mask`` minus the past length, so
    right padding, left padding and cached prefixes all read the right token, and the
    model keeps optimum's input/output names. Rewritten in place; weights are untouched.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    producer = next((n for n in graph.node if "logits" in n.output), None)
    if producer is None or producer.op_type != "MatMul":
        raise SystemExit(f"unexpected graph: logits come from {producer and producer.op_type}, not MatMul")
    past0 = next(i.name for i in graph.input if i.name.startswith("past_key_values.") and i.name.endswith(".key"))
    hidden = producer.input[0]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["lg_mask_i32"], to=TensorProto.INT32),
        helper.make_node("ArgMax", ["lg_mask_i32"], ["lg_last_total"], axis=1, keepdims=0, select_last_index=1),
        helper.make_node("Shape", [past0], ["lg_past_shape"], start=2, end=3),
        helper.make_node("Sub", ["lg_last_total", "lg_past_shape"], ["lg_last"]),
        helper.make_node("Unsqueeze", ["lg_last", "lg_axis1"], ["lg_index"]),
        helper.make_node("GatherND", [hidden, "lg_index"], ["lg_hidden_last"], batch_dims=1),
        helper.make_node("Unsqueeze", ["lg_hidden_last", "lg_axis1"], ["lg_hidden"]),
    ]
    graph.initializer.append(helper.make_tensor("lg_axis1", TensorProto.INT64, [1], [1]))
    producer.input[0] = "lg_hidden"
    index = list(graph.node).index(producer)
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    out = next(o for o in graph.output if o.name == "logits")
    dims = out.type.tensor_type.shape.dim
    dims[1].Clear()
    dims[1].dim_value = 1
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        raise SystemExit(f"opset {opset} too old for GatherND(batch_dims)/ArgMax(select_last_index)")
    onnx.save(model, str(model_path))


def _is_large(path: Path) -> bool:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file()) > EXTERNAL_DATA_BYTES


def _save(model, path: Path, large: bool) -> None:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    if large:
        onnx.save(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + "_data",
            size_threshold=1024,
        )
    else:
        onnx.save(model, str(path))


def make_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the weight MatMuls (per output channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        use_external_data_format=_is_large(src),
        extra_options={"MatMulConstBOnly": True},
    )


def make_int4(src: Path, dst: Path, block_size: int) -> None:
    """4-bit weight-only MatMulNBits; accuracy level 4 lets the CPU kernel use int8 dot products."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(src)), bits=4, block_size=block_size, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=_is_large(src))


def quantize_embedding(model_path: Path, block_size: int = EMBEDDING_BLOCK) -> None:
    """Store the token embedding as 8-bit blocks (``GatherBlockQuantized``), in place.

    Neither quantiser touches the embedding table's Gather, which leaves 128k x 2048 fp32
    (1 GB) in both CPU variants; per-block int8 keeps each row to within half a step of its
    block's largest value. The table's other users (a tied, transposed LM head) keep theirs.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    large = _is_large(model_path)
    model = onnx.load(str(model_path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    done = 0
    for index, node in enumerate(list(graph.node)):
        is_lookup = node.op_type == "Gather" and node.input[1] == "input_ids"
        table = inits.get(node.input[0]) if is_lookup else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or table.data_type != TensorProto.FLOAT or len(table.dims) != 2 or axis != 0:
            continue
        weights = numpy_helper.to_array(table)
        vocab, hidden = weights.shape
        block = block_size
        while hidden % block and block > 16:  # the kernel wants a power of two >= 16
            block //= 2
        if hidden % block:
            raise SystemExit(f"{model_path}: hidden size {hidden} has no power-of-two block >= 16")
        blocks = weights.reshape(vocab, hidden // block, block)
        scales = np.maximum(np.abs(blocks).max(axis=2), 1e-12) / 127.0
        quantized = (np.clip(np.rint(blocks / scales[..., None]), -127, 127) + 128).astype(np.uint8)
        names = [f"{table.name}_q8", f"{table.name}_q8_scales", f"{table.name}_q8_zero"]
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized.reshape(vocab, hidden), names[0]),
                numpy_helper.from_array(scales.astype(np.float32), names[1]),
                numpy_helper.from_array(np.full(scales.shape, 128, dtype=np.uint8), names[2]),
            ]
        )
        graph.node.remove(node)
        graph.node.insert(
            index,
            helper.make_node(
                "GatherBlockQuantized",
                [names[0], node.input[1], names[1], names[2]],
                list(node.output),
                name=(node.name or "embedding") + "_q8",
                domain="com.microsoft",
                gather_axis=0,
                quantize_axis=1,
                block_size=block,
                bits=8,
            ),
        )
        if users.get(table.name, 0) == 1:
            graph.initializer.remove(table)
        done += 1
    if not done:
        raise SystemExit(f"{model_path}: no fp32 embedding Gather found to quantise")
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    for f in model_path.parent.iterdir():  # the old external data, now all in memory
        if f.name.startswith(model_path.name) and f != model_path:
            f.unlink()
    _save(model, model_path, large)


def make_fp16(src: Path, dst: Path) -> None:
    """fp16 everywhere, inputs and outputs included, so the KV cache is half the size on the GPU."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    large = _is_large(src)
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=False, disable_shape_infer=large)
    _save(model, dst, large)


def make_kv_expand(model_path: Path, dst: Path) -> None:
    """A graph that broadcasts the batch-1 prefix cache to [batch, ...] on the model's device."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path), load_external_data=False)
    past = [i for i in model.graph.input if i.name.startswith("past_key_values.")]
    inputs = [helper.make_tensor_value_info("shape", TensorProto.INT64, [4])]
    outputs, nodes = [], []
    for value in past:
        elem = value.type.tensor_type.elem_type
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        inputs.append(helper.make_tensor_value_info(value.name, elem, [1, dims[1], "past", dims[3]]))
        out_name = "expanded." + value.name[len("past_key_values.") :]
        outputs.append(helper.make_tensor_value_info(out_name, elem, ["batch", dims[1], "past", dims[3]]))
        nodes.append(helper.make_node("Expand", [value.name, "shape"], [out_name]))
    graph = helper.make_graph(nodes, "kv_expand", inputs, outputs)
    expand = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    expand.ir_version = 8
    onnx.checker.check_model(expand)
    onnx.save(expand, str(dst))


def token_ids(tokenizer_path: Path) -> dict:
    """The token ids the runtime scores with; each must be one token in this vocabulary."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))

    def one(text: str) -> int:
        ids = tok.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise SystemExit(f"{text!r} is not a single token in this tokenizer: {ids}")
        return ids[0]

    return {
        "bos": one(prompt.BOS),
        "eot": one(prompt.EOT),
        "safe": one("safe"),
        "unsafe": one("unsafe"),
        "blank_line": one("\n\n"),
    }


def export(
    checkpoint: Path,
    out: Path,
    variants: list[str],
    template: str | None,
    name: str | None,
    opset: int | None,
    validate: bool,
    block_size: int,
) -> dict:
    """Run every step into ``out``; returns the manifest."""
    template = template or guess_template(checkpoint)
    categories = prompt.template_for(template).categories
    tokenizer_src = checkpoint / "tokenizer.json"
    if not tokenizer_src.exists():
        raise SystemExit(f"{tokenizer_src} missing: the runtime needs the fast tokenizer's tokenizer.json")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lg-export-") as tmp:
        raw = Path(tmp) / "raw"
        print(f"[export] optimum export of {checkpoint} ...", flush=True)
        run_optimum(checkpoint, raw, opset, validate)
        fp32_dir = out / "fp32" if "fp32" in variants else Path(tmp) / "fp32"
        if fp32_dir.exists():
            shutil.rmtree(fp32_dir)
        fp32_dir.mkdir(parents=True)
        for f in raw.iterdir():
            if f.name.startswith("model.onnx"):
                shutil.move(str(f), fp32_dir / f.name)
        fp32 = fp32_dir / "model.onnx"
        last_token_logits(fp32)
        done = {"fp32": fp32}
        builders = {"int8": make_int8, "fp16": make_fp16, "int4": lambda s, d: make_int4(s, d, block_size)}
        for variant in variants:
            if variant == "fp32":
                continue
            print(f"[export] {variant} ...", flush=True)
            dst = out / variant / "model.onnx"
            if dst.parent.exists():
                shutil.rmtree(dst.parent)
            builders[variant](fp32, dst)
            if variant in ("int8", "int4"):
                quantize_embedding(dst)
            done[variant] = dst
        manifest_variants = {}
        for variant in variants:
            path = done[variant]
            make_kv_expand(path, path.parent / "kv_expand.onnx")
            files = sorted(p.relative_to(out).as_posix() for p in path.parent.iterdir() if p.is_file())
            manifest_variants[variant] = {
                "model": path.relative_to(out).as_posix(),
                "kv_expand": (path.parent / "kv_expand.onnx").relative_to(out).as_posix(),
                "files": files,
                "devices": ["cuda"] if variant == "fp16" else (["cpu", "cuda"] if variant == "fp32" else ["cpu"]),
                "bytes": sum((out / f).stat().st_size for f in files),
            }
        import onnx

        used_opset = next(
            o.version
            for o in onnx.load(str(done[variants[0]]), load_external_data=False).opset_import
            if o.domain in ("", "ai.onnx")
        )
    shutil.copy(tokenizer_src, out / "tokenizer.json")
    config = json.loads((checkpoint / "config.json").read_text())
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "model": name or checkpoint.resolve().name,
        "template": template,
        "categories": [list(c) for c in categories],
        "tokens": token_ids(out / "tokenizer.json"),
        "architecture": {
            k: config.get(k)
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "intermediate_size",
                "vocab_size",
                "max_position_embeddings",
            )
        },
        "variants": manifest_variants,
        "opset": used_opset,
        "exporter": {
            d: _version(d)
            for d in ("optimum-onnx", "optimum", "transformers", "torch", "onnx", "onnxruntime", "tokenizers")
        },
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="Hugging Face checkpoint directory")
    ap.add_argument("--out", required=True, type=Path, help="output directory, e.g. models/llama-guard-3-1b")
    ap.add_argument(
        "--variants",
        default="fp32,int8,int4",
        help=f"comma-separated subset of {','.join(VARIANTS)} (fp16 is for CUDA)",
    )
    ap.add_argument(
        "--template",
        choices=[prompt.TEMPLATE_1B, prompt.TEMPLATE_8B],
        help="prompt template; default: guessed from the layer count",
    )
    ap.add_argument("--name", help="model name for the manifest; default: the checkpoint directory name")
    ap.add_argument("--opset", type=int, default=None, help="ONNX opset (default: optimum's)")
    ap.add_argument("--int4-block-size", type=int, default=32)
    ap.add_argument("--validate", action="store_true", help="let optimum compare ONNX and PyTorch outputs")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        ap.error(f"unknown variants {bad}; choose from {VARIANTS}")
    if not (args.checkpoint / "config.json").exists():
        ap.error(f"{args.checkpoint} is not a Hugging Face checkpoint directory (no config.json)")
    manifest = export(
        args.checkpoint, args.out, variants, args.template, args.name, args.opset, args.validate, args.int4_block_size
    )
    sizes = ", ".join(f"{v}: {m['bytes'] / 1e6:.1f} MB" for v, m in manifest["variants"].items())
    print(f"[export] wrote {args.out} ({manifest['template']}; {sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
