"""Causal LM from a local Hugging Face directory (Llama/Qwen family) and its one-step decoder.

`DecoderStep` is the unit that is exported to ONNX and served as `llm_decoder`: one forward pass
with the KV cache as explicit tensors in and out, so a generation loop (talkserve.generate) can
drive it from anywhere — PyTorch, ONNX Runtime, or a Triton BLS call to a TensorRT engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

REQUIRED_FILES = ("config.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class KVLayout:
    """Shape facts the serving loop needs about the cache, read from the model config."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def from_config(cls, config) -> KVLayout:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(config.num_hidden_layers, config.num_key_value_heads, head_dim, config.vocab_size)

    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    def present_names(self) -> list[str]:
        return [f"present.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "position_ids", *self.past_names()]

    def output_names(self) -> list[str]:
        return ["logits", *self.present_names()]


def check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"LLM directory {path} does not exist")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing or not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ValueError(f"{path}: not a Hugging Face model directory (needs config.json and weights)")
    return path


def load_llm(path: str | Path):
    """(model, tokenizer) from a local Hugging Face directory; FP32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = check_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval(), tokenizer


class DecoderStep(nn.Module):
    """One decoder pass with an explicit KV cache.

    input_ids (B, S), attention_mask (B, P+S), position_ids (B, S),
    past_key_values.{i}.key/value (B, kv_heads, P, head_dim)
    → logits (B, S, vocab), present.{i}.key/value (B, kv_heads, P+S, head_dim)
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache()  # transformers keeps its cache as an object; rebuild it from tensors
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)
