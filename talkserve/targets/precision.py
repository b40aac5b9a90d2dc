"""Precision of a TensorRT build: layers outside INT8 to FP16, reductions and exponentials kept FP32."""

from __future__ import annotations

from pathlib import Path

import onnx

# Kept in FP32 inside FP16 layers: reductions and exponentials overflow or lose too much in FP16.
FP32_OPS = ("Pow", "ReduceMean", "ReduceSum", "Sqrt", "Reciprocal", "Softmax", "Exp", "Log", "Range", "CumSum")
QDQ = ("QuantizeLinear", "DequantizeLinear")
COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def int8_nodes(model: onnx.ModelProto) -> set[str]:
    """Nodes that must stay as they are for TensorRT to fuse INT8: the Q/DQ pairs, compute whose
    weight is dequantized, and whatever sits between a DequantizeLinear and a QuantizeLinear."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def from_dq(name: str) -> bool:
        return name in producer and producer[name].op_type == "DequantizeLinear"

    keep = set()
    for n in model.graph.node:
        if n.op_type in QDQ:
            keep.add(n.name)
        elif n.op_type in COMPUTE:
            if len(n.input) > 1 and from_dq(n.input[1]):
                keep.add(n.name)
        elif any(from_dq(i) for i in n.input) or any(c.op_type == "QuantizeLinear"
                                                      for o in n.output for c in consumers.get(o, [])):
            keep.add(n.name)
    return keep


def to_fp16(src: Path, dst: Path) -> dict[str, int]:
    """Layers outside INT8 → FP16 (inputs and outputs stay FP32; Casts at the borders), so a strongly
    typed build runs them in FP16. Returns how many compute nodes run in INT8 / FP16 / FP32."""
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    if not all(n.name for n in model.graph.node):  # the block list is by node name
        for i, n in enumerate(model.graph.node):
            n.name = n.name or f"{n.op_type}_{i}"
    int8 = int8_nodes(model)
    fp32_ops = set(FP32_OPS)
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(int8),
                                    op_block_list=[*DEFAULT_OP_BLOCK_LIST, *fp32_ops])
    onnx.save(half, str(dst))
    compute = [n for n in model.graph.node if n.op_type in COMPUTE]
    in_int8 = sum(n.name in int8 for n in compute)
    return {"int8": in_int8, "fp16": len(compute) - in_int8, "fp32_ops": sum(n.op_type in fp32_ops
                                                                          for n in model.graph.node)}
