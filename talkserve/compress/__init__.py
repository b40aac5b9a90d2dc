"""Compression by technique (one module each, verb functions over pydantic configs) and by model
(`tasks`): prune → distill → gate, INT8 with float groups, gates against the uncompressed teacher."""

from __future__ import annotations

from talkserve.lazy import lazy_api

# The public API, each name from the module that defines it; loaded on first use, so importing
# one light submodule (a config) does not bring torch with the package.
_API = {
    "CompressRecipe": "config",
    "DistillConfig": "config",
    "ModelCompression": "config",
    "PruneConfig": "config",
    "QuantizeConfig": "config",
    "importance_for": "prune",
    "prune_convnet": "prune",
    "prune_llm": "prune",
    "schedule": "prune",
    "count_params": "prune",
    "Importance": "prune",
    "distill": "distill",
    "quantize": "quantize",
    "QuantizeResult": "quantize",
    "compress_model": "pipeline",
    "ModelReport": "pipeline",
    "GateFailure": "gates",
    "GateResult": "gates",
    "check": "gates",
    "DataSource": "data",
    "PRESETS": "presets",
    "preset": "presets",
}
__all__, __getattr__ = lazy_api(__name__, _API)
