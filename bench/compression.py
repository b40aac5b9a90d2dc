"""Benchmark: a compression preset vs. FP32 on the published-size Wav2Lip and HiFi-GAN V1 (ONNX Runtime, CPU).

Both sides are measured in this one run on this machine; prints size and latency ratios and every gate.
The Wav2Lip teacher is our trained starter (`talkserve train-lipsync`); the HiFi-GAN teacher is
random-init at the published size (no HiFi-GAN weights ship with us), first fitted to the Piper
voice's real speech for `--teacher-fit-steps`
(see talkserve/training/vocoder.py: with the official init alone it emits a constant, and
STOI/PESQ against a constant measure nothing). Each student is compared with exactly its teacher.

    python bench/compression.py --preset pruned30-int8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from talkserve.compress.data import DataSource
from talkserve.compress.pipeline import compress_model
from talkserve.compress.presets import preset
from talkserve.compress.report import write_report
from talkserve.compress.tasks import VocoderTask, Wav2LipTask
from talkserve.models.hifigan import V1, load_hifigan
from talkserve.models.wav2lip import load_wav2lip
from talkserve.training.vocoder import FitConfig, fit_to_speech


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="pruned30-int8")
    ap.add_argument("--distill-steps", type=int, default=None, help="override the preset's steps per prune step")
    ap.add_argument("--teacher-fit-steps", type=int, default=FitConfig().steps,
                    help="fit the random-init HiFi-GAN teacher to real speech first (0 = official init only)")
    ap.add_argument("--models", default="wav2lip,vocoder")
    ap.add_argument("--out", type=Path, default=Path("benchmark-compression"))
    args = ap.parse_args()
    recipe = preset(args.preset)
    data = DataSource(None, recipe.held_out, recipe.max_examples)

    def vocoder_teacher():
        generator = load_hifigan(None, V1)
        losses = fit_to_speech(generator, data.speech.train, FitConfig(steps=args.teacher_fit_steps))
        print(f"vocoder teacher: fitted {len(losses)} steps to real speech, loss "
              f"{losses[0] if losses else 0:.3f} → {losses[-1] if losses else 0:.3f}", flush=True)
        return generator

    tasks = {"wav2lip": lambda: (Wav2LipTask(load_wav2lip(None), data), recipe.wav2lip),
             "vocoder": lambda: (VocoderTask(vocoder_teacher(), data), recipe.vocoder)}
    reports = []
    for name in args.models.split(","):
        task, cfg = tasks[name]()
        if args.distill_steps is not None:
            cfg.distill.steps = args.distill_steps
        start = time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            _, report = compress_model(task, cfg, Path(work), accept=True, latency_runs=recipe.latency_runs)
        b, a = report.before, report.after
        print(f"{name}: {args.preset} vs fp32 — bytes {b.bytes / a.bytes:.2f}× smaller "
              f"({b.bytes / 1e6:.1f} → {a.bytes / 1e6:.1f} MB), CPU latency {b.latency_s / a.latency_s:.2f}× lower "
              f"({b.latency_s * 1e3:.1f} → {a.latency_s * 1e3:.1f} ms), params {b.params:,} → {a.params:,}, "
              f"MACs {b.macs:.3g} → {a.macs:.3g}; gates {'PASS' if not report.accepted_failures else 'FAIL'} "
              f"[{time.monotonic() - start:.0f} s]", flush=True)
        reports.append(report)
    args.out.mkdir(parents=True, exist_ok=True)
    title = (f"{args.preset} vs fp32 (random-init teachers at published sizes; vocoder fitted "
             f"{args.teacher_fit_steps} steps to real speech)")
    print(write_report(reports, args.out, title))
    print(json.dumps({r.name: r.accepted_failures for r in reports}))


if __name__ == "__main__":
    main()
