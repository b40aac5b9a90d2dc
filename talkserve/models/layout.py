"""Shapes the served python models need, without importing torch (each python stub that imports
torch costs ~250 MB of resident memory, measured)."""

from __future__ import annotations

from dataclasses import dataclass

FACE_SIZE = 96  # Wav2Lip's face crop (published checkpoints)
MEL_STEP = 16  # mel frames per video frame window


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
