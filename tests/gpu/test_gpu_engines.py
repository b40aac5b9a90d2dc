"""TensorRT engines for real (marked gpu: skipped without CUDA; needs TensorRT, e.g. inside the NGC
tritonserver container)."""

from __future__ import annotations

import shutil

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

pytestmark = pytest.mark.gpu


def test_engines_build_validate_against_onnxruntime_and_configure(built, tmp_path):
    pytest.importorskip("tensorrt")
    from talkserve.server.gpus import plan_name
    from talkserve.server.repository import BuildContext
    from talkserve.targets.gpu import engines_step, require_gpu_build

    recipe, current = built
    root = tmp_path / "repo"
    shutil.copytree(current, root, symlinks=True)
    gpu = require_gpu_build()
    ctx = BuildContext("test")
    engines_step(root, recipe, ctx, gpu)
    for name in ("wav2lip", "llm_decoder"):
        cfg = text_format.Parse((root / name / "config.pbtxt").read_text(), mc.ModelConfig())
        assert cfg.platform == "tensorrt_plan"
        assert cfg.cc_model_filenames[gpu.compute_capability] == plan_name(gpu.compute_capability)
        assert (root / name / "1" / plan_name(gpu.compute_capability)).stat().st_size > 0
        report = ctx.engines[name][gpu.compute_capability]
        assert report["max_abs_diff_vs_onnxruntime"] and report["tensorrt"]
