"""How many replies this machine runs at once without any of them stalling: the build's default for
`serving.max_streams` (admission control, talkserve.admission).

A reply in real time needs, per second of video, a second of speech from `tts` and 25 frames from
`lipsync`; the models share the machine's cores, so what one second of video costs in wall time
with each model on all cores, run here on the built files exactly as the served models load them, is
what bounds the streams: capacity = ⌊headroom / cost⌋. The headroom leaves the rest to the LLM, the
stub IPC and the network; `bench/pipeline.py --capacity` measures the real figure to compare.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from talkserve import repository as repo
from talkserve import spec
from talkserve.audio import pad_to_frames
from talkserve.avatars import AvatarStore
from talkserve.lipsync import animate, animate_warp
from talkserve.lipsync.warp import WarpRig
from talkserve.models.voice import load_voice
from talkserve.recipe import SAMPLE_PORTRAIT

SENTENCE = "Thanks for asking, I will explain it step by step."
HEADROOM = 0.75  # of the machine for speech and lip-sync; the rest for the LLM, IPC and the network
MOST = 32  # a calibration never admits more than this many streams


def _lipsync(root: Path, params: spec.LipsyncParams, avatar, threads: int):
    """parts(audio, sr) as the served `lipsync` model computes them (no IPC)."""
    fps, first, part = params.fps, params.first_part_frames, params.part_frames
    if params.kind == "warp":
        rig = WarpRig(avatar.portrait, avatar.landmarks, params.warp)
        return lambda audio, sr: list(animate_warp(audio, sr, rig, fps, first, part))
    import onnxruntime as ort

    from talkserve.cpu_sessions import session_options

    # the exported generator, whichever target serves it, with the served options
    session = ort.InferenceSession(str(root / "wav2lip" / "1" / "model.onnx"), session_options(threads),
                                   providers=["CPUExecutionProvider"])

    def generate(mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        return session.run(["frames"], {"mel": mel, "face": face})[0]

    return lambda audio, sr: list(animate(audio, sr, avatar, generate, fps, first, part))


def calibrate(root: Path) -> dict:
    """Seconds of wall time one second of video costs here (speech + lip-sync), and the streams it allows."""
    tts, lip = repo.read_params(root / "tts", spec.TTSParams), repo.read_params(root / "lipsync", spec.LipsyncParams)
    fps = lip.fps
    voice = load_voice(root / "tts" / "1", tts)
    with tempfile.TemporaryDirectory(prefix="talkserve-calibrate-") as tmp:
        avatar = AvatarStore(Path(tmp) / "avatars.db").add(SAMPLE_PORTRAIT, "sample")
    draw = _lipsync(root, lip, avatar, tts.intra_op_threads)
    draw(pad_to_frames(voice.synthesize("Hello."), voice.sample_rate, fps), voice.sample_rate)  # warm-up
    start = time.perf_counter()
    speech = voice.synthesize(SENTENCE)
    spoken = time.perf_counter()
    audio = pad_to_frames(speech, voice.sample_rate, fps)
    draw(audio, voice.sample_rate)
    drawn = time.perf_counter()
    seconds = len(audio) / voice.sample_rate
    cost = (drawn - start) / seconds
    return {"video_seconds": round(seconds, 3), "tts_s_per_s": round((spoken - start) / seconds, 4),
            "lipsync_s_per_s": round((drawn - spoken) / seconds, 4), "cost_s_per_s": round(cost, 4),
            "headroom": HEADROOM, "max_streams": max(1, min(MOST, math.floor(HEADROOM / cost)))}
