"""Compression by technique (one module each, verb functions over pydantic configs) and by model
(`tasks`): prune → distill → gate, INT8 with float groups, gates against the uncompressed teacher."""

from __future__ import annotations

import importlib

# The public API, each name from the module that defines it; loaded on first use, so importing
# one light submodule (a config) does not bring torch with the package.
_API = {
    "CompressRecipe": "talkserve.compress.config",
    "DistillConfig": "talkserve.compress.config",
    "ModelCompression": "talkserve.compress.config",
    "PruneConfig": "talkserve.compress.config",
    "QuantizeConfig": "talkserve.compress.config",
    "importance_for": "talkserve.compress.prune",
    "prune_convnet": "talkserve.compress.prune",
    "prune_llm": "talkserve.compress.prune",
    "schedule": "talkserve.compress.prune",
    "count_params": "talkserve.compress.prune",
    "Importance": "talkserve.compress.prune",
    "distill": "talkserve.compress.distill",
    "quantize": "talkserve.compress.quantize",
    "QuantizeResult": "talkserve.compress.quantize",
    "compress_model": "talkserve.compress.pipeline",
    "ModelReport": "talkserve.compress.pipeline",
    "GateFailure": "talkserve.compress.gates",
    "GateResult": "talkserve.compress.gates",
    "check": "talkserve.compress.gates",
    "DataSource": "talkserve.compress.data",
    "PRESETS": "talkserve.compress.presets",
    "preset": "talkserve.compress.presets",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
