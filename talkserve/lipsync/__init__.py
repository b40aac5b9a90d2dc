"""Lip-sync: audio of a sentence → portrait frames whose mouth speaks it.

- `frames`: Wav2Lip's inputs, the feathered paste-back, streaming a sentence in parts
- `landmarks`: 68-point landmarks (dlib) and the mouth measures read from them
- `warp`: the procedural, landmark-driven mouth (`lipsync.kind: warp`, and the Wav2Lip teacher)
"""

from talkserve.lipsync.frames import (
    Generator,
    Part,
    animate,
    animate_degrading,
    animate_warp,
    face_input,
    part_sizes,
    paste_back,
    paste_mask,
    stream_parts,
)

__all__ = ["Generator", "Part", "animate", "animate_degrading", "animate_warp", "face_input", "part_sizes",
           "paste_back", "paste_mask", "stream_parts"]
