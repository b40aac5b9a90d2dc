"""GPU target: TensorRT engines per compute capability, served by Triton's TensorRT backend.

`talkserve build RECIPE --target gpu` runs the CPU target's steps (compression, ONNX export, the
python models, the ensembles), then turns `wav2lip`, `llm_decoder` and — for FastSpeech2 voices —
`tts_acoustic` and `vocoder` into `platform: "tensorrt_plan"` models: from the explicit Q/DQ ONNX
(or the float ONNX of a float build), layers kept in float converted to FP16, a strongly typed
engine per GPU architecture (`model_sm86.plan`, ...) mapped by `cc_model_filenames`, validated
against ONNX Runtime. The python models do not change: they call these by the same names (BLS).

`talkserve engines` adds this node's architecture to an existing repository, so one repository
serves a mixed pool (RTX 3060 = 8.6, RTX 4090 = 8.9). Everything here but the engine call
(`talkserve.targets.tensorrt`) runs and is tested without a GPU.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from talkserve import spec
from talkserve.recipe import Recipe, talkserve_home
from talkserve.server import repository as repo
from talkserve.server.gpus import Gpu, nvidia_gpus, plan_name, plans_in
from talkserve.server.repository import BuildContext
from talkserve.targets.precision import to_fp16
from talkserve.targets.profiles import EngineModel, GPUTargetError, engine_models

T = mc.DataType
# The models the CPU target serves with ONNX Runtime python models and this one with TensorRT
# (FastSpeech2's acoustic model and vocoder become engines of their own, called by tts).
ENGINE_MODELS = (spec.WAV2LIP.name, "llm_decoder")


def tensorrt_version() -> str | None:
    try:
        from talkserve.targets.tensorrt import version

        return version()
    except ImportError:
        return None


def require_gpu_build(gpus: list[Gpu] | None = None,
                      trt_version: Callable[[], str | None] = tensorrt_version) -> Gpu:
    """The GPU to build for, or GPUTargetError saying what is missing — before any work is done."""
    gpus = nvidia_gpus() if gpus is None else gpus
    trt = trt_version()
    missing = []
    if not gpus:
        missing.append("no NVIDIA GPU here (nvidia-smi found none)")
    if trt is None:
        missing.append("TensorRT is not installed (`import tensorrt` failed; it does not install from PyPI "
                       "on these machines)")
    elif int(trt.split(".")[0]) < 10:
        missing.append(f"TensorRT {trt} is too old (strongly typed Q/DQ builds need 10 or 11)")
    if missing:
        raise GPUTargetError(
            "--target gpu builds TensorRT engines for the GPU it runs on, but " + " and ".join(missing)
            + ". Run it on the GPU node inside NVIDIA's container (k8s: the build Job of the node pool; locally: "
            "docker run --gpus all nvcr.io/nvidia/tritonserver:25.10-py3 talkserve build RECIPE --target gpu), "
            "or build for CPU (the default target).")
    names = {g.compute_capability for g in gpus}
    if len(names) > 1:
        raise GPUTargetError(f"GPUs of several architectures here ({', '.join(sorted(names))}): set "
                             "CUDA_VISIBLE_DEVICES to one of them")
    return gpus[0]


# --- Triton configs -----------------------------------------------------------------------------------


def tensorrt_config(m: EngineModel, plans: dict[str, str], recipe: Recipe) -> mc.ModelConfig:
    """`platform: tensorrt_plan`, one plan per compute capability, GPU instances, warmup."""
    batched = m.max_batch_size > 0
    strip = 1 if batched else 0

    def dims(full) -> list[int]:
        return list(full)[strip:]

    def served(i) -> spec.Tensor:  # dynamic where the profile's range is
        lo, hi = i.shapes[0], i.shapes[2]
        return spec.Tensor(i.name, i.tensor.dtype, tuple(-1 if a != b else a for a, b in zip(lo, hi, strict=True)))

    cfg = mc.ModelConfig(
        name=m.name, platform="tensorrt_plan", max_batch_size=m.max_batch_size,
        input=[repo.tensor(served(i), strip_batch=batched) for i in m.inputs],
        output=[repo.tensor(t, mc.ModelOutput, strip_batch=batched) for t in m.outputs],
        instance_group=[mc.ModelInstanceGroup(count=recipe.gpu.instances, kind=mc.ModelInstanceGroup.KIND_GPU)],
    )
    # No default plan: a GPU with no engine of its own must fail to load, not run a foreign plan.
    for cc, filename in sorted(plans.items()):
        cfg.cc_model_filenames[cc] = filename
    if batched:
        cfg.dynamic_batching.max_queue_delay_microseconds = recipe.gpu.max_queue_delay_us
    # Zero-filled float inputs are valid for the conv nets; token ids and a KV cache need consistent
    # values (a past matching its mask), so those engines are warmed by their first request.
    if all(i.tensor.dtype == "FP32" for i in m.inputs):
        warm = cfg.model_warmup.add(name=f"{m.name}_opt", batch_size=m.inputs[0].shapes[1][0] if batched else 1)
        for i in m.inputs:
            warm.inputs[i.name].data_type = T.TYPE_FP32
            warm.inputs[i.name].dims.extend(dims(i.shapes[1]))
            warm.inputs[i.name].zero_data = True
    return cfg


# --- the build step -----------------------------------------------------------------------------------


def timing_cache(recipe: Recipe) -> Path:
    return recipe.gpu.timing_cache or talkserve_home() / "trt-timing.cache"


def validate(m: EngineModel, plan: Path, reference: Path, tolerance: float) -> dict[str, float]:
    """Max |engine − ONNX Runtime| per output at the profile's min/opt/max shapes."""
    import onnxruntime as ort

    from talkserve.targets.tensorrt import Engine, EngineBuildError

    engine = Engine(plan)
    session = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    rng, worst = np.random.default_rng(0), {}
    for which in ("min", "opt", "max"):
        feeds = m.sample(which, rng)
        want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
        got = engine(feeds)
        for name, ref in want.items():
            if got[name].shape != ref.shape:
                raise EngineBuildError(f"{m.name}.{name}: engine shape {got[name].shape} != ONNX {ref.shape}")
            diff = float(np.max(np.abs(got[name].astype(np.float32) - ref))) if ref.size else 0.0
            worst[name] = max(worst.get(name, 0.0), diff)
            if not diff <= tolerance:  # NaN fails too
                raise EngineBuildError(f"{m.name}.{name} at the {which} shapes: engine differs from ONNX Runtime "
                                       f"by {diff:.4g} > {tolerance} (gpu.tolerance.{m.name})")
    return worst


def route_tts_to_engines(root: Path, recipe: Recipe) -> None:
    """FastSpeech2 on GPU: the tts python model calls `tts_acoustic` and `vocoder` by BLS."""
    if recipe.tts.kind != "fastspeech2":
        return
    params = repo.read_params(root / "tts", spec.TTSParams)
    params.acoustic_model, params.vocoder_model = spec.acoustic().name, spec.vocoder().name
    repo.write_params(root / "tts", params)


def engines_step(root: Path, recipe: Recipe, ctx: BuildContext, gpu: Gpu | None = None) -> None:
    """Build this GPU's plan for every engine model; keep the plans other architectures built."""
    from tqdm import tqdm

    from talkserve.targets.tensorrt import build_engine, version

    gpu = gpu or require_gpu_build()
    route_tts_to_engines(root, recipe)
    report = ctx.engines
    for m in tqdm(engine_models(root, recipe), desc=f"TensorRT engines for {gpu.name} ({gpu.compute_capability})"):
        version_dir = root / m.name / "1"
        version_dir.mkdir(parents=True, exist_ok=True)
        source = root / m.onnx
        fp16 = version_dir / f"{source.stem}.fp16.onnx"
        counts = to_fp16(source, fp16) if recipe.gpu.fp16_float_layers else None
        plan = version_dir / plan_name(gpu.compute_capability)
        build_engine(fp16 if counts else source, plan, m.shapes(), timing_cache(recipe),
                     int(recipe.gpu.workspace_gib * (1 << 30)))
        diffs = validate(m, plan, source, recipe.gpu.tolerance.get(m.name, 0.05))
        fp16.unlink(missing_ok=True)
        if not (version_dir / Path(m.onnx).name).exists():  # keep the source: `talkserve engines` adds archs
            shutil.copyfile(source, version_dir / Path(m.onnx).name)
        repo.write_config(root / m.name, tensorrt_config(m, plans_in(version_dir), recipe))
        report.setdefault(m.name, {})[gpu.compute_capability] = {
            "gpu": gpu.name, "tensorrt": version(), "plan": plan.name, "plan_bytes": plan.stat().st_size,
            "source": m.onnx, "precision": counts or "as in the ONNX", "max_abs_diff_vs_onnxruntime": diffs}


def copy_current(output: Path) -> repo.Step:
    """A build step that starts from the published repository (for `talkserve engines`): all of it
    but its manifest (rewritten at publish) and the ONNX Runtime python models of the models that
    become engines (a CPU build's)."""
    def skip(folder: str, names: list[str]) -> set[str]:
        path = Path(folder)
        if path == current:
            return {"talkserve_build.json"}
        return {"model.py"} if path.parent.parent == current and path.parent.name in ENGINE_MODELS else set()

    def step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
        nonlocal current
        current = (output / "current").resolve()
        if not current.is_dir():
            raise GPUTargetError(f"{output} has no published repository to add engines to (run `talkserve build`)")
        shutil.copytree(current, root, dirs_exist_ok=True, symlinks=True, ignore=skip)
        manifest = current / "talkserve_build.json"  # carry what it knew
        old = json.loads(manifest.read_text()) if manifest.is_file() else {}
        ctx.engines, ctx.reports = old.get("engines") or {}, old.get("reports") or {}
        ctx.compression = old.get("compression")
        ctx.based_on = old.get("build_id", current.name)

    current = output
    return step


def gpu_steps(gpu: Gpu) -> list:
    """The CPU target's steps with this GPU's engines where the CPU target serves with ONNX Runtime."""
    from talkserve.targets.cpu import ONNX_RUNTIME, STEPS

    engines = ("build TensorRT engines (strongly typed, INT8 Q/DQ + FP16)", partial(engines_step, gpu=gpu))
    return [engines if label == ONNX_RUNTIME else (label, step) for label, step in STEPS]


def add_engine_steps(output: Path, gpu: Gpu) -> list:
    return [("copy the published repository", copy_current(output)),
            (f"build TensorRT engines for {gpu.compute_capability}", partial(engines_step, gpu=gpu))]
