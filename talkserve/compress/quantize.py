"""INT8 with calibration into explicit Q/DQ ONNX, a sensitivity sweep, and the fastest CPU form.

One calibration (ONNX Runtime's calibrator, ranges cached to JSON) feeds every artefact:
- `model.tensorrt.onnx` (installed as `<model>.qdq_s8.onnx`) — symmetric s8 activations and
  per-channel s8 weights in explicit QuantizeLinear/DequantizeLinear pairs, biases float: what a
  strongly typed TensorRT build consumes.
- the CPU form served by ONNX Runtime: u8-activation Q/DQ, s8 Q/DQ or dynamic quantization,
  whichever passes the gates and runs fastest here (measured, not assumed).
Layer groups that INT8 damages most stay in float: when fully quantized fails its gates, each group
is quantized alone and ranked by the error it adds; the worst are kept float one by one until the
gates pass (or `max_float_groups` is reached). Random ops (the noise a VITS voice samples) are
seeded while calibrating, so the same recipe calibrates to the same ranges and a build's gate verdict
does not change from one build to the next; the written models sample freely again. With
`float_weights: int8` the float groups' weights are then stored weight-only INT8
(talkserve.compress.weight_only) wherever that form passes the gates too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from talkserve.compress.config import QuantizeConfig
from talkserve.compress.gates import GateResult, failed
from talkserve.compress.weight_only import weight_only_int8

QUANTIZABLE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
Feeds = list[dict[str, np.ndarray]]
Evaluate = Callable[[Path], tuple[float, list[GateResult]]]  # ONNX file → (error to rank by, gate results)
Latency = Callable[[Path], float]


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: Feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


@dataclass
class QuantizeResult:
    trt: Path  # s8 Q/DQ for TensorRT
    cpu: Path  # the served ONNX Runtime form
    cpu_form: str
    float_groups: list[str]
    sensitivity: dict[str, float] = field(default_factory=dict)  # group → error when quantized alone
    gates: list[GateResult] = field(default_factory=list)  # of the served CPU form
    forms: dict[str, dict] = field(default_factory=dict)  # form → {latency_s, passed, quantized, bytes}
    weight_only_groups: list[str] = field(default_factory=list)  # float groups whose weights are INT8


def node_groups(model_path: Path, depth: int) -> dict[str, list[str]]:
    """Quantizable node names grouped by the first `depth` components of their name path."""
    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        if node.op_type in QUANTIZABLE:
            parts = node.name.strip("/").split("/")
            key = "/".join(parts[: min(depth, max(1, len(parts) - 1))])
            groups.setdefault(key, []).append(node.name)
    return groups


def matching(groups: dict[str, list[str]], prefixes: list[str]) -> list[str]:
    """Groups whose path has a component equal to (or a submodule of) one of `prefixes`."""
    def hit(key: str) -> bool:
        return any(c == p or c.startswith(p + ".") for c in key.split("/") for p in prefixes)

    return [k for k in groups if hit(k)]


def has_qdq(path: Path) -> bool:
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return {"QuantizeLinear", "DequantizeLinear"} <= ops or "DynamicQuantizeLinear" in ops


def is_quantized(path: Path) -> bool:
    """Whether any op computes in INT8 (dynamic quantization of a conv-only graph changes nothing)."""
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return bool(ops & {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"})


RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial")


def seed_random_ops(path: Path, seed: float = 0.0) -> list[str]:
    """Give every unseeded random op of the model at `path` a seed (in place); their names."""
    model = onnx.load(str(path))
    seeded = []
    for node in model.graph.node:
        if node.op_type in RANDOM_OPS and not any(a.name == "seed" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("seed", seed))
            seeded.append(node.name)
    if seeded:
        onnx.save(model, str(path))
    return seeded


def unseed(path: Path, names: list[str]) -> None:
    """Remove the seed `seed_random_ops` gave these nodes (in place)."""
    if not names:
        return
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.name in names:
            kept = [a for a in node.attribute if a.name != "seed"]
            del node.attribute[:]
            node.attribute.extend(kept)
    onnx.save(model, str(path))


class _Writer:
    """Writes quantized variants of one pre-processed model from one cached calibration."""

    def __init__(self, model: Path, feeds: Feeds, cfg: QuantizeConfig, work: Path):
        self.work = work
        self.pre = work / "pre.onnx"
        quant_pre_process(str(model), str(self.pre), skip_symbolic_shape=True)
        self.seeded = seed_random_ops(self.pre)  # reproducible calibration ranges
        self.feeds, self.cfg = feeds, cfg
        self.cache = work / "calibration.json"
        self.groups = node_groups(self.pre, cfg.sweep_depth)
        self.n = 0

    def nodes(self, groups: list[str]) -> list[str]:
        return [n for g in groups for n in self.groups[g]]

    def write(self, form: str, float_groups: list[str], only: list[str] | None = None) -> Path:
        self.n += 1
        out = self.work / f"{form}-{self.n}.onnx"
        exclude = self.nodes(float_groups)
        if form == "dynamic":
            quantize_dynamic(str(self.pre), str(out), per_channel=self.cfg.per_channel, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=exclude,
                             nodes_to_quantize=self.nodes(only) if only else None)
            unseed(out, self.seeded)
            return out
        s8 = form in ("qdq_s8", "tensorrt")
        quantize_static(
            str(self.pre), str(out), _Reader(self.feeds[: self.cfg.calibration_batches]),
            quant_format=QuantFormat.QDQ, per_channel=self.cfg.per_channel,
            activation_type=QuantType.QInt8 if s8 else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=METHODS[self.cfg.calibration], op_types_to_quantize=list(QUANTIZABLE),
            nodes_to_exclude=exclude, nodes_to_quantize=self.nodes(only) if only else None,
            calibration_cache_path=self.cache,
            # TensorRT's ONNX parser rejects a DequantizeLinear of an INT32 bias (onnx-tensorrt #850):
            # the TensorRT file keeps biases float (TensorRT folds them into the INT8 kernel itself).
            # The s8 form that ONNX Runtime evaluates in the gates and the sweep keeps them INT32.
            extra_options={"ActivationSymmetric": s8, "WeightSymmetric": True, "QuantizeBias": form != "tensorrt"},
        )
        unseed(out, self.seeded)
        return out


def sensitivity(writer: _Writer, evaluate: Evaluate, candidates: list[str]) -> dict[str, float]:
    """Error added by quantizing each group alone (s8, as TensorRT runs it), worst first."""
    scores = {}
    for g in tqdm(candidates, desc="sensitivity sweep", leave=False):
        path = writer.write("qdq_s8", [], only=[g])
        scores[g] = evaluate(path)[0]
        path.unlink()
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def choose_float_groups(writer: _Writer, evaluate: Evaluate, cfg: QuantizeConfig) -> tuple[list[str], dict]:
    """Start from everything INT8 but `keep_float`; add the most sensitive groups until the gates pass."""
    kept = matching(writer.groups, cfg.keep_float)
    _, gates = evaluate(writer.write("qdq_s8", kept))
    if not failed(gates) or cfg.max_float_groups == 0:
        return kept, {}
    scores = sensitivity(writer, evaluate, [g for g in writer.groups if g not in kept])
    for group in list(scores)[: cfg.max_float_groups]:
        kept = [*kept, group]
        _, gates = evaluate(writer.write("qdq_s8", kept))
        if not failed(gates):
            break
    return kept, scores


def weight_only_groups(writer: _Writer, path: Path, kept: list[str], scores: dict[str, float],
                       evaluate: Evaluate) -> tuple[Path, list[str]]:
    """The served form at `path` with weight-only INT8 on as many float groups as keep the gates: all
    at once, else one by one, least activation-sensitive first. (file, its weight-only groups)."""
    small = path.with_name(f"{path.stem}.w8.onnx")

    def passes(groups: list[str]) -> bool:
        return bool(weight_only_int8(path, small, set(writer.nodes(groups)))) and not failed(evaluate(small)[1])

    if passes(kept):
        return small, kept
    chosen: list[str] = []
    for group in sorted(kept, key=lambda g: scores.get(g, float("inf"))):
        if passes([*chosen, group]):
            chosen.append(group)
    if chosen:
        weight_only_int8(path, small, set(writer.nodes(chosen)))
    return small, chosen


def quantize(model: Path, out_dir: Path, feeds: Feeds, cfg: QuantizeConfig, evaluate: Evaluate,
             latency: Latency) -> QuantizeResult:
    """Calibrate once, sweep sensitivity, write `model.tensorrt.onnx` and the fastest passing CPU form."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="talkserve-quant-") as tmp:
        writer = _Writer(model, feeds, cfg, Path(tmp))
        kept, scores = choose_float_groups(writer, evaluate, cfg)
        trt = writer.write("tensorrt", kept)
        forms = {}
        for form in cfg.cpu_forms:
            path = writer.write(form, kept)
            _, gates = evaluate(path)
            forms[form] = {"latency_s": latency(path), "passed": not failed(gates), "path": path, "gates": gates,
                           "quantized": is_quantized(path), "bytes": path.stat().st_size}
        # A form that quantized nothing (e.g. dynamic on a graph with no MatMul left in INT8) is the
        # float model under another name: never the INT8 answer while a real INT8 form exists.
        real = [f for f in forms if forms[f]["quantized"]] or list(forms)
        passing = [f for f in real if forms[f]["passed"]] or real  # none passes: report the fastest
        best = min(passing, key=lambda f: forms[f]["latency_s"])
        weight_groups: list[str] = []
        if cfg.float_weights == "int8" and forms[best]["passed"] and kept:
            small, weight_groups = weight_only_groups(writer, forms[best]["path"], kept, scores, evaluate)
            if weight_groups:
                _, gates = evaluate(small)
                best_w8 = f"{best}_w8"
                forms[best_w8] = {"latency_s": latency(small), "passed": True, "path": small, "gates": gates,
                                  "quantized": True, "bytes": small.stat().st_size}
                best = best_w8
        shutil.copyfile(trt, out_dir / "model.tensorrt.onnx")  # not model.qdq_s8: a served CPU form may be that
        shutil.copyfile(forms[best]["path"], out_dir / f"model.{best}.onnx")
        return QuantizeResult(
            trt=out_dir / "model.tensorrt.onnx", cpu=out_dir / f"model.{best}.onnx", cpu_form=best,
            float_groups=kept, sensitivity=scores, gates=forms[best]["gates"], weight_only_groups=weight_groups,
            forms={f: {"latency_s": v["latency_s"], "passed": v["passed"], "quantized": v["quantized"],
                       "bytes": v["bytes"]} for f, v in forms.items()},
        )
