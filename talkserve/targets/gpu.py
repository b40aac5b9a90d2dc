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
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tritonclient.grpc import model_config_pb2 as mc

from talkserve import repository as repo
from talkserve.recipe import Recipe, talkserve_home
from talkserve.repository import engine_configs, has_engines

T = mc.DataType
PLAN = re.compile(r"model_sm(\d)(\d+)\.plan")
# Kept in FP32 inside FP16 layers: reductions and exponentials overflow or lose too much in FP16.
FP32_OPS = ("Pow", "ReduceMean", "ReduceSum", "Sqrt", "Reciprocal", "Softmax", "Exp", "Log", "Range", "CumSum")
QDQ = ("QuantizeLinear", "DequantizeLinear")
COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")


class GPUTargetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "8.6"


def nvidia_gpus() -> list[Gpu]:
    """GPUs the NVIDIA driver reports here; empty without a driver or a GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    run = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        return []
    return [Gpu(*(part.strip() for part in line.rsplit(",", 1))) for line in run.stdout.splitlines() if "," in line]


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


def plan_name(compute_capability: str) -> str:
    return f"model_sm{compute_capability.replace('.', '')}.plan"


def plans_in(version_dir: Path) -> dict[str, str]:
    """{compute capability: plan file} of the engines already built for one model."""
    found = {}
    for f in sorted(Path(version_dir).glob("model_sm*.plan")):
        m = PLAN.fullmatch(f.name)
        if m:
            found[f"{m[1]}.{m[2]}"] = f.name
    return found


# --- what becomes an engine, with which shapes --------------------------------------------------------

Sampler = Callable[[tuple[int, ...], np.random.Generator], np.ndarray]


def _normal(offset: float = 0.0) -> Sampler:
    return lambda shape, rng: (rng.standard_normal(shape) + offset).astype(np.float32)


def _standard(shape, rng) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _uniform(shape, rng) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


def _ints(high: int) -> Sampler:
    return lambda shape, rng: rng.integers(0, high, shape, dtype=np.int64)


def _ones(shape, rng) -> np.ndarray:
    return np.ones(shape, np.int64)


@dataclass
class EngineInput:
    name: str
    dtype: int  # model_config DataType
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max (full, batch included)
    sample: Sampler = _standard


@dataclass
class EngineModel:
    """One Triton model served by TensorRT, built from `onnx` (relative to the repository root)."""

    name: str
    onnx: str
    inputs: list[EngineInput]
    outputs: list[tuple[str, int, list[int]]]  # full dims (batch included)
    max_batch_size: int = 0  # > 0: dimension 0 is Triton's batch, dynamic batching on
    feeds: Callable[[str, np.random.Generator], dict[str, np.ndarray]] | None = None  # validation inputs

    def shapes(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        return {i.name: i.shapes for i in self.inputs}

    def sample(self, which: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Validation inputs at the profile's `min`, `opt` or `max` shapes."""
        if self.feeds is not None:
            return self.feeds(which, rng)
        k = ("min", "opt", "max").index(which)
        return {i.name: i.sample(i.shapes[k], rng) for i in self.inputs}


def source_onnx(version_dir: Path, stem: str) -> str:
    """The explicit Q/DQ ONNX when the build quantized the model, else its float ONNX."""
    qdq = version_dir / f"{stem}.qdq_s8.onnx"
    return qdq.name if qdq.is_file() else f"{stem}.onnx"


def wav2lip_engine(root: Path, recipe: Recipe) -> EngineModel:
    g, w = recipe.gpu, recipe.wav2lip
    biggest = max(w.first_part_frames, w.part_frames, w.batch_frames)
    if g.wav2lip_max_batch < biggest:
        raise GPUTargetError(f"gpu.wav2lip_max_batch = {g.wav2lip_max_batch} is below the {biggest} frames of one "
                             "generator call (wav2lip.batch_frames / part_frames / first_part_frames)")

    def dims(*rest: int):
        return (1, *rest), (w.part_frames, *rest), (g.wav2lip_max_batch, *rest)

    return EngineModel(
        "wav2lip", f"wav2lip/1/{source_onnx(root / 'wav2lip' / '1', 'model')}",
        [EngineInput("mel", T.TYPE_FP32, dims(1, 80, 16)), EngineInput("face", T.TYPE_FP32, dims(6, 96, 96), _uniform)],
        [("frames", T.TYPE_FP32, [-1, 3, 96, 96])], max_batch_size=g.wav2lip_max_batch,
    )


def llm_decoder_engine(root: Path, recipe: Recipe, layout) -> EngineModel:
    """One profile for prefill (many tokens, no past) and decode (one token, a long past)."""
    g = recipe.gpu
    if g.max_prompt_tokens >= g.max_context_tokens:
        raise GPUTargetError("gpu.max_prompt_tokens must be below gpu.max_context_tokens")
    ctx, opt = g.max_context_tokens, min(g.opt_context_tokens, g.max_context_tokens)
    kv, hd = layout.num_kv_heads, layout.head_dim
    seq = ((1, 1), (1, 1), (1, g.max_prompt_tokens))
    inputs = [EngineInput("input_ids", T.TYPE_INT64, seq, _ints(layout.vocab_size)),
              EngineInput("attention_mask", T.TYPE_INT64, ((1, 1), (1, opt), (1, ctx)), _ones),
              EngineInput("position_ids", T.TYPE_INT64, seq)]
    inputs += [EngineInput(n, T.TYPE_FP32, ((1, kv, 0, hd), (1, kv, opt - 1, hd), (1, kv, ctx - 1, hd)))
               for n in layout.past_names()]

    def feeds(which: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        past, n = {"min": (0, 1), "opt": (opt - 1, 1), "max": (0, g.max_prompt_tokens)}[which]
        out = {"input_ids": _ints(layout.vocab_size)((1, n), rng), "attention_mask": np.ones((1, past + n), np.int64),
               "position_ids": (np.arange(n, dtype=np.int64) + past)[None]}
        out |= {name: _standard((1, kv, past, hd), rng) for name in layout.past_names()}
        return out

    outputs = [("logits", T.TYPE_FP32, [-1, -1, layout.vocab_size]),
               *((n, T.TYPE_FP32, [-1, kv, -1, hd]) for n in layout.present_names())]
    return EngineModel("llm_decoder", f"llm_decoder/1/{source_onnx(root / 'llm_decoder' / '1', 'model')}",
                       inputs, outputs, feeds=feeds)


def tts_engines(root: Path, recipe: Recipe) -> list[EngineModel]:
    """FastSpeech2 voices: the acoustic model and HiFi-GAN become engines of their own (a Piper VITS
    voice stays in the tts python model: its sampling loop is not one static graph)."""
    if recipe.tts.kind != "fastspeech2":
        return []
    from talkserve.models.fastspeech2 import SYMBOLS
    from talkserve.models.hifigan import CONFIGS

    g, h = recipe.gpu, CONFIGS[recipe.tts.vocoder_config]
    frames = math.ceil(g.max_sentence_seconds * h.sampling_rate / h.hop_size)
    opt = min(frames, math.ceil(3 * h.sampling_rate / h.hop_size))  # a typical sentence: 3 s
    tts = root / "tts" / "1"
    return [
        EngineModel("tts_acoustic", f"tts/1/{source_onnx(tts, 'acoustic')}",
                    [EngineInput("symbols", T.TYPE_INT64, ((1, 1), (1, min(64, g.max_symbols)), (1, g.max_symbols)),
                                 lambda shape, rng: rng.integers(1, len(SYMBOLS), shape, dtype=np.int64))],
                    [("mel", T.TYPE_FP32, [1, h.num_mels, -1]), ("durations", T.TYPE_FP32, [1, -1])]),
        EngineModel("vocoder", f"tts/1/{source_onnx(tts, 'vocoder')}",
                    [EngineInput("mel", T.TYPE_FP32, ((1, h.num_mels, 1), (1, h.num_mels, opt),
                                                      (1, h.num_mels, frames)), _normal(-5.0))],
                    [("audio", T.TYPE_FP32, [1, 1, -1])]),
    ]


def engine_models(root: Path, recipe: Recipe) -> list[EngineModel]:
    from talkserve.models.layout import KVLayout

    layout = KVLayout(**json.loads(repo.read_config(root / "llm").parameters["kv_layout"].string_value))
    lipsync = [wav2lip_engine(root, recipe)] if recipe.lipsync.kind == "wav2lip" else []  # warp has no network
    return [*lipsync, llm_decoder_engine(root, recipe, layout), *tts_engines(root, recipe)]


# --- precision ----------------------------------------------------------------------------------------


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


# --- Triton configs -----------------------------------------------------------------------------------


def tensorrt_config(m: EngineModel, plans: dict[str, str], recipe: Recipe) -> mc.ModelConfig:
    """`platform: tensorrt_plan`, one plan per compute capability, GPU instances, warmup."""
    batched = m.max_batch_size > 0
    strip = 1 if batched else 0

    def dims(full) -> list[int]:
        return list(full)[strip:]

    cfg = mc.ModelConfig(
        name=m.name, platform="tensorrt_plan", max_batch_size=m.max_batch_size,
        input=[repo.tensor(i.name, i.dtype, dims([-1 if lo != hi else lo for lo, hi in zip(i.shapes[0], i.shapes[2],
                                                                                        strict=True)]))
               for i in m.inputs],
        output=[repo.out(n, dtype, dims(d)) for n, dtype, d in m.outputs],
        instance_group=[mc.ModelInstanceGroup(count=recipe.gpu.instances, kind=mc.ModelInstanceGroup.KIND_GPU)],
    )
    # No default plan: a GPU with no engine of its own must fail to load, not run a foreign plan.
    for cc, filename in sorted(plans.items()):
        cfg.cc_model_filenames[cc] = filename
    if batched:
        cfg.dynamic_batching.max_queue_delay_microseconds = recipe.gpu.max_queue_delay_us
    # Zero-filled float inputs are valid for the conv nets; token ids and a KV cache need consistent
    # values (a past matching its mask), so those engines are warmed by their first request.
    if all(i.dtype == T.TYPE_FP32 for i in m.inputs):
        warm = cfg.model_warmup.add(name=f"{m.name}_opt", batch_size=m.inputs[0].shapes[1][0] if batched else 1)
        for i in m.inputs:
            warm.inputs[i.name].data_type = i.dtype
            warm.inputs[i.name].dims.extend(dims(i.shapes[1]))
            warm.inputs[i.name].zero_data = True
    return cfg


def check_plans(repository: Path, compute_capability: str) -> list[str]:
    """Why this GPU cannot serve `repository` (empty when every engine has a plan for it)."""
    problems = []
    for cfg in engine_configs(repository):
        if compute_capability not in cfg.cc_model_filenames:
            have = ", ".join(sorted(cfg.cc_model_filenames)) or "none"
            problems.append(f"{cfg.name} has TensorRT plans for compute capability {have}, not {compute_capability}")
        elif not (Path(repository) / cfg.name / "1" / cfg.cc_model_filenames[compute_capability]).is_file():
            problems.append(f"{cfg.name}: {cfg.cc_model_filenames[compute_capability]} is missing")
    return problems


def node_problems(repository: Path, gpus: list[Gpu] | None = None, require_engines: bool = False) -> list[str]:
    """Why this node cannot serve `repository`'s engines (empty for a CPU repository, unless
    `require_engines`: a GPU pool's pod must not pass its check on a repository without any)."""
    if require_engines and not (repository / "talkserve_build.json").is_file():
        return [f"no published repository at {repository} (the build Job has not finished)"]
    if not has_engines(repository):
        return (["the repository holds no TensorRT engines (built for the CPU target): run `talkserve engines` "
                 "on a node of this GPU"] if require_engines else [])
    gpus = nvidia_gpus() if gpus is None else gpus
    if not gpus:
        return ["the repository holds TensorRT engines but this node has no NVIDIA GPU"]
    problems = [p for g in {g.compute_capability: g for g in gpus}.values()
                for p in check_plans(repository, g.compute_capability)]
    if problems:
        problems.append("build them on a node of this GPU: `talkserve engines` (adds them to the repository)")
    return problems


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
    cfg = repo.read_config(root / "tts")
    cfg.parameters["acoustic_model"].string_value = "tts_acoustic"
    cfg.parameters["vocoder_model"].string_value = "vocoder"
    repo.write_config(root / "tts", cfg)


def engines_step(root: Path, recipe: Recipe, extra: dict, gpu: Gpu | None = None) -> None:
    """Build this GPU's plan for every engine model; keep the plans other architectures built."""
    from tqdm import tqdm

    from talkserve.targets.tensorrt import build_engine, version

    gpu = gpu or require_gpu_build()
    route_tts_to_engines(root, recipe)
    report = extra.setdefault("engines", {})
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
        (version_dir / "model.py").unlink(missing_ok=True)  # was the CPU target's ONNX Runtime python model
        repo.write_config(root / m.name, tensorrt_config(m, plans_in(version_dir), recipe))
        report.setdefault(m.name, {})[gpu.compute_capability] = {
            "gpu": gpu.name, "tensorrt": version(), "plan": plan.name, "plan_bytes": plan.stat().st_size,
            "source": m.onnx, "precision": counts or "as in the ONNX", "max_abs_diff_vs_onnxruntime": diffs}


def copy_current(output: Path) -> Callable[[Path, Recipe, dict], None]:
    """A build step that starts from the published repository (for `talkserve engines`)."""
    def step(root: Path, recipe: Recipe, extra: dict) -> None:
        current = (output / "current").resolve()
        if not current.is_dir():
            raise GPUTargetError(f"{output} has no published repository to add engines to (run `talkserve build`)")
        shutil.copytree(current, root, dirs_exist_ok=True, symlinks=True)
        manifest = root / "talkserve_build.json"  # rewritten at publish; carry what it knew
        old = json.loads(manifest.read_text()) if manifest.is_file() else {}
        for key in ("engines", "compression", "reports"):
            if key in old:
                extra[key] = old[key]
        extra["based_on"] = old.get("build_id", current.name)
        manifest.unlink(missing_ok=True)
    return step


def gpu_steps(gpu: Gpu) -> list:
    """The CPU target's steps, then this GPU's engines, then the report."""
    from functools import partial

    from talkserve.targets.cpu import STEPS

    return [*STEPS[:-1], ("build TensorRT engines (strongly typed, INT8 Q/DQ + FP16)", partial(engines_step, gpu=gpu)),
            STEPS[-1]]


def add_engine_steps(output: Path, gpu: Gpu) -> list:
    from functools import partial

    return [("copy the published repository", copy_current(output)),
            (f"build TensorRT engines for {gpu.compute_capability}", partial(engines_step, gpu=gpu))]
