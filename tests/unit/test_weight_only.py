"""Weight-only INT8 (talkserve.compress.weight_only): float weights → INT8 + DequantizeLinear."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from talkserve.compress.weight_only import quantize_weight, weight_only_int8


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(16, 64, 5, padding=2)
        self.up = torch.nn.ConvTranspose1d(64, 32, 4, stride=2, padding=1)
        self.proj = torch.nn.Linear(32, 48)  # Gemm/MatMul in the export

    def forward(self, x):
        y = torch.relu(self.up(torch.relu(self.conv(x))))
        return self.proj(y.transpose(1, 2))


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_weights_become_int8_behind_dequantize_and_the_output_stays_close(tmp_path):
    torch.manual_seed(0)
    src, dst = tmp_path / "net.onnx", tmp_path / "net.w8.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 16, 40),), str(src), input_names=["x"], opset_version=17,
                      dynamo=False)
    assert weight_only_int8(src, dst) == 3
    model = onnx.load(str(dst))
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) == 3
    float_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) > 1]
    assert not float_weights  # every weight is INT8 now; biases stay float
    assert dst.stat().st_size < src.stat().st_size / 3
    x = np.random.default_rng(0).standard_normal((1, 16, 40)).astype(np.float32)
    a, b = _run(src, x), _run(dst, x)
    assert np.abs(a - b).max() < 0.02 * np.abs(a).max()
    assert weight_only_int8(dst, tmp_path / "again.onnx") == 0  # nothing float left to convert


@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_rounding_error_is_at_most_half_a_step(axis):
    w = np.random.default_rng(1).standard_normal((8, 12, 3)).astype(np.float32)
    w[2 if axis == 0 else slice(None), 2 if axis == 1 else slice(None)] = 0  # an all-zero channel
    q, scale = quantize_weight(w, axis)
    shape = [1, 1, 1]
    shape[axis] = -1
    assert q.dtype == np.int8 and np.abs(q).max() <= 127 and (scale > 0).all()
    assert np.abs(q * scale.reshape(shape) - w).max() <= scale.max() / 2 + 1e-7


class Noisy(torch.nn.Module):
    """A net that samples noise as it runs, as a VITS voice does."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(8, 16, 3, padding=1)

    def forward(self, x):
        return self.conv(x + torch.randn_like(x))


CALIBRATE = """
import json, sys
from pathlib import Path
import numpy as np, onnx
from talkserve.compress.config import QuantizeConfig
from talkserve.compress.quantize import _Writer
src, data, work = sys.argv[1:4]
feeds = [{"x": x[None]} for x in np.load(data)["x"]]
out = _Writer(Path(src), feeds, QuantizeConfig(precision="int8"), Path(work)).write("qdq_u8", [])
model = onnx.load(out)
print(json.dumps({i.name: onnx.numpy_helper.to_array(i).tolist() for i in model.graph.initializer
                  if i.name.endswith("_scale")}))
"""


def test_calibration_of_a_model_that_samples_noise_is_reproducible_and_the_result_samples_again(tmp_path):
    import json
    import subprocess
    import sys

    from talkserve.compress.quantize import RANDOM_OPS

    src = tmp_path / "noisy.onnx"
    torch.onnx.export(Noisy().eval(), (torch.randn(1, 8, 20),), str(src), input_names=["x"], opset_version=17,
                      dynamo=False)
    assert any(n.op_type in RANDOM_OPS for n in onnx.load(str(src)).graph.node)
    np.savez(tmp_path / "feeds.npz", x=np.random.default_rng(0).standard_normal((4, 8, 20)).astype(np.float32))
    scales = []
    for run in range(2):  # separate processes: ONNX Runtime's unseeded noise differs between them
        (tmp_path / f"work{run}").mkdir()
        done = subprocess.run([sys.executable, "-c", CALIBRATE, str(src), str(tmp_path / "feeds.npz"),
                               str(tmp_path / f"work{run}")], capture_output=True, text=True, check=True)
        scales.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert scales[0] == scales[1] and scales[0]
    out = next((tmp_path / "work1").glob("qdq_u8-*.onnx"))
    random = [n for n in onnx.load(str(out)).graph.node if n.op_type in RANDOM_OPS]
    assert random and not any(a.name == "seed" for n in random for a in n.attribute)
    x = np.ones((1, 8, 20), np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert not np.array_equal(session.run(None, {"x": x})[0], session.run(None, {"x": x})[0])  # noise again


def test_weight_only_goes_group_by_group_as_far_as_the_gates_hold(tmp_path):
    from talkserve.compress.config import QuantizeConfig
    from talkserve.compress.gates import GateResult
    from talkserve.compress.quantize import _Writer, weight_only_groups

    src = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 16, 40),), str(src), input_names=["x"], opset_version=17,
                      dynamo=False)
    feeds = [{"x": np.random.default_rng(0).standard_normal((1, 16, 40)).astype(np.float32)}]
    (tmp_path / "work").mkdir()
    writer = _Writer(src, feeds, QuantizeConfig(precision="int8"), tmp_path / "work")
    kept = sorted(writer.groups)  # every group float: the form to shrink
    assert len(kept) == 3
    float_form = writer.write("qdq_u8", kept)

    def evaluate(path):  # a gate that fails whenever the transposed conv's weight is INT8
        ops = {n.name for n in onnx.load(str(path)).graph.node if n.op_type == "DequantizeLinear"}
        bad = any("up" in name for name in ops)
        return 0.0, [GateResult("m", "x", 1.0 if bad else 0.0, 0.5, "max", not bad)]

    scores = {g: i for i, g in enumerate(kept)}
    small, chosen = weight_only_groups(writer, float_form, kept, scores, evaluate)
    assert sorted(chosen) == sorted(g for g in kept if "up" not in g)
    assert not evaluate(small)[1][0].value  # the file written is the passing choice
