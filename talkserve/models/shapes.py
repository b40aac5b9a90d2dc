"""Load a structurally pruned state_dict into the model class it came from.

Pruning shrinks tensors, so a pruned checkpoint keeps the published parameter names but not the
published shapes. Rather than saving pickled modules, we build the normal model and resize each
layer to the tensors found under its name: the file stays a plain state_dict and the architecture
stays the one readable class.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def read_checkpoint(path: str | Path, what: str):
    """`torch.load` of a weights-only file, with one clear error for any unreadable one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated/corrupt files raise many different types
        raise ValueError(f"{path}: not a readable {what} checkpoint ({e})") from e


def _resized(module: nn.Module, weight: torch.Tensor) -> nn.Module | None:
    """A fresh module of the same kind with the channel counts of `weight` (None = unsupported)."""
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        groups = module.groups
        return type(module)(weight.shape[1] * groups, weight.shape[0], module.kernel_size, module.stride,
                            module.padding, module.dilation, groups, bias)
    if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d):
        return type(module)(weight.shape[0], weight.shape[1] * module.groups, module.kernel_size, module.stride,
                            module.padding, module.output_padding, module.groups, bias, module.dilation)
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        return type(module)(weight.shape[0], module.eps, module.momentum)
    if isinstance(module, nn.LayerNorm):
        return nn.LayerNorm(weight.shape[0], module.eps)
    if isinstance(module, nn.Linear):
        return nn.Linear(weight.shape[1], weight.shape[0], bias)
    return None


def fit_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> nn.Module:
    """Resize `model`'s layers in place to `state`'s shapes, then load it strictly."""
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or getattr(module, "weight", None) is None or module.weight.shape == weight.shape:
            continue
        new = _resized(module, weight)
        if new is None:
            raise ValueError(f"{what}: {name} has shape {tuple(weight.shape)}, cannot resize {type(module).__name__}")
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{what}: not the expected layout (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model
