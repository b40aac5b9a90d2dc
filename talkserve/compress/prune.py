"""Structured pruning that shrinks tensors (no masks).

Conv nets (Wav2Lip, HiFi-GAN, the acoustic model's convs) go through Torch-Pruning's dependency
graph, which keeps coupled layers consistent (residual adds, U-Net skip concatenations, the layer
after). Its graph loops forever on transformers' attention (rotary ops), so the LLM has its own
code here: GQA-aware head pruning (whole KV groups with their query heads, or the same number of
query heads in every group) and FFN channel pruning, written as a new config + sliced state_dict
so the result is an ordinary Hugging Face model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
import torch_pruning as tp
from torch import nn

from talkserve.compress.config import PruneConfig


class Importance(Protocol):
    """Scores units (channels, heads): `slices[i]` is a tensor whose dim 0 enumerates the units."""

    def __call__(self, slices: Sequence[torch.Tensor]) -> torch.Tensor: ...

    def for_torch_pruning(self) -> tp.importance.Importance: ...


class MagnitudeImportance:
    """Sum over coupled tensors of each unit's Lp norm to the p-th power (L2 by default)."""

    def __init__(self, p: int = 2):
        self.p = p

    def __call__(self, slices: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(s.detach().float().flatten(1).abs().pow(self.p).sum(1) for s in slices)

    def for_torch_pruning(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=self.p)


class RandomImportance:
    """A baseline: any channel is as good as another (what L2 must beat)."""

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, slices: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.rand(slices[0].shape[0], generator=self.gen)

    def for_torch_pruning(self) -> tp.importance.Importance:
        return tp.importance.RandomImportance()


def importance_for(cfg: PruneConfig) -> Importance:
    return {"l2": lambda: MagnitudeImportance(2), "l1": lambda: MagnitudeImportance(1),
            "random": RandomImportance}[cfg.importance]()


def schedule(ratio: float, step: float) -> list[float]:
    """Cumulative ratios reached after each iteration, none more than `step` past the last."""
    n = math.ceil(round(ratio / step, 6)) if ratio > 0 else 0
    return [ratio * (i + 1) / n for i in range(n)]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- conv nets: Torch-Pruning ---------------------------------------------------------------


def prune_convnet(model: nn.Module, example_inputs: tuple, cfg: PruneConfig, ignored: Sequence[nn.Module] = (),
                  importance: Importance | None = None) -> Iterator[float]:
    """Prune `model` in place, one schedule step per iteration; yields the ratio reached.

    The caller distills between iterations (the dependency graph is built once and stays valid).
    `cfg.ignored_layers` adds module names to `ignored` (the output layers the caller protects).
    """
    names = dict(model.named_modules())
    unknown = [n for n in cfg.ignored_layers if n not in names]
    if unknown:
        raise ValueError(f"ignored_layers: no module named {unknown} in {type(model).__name__}")
    steps = schedule(cfg.ratio, cfg.step)
    if not steps:
        return
    importance = importance or importance_for(cfg)
    pruner = tp.pruner.MetaPruner(
        model, example_inputs, importance=importance.for_torch_pruning(), pruning_ratio=cfg.ratio,
        iterative_steps=len(steps), ignored_layers=[*ignored, *(names[n] for n in cfg.ignored_layers)],
    )
    for ratio in steps:
        pruner.step()
        yield ratio


# ---- LLM: GQA-aware heads + FFN channels -----------------------------------------------------


def head_plan(num_heads: int, num_kv: int, ratio: float, final_ratio: float | None = None) -> tuple[int, int]:
    """(kv groups kept, query heads per group kept) for a head ratio, GQA-consistent.

    Whole KV groups go (with their query heads) when the final ratio removes at least one group;
    otherwise the same number of query heads goes from every group, so q heads stay a multiple of
    kv heads. Intermediate ratios of an iterative schedule move toward the final plan in the same
    mode, so no step has to re-add what an earlier one removed.
    """
    final = ratio if final_ratio is None else final_ratio
    per_group = num_heads // num_kv
    frac = ratio / final if final > 0 else 0.0
    final_groups = math.floor(final * num_kv + 1e-9)
    if final_groups >= 1:
        return max(1, num_kv - math.floor(final_groups * frac + 1e-9)), per_group
    final_heads = round(final * per_group)
    return num_kv, max(1, per_group - math.floor(final_heads * frac + 1e-9))


def _rows(w: torch.Tensor, idx: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rows of a projection for the given head indices (each head = head_dim consecutive rows)."""
    rows = (idx[:, None] * head_dim + torch.arange(head_dim)[None]).flatten()
    return w[rows]


def _prune_attention(sd: dict, prefix: str, cfg, kv_keep: int, q_keep: int, importance: Importance) -> None:
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    per = heads // kv
    q, k, v, o = (sd[f"{prefix}.{n}_proj.weight"] for n in "qkvo")
    q_heads = q.reshape(heads, hd, -1)
    o_heads = o.reshape(o.shape[0], heads, hd).transpose(0, 1)  # (heads, hidden, hd)
    head_score = importance([q_heads, o_heads])  # (heads,)
    group_score = importance([k.reshape(kv, hd, -1), v.reshape(kv, hd, -1)]) + head_score.reshape(kv, per).sum(1)
    groups = torch.sort(torch.topk(group_score, kv_keep).indices).values
    q_idx = torch.cat([g * per + torch.sort(torch.topk(head_score[g * per:(g + 1) * per], q_keep).indices).values
                       for g in groups.tolist()])
    for name, idx in [("q", q_idx), ("k", groups), ("v", groups)]:
        for kind in ("weight", "bias"):
            key = f"{prefix}.{name}_proj.{kind}"
            if key in sd:
                sd[key] = _rows(sd[key], idx, hd).contiguous()
    sd[f"{prefix}.o_proj.weight"] = _rows(o.t(), q_idx, hd).t().contiguous()


def _prune_mlp(sd: dict, prefix: str, keep: int, importance: Importance) -> None:
    gate, up, down = (sd[f"{prefix}.{n}_proj.weight"] for n in ("gate", "up", "down"))
    idx = torch.sort(torch.topk(importance([gate, up, down.t()]), keep).indices).values
    sd[f"{prefix}.gate_proj.weight"] = gate[idx].contiguous()
    sd[f"{prefix}.up_proj.weight"] = up[idx].contiguous()
    sd[f"{prefix}.down_proj.weight"] = down[:, idx].contiguous()


def prune_llm(model: nn.Module, ratio: float, original=None, final_ratio: float | None = None,
              importance: Importance | None = None) -> nn.Module:
    """A new, smaller model of the same class: heads and FFN units cut by `ratio` of `original`'s config.

    Ratios are cumulative against `original` (default: the model's own config), so an iterative
    schedule calls this with 0.25, 0.5, … (and the schedule's `final_ratio`) on the previous result.
    Sizes stay uniform across layers, as a Hugging Face config requires.
    """
    importance = importance or MagnitudeImportance(2)
    cfg = model.config
    base = original or cfg
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if getattr(cfg, "head_dim", None) is None:
        cfg.head_dim = head_dim
    kv_keep, q_keep = head_plan(base.num_attention_heads, base.num_key_value_heads, ratio, final_ratio)
    kv_keep = min(kv_keep, cfg.num_key_value_heads)
    q_keep = min(q_keep, cfg.num_attention_heads // cfg.num_key_value_heads)
    ffn_keep = min(cfg.intermediate_size, max(1, round(base.intermediate_size * (1 - ratio))))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for i in range(cfg.num_hidden_layers):
        _prune_attention(sd, f"model.layers.{i}.self_attn", cfg, kv_keep, q_keep, importance)
        _prune_mlp(sd, f"model.layers.{i}.mlp", ffn_keep, importance)
    new_cfg = type(cfg).from_dict({**cfg.to_dict(), "num_attention_heads": kv_keep * q_keep,
                                   "num_key_value_heads": kv_keep, "head_dim": head_dim,
                                   "intermediate_size": ffn_keep})
    pruned = type(model)(new_cfg)
    if getattr(cfg, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    pruned.load_state_dict(sd, strict=not getattr(cfg, "tie_word_embeddings", False))
    return pruned.eval()
