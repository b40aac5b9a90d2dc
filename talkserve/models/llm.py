"""Causal LM from a local Hugging Face directory (Llama/Qwen family) and its one-step decoder.

`DecoderStep` is the unit that is exported to ONNX and served as `llm_decoder`: one forward pass
with the KV cache as explicit tensors in and out, so a generation loop (talkserve.runtime.generate) can
drive it from anywhere — PyTorch, ONNX Runtime, or a Triton BLS call to a TensorRT engine.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

REQUIRED_FILES = ("config.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
SOURCE_FILE = "talkserve_source.json"  # in a directory converted from GGUF: which file, its sha256

def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def hf_directory(path: str | Path, cache: Path | None = None) -> Path:
    """A Hugging Face directory for the LLM at `path`: the directory itself, or, for a GGUF file,
    its conversion (dequantized to float, tokenizer and chat template as the file carries them),
    made once under `cache` (default $TALKSERVE_HOME/llm) and keyed by the file's sha256."""
    path = Path(path)
    if path.suffix != ".gguf":
        return check_model_dir(path)
    if not path.is_file():
        raise ValueError(f"LLM file {path} does not exist")
    digest = sha256(path)
    from talkserve.paths import talkserve_home

    out = (cache or talkserve_home() / "llm") / f"{path.stem}-{digest[:16]}"
    if not (out / SOURCE_FILE).is_file():
        _convert_gguf(path, digest, out)
    return check_model_dir(out)


def _convert_gguf(path: Path, digest: str, out: Path) -> None:
    """Write the converted directory next to `out` and rename it into place: a crash or a second
    build at the same time never leaves a half-written model where a build would load it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as e:  # transformers' messages name a tensor or an architecture, not the file
        raise ValueError(f"{path}: not a GGUF checkpoint transformers can load ({type(e).__name__}: {e})") from e
    model = _plain(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({"gguf": path.name, "sha256": digest}, indent=1))
        for file in [tmp, *tmp.iterdir()]:  # mkdtemp's are private; a build Job may serve as another user
            file.chmod(0o755 if file.is_dir() else 0o644)
        try:
            os.replace(tmp, out)
        except OSError:  # another build converted it meanwhile
            if not (out / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plain(model):
    """The same float weights in a model transformers will save (one loaded from GGUF still counts
    as quantized and refuses to)."""
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(
        {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    if model.generation_config is not None:
        plain.generation_config = model.generation_config
    return plain.eval()


def source_of(directory: Path) -> dict:
    """Where a model directory came from, for the release manifest."""
    directory = Path(directory)
    source = directory / SOURCE_FILE
    return json.loads(source.read_text()) if source.is_file() else {"directory": str(directory)}


def check_source(path: str | Path) -> Path:
    """Fail fast on a missing LLM: a directory is checked, a GGUF file only found (converting it
    is the build's LLM step's work)."""
    path = Path(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"LLM file {path} does not exist")
        return path
    return check_model_dir(path)


def check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix == ".gguf":
        return hf_directory(path)
    if not path.is_dir():
        raise ValueError(f"LLM directory {path} does not exist")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing or not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ValueError(f"{path}: not a Hugging Face model directory (needs config.json and weights)")
    return path


def load_llm(path: str | Path):
    """(model, tokenizer) from a local Hugging Face directory or a GGUF file; FP32, eval mode."""
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
