"""ONNX Runtime on the CPU: a session's arena goes back after a quiet spell, and not while it works."""

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from talkserve.runtime.cpu_sessions import ArenaRelease, session_options

WIDE = 8192  # x [N, 256] @ w [256, WIDE]: a 128 MB intermediate at N = 4096


def _wide_model(path):
    w = helper.make_tensor("w", TensorProto.FLOAT, (256, WIDE), np.full(256 * WIDE, 0.01, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("ReduceSum", ["r"], ["y"], keepdims=0, axes=[1])],
        "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ("n", 256))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ("n",))], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.save(model, path)
    return ort.InferenceSession(str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _wait(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_arena_goes_back_after_idle_and_results_are_unchanged(tmp_path):
    runner = ArenaRelease(_wide_model(tmp_path / "wide.onnx"), idle_s=0.3)
    assert runner.releases == 1  # the load-time check run
    x = np.ones((4096, 256), np.float32)
    (y,) = runner.run(None, {"x": x})
    np.testing.assert_allclose(y, np.full(4096, 256 * 0.01 * WIDE), rtol=1e-4)
    grown = _rss_mb()
    assert _wait(lambda: runner.releases == 2, 5.0)
    assert grown - _rss_mb() > 64  # the 128 MB intermediate's arena region is unmapped
    (again,) = runner.run(None, {"x": x})  # and it grows again on demand
    np.testing.assert_array_equal(again, y)
    runner.close()


def test_no_release_while_runs_keep_coming_or_when_off(tmp_path):
    session = _wide_model(tmp_path / "wide.onnx")
    busy = ArenaRelease(session, idle_s=0.5)
    x = np.ones((8, 256), np.float32)
    for _ in range(10):  # 1 s of runs, 0.1 s apart: never 0.5 s idle
        busy.run(None, {"x": x})
        time.sleep(0.1)
    assert busy.releases == 1
    busy.close()
    time.sleep(0.7)
    assert busy.releases == 1  # close() cancels the pending release
    off = ArenaRelease(session, idle_s=0)
    off.run(None, {"x": x})
    time.sleep(0.2)
    assert off.releases == 0


def test_a_model_that_cannot_run_one_row_is_refused_at_load(tmp_path):
    # input ids and a mask whose lengths must differ (a decoder with a cache): one row of 1 fails
    graph = helper.make_graph(
        [helper.make_node("Concat", ["a", "b"], ["ab"], axis=1), helper.make_node("Add", ["ab", "c"], ["y"])],
        "pair", [helper.make_tensor_value_info(n, TensorProto.FLOAT, (1, d)) for n, d in (("a", "p"), ("b", "q"))]
        + [helper.make_tensor_value_info("c", TensorProto.FLOAT, (1, 3))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 3))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "pair.onnx")
    session = ort.InferenceSession(str(tmp_path / "pair.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="every free dimension 1"):
        ArenaRelease(session, idle_s=1.0)
    ArenaRelease(session, idle_s=0)  # off: nothing is tried
