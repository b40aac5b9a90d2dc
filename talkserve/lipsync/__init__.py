"""Lip-sync: audio of a sentence → portrait frames whose mouth speaks it.

- `frames`: Wav2Lip's inputs, the feathered paste-back, streaming a sentence in parts
- `landmarks`: 68-point landmarks (dlib) and the mouth measures read from them
- `warp`: the procedural, landmark-driven mouth (`lipsync.kind: warp`, and the Wav2Lip teacher)
"""

import importlib

__all__ = ["Generator", "Part", "animate", "animate_degrading", "animate_warp", "face_input", "part_sizes",
           "paste_back", "paste_mask", "stream_parts"]


def __getattr__(name: str):
    """The frame code (OpenCV, dlib: ~100 MB) loads on first use, so `talkserve.lipsync.config` stays light."""
    if name in __all__:
        return getattr(importlib.import_module("talkserve.lipsync.frames"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
