"""Lip-sync: audio of a sentence → portrait frames whose mouth speaks it.

- `frames`: Wav2Lip's inputs, the feathered paste-back, streaming a sentence in parts
- `landmarks`: 68-point landmarks (dlib) and the mouth measures read from them
- `warp`: the procedural, landmark-driven mouth (`lipsync.kind: warp`, and the Wav2Lip teacher)
"""

from talkserve.lazy import lazy_api

# The frame code (OpenCV, dlib: ~100 MB) loads on first use, so `talkserve.lipsync.config` stays light.
__all__, __getattr__ = lazy_api(__name__, dict.fromkeys(
    ["Generator", "Part", "animate", "animate_degrading", "animate_warp", "face_input", "frames_within", "part_sizes",
     "paste_back", "paste_mask", "stream_parts"], "frames"))
