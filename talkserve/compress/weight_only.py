"""Weight-only INT8: every weight that full INT8 left float becomes per-output-channel symmetric INT8
behind a DequantizeLinear, while its activations stay float.

For the layer groups whose activations INT8 damages (the sensitivity sweep keeps them float, e.g.
the Piper decoder) the weights still take a quarter of the bytes; the error is the weights' rounding
alone (≤ half a step of 1/127 of each channel's largest weight). ONNX Runtime keeps DequantizeLinear
out of constant folding, so the file stays small on disk and in the repository; the float weight is
made when the node runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# op → (index of its weight input, the weight's output-channel axis)
WEIGHTS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "MatMul": (1, 1), "Gemm": (1, 1)}
MIN_ELEMENTS = 1024  # small weights (biases' kin, tiny projections) are not worth a node


def _axis(node: onnx.NodeProto, weight: np.ndarray) -> int | None:
    _, axis = WEIGHTS[node.op_type]
    if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
        axis = 0
    if node.op_type in ("MatMul", "Gemm") and weight.ndim != 2:
        return None
    return axis


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric INT8: (q, scale) with w ≈ q · scale along `axis`."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=other) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def weight_only_int8(src: Path, dst: Path, nodes: set[str] | None = None) -> int:
    """Write `src` with its remaining float weights in INT8 (see the module doc) — only those of the
    nodes named in `nodes`, when given; returns how many."""
    model = onnx.load(str(src))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # per-axis DequantizeLinear
        raise ValueError(f"{src}: opset {opset} has no per-channel DequantizeLinear (needs 13)")
    inits = {i.name: i for i in graph.initializer}
    done, dequantize = set(), []
    for node in graph.node:
        if node.op_type not in WEIGHTS or len(node.input) <= WEIGHTS[node.op_type][0]:
            continue
        if nodes is not None and node.name not in nodes:
            continue
        name = node.input[WEIGHTS[node.op_type][0]]
        init = inits.get(name)
        if init is None or name in done or init.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        axis = _axis(node, w)
        if axis is None or w.size < MIN_ELEMENTS:
            continue
        q, scale = quantize_weight(w, axis)
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                  numpy_helper.from_array(scale, f"{name}_scale"),
                                  numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{name}_zero")])
        # the DequantizeLinear's output keeps the weight's name: every consumer reads it unchanged
        dequantize.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                                           [name], name=f"{name}_weight_dequantize", axis=axis))
        done.add(name)
    for i, node in enumerate(dequantize):
        graph.node.insert(i, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return len(done)
