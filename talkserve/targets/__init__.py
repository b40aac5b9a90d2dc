"""Build targets: the named steps that turn a recipe into a Triton repository (cpu: ONNX Runtime in
python models; gpu: TensorRT engines in place of those), and the stream-limit calibration."""

from __future__ import annotations

from talkserve.lazy import lazy_api

# The public API, each name from the module that defines it; loaded on first use, so importing
# one light submodule (a config) does not bring torch with the package.
_API = {
    "STEPS": "cpu",
    "gpu_steps": "gpu",
    "add_engine_steps": "gpu",
    "require_gpu_build": "gpu",
    "GPUTargetError": "profiles",
    "engine_models": "profiles",
    "calibrate": "calibrate",
}
__all__, __getattr__ = lazy_api(__name__, _API)
