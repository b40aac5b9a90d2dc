"""GPU benchmark: per model, FP32 eager PyTorch vs the FP16 engine vs the INT8 engine, same GPU.

Latency (median of `--runs`) and throughput at batch 1 and 8, and GPU memory per model: Wav2Lip
and HiFi-GAN V1 at their published sizes, the LLM decoder step (KV cache, one token after a
`--past`-token context). FP16 engines come from the float ONNX (all layers FP16), INT8 engines
from the build's explicit Q/DQ ONNX (`talkserve build pruned30-int8`: the pruned students, the
layers it kept in float run FP16; the vocoder only with `tts.kind: fastspeech2`). Needs CUDA; the
engine columns need TensorRT (NGC containers) and are reported as missing without it. Ratios
printed, raw numbers written to JSON.

    python bench/gpu.py --int8-repository model_repository/current --out bench-results
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, runs: int) -> float:
    fn()  # warm-up (and lazy allocation)
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gpu_bytes_used() -> int:
    free, total = torch.cuda.mem_get_info()
    return total - free


def models(past: int):
    """(name, eager torch module, float ONNX exporter, feeds(batch) → dict of numpy inputs)."""
    from talkserve.export import export_llm_decoder, export_wav2lip
    from talkserve.models.hifigan import CONFIGS, load_hifigan
    from talkserve.models.llm import DecoderStep, load_llm
    from talkserve.models.wav2lip import load_wav2lip
    from talkserve.recipe import STARTER_LLM
    from talkserve.spec import KVLayout

    rng = np.random.default_rng(0)
    w2l = load_wav2lip(None).eval()
    yield ("wav2lip", w2l, lambda path: export_wav2lip(w2l, path),
           lambda b: {"mel": rng.standard_normal((b, 1, 80, 16), np.float32),
                      "face": rng.random((b, 6, 96, 96), np.float32)})
    voc = load_hifigan(None, CONFIGS["v1"]).eval()

    def export_vocoder(path):
        from talkserve.export import export, vocoder_spec

        return export(voc, vocoder_spec(80), path)

    yield "vocoder", voc, export_vocoder, lambda b: {"mel": rng.standard_normal((b, 80, 86), np.float32) - 5}
    llm, _ = load_llm(STARTER_LLM)
    layout = KVLayout.from_config(llm.config)

    def decode(b):
        cache = {n: rng.standard_normal((b, layout.num_kv_heads, past, layout.head_dim), np.float32)
                 for n in layout.past_names()}
        return layout.feeds(rng.integers(0, layout.vocab_size, (b, 1)), cache, past)

    yield "llm_decoder", DecoderStep(llm).eval(), lambda path: export_llm_decoder(llm, path), decode


def shapes_for(feeds_at) -> dict:
    lo, hi = feeds_at(1), feeds_at(8)
    return {n: (lo[n].shape, hi[n].shape, hi[n].shape) for n in lo}


def engine_column(onnx_path: Path, work: Path, feeds_at, runs: int, label: str) -> dict:
    from talkserve.targets.precision import to_fp16
    from talkserve.targets.tensorrt import Engine, build_engine

    half = work / f"{label}.onnx"
    to_fp16(onnx_path, half)
    plan = work / f"{label}.plan"
    before = gpu_bytes_used()
    build_engine(half, plan, shapes_for(feeds_at), work / "timing.cache", 4 << 30)
    engine = Engine(plan)
    out = {"plan_bytes": plan.stat().st_size}
    for b in (1, 8):
        feeds = feeds_at(b)
        t = timed(lambda feeds=feeds: engine(feeds), runs)
        out[f"latency_ms_b{b}"], out[f"throughput_b{b}"] = t * 1000, b / t
    out["gpu_memory_mb"] = (gpu_bytes_used() - before) / 2**20
    return out


def eager_column(module, feeds_at, runs: int) -> dict:
    module = module.cuda()
    torch.cuda.reset_peak_memory_stats()
    out = {}
    with torch.no_grad():
        for b in (1, 8):
            feeds = {k: torch.from_numpy(v).cuda() for k, v in feeds_at(b).items()}
            t = timed(lambda feeds=feeds: module(*feeds.values()), runs)
            out[f"latency_ms_b{b}"], out[f"throughput_b{b}"] = t * 1000, b / t
    out["gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    module.cpu()
    torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--int8-repository", type=Path, help="a pruned30-int8 (or int8) build: its Q/DQ ONNX files")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--past", type=int, default=128, help="LLM context before the timed decode step")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    try:
        from talkserve.targets.tensorrt import version

        trt = version()
    except ImportError:
        trt = None
        print("TensorRT is not installed here: engine columns skipped (run inside nvcr.io/nvidia/tritonserver)")
    report = {"gpu": torch.cuda.get_device_name(), "tensorrt": trt, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, module, export_float, feeds_at in models(args.past):
            row = {"fp32_eager": eager_column(module, feeds_at, args.runs)}
            if trt:
                float_onnx = work / f"{name}.float.onnx"
                export_float(float_onnx)
                row["fp16_engine"] = engine_column(float_onnx, work, feeds_at, args.runs, f"{name}-fp16")
                qdq = args.int8_repository and args.int8_repository / name / "1" / "model.qdq_s8.onnx"
                if name == "vocoder" and args.int8_repository:
                    qdq = args.int8_repository / "tts" / "1" / "vocoder.qdq_s8.onnx"
                if qdq and qdq.is_file():
                    row["int8_engine"] = engine_column(qdq, work, feeds_at, args.runs, f"{name}-int8")
            report["models"][name] = row
            base = row["fp32_eager"]
            for col, r in row.items():
                speedup = base["latency_ms_b1"] / r["latency_ms_b1"]
                print(f"{name:12s} {col:12s} b1 {r['latency_ms_b1']:8.2f} ms ({speedup:.2f}×)"
                      f"  b8 {r['throughput_b8']:9.1f}/s ({r['throughput_b8'] / base['throughput_b8']:.2f}×)"
                      f"  GPU memory {r['gpu_memory_mb']:.0f} MB", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
