"""Build targets: the named steps that turn a recipe into a Triton repository (cpu: ONNX Runtime in
python models; gpu: TensorRT engines in place of those), and the stream-limit calibration."""

from __future__ import annotations

import importlib

# The public API, each name from the module that defines it; loaded on first use, so importing
# one light submodule (a config) does not bring torch with the package.
_API = {
    "STEPS": "talkserve.targets.cpu",
    "gpu_steps": "talkserve.targets.gpu",
    "add_engine_steps": "talkserve.targets.gpu",
    "require_gpu_build": "talkserve.targets.gpu",
    "GPUTargetError": "talkserve.targets.profiles",
    "engine_models": "talkserve.targets.profiles",
    "calibrate": "talkserve.targets.calibrate",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
