"""Benchmark: lip-sync quality and speed of the starter Wav2Lip and the procedural `warp`, side by side.

Per portrait (the sample, and Grace Hopper from matplotlib, which training never saw) and per kind:
mouth opening vs speech envelope (Pearson r, best lag in frames), mouth closed in silent frames,
identity PSNR/SSIM outside the mouth at 96×96 (talkserve.compress.sync). Wav2Lip twice: the
network's raw output, and the served frames (colour matched, feathered paste-back) cropped back.
Then frames per second on this machine: warp at the portrait's 512×512 (one core, as one lipsync
stub runs it), and the starter Wav2Lip under ONNX Runtime (parts of 25 frames), paste-back
included for both.

    python bench/lipsync.py [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from talkserve.compress.sync import delivered_faces, evaluate_sentences, warp_faces, wav2lip_faces

WARP = "warp fps (512×512 portrait, one core, incl. audio features)"
W2L = "wav2lip starter fps (ONNX Runtime fp32, all cores, incl. mel and paste-back)"
SENTENCES = ["Hello there, how are you doing today?", "I can talk about many things, just ask me.",
             "Good morning to you.", "A small language model writes my words, a voice model speaks them."]


def portraits():
    import matplotlib

    from talkserve.lipsync.avatars import Avatar, decode_image, prepare_portrait
    from talkserve.recipe import SAMPLE_PORTRAIT

    for name, path in [("sample", SAMPLE_PORTRAIT),
                       ("held-out (Grace Hopper)", Path(matplotlib.get_data_path()) / "sample_data/grace_hopper.jpg")]:
        rgb = decode_image(path.read_bytes())
        box, lm = prepare_portrait(rgb)
        yield name, Avatar(name, rgb, box, lm)


def ort_generator(path: Path):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda mel, face: s.run(None, {"mel": mel, "face": face})[0]


def fps(fn, frames: int) -> float:
    start = time.perf_counter()
    fn()
    return frames / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    from talkserve.export import export_wav2lip
    from talkserve.lipsync import animate, animate_warp
    from talkserve.lipsync.warp import WarpRig
    from talkserve.models.piper_tts import PiperTTS
    from talkserve.models.wav2lip import load_wav2lip
    from talkserve.recipe import TTSRecipe

    tts = PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)
    pad = np.zeros(int(0.24 * tts.sample_rate), np.float32)
    speech = [(np.concatenate([pad, tts.synthesize(t), pad]), tts.sample_rate) for t in SENTENCES]
    with tempfile.TemporaryDirectory() as work:
        onnx = Path(work) / "wav2lip.onnx"
        export_wav2lip(load_wav2lip(None), onnx)
        gen = ort_generator(onnx)
        rows, speed = [], {}
        for name, avatar in portraits():
            for kind, faces in [
                ("wav2lip, network", lambda a, sr, av=avatar: wav2lip_faces(gen, av, a, sr, colour=False)),
                ("wav2lip, served", lambda a, sr, av=avatar: delivered_faces(gen, av, a, sr)),
                ("warp", lambda a, sr, av=avatar: warp_faces(av, a, sr))]:
                m = evaluate_sentences(faces, avatar, speech)
                rows.append({"portrait": name, "kind": kind, **m})
                print(f"{name:24s} {kind:16s} r {m['sync_r']:.3f}  lag {m['sync_lag']:+.0f}  "
                      f"silent closed {m['silent_closed']:.0%}  identity PSNR {m['identity_psnr']:.1f} dB "
                      f"SSIM {m['identity_ssim']:.3f}  ({m['frames']:.0f} frames)", flush=True)
            if name == "sample":
                audio, sr = speech[3]
                n = round(len(audio) / sr * 25)
                rig = WarpRig(avatar.portrait, avatar.landmarks)
                cv2.setNumThreads(1)  # the warp on one core, as one lipsync stub runs it
                speed[WARP] = fps(partial(lambda a, s, r: list(animate_warp(a, s, r, 25.0)), audio, sr, rig), n)
                cv2.setNumThreads(-1)
                speed[W2L] = fps(partial(lambda a, s, av: list(animate(a, s, av, gen, 25.0)), audio, sr, avatar), n)
    for k, v in speed.items():
        print(f"{k}: {v:.0f}")
    print(f"warp / wav2lip speed: {speed[WARP] / speed[W2L]:.0f}×")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lipsync.json").write_text(json.dumps({"quality": rows, "speed": speed}, indent=2, default=float))


if __name__ == "__main__":
    main()
