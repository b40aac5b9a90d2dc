"""What becomes a TensorRT engine, with which optimization profiles: shapes from each model's spec
(`talkserve.spec`), limits from the recipe's `gpu` section."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkserve import spec
from talkserve.recipe import Recipe
from talkserve.server import repository as repo


class GPUTargetError(RuntimeError):
    pass


Sampler = Callable[[tuple[int, ...], np.random.Generator], np.ndarray]


def _normal(offset: float = 0.0) -> Sampler:
    return lambda shape, rng: (rng.standard_normal(shape) + offset).astype(np.float32)


def _standard(shape, rng) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _uniform(shape, rng) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


def _ints(high: int, low: int = 0) -> Sampler:
    return lambda shape, rng: rng.integers(low, high, shape, dtype=np.int64)


def _ones(shape, rng) -> np.ndarray:
    return np.ones(shape, np.int64)


Range = tuple[int, int, int]  # min, opt, max of one dynamic (-1) dimension


@dataclass
class EngineInput:
    tensor: spec.Tensor
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max (full, batch included)
    sample: Sampler = _standard

    @property
    def name(self) -> str:
        return self.tensor.name


def profile(t: spec.Tensor, *ranges: Range, sample: Sampler = _standard) -> EngineInput:
    """An input's min/opt/max shapes: the spec's dims with each -1, in order, given a range."""
    if sum(d == -1 for d in t.dims) != len(ranges):
        raise ValueError(f"{t.name}: {len(ranges)} ranges for the dynamic dims of {t.dims}")
    it = iter(ranges)
    full = [next(it) if d == -1 else (d, d, d) for d in t.dims]
    return EngineInput(t, tuple(tuple(r[k] for r in full) for k in range(3)), sample)


@dataclass
class EngineModel:
    """One Triton model served by TensorRT, built from `onnx` (relative to the repository root)."""

    spec: spec.ModelSpec
    onnx: str
    inputs: list[EngineInput]
    max_batch_size: int = 0  # > 0: dimension 0 is Triton's batch, dynamic batching on
    feeds: Callable[[str, np.random.Generator], dict[str, np.ndarray]] | None = None  # validation inputs

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def outputs(self) -> tuple[spec.Tensor, ...]:
        return self.spec.outputs

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

    frames = (1, w.part_frames, g.wav2lip_max_batch)
    mel, face = spec.WAV2LIP.inputs
    return EngineModel(spec.WAV2LIP, f"wav2lip/1/{source_onnx(root / 'wav2lip' / '1', 'model')}",
                       [profile(mel, frames), profile(face, frames, sample=_uniform)],
                       max_batch_size=g.wav2lip_max_batch)


def llm_decoder_engine(root: Path, recipe: Recipe, layout: spec.KVLayout) -> EngineModel:
    """One profile for prefill (many tokens, no past) and decode (one token, a long past)."""
    g = recipe.gpu
    if g.max_prompt_tokens >= g.max_context_tokens:
        raise GPUTargetError("gpu.max_prompt_tokens must be below gpu.max_context_tokens")
    ctx, opt = g.max_context_tokens, min(g.opt_context_tokens, g.max_context_tokens)
    kv, hd = layout.num_kv_heads, layout.head_dim
    one, new = (1, 1, 1), (1, 1, g.max_prompt_tokens)  # batch; tokens: one at a time, a whole prompt at most
    decoder = spec.llm_decoder(layout)
    ids, mask, positions, *past = decoder.inputs
    inputs = [profile(ids, one, new, sample=_ints(layout.vocab_size)),
              profile(mask, one, (1, opt, ctx), sample=_ones), profile(positions, one, new),
              *(profile(t, one, (0, opt - 1, ctx - 1)) for t in past)]

    def feeds(which: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        past, n = {"min": (0, 1), "opt": (opt - 1, 1), "max": (0, g.max_prompt_tokens)}[which]
        cache = {name: _standard((1, kv, past, hd), rng) for name in layout.past_names()}
        return layout.feeds(_ints(layout.vocab_size)((1, n), rng), cache, past)

    return EngineModel(decoder, f"llm_decoder/1/{source_onnx(root / 'llm_decoder' / '1', 'model')}", inputs,
                       feeds=feeds)


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
    acoustic, vocoder = spec.acoustic(), spec.vocoder(h.num_mels)
    symbols = (1, min(64, g.max_symbols), g.max_symbols)
    return [
        EngineModel(acoustic, f"tts/1/{source_onnx(tts, 'acoustic')}",
                    [profile(acoustic.inputs[0], symbols, sample=_ints(len(SYMBOLS), low=1))]),
        EngineModel(vocoder, f"tts/1/{source_onnx(tts, 'vocoder')}",
                    [profile(vocoder.inputs[0], (1, opt, frames), sample=_normal(-5.0))]),
    ]


def engine_models(root: Path, recipe: Recipe) -> list[EngineModel]:
    layout = repo.read_params(root / "llm", spec.LLMParams).kv_layout
    lipsync = [wav2lip_engine(root, recipe)] if recipe.lipsync.kind == "wav2lip" else []  # warp has no network
    return [*lipsync, llm_decoder_engine(root, recipe, layout), *tts_engines(root, recipe)]
