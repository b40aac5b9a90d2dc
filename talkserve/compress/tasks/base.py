"""The one protocol every model's compression implements, and what the tasks share.

A task's `torch_runner(model)` and `onnx_runner(path)` map one held-out example to outputs the
same way, so one `metrics` function judges the pruned PyTorch student and every ONNX artefact
against the teacher's outputs. A task whose teacher is only an ONNX file (`teacher is None`, the
published Piper voice) prunes nothing and exports by copying; the pipeline runs it the same way.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from talkserve.compress.config import DistillConfig, PruneConfig
from talkserve.compress.data import DataSource
from talkserve.compress.prune import prune_convnet

Runner = Callable[[object], object]


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def no_grad(fn: Callable) -> Callable:
    def run(x):
        with torch.no_grad():
            return fn(x)
    return run


class Task:
    """What compression needs from one model; subclasses implement every method the pipeline calls."""

    name: str
    teacher: nn.Module | None  # None: the teacher is an ONNX file (nothing to prune or distill)

    def __init__(self, data: DataSource, seed: int = 0):
        self.data = data
        self.rng = random.Random(seed)
        self.distill_cfg = DistillConfig()  # the pipeline sets the recipe's

    # examples and judging
    def held_out(self) -> list:
        raise NotImplementedError

    def torch_runner(self, model: nn.Module) -> Runner:
        raise NotImplementedError

    def onnx_runner(self, path: Path) -> Runner:
        raise NotImplementedError

    def metrics(self, outs: list, refs: list) -> dict[str, float]:
        raise NotImplementedError

    def references(self) -> list:
        """The teacher's outputs on the held-out examples (computed once)."""
        if not hasattr(self, "_refs"):
            self._refs = [self.torch_runner(self.teacher)(x) for x in self.held_out()]
        return self._refs

    def error(self, outs: list, refs: list) -> float:
        """One number to rank INT8 damage by (the sensitivity sweep); lower is better."""
        return self.metrics(outs, refs)["error"]

    # compression
    def student(self) -> nn.Module | None:
        return copy.deepcopy(self.teacher) if self.teacher is not None else None

    def prune(self, student: nn.Module, cfg: PruneConfig) -> Iterator[tuple[float, nn.Module]]:
        raise NotImplementedError

    def batch(self, step: int, size: int):
        raise NotImplementedError

    def loss(self, student: nn.Module, batch) -> torch.Tensor:
        raise NotImplementedError

    def export(self, model: nn.Module | None, path: Path) -> None:
        raise NotImplementedError

    def calibration_feeds(self, fp32: Path) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def latency_feed(self, path: Path) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def example_inputs(self) -> tuple:
        raise NotImplementedError


def conv_prune(task: Task, student: nn.Module, cfg: PruneConfig, ignored: list[nn.Module]):
    """Conv nets shrink in place, one schedule step at a time."""
    for ratio in prune_convnet(student, task.example_inputs(), cfg, ignored):
        yield ratio, student
