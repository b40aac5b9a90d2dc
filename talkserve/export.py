"""ONNX export with named tensors and dynamic axes; validation against PyTorch is part of export.

As in optimum's exporters: each model has a spec (names, axes, tolerance, validation inputs), and
`export` fails — leaving no file behind — when ONNX Runtime disagrees with PyTorch beyond the
spec's tolerance on inputs of shapes other than the ones traced.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from talkserve import spec
from talkserve.models.llm import DecoderStep
from talkserve.spec import KVLayout

__all__ = ["ExportReport", "ExportSpec", "ExportValidationError", "acoustic_spec", "export", "export_llm_decoder",
           "export_wav2lip", "llm_decoder_spec", "ort_decoder", "validate", "vocoder_spec", "wav2lip_spec"]

OPSET = 17


class ExportValidationError(RuntimeError):
    pass


@dataclass
class ExportSpec:
    """How to export and check one model."""

    name: str
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    example_inputs: tuple[torch.Tensor, ...]  # traced
    validation_inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)  # other shapes
    atol: float = 1e-4
    rtol: float = 1e-3


@dataclass
class ExportReport:
    path: Path
    max_abs_diff: dict[str, float]


def llm_decoder_spec(model: nn.Module) -> ExportSpec:
    layout = KVLayout.from_config(model.config)
    kv_axes = {0: "batch", 2: "past_sequence"}
    present_axes = {0: "batch", 2: "total_sequence"}

    def inputs(batch: int, past: int, seq: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(past * 31 + seq)
        kv = [torch.randn(batch, layout.num_kv_heads, past, layout.head_dim, generator=g)
              for _ in range(2 * layout.num_layers)]
        ids = torch.randint(0, layout.vocab_size, (batch, seq), generator=g)
        pos = (torch.arange(seq) + past).expand(batch, seq).contiguous()
        return (ids, torch.ones(batch, past + seq, dtype=torch.long), pos, *kv)

    decoder = spec.llm_decoder(layout)
    names_in, names_out = decoder.input_names(), decoder.output_names()
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"},
        **{n: kv_axes for n in layout.past_names()},
        **{n: present_axes for n in layout.present_names()},
    }
    # Traced on a mid-sized case; checked on prefill (no past) and single-token decode too. FP32
    # rounding differences between the two runtimes grow with depth (SmolLM2's 30 layers: 1e-3 on
    # logits of magnitude ~20), so the bound is 1e-4 per decoder layer.
    return ExportSpec("llm_decoder", names_in, names_out, axes, inputs(2, 5, 3),
                      [inputs(1, 0, 7), inputs(1, 9, 1), inputs(3, 4, 2)], atol=1e-4 * max(1, layout.num_layers))


def _random(dims: tuple[int, ...], batch: int, g: torch.Generator, uniform: bool = False) -> torch.Tensor:
    shape = (batch, *dims[1:])  # dims[0] is the spec's dynamic batch (-1)
    return torch.rand(shape, generator=g) if uniform else torch.randn(shape, generator=g)


def wav2lip_spec() -> ExportSpec:
    mel, face = spec.WAV2LIP.inputs

    def inputs(batch: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(batch)
        return _random(mel.dims, batch, g), _random(face.dims, batch, g, uniform=True)

    names = [*spec.WAV2LIP.input_names(), *spec.WAV2LIP.output_names()]
    return ExportSpec("wav2lip", spec.WAV2LIP.input_names(), spec.WAV2LIP.output_names(),
                      {n: {0: "frames"} for n in names}, inputs(2), [inputs(1), inputs(5)], atol=1e-4)


def vocoder_spec(num_mels: int = spec.MEL_BINS) -> ExportSpec:
    def inputs(b: int, t: int):
        return (torch.randn(b, num_mels, t, generator=torch.Generator().manual_seed(t)) - 5,)

    axes = {"mel": {0: "batch", 2: "mel_frames"}, "audio": {0: "batch", 2: "samples"}}
    s = spec.vocoder(num_mels)
    return ExportSpec("vocoder", s.input_names(), s.output_names(), axes, inputs(1, 24), [inputs(1, 50), inputs(2, 9)],
                      atol=1e-4)


def acoustic_spec() -> ExportSpec:
    from talkserve.models.fastspeech2 import text_to_ids

    def inputs(text: str):
        return (torch.tensor([text_to_ids(text)]),)

    axes = {"symbols": {0: "batch", 1: "symbols"}, "mel": {0: "batch", 2: "mel_frames"},
            "durations": {0: "batch", 1: "symbols"}}
    s = spec.acoustic()
    return ExportSpec("acoustic", s.input_names(), s.output_names(), axes, inputs("Hello there, friend."),
                      [inputs("A longer sentence, with a comma and more words in it."), inputs("Hi.")], atol=1e-3)


def _run_onnx(path: Path, spec: ExportSpec, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(spec.output_names, {n: t.numpy() for n, t in zip(spec.input_names, inputs, strict=True)})


def validate(model: nn.Module, path: Path, spec: ExportSpec) -> dict[str, float]:
    """Max |ONNX − PyTorch| per output over all validation inputs; raises past tolerance."""
    worst = dict.fromkeys(spec.output_names, 0.0)
    for inputs in [spec.example_inputs, *spec.validation_inputs]:
        with torch.no_grad():
            ref = model(*inputs)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = _run_onnx(path, spec, inputs)
        for name, r, g in zip(spec.output_names, ref, got, strict=True):
            r = r.numpy()
            if r.shape != g.shape:
                raise ExportValidationError(f"{spec.name}.{name}: shape {g.shape} != PyTorch {r.shape}")
            diff = float(np.max(np.abs(r - g))) if r.size else 0.0
            worst[name] = max(worst[name], diff)
            if not np.allclose(g, r, atol=spec.atol, rtol=spec.rtol):
                raise ExportValidationError(
                    f"{spec.name}.{name}: max abs diff {diff:.3g} exceeds atol {spec.atol} / rtol {spec.rtol}"
                )
    return worst


def export(model: nn.Module, spec: ExportSpec, out: str | Path,
           check: Callable[[nn.Module, Path, ExportSpec], dict[str, float]] = validate) -> ExportReport:
    """Export `model` to `out` and validate it; on failure nothing is left at `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about python branches in HF code
            torch.onnx.export(model, spec.example_inputs, str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=spec.input_names, output_names=spec.output_names,
                              dynamic_axes=spec.dynamic_axes, do_constant_folding=True)
        onnx.checker.check_model(str(tmp))
        diffs = check(model, tmp, spec)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(out, diffs)


def export_llm_decoder(model: nn.Module, out: str | Path) -> ExportReport:
    step = DecoderStep(model).eval()
    return export(step, llm_decoder_spec(model), out)


def export_wav2lip(model: nn.Module, out: str | Path) -> ExportReport:
    return export(model.eval(), wav2lip_spec(), out)


def ort_decoder(model_dir) -> tuple[Callable[[dict], dict], KVLayout, object]:
    """(step, layout, tokenizer) of the Hugging Face LLM at `model_dir`, exported as the served
    `llm_decoder` and run by ONNX Runtime in this process (tests and benchmarks)."""
    from talkserve.models.llm import load_llm

    model, tokenizer = load_llm(Path(model_dir))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "decoder.onnx"
        export_llm_decoder(model, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    layout = KVLayout.from_config(model.config)
    names = layout.output_names()
    return (lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))), layout, tokenizer
