"""Causal LM from a local Hugging Face directory (Llama/Qwen family) and its one-step decoder.

`DecoderStep` is the unit that is exported to ONNX and served as `llm_decoder`: one forward pass
with the KV cache as explicit tensors in and out, so a generation loop (talkserve.generate) can
drive it from anywhere — PyTorch, ONNX Runtime, or a Triton BLS call to a TensorRT engine.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

REQUIRED_FILES = ("config.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


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
        self.takes_cache = "cache" in inspect.signature(model.forward).parameters

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache()  # transformers keeps its cache as an object; rebuild it from tensors
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        # `cache` where transformers has it: `past_key_values` is deprecated there and goes in 5.40
        name = "cache" if self.takes_cache else "past_key_values"
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **{name: cache})
        present = []
        for layer in getattr(out, name).layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)
