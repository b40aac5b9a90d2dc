"""Benchmark: talkserve's served, streaming pipeline vs. the sequential eager-PyTorch baseline.

The baseline is what a Linly-Talker-style script does with the same models, weights, text and
portrait: the whole LLM reply (transformers `generate`, FP32), then the whole speech (the same
Piper voice; it ships as ONNX only), then eager Wav2Lip over every frame, then the mp4. talkserve
is the served pipeline from the `fp32` and `pruned30-int8` builds, streaming, at 1, 4 and 8
concurrent streams. Everything runs in this one invocation on this machine; ratios are printed
and written with the raw numbers to JSON, plus a PNG.

    python bench/pipeline.py --streams 1,4,8 --out bench-results
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

QUESTION = "How does this work?"

BASELINE = r"""
import json, sys, time
import numpy as np, torch
from talkserve.audio import pad_to_frames
from talkserve.avatars import AvatarStore
from talkserve.generate import prompt_ids
from talkserve.lipsync import animate
from talkserve.media import Mp4Writer
from talkserve.models.llm import load_llm
from talkserve.models.piper_tts import PiperTTS
from talkserve.models.wav2lip import load_wav2lip
from talkserve.recipe import STARTER_LLM, TTSRecipe
question, db, out = sys.argv[1:4]
start = time.monotonic()
model, tok = load_llm(STARTER_LLM)
t = TTSRecipe()
tts = PiperTTS(*t.resolved_paths(), t.length_scale, t.noise_scale, t.noise_w_scale)
w2l = load_wav2lip(None).eval()
avatar = AvatarStore(db).get("sample")
loaded = time.monotonic()
ids = prompt_ids(tok, question)
with torch.no_grad():
    new = model.generate(torch.tensor([ids]), max_new_tokens=96, do_sample=False)[0, len(ids):]
reply = tok.decode(new, skip_special_tokens=True)
audio = pad_to_frames(tts.synthesize(reply), tts.sample_rate, 25)
def gen(mel, face):
    with torch.no_grad():
        return w2l(torch.from_numpy(mel), torch.from_numpy(face)).numpy()
# Wav2Lip's inference.py batches 128 frames (--wav2lip_batch_size)
parts = list(animate(audio, tts.sample_rate, avatar, gen, 25, 128, 128))
writer = Mp4Writer(out)
for p in parts:
    writer.add(p.frames, p.audio, tts.sample_rate)
writer.close()
end = time.monotonic()
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(json.dumps({"first_chunk_s": end - loaded, "total_s": end - loaded, "load_s": loaded - start,
                  "video_s": len(audio) / tts.sample_rate, "peak_rss_mb": int(hwm.split()[1]) / 1024,
                  "model_bytes": sum(p.numel() * 4 for m in (model, w2l) for p in m.parameters())
                                 + t.resolved_paths()[0].stat().st_size}))
"""


def process_tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants (tritonserver + python stubs)."""
    from talkserve.health import processes

    procs = list(processes())
    family, grew = {root}, True
    while grew:
        more = {pid for pid, ppid, _ in procs if ppid in family} - family
        family |= more
        grew = bool(more)
    total = 0
    for pid in family:
        with contextlib.suppress(OSError, StopIteration):  # the process ended while we looked
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            total += next(int(ln.split()[1]) for ln in status if ln.startswith("VmRSS:"))
    return total / 1024


def served(repository: Path, streams: list[int]) -> dict:
    from talkserve.client import TalkClient
    from talkserve.serve import Ports, Server

    results = {}
    with Server(repository, Ports.free(), log=repository.parent.parent / "bench-triton.log") as server:
        url = f"127.0.0.1:{server.ports.grpc}"
        with TalkClient(url) as c:  # warm-up: first requests pay lazy initialisation
            list(c.stream("Hello!", "sample"))
        for n in streams:
            ttfc, video, errors = [], [], []
            peak = [process_tree_rss_mb(server.proc.pid)]
            done = threading.Event()

            def sample(peak=peak, done=done):
                while not done.wait(0.2):
                    peak.append(process_tree_rss_mb(server.proc.pid))

            def one(ttfc=ttfc, video=video, errors=errors):
                try:
                    with TalkClient(url) as client:
                        chunks = list(client.stream(QUESTION, "sample"))
                    ttfc.append(chunks[0].seconds)
                    video.append(sum(len(c.audio) / c.sample_rate for c in chunks))
                except Exception as e:  # counted and reported, not hidden
                    errors.append(str(e))

            sampler = threading.Thread(target=sample)
            sampler.start()
            start = time.monotonic()
            workers = [threading.Thread(target=one) for _ in range(n)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            wall = time.monotonic() - start
            done.set()
            sampler.join()
            q = np.percentile(ttfc, [50, 95, 99]) if ttfc else [float("nan")] * 3
            results[n] = {"streams": n, "wall_s": wall, "video_s": sum(video), "errors": errors,
                          "ttfc_p50_s": q[0], "ttfc_p95_s": q[1], "ttfc_p99_s": q[2],
                          "throughput": sum(video) / wall, "rtf": wall / max(sum(video), 1e-9),
                          "peak_rss_mb": max(peak)}
            print(f"  {repository.resolve().name} × {n}: first chunk p50 {q[0]:.2f}s p95 {q[1]:.2f}s, "
                  f"{sum(video):.1f}s of video in {wall:.1f}s, peak RSS {max(peak):.0f} MB, errors {len(errors)}",
                  flush=True)
    return results


def model_bytes(repository: Path) -> int:
    """The models a reply runs through (LLM, TTS, Wav2Lip); ASR is excluded: the baseline has none."""
    files = [*(repository / "llm_decoder" / "1").glob("model.onnx"), repository / "tts" / "1" / "voice.onnx",
             *(repository / "wav2lip" / "1").glob("model.onnx")]
    return sum(f.stat().st_size for f in files if f.is_file())


def build(preset: str, root: Path, db: Path) -> Path:
    from talkserve.compress.presets import preset as compression
    from talkserve.recipe import Recipe
    from talkserve.repository import build as do_build
    from talkserve.targets.cpu import STEPS

    recipe = Recipe(name=preset, compress=compression(preset))
    recipe.serving.avatar_db = db
    start = time.monotonic()
    current = do_build(recipe, root / preset, STEPS, progress=lambda s: None)
    print(f"built {preset} in {time.monotonic() - start:.0f}s", flush=True)
    return current


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    base = report["baseline"]
    for preset, runs in report["served"].items():
        ns = sorted(int(n) for n in runs)
        axes[0].plot(ns, [runs[str(n)]["ttfc_p50_s"] for n in ns], marker="o", label=f"talkserve {preset}")
        axes[1].plot(ns, [runs[str(n)]["throughput"] for n in ns], marker="o", label=f"talkserve {preset}")
    axes[0].axhline(base["first_chunk_s"], color="k", ls="--", label="eager sequential baseline")
    axes[1].axhline(base["video_s"] / base["total_s"], color="k", ls="--", label="eager sequential baseline")
    axes[0].set(xlabel="concurrent streams", ylabel="time to first chunk p50 (s)")
    axes[1].set(xlabel="concurrent streams", ylabel="seconds of video per second")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--presets", default="fp32,pruned30-int8")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    from talkserve.avatars import AvatarStore
    from talkserve.recipe import SAMPLE_PORTRAIT

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="talkserve-bench-") as tmp:
        root = Path(tmp)
        db = root / "avatars.db"
        AvatarStore(db).add(SAMPLE_PORTRAIT, "sample")
        run = subprocess.run([sys.executable, "-c", BASELINE, QUESTION, str(db), str(root / "baseline.mp4")],
                             capture_output=True, text=True, check=True)
        base = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"baseline (eager FP32, sequential): {base['video_s']:.1f}s of video in {base['total_s']:.1f}s, "
              f"first chunk {base['first_chunk_s']:.1f}s, peak RSS {base['peak_rss_mb']:.0f} MB", flush=True)
        report = {"question": QUESTION, "baseline": base, "served": {}, "bytes": {}}
        for preset in args.presets.split(","):
            current = build(preset, root, db)
            report["served"][preset] = {str(k): v for k, v in served(current, streams).items()}
            report["bytes"][preset] = model_bytes(current)
    lines = []
    for preset, runs in report["served"].items():
        one = runs[str(streams[0])]
        lines.append(f"{preset}: first chunk {base['first_chunk_s'] / one['ttfc_p50_s']:.1f}× sooner (target ≥ 5×), "
                     f"model bytes {base['model_bytes'] / report['bytes'][preset]:.1f}× smaller (≥ 5×), "
                     f"peak memory {base['peak_rss_mb'] / one['peak_rss_mb']:.2f}× lower (≥ 2×), "
                     f"RTF at 1 stream {one['rtf']:.2f} (≤ 1)")
        for n in streams:
            r = runs[str(n)]
            lines.append(f"  × {n}: throughput {r['throughput'] / (base['video_s'] / base['total_s']):.2f}× the "
                         f"baseline (≥ 3×), first chunk p50/p95/p99 {r['ttfc_p50_s']:.2f}/{r['ttfc_p95_s']:.2f}/"
                         f"{r['ttfc_p99_s']:.2f}s, errors {len(r['errors'])}")
    report["summary"] = lines
    (args.out / "pipeline.json").write_text(json.dumps(report, indent=2, default=float))
    plot(report, args.out / "pipeline.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
