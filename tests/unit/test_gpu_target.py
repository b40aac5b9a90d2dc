"""The GPU target up to the engine call: the clear errors, profiles from the recipe, FP16 for the
layers INT8 left in float, tensorrt_plan configs with a plan per architecture. No GPU needed."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from talkserve.recipe import Recipe
from talkserve.server.gpus import Gpu, check_plans, node_problems, nvidia_gpus, plans_in
from talkserve.targets.gpu import require_gpu_build, tensorrt_config, tensorrt_version
from talkserve.targets.precision import to_fp16
from talkserve.targets.profiles import GPUTargetError, engine_models, tts_engines

RTX3060, RTX4090 = Gpu("NVIDIA GeForce RTX 3060", "8.6"), Gpu("NVIDIA GeForce RTX 4090", "8.9")


def test_gpu_build_needs_a_gpu_and_tensorrt_and_says_which_is_missing():
    with pytest.raises(GPUTargetError, match="no NVIDIA GPU") as e:
        require_gpu_build([], lambda: "10.13.0")
    assert "TensorRT" not in str(e.value).split("but")[1].split(".")[0]
    with pytest.raises(GPUTargetError, match="TensorRT is not installed"):
        require_gpu_build([RTX3060], lambda: None)
    with pytest.raises(GPUTargetError, match="too old"):
        require_gpu_build([RTX3060], lambda: "8.6.1")
    with pytest.raises(GPUTargetError, match="several architectures"):
        require_gpu_build([RTX3060, RTX4090], lambda: "11.4.0")
    assert require_gpu_build([RTX3060], lambda: "10.13.0") == RTX3060
    assert require_gpu_build([RTX4090], lambda: "11.4.0").compute_capability == "8.9"


def test_build_target_gpu_fails_before_any_work_on_a_machine_without_one(tmp_path):
    if nvidia_gpus() and tensorrt_version():
        pytest.skip("this machine can build engines; the gpu-marked tests cover it")
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "talkserve.cli", "build", "pruned30-int8", "--target", "gpu",
                          "--output", str(tmp_path / "repo")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "--target gpu" in run.stderr and ("no NVIDIA GPU" in run.stderr or "TensorRT" in run.stderr), run.stderr
    assert "nvcr.io/nvidia/tritonserver" in run.stderr  # says where it can run
    assert not (tmp_path / "repo").exists() and time.monotonic() - start < 60  # no compression was started
    bad = subprocess.run([sys.executable, "-m", "talkserve.cli", "build", "fp32", "--target", "tpu"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "choose cpu or gpu" in bad.stderr


def test_profiles_follow_the_recipe(built):
    recipe, current = built
    models = {m.name: m for m in engine_models(current, recipe)}
    assert set(models) == {"wav2lip", "llm_decoder"}  # Piper stays in its python model
    w = models["wav2lip"].shapes()
    assert w["mel"] == ((1, 1, 80, 16), (25, 1, 80, 16), (64, 1, 80, 16))
    assert w["face"][2] == (64, 6, 96, 96) and models["wav2lip"].max_batch_size == 64
    d = models["llm_decoder"].shapes()
    assert d["input_ids"] == ((1, 1), (1, 1), (1, 512))  # decode-tuned, prefill up to the prompt limit
    assert d["attention_mask"] == ((1, 1), (1, 160), (1, 1024))
    assert d["past_key_values.0.key"][0][2] == 0 and d["past_key_values.0.key"][2][2] == 1023

    custom = recipe.model_copy(deep=True)
    custom.gpu.max_context_tokens, custom.gpu.max_prompt_tokens, custom.gpu.wav2lip_max_batch = 2048, 256, 32
    custom.wav2lip.batch_frames = 32  # lipsync's joined calls must fit the engine
    models = {m.name: m for m in engine_models(current, custom)}
    assert models["llm_decoder"].shapes()["attention_mask"][2] == (1, 2048)
    assert models["llm_decoder"].shapes()["input_ids"][2] == (1, 256)
    assert models["wav2lip"].shapes()["mel"][2][0] == 32
    custom.gpu.wav2lip_max_batch = 10
    with pytest.raises(GPUTargetError, match="wav2lip_max_batch = 10 is below the 32 frames"):
        engine_models(current, custom)
    custom.gpu.wav2lip_max_batch, custom.wav2lip.batch_frames = 40, 50
    with pytest.raises(GPUTargetError, match="wav2lip_max_batch = 40 is below the 50 frames of one generator call"):
        engine_models(current, custom)


def test_fastspeech2_voices_get_acoustic_and_vocoder_engines(tmp_path):
    recipe = Recipe.model_validate({"tts": {"kind": "fastspeech2"}, "gpu": {"max_sentence_seconds": 10}})
    acoustic, vocoder = tts_engines(tmp_path, recipe)
    assert acoustic.name == "tts_acoustic" and acoustic.onnx == "tts/1/acoustic.onnx"
    assert acoustic.shapes()["symbols"][2] == (1, 400)
    assert vocoder.shapes()["mel"] == ((1, 80, 1), (1, 80, 259), (1, 80, 862))  # 10 s at 22050 Hz / 256 hop
    (tmp_path / "tts" / "1").mkdir(parents=True)
    (tmp_path / "tts" / "1" / "vocoder.qdq_s8.onnx").write_bytes(b"")
    assert tts_engines(tmp_path, recipe)[1].onnx == "tts/1/vocoder.qdq_s8.onnx"  # the INT8 form when built


def test_tensorrt_configs_map_a_plan_per_architecture_and_match_the_onnx(built):
    recipe, current = built
    plans = {"8.6": "model_sm86.plan", "8.9": "model_sm89.plan"}
    for m in engine_models(current, recipe):
        cfg = text_format.Parse(text_format.MessageToString(tensorrt_config(m, plans, recipe)), mc.ModelConfig())
        assert cfg.platform == "tensorrt_plan" and dict(cfg.cc_model_filenames) == plans
        assert not cfg.default_model_filename  # a GPU with no plan of its own fails to load
        assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        graph = onnx.load(str(current / m.onnx), load_external_data=False).graph
        elem = {"TYPE_FP32": onnx.TensorProto.FLOAT, "TYPE_INT64": onnx.TensorProto.INT64}
        onnx_inputs = {i.name: i.type.tensor_type.elem_type for i in graph.input}
        assert {i.name: elem[mc.DataType.Name(i.data_type)] for i in cfg.input} == onnx_inputs
        assert {o.name for o in cfg.output} == {o.name for o in graph.output}
        if m.name == "wav2lip":  # frames are independent: parts of several streams share a call
            assert cfg.max_batch_size == 64 and cfg.dynamic_batching.max_queue_delay_microseconds == 2000
            assert list(cfg.input[0].dims) == [1, 80, 16] and cfg.model_warmup[0].batch_size == 25
        else:  # one KV cache per stream: no batching across streams
            assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching") and not cfg.model_warmup
            assert list(cfg.input[0].dims) == [1, -1]


def fake_engine_repository(root, plans: dict[str, str], present: list[str]):
    model = root / "wav2lip"
    (model / "1").mkdir(parents=True)
    cfg = mc.ModelConfig(name="wav2lip", platform="tensorrt_plan")
    for cc, name in plans.items():
        cfg.cc_model_filenames[cc] = name
    (model / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    for name in present:
        (model / "1" / name).write_bytes(b"plan")
    return root


def test_a_node_with_no_plan_of_its_own_gets_a_clear_error(tmp_path):
    repo = fake_engine_repository(tmp_path, {"8.6": "model_sm86.plan", "8.9": "model_sm89.plan"},
                                  ["model_sm86.plan"])
    assert plans_in(repo / "wav2lip" / "1") == {"8.6": "model_sm86.plan"}
    assert check_plans(repo, "8.6") == []
    assert check_plans(repo, "7.5") == ["wav2lip has TensorRT plans for compute capability 8.6, 8.9, not 7.5"]
    assert check_plans(repo, "8.9") == ["wav2lip: model_sm89.plan is missing"]
    problems = node_problems(repo, [Gpu("Tesla T4", "7.5")])
    assert "not 7.5" in problems[0] and "talkserve engines" in problems[-1]
    assert node_problems(repo, []) == ["the repository holds TensorRT engines but this node has no NVIDIA GPU"]
    run = subprocess.run([sys.executable, "-m", "talkserve.cli", "engines", "--check", "--output", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    # nothing published here: a GPU pool's pod must not pass its check (it did, on an empty repository)
    assert run.returncode == 1 and "no published repository" in run.stderr


def test_the_embedded_server_refuses_a_repository_of_engines(tmp_path):
    from talkserve.server.serve import Server, ServerError

    repo = fake_engine_repository(tmp_path, {"8.6": "model_sm86.plan"}, ["model_sm86.plan"])
    with pytest.raises(ServerError, match="TensorRT engines"):
        Server(repo).start()


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Conv2d(16, 3, 1), torch.nn.Sigmoid())

    def forward(self, x):  # (B, 3, 32, 32) → (B, 3, 32, 32)
        return self.head(self.body(x))


def test_layers_kept_out_of_int8_become_fp16_and_int8_layers_stay_untouched(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)
    torch.onnx.export(Net().eval(), (torch.randn(2, 3, 32, 32),), str(tmp_path / "f.onnx"), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False, opset_version=17)
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": rng.standard_normal((2, 3, 32, 32), np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    head = [n.name for n in onnx.load(str(tmp_path / "f.onnx")).graph.node if n.name.startswith("/head")]
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=head, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                                          "QuantizeBias": False})
    counts = to_fp16(tmp_path / "q.onnx", tmp_path / "h.onnx")
    assert counts["int8"] == 2 and counts["fp16"] == 1
    half = onnx.load(str(tmp_path / "h.onnx"))
    onnx.checker.check_model(half)
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits["head.0.weight"] == onnx.TensorProto.FLOAT16  # the kept layer: FP16 weights
    assert inits["body.0.weight_quantized"] == onnx.TensorProto.INT8  # INT8 layers as they were
    assert all(t.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for t in [*half.graph.input, *half.graph.output])
    x = rng.standard_normal((3, 3, 32, 32), np.float32)
    want = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(tmp_path / "h.onnx")).run(None, {"x": x})[0]
    assert np.max(np.abs(got - want)) < 5e-3


def test_adding_an_architecture_republishes_the_current_build_atomically(built, tmp_path):
    """`talkserve engines` starts from the published repository (its engines for other GPUs kept)
    and publishes a new release; here without the engine step, which needs a GPU."""
    import json
    import shutil

    from talkserve.server.repository import build
    from talkserve.targets.gpu import copy_current

    recipe, current = built
    out = tmp_path / "model_repository"
    shutil.copytree(current.parent, out, symlinks=True)
    before = (out / "current").resolve()
    (before / "wav2lip" / "1" / "model_sm86.plan").write_bytes(b"an 8.6 engine")
    after = build(recipe, out, [("copy", copy_current(out))], progress=lambda s: None).resolve()
    assert after != before and before.is_dir()  # the old release stays until rotated out
    assert (after / "wav2lip" / "1" / "model_sm86.plan").read_bytes() == b"an 8.6 engine"
    assert plans_in(after / "wav2lip" / "1") == {"8.6": "model_sm86.plan"}
    manifest = json.loads((after / "talkserve_build.json").read_text())
    assert manifest["based_on"] == json.loads((before / "talkserve_build.json").read_text())["build_id"]
    assert "model_sm86.plan" in " ".join(manifest["files"])
    empty = tmp_path / "empty"
    with pytest.raises(GPUTargetError, match="no published repository"):
        build(recipe, empty, [("copy", copy_current(empty))], progress=lambda s: None)
    assert not (empty / "current").exists()
