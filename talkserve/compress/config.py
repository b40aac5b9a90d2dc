"""Compression configs (pydantic): one per technique, gates per model, presets as named constants.

As in TensorRT Model Optimizer, a technique's config is data with a default and a description on
every field, and the verb functions (`prune`, `distill`, `quantize`) take it as their argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruneConfig(Strict):
    ratio: float = Field(0.0, ge=0, lt=1, description="Target fraction of channels / heads / FFN units removed")
    step: float = Field(0.3, gt=0, le=0.4, description="Largest ratio removed per iteration before distilling")
    importance: Literal["l2", "l1", "random"] = Field("l2", description="Channel ranking: weight norm or random")
    ignored_layers: list[str] = Field([], description="Module names never pruned, besides the model's outputs")


class DistillConfig(Strict):
    steps: int = Field(60, ge=0, description="Optimiser steps after each pruning iteration (0 = no repair)")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate of the student")
    batch_size: int = Field(4, ge=1, description="Examples per step")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the LLM's KL term")
    alpha: float = Field(0.9, ge=0, le=1, description="LLM: weight of KL(teacher‖student) vs. cross-entropy")
    seed: int = Field(0, description="Seed of batch order and student init noise")


class QuantizeConfig(Strict):
    precision: Literal["fp32", "int8"] = Field("fp32", description="int8: calibrate and write Q/DQ ONNX")
    calibration: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="Activation range method")
    calibration_batches: int = Field(8, ge=1, description="Calibration batches drawn from the data source")
    per_channel: bool = Field(True, description="Per-output-channel weight scales")
    keep_float: list[str] = Field([], description="Node-name prefixes never quantized (first/last layers, ...)")
    max_float_groups: int = Field(
        4, ge=0, description="Sensitivity sweep: at most this many layer groups kept in float to pass the gates")
    sweep_depth: int = Field(1, ge=1, description="Sweep granularity: node-name path components per group")
    cpu_forms: list[Literal["qdq_u8", "qdq_s8", "dynamic"]] = Field(
        ["qdq_u8", "qdq_s8"], description="ONNX Runtime CPU candidates; the fastest that passes the gates is served")
    float_weights: Literal["fp32", "int8"] = Field(
        "fp32", description="Weights of the layers left float: int8 = weight-only INT8 (DequantizeLinear on the "
                            "weight, activations float; a quarter of their bytes), served when it passes the gates")


class Wav2LipGates(Strict):
    mouth_psnr_min: float = Field(28.0, description="Mouth-region PSNR (dB) vs. the teacher's frames")
    mouth_ssim_min: float = Field(0.90, description="Mouth-region SSIM vs. the teacher's frames")
    sync_r_drop_max: float | None = Field(
        0.05, description="Teacher's minus student's mouth-opening vs speech-envelope Pearson r, on held-out "
                          "sentences (landmarks on the generated faces); null = report only")
    sync_lag_shift_max: float | None = Field(
        1.0, description="|student's − teacher's| best A/V lag in frames; null = report only")
    sync_r_min: float | None = Field(None, description="The student's own sync r; null = report only")


class VocoderGates(Strict):
    snr_min: float = Field(10.0, description="SNR (dB) of the waveform vs. the teacher's")
    stoi_min: float = Field(0.85, description="STOI vs. the teacher's waveform")
    pesq_min: float | None = Field(None, description="Wide-band PESQ vs. the teacher's; null = report only")


class AcousticGates(Strict):
    mel_l1_max: float = Field(0.25, description="Mean |log-mel − teacher's| over aligned frames")
    duration_error_max: float = Field(0.5, description="Mean |frames per symbol − teacher's|")


class LLMGates(Strict):
    top1_agreement_min: float = Field(0.90, description="Share of positions where argmax matches the teacher's")
    perplexity_increase_max: float = Field(0.10, description="(student ppl − teacher ppl) / teacher ppl, held out")


class PiperGates(Strict):
    wer_increase_max: float = Field(
        0.05, description="Whisper word error rate of the student's speech minus the teacher's, held-out text")
    mel_l1_max: float = Field(0.35, description="Mean |log-mel − teacher's| with sampling noise off")


class ModelCompression(Strict):
    prune: PruneConfig = Field(default_factory=PruneConfig, description="Structured pruning")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Repair after each pruning step")
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig, description="INT8 calibration")

    @property
    def active(self) -> bool:
        return self.prune.ratio > 0 or self.quantize.precision == "int8"


class Wav2LipCompression(ModelCompression):
    gates: Wav2LipGates = Field(default_factory=Wav2LipGates, description="Quality gates vs. the teacher")


class VocoderCompression(ModelCompression):
    gates: VocoderGates = Field(default_factory=VocoderGates, description="Quality gates vs. the teacher")


class AcousticCompression(ModelCompression):
    gates: AcousticGates = Field(default_factory=AcousticGates, description="Quality gates vs. the teacher")


class LLMCompression(ModelCompression):
    gates: LLMGates = Field(default_factory=LLMGates, description="Quality gates vs. the teacher")


class PiperCompression(ModelCompression):
    """The published voice is ONNX only: INT8 (and float groups) yes, pruning and distillation no."""

    gates: PiperGates = Field(default_factory=PiperGates, description="Quality gates vs. the original voice")

    @model_validator(mode="after")
    def _no_pruning(self) -> PiperCompression:
        if self.prune.ratio > 0:
            raise ValueError("piper: prune.ratio must be 0 (the published voice is an ONNX file with no PyTorch "
                             "model to prune)")
        return self


class CompressRecipe(Strict):
    llm: LLMCompression = Field(default_factory=LLMCompression, description="Causal LM")
    wav2lip: Wav2LipCompression = Field(default_factory=Wav2LipCompression, description="Lip-sync generator")
    acoustic: AcousticCompression = Field(default_factory=AcousticCompression, description="FastSpeech2 model")
    vocoder: VocoderCompression = Field(default_factory=VocoderCompression, description="HiFi-GAN generator")
    piper: PiperCompression = Field(default_factory=PiperCompression, description="Piper VITS voice")
    data_dir: Path | None = Field(
        None, description="Calibration/distillation data: a directory with texts/*.txt, audio/*.wav, "
                          "faces/*.png|jpg; null = built-in text, its Piper speech and the sample portrait")
    held_out: int = Field(6, ge=1, description="Held-out examples per gate, never used to distill or calibrate")
    max_examples: int = Field(40, ge=2, description="Sentences taken from the data source, held-out ones included")
    accept_failed_gates: bool = Field(False, description="Publish even when a gate fails (recorded in the report)")
    latency_runs: int = Field(5, ge=1, description="Timed ONNX Runtime runs per model for the report")
