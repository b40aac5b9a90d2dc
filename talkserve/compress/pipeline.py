"""The compression schedule per model: prune a step → distill → gate, repeat; export; INT8; gate; measure.

The teacher is always the uncompressed model. Pruning stops at the target ratio, or at the first
failing gate: the build then fails naming model, metric, value and threshold, unless
`accept_failed_gates` is set, in which case that student is kept, the failure is recorded in the
report, and pruning goes no further.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from torch import nn

from talkserve.compress.config import ModelCompression
from talkserve.compress.distill import distill
from talkserve.compress.gates import GateFailure, GateResult, check, failed
from talkserve.compress.prune import count_params
from talkserve.compress.quantize import QuantizeResult, quantize
from talkserve.compress.tasks import Task


@dataclass
class Measures:
    params: int
    bytes: int
    macs: float | None
    latency_s: float
    peak_mb: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelReport:
    name: str
    before: Measures
    after: Measures
    gates: list[GateResult]
    served: str  # file name of the served ONNX
    trt: str | None  # s8 Q/DQ ONNX for TensorRT
    cpu_form: str
    prune_steps: list[dict] = field(default_factory=list)
    float_groups: list[str] = field(default_factory=list)
    weight_only_groups: list[str] = field(default_factory=list)  # float groups with INT8 weights
    sensitivity: dict[str, float] = field(default_factory=dict)
    forms: dict[str, dict] = field(default_factory=dict)
    accepted_failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["gates"] = [g.as_dict() for g in self.gates]
        return d


# ---- measuring -----------------------------------------------------------------------------


def ort_latency(path: Path, feed: dict[str, np.ndarray], runs: int = 5, threads: int = 0) -> float:
    """Median wall time of one ONNX Runtime run (one warm-up first)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    s.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork + execve, so a child
# spawned by a large parent reports the parent's size; VmHWM belongs to the new process image.
_PEAK = """
import sys, numpy as np, onnxruntime as ort
feed = dict(np.load(sys.argv[2]))
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
s.run(None, feed)
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(int(hwm.split()[1]) / 1024)
"""


def peak_memory_mb(path: Path, feed: dict[str, np.ndarray]) -> float:
    """Peak RSS (MiB) of a fresh Python process that loads the model and runs it once.

    Absolute, interpreter and ONNX Runtime included (~60 MiB here), so before/after compare fairly."""
    npz = path.with_suffix(".feed.npz")
    np.savez(npz, **feed)
    try:
        out = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(npz)], capture_output=True, text=True,
                             check=True, timeout=600)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        npz.unlink(missing_ok=True)


def onnx_params(path: Path) -> int:
    return int(sum(np.prod(t.dims) for t in onnx.load(str(path)).graph.initializer))


def macs(model: nn.Module | None, example_inputs: tuple) -> float | None:
    if model is None:
        return None
    import torch_pruning as tp

    return float(tp.utils.count_ops_and_params(model, example_inputs)[0])


def measure(task, model: nn.Module | None, path: Path, runs: int) -> Measures:
    feed = task.latency_feed(path)
    return Measures(
        params=count_params(model) if model is not None else onnx_params(path),
        bytes=path.stat().st_size,
        macs=macs(model, task.example_inputs()) if model is not None else None,
        latency_s=ort_latency(path, feed, runs),
        peak_mb=peak_memory_mb(path, feed),
    )


# ---- the schedule --------------------------------------------------------------------------


def evaluate(task, runner) -> dict[str, float]:
    return task.metrics([runner(x) for x in task.held_out()], task.references())


def _gate(name: str, metrics: dict, gates, accept: bool, accepted: list[str]) -> list[GateResult]:
    results = check(name, metrics, gates)
    bad = failed(results)
    if bad and not accept:
        raise GateFailure(bad)
    accepted += [r.describe() for r in bad]
    return results


def _prune(task: Task, student: nn.Module | None, cfg: ModelCompression, accept: bool, accepted: list[str],
           log) -> tuple[nn.Module | None, list[dict]]:
    """Prune a step → distill → gate, to the target ratio or the first failing gate."""
    steps = []
    for ratio, pruned in task.prune(student, cfg.prune):
        student = pruned  # conv nets shrink in place; the LLM comes back as a new, smaller model
        losses = distill(student, lambda s: task.batch(s, cfg.distill.batch_size), task.loss, cfg.distill,
                         desc=f"{task.name} distill @ {ratio:.2f}")
        metrics = evaluate(task, task.torch_runner(student))
        results = check(task.name, metrics, cfg.gates)
        steps.append({"ratio": ratio, "params": count_params(student), "distill_loss_first": losses[:1],
                      "distill_loss_last": losses[-1:], "metrics": metrics,
                      "gates": [r.as_dict() for r in results]})
        log(f"    {task.name}: pruned {ratio:.0%} → {count_params(student):,} params; "
            + ", ".join(r.describe().split(": ", 1)[1] for r in results))
        if failed(results):
            _gate(task.name, metrics, cfg.gates, accept, accepted)
            break  # accepted: go no further than the first failing step
    return student, steps


def _int8(task: Task, cfg: ModelCompression, fp32: Path, out_dir: Path, runs: int, log) -> tuple[Path, QuantizeResult]:
    """INT8 forms of the float student; the fastest that passes the gates is served."""
    held = task.held_out()
    fp32_outs = [task.onnx_runner(fp32)(x) for x in held]

    def judge(path: Path):
        """(error added by INT8 vs. the FP32 student — what the sweep ranks by, gates vs. the teacher)."""
        outs = [task.onnx_runner(path)(x) for x in held]
        return task.error(outs, fp32_outs), check(task.name, task.metrics(outs, task.references()), cfg.gates)

    q = quantize(fp32, out_dir, task.calibration_feeds(fp32), cfg.quantize, judge,
                 lambda p: ort_latency(p, task.latency_feed(p), runs))
    timings = ", ".join(f"{k} {v['latency_s'] * 1e3:.1f} ms" for k, v in q.forms.items())
    log(f"    {task.name}: INT8 served as {q.cpu_form} ({timings}); float groups {q.float_groups or 'none'}"
        f"{f', their weights INT8: {q.weight_only_groups}' if q.weight_only_groups else ''}")
    return q.cpu, q


def compress_model(task: Task, cfg: ModelCompression, out_dir: Path, accept: bool = False,
                   latency_runs: int = 5, log=print) -> tuple[nn.Module | None, ModelReport]:
    """Compress `task.teacher` per `cfg`; writes model.fp32.onnx (+ INT8 forms) under `out_dir`.
    Returns the student (None for an ONNX-only teacher) and its report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    task.distill_cfg = cfg.distill
    teacher_onnx = out_dir / "teacher.fp32.onnx"
    task.export(task.teacher, teacher_onnx)
    task.references()
    before = measure(task, task.teacher, teacher_onnx, latency_runs)
    before.metrics = evaluate(task, task.onnx_runner(teacher_onnx))
    teacher_onnx.unlink()
    accepted: list[str] = []
    student, steps = _prune(task, task.student(), cfg, accept, accepted, log)
    fp32 = out_dir / "model.fp32.onnx"
    task.export(student, fp32)
    served, q = (_int8(task, cfg, fp32, out_dir, latency_runs, log) if cfg.quantize.precision == "int8"
                 else (fp32, None))
    metrics = evaluate(task, task.onnx_runner(served))
    results = _gate(task.name, metrics, cfg.gates, accept, accepted)
    for r in results:
        log(f"    {r.describe()}")
    after = measure(task, student, served, latency_runs)
    after.metrics = metrics
    quantized = ({"float_groups": q.float_groups, "weight_only_groups": q.weight_only_groups,
                  "sensitivity": q.sensitivity, "forms": q.forms} if q else {})
    return student, ModelReport(task.name, before, after, results, served.name, q.trt.name if q and q.trt else None,
                                q.cpu_form if q else "fp32", steps, accepted_failures=accepted, **quantized)


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
