"""Named compression presets (as ModelOpt's `INT8_DEFAULT_CFG`): fp32, int8, pruned30-int8, pruned50-int8.

Each is a `CompressRecipe`; `build/recipes/<name>.yaml` spells the same thing out as a recipe file.
"""

from __future__ import annotations

from talkserve.compress.config import CompressRecipe

# The layers every INT8 preset keeps float from the start: each net's first and last convs (the
# image / waveform edges, where INT8 error shows most); the sweep adds more when a gate needs it.
KEEP_FLOAT = {
    "wav2lip": ["output_block"],
    "vocoder": ["conv_pre", "conv_post"],
    "acoustic": ["mel_linear"],
    "llm": ["lm_head"],
    "piper": [],
}
# Which ONNX Runtime forms to measure per model: dynamic quantization is the LLM's usual winner on CPU.
CPU_FORMS = {"llm": ["dynamic", "qdq_u8"], "acoustic": ["dynamic", "qdq_u8"], "piper": ["qdq_u8", "dynamic"]}
# Where the layers left float hold most of the bytes: the Piper decoder (its activations fail INT8's
# WER gate) and the LLM's lm_head; their weights go weight-only INT8 when the gates still pass.
WEIGHT_ONLY = {"llm", "piper"}
# Repair steps after each pruning step where the default (60) is too few: a 30 %-pruned trained
# Wav2Lip reaches mouth PSNR 25.2 dB / SSIM 0.889 in 60 steps and 29.0 dB / 0.940 in 200 (gates 28 / 0.9).
DISTILL_STEPS = {"wav2lip": 200}


def _int8(model: str, prune_ratio: float = 0.0) -> dict:
    q = {"precision": "int8", "keep_float": KEEP_FLOAT[model]}
    if model in CPU_FORMS:
        q["cpu_forms"] = CPU_FORMS[model]
    if model in WEIGHT_ONLY:
        q["float_weights"] = "int8"
    out: dict = {"quantize": q}
    if prune_ratio and model != "piper":
        out["prune"] = {"ratio": prune_ratio}
        if model in DISTILL_STEPS:
            out["distill"] = {"steps": DISTILL_STEPS[model]}
    return out


def preset(name: str) -> CompressRecipe:
    if name == "fp32":
        return CompressRecipe()
    ratios = {"int8": 0.0, "pruned30-int8": 0.3, "pruned50-int8": 0.5}
    if name not in ratios:
        raise ValueError(f"unknown compression preset {name!r}; one of fp32, {', '.join(ratios)}")
    return CompressRecipe.model_validate({m: _int8(m, ratios[name]) for m in KEEP_FLOAT})


PRESETS = ["fp32", "int8", "pruned30-int8", "pruned50-int8"]
