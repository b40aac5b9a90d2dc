"""Benchmark: talkserve's served, streaming pipeline vs. the sequential eager-PyTorch baseline.

The baseline is what a Linly-Talker-style script does with the same models, weights, text and
portrait: the whole LLM reply (transformers `generate`, FP32), then the whole speech (the same
Piper voice; it ships as ONNX only), then eager Wav2Lip over every frame, then the mp4. talkserve
is the served pipeline from the `fp32` and `pruned30-int8` builds, streaming, at 1, 4 and 8
concurrent streams. Everything runs in this one invocation on this machine; ratios are printed
and written with the raw numbers to JSON, plus a PNG.

    python bench/pipeline.py --streams 1,4,8 --out bench-results
    python bench/pipeline.py --capacity --presets fp32,pruned30-int8,pruned50-int8

Every stream is a player that starts at its first chunk: it *stalls* when the next part lands after
what it had has played out. `--capacity` steps the stream count (admission lifted) to the most
streams with no stall and first chunk p95 ≤ 1.5 s — without and with degradation to the warp mouth —
then runs twice the build's calibrated `serving.max_streams` with admission on.
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

from talkserve.targets.calibrate import QUESTION, step_streams

BASELINE = r"""
import json, sys, time
import numpy as np, torch
from talkserve.voice.audio import pad_to_frames
from talkserve.lipsync.avatars import AvatarStore
from talkserve.runtime.generate import prompt_ids
from talkserve.lipsync import animate
from talkserve.client.media import Mp4Writer
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
    """Memory of a process and all its descendants (tritonserver + python stubs), as the sum of their
    proportional set sizes: the python backend's shared-memory pool is mapped by tritonserver and by
    each stub that sends through it, and summed VmRSS would count those pages once per process."""
    from talkserve.server.health import processes

    procs = list(processes())
    family, grew = {root}, True
    while grew:
        more = {pid for pid, ppid, _ in procs if ppid in family} - family
        family |= more
        grew = bool(more)
    return sum(pss_mb(pid) for pid in family)


def pss_mb(pid: int) -> float:
    """A process's proportional set size (0 once it has ended)."""
    with contextlib.suppress(OSError, StopIteration):  # the process ended while we looked
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        return next(int(ln.split()[1]) for ln in rollup if ln.startswith("Pss:")) / 1024
    return 0.0


def run_streams(url: str, server, n: int, retry=None) -> dict:
    """`n` concurrent streams as the build's calibration runs them (talkserve.targets.calibrate:
    first chunk, stalls, refusals, degraded sentences), with the served tree's peak memory."""
    from talkserve.targets.calibrate import run_streams as streams

    peak, done = [process_tree_rss_mb(server.proc.pid)], threading.Event()

    def sample():
        while not done.wait(0.2):
            peak.append(process_tree_rss_mb(server.proc.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = streams(url, n, server.ports.metrics, retry=retry, question=QUESTION)
    finally:
        done.set()
        sampler.join()
    return {**r, "peak_rss_mb": max(peak)}


def served_metric(server, name: str) -> float:
    from talkserve.targets.calibrate import served_metric as metric

    return metric(server.ports.metrics, name)


def say(label: str, r: dict) -> None:
    print(f"  {label} × {r['streams']}: admitted {r['admitted']}, refused {r['refused']}"
          + (f" (slowest refusal {r['refusal_max_s'] * 1000:.0f} ms)" if r["refused"] else "")
          + f", first chunk p50 {r['ttfc_p50_s']:.2f}s p95 {r['ttfc_p95_s']:.2f}s, stalls {r['stalls']} "
          f"({r['stall_s']:.1f}s), degraded sentences {r['degraded_sentences']:.0f}, {r['video_s']:.1f}s of video "
          f"in {r['wall_s']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB, errors {len(r['errors'])}"
          + (f"; late (sentence, part, s waited) per stalled stream: {r['late']}" if r["late"] else ""), flush=True)


@contextlib.contextmanager
def serving(repository: Path, log: Path, max_streams: int | None = None, degrade: bool = True,
            env: dict | None = None, lipsync_instances: int | None = None):
    """A server on a copy of `repository` with its stream limit, degradation and lipsync instances
    set as a recipe would (`env`: over the server's environment)."""
    import shutil

    from talkserve import spec
    from talkserve.client import TalkClient
    from talkserve.server import repository as repo
    from talkserve.server.serve import Ports, Server

    copy = Path(tempfile.mkdtemp(prefix="talkserve-bench-repo-")) / "repository"
    shutil.copytree(repository.resolve(), copy, symlinks=True)
    admit = repo.update_params(copy / "admit", **({"max_streams": max_streams} if max_streams else {}))
    repo.update_params(copy / "asr", admission=admit.model_dump())  # voice replies: the same limit
    degrade = repo.read_params(copy / "lipsync", spec.LipsyncParams).degrade.model_copy(update={"enabled": degrade})
    repo.update_params(copy / "lipsync", degrade=degrade.model_dump())
    if lipsync_instances:
        repo.set_instances(copy / "lipsync", lipsync_instances)
    with Server(copy, Ports.free(), log=log, env=env or {}) as server:
        with TalkClient(f"127.0.0.1:{server.ports.grpc}") as c:  # warm-up: first requests pay lazy initialisation
            list(c.stream("Hello!", "sample"))
        yield server, admit.max_streams
    shutil.rmtree(copy.parent, ignore_errors=True)


@contextlib.contextmanager
def bench_home():
    """A temporary directory with the sample avatar registered: (directory, avatar db)."""
    from talkserve.lipsync.avatars import AvatarStore
    from talkserve.recipe import SAMPLE_PORTRAIT

    with tempfile.TemporaryDirectory(prefix="talkserve-bench-") as tmp:
        root = Path(tmp)
        AvatarStore(root / "avatars.db").add(SAMPLE_PORTRAIT, "sample")
        yield root, root / "avatars.db"


def served(repository: Path, streams: list[int]) -> dict:
    """The served pipeline at each stream count, admission lifted (how it degrades past capacity)."""
    results = {}
    with serving(repository, repository.parent.parent / "bench-triton.log", max_streams=64) as (server, _):
        url = f"127.0.0.1:{server.ports.grpc}"
        for n in streams:
            results[n] = run_streams(url, server, n)
            say(repository.resolve().name, results[n])
    return results


def capacity(repository: Path, most: int, lipsync_instances: int | None = None) -> dict:
    """Real-time capacity, stepping the stream count with admission lifted, degradation off then on; then
    twice the calibrated limit with admission on (refused at once, admitted ones unharmed)."""
    out, log = {}, repository.parent.parent / "bench-triton.log"
    for degrade in (False, True):
        label = ("with" if degrade else "without") + " degradation"
        with serving(repository, log, max_streams=64, degrade=degrade,
                     lipsync_instances=lipsync_instances) as (server, _):
            url, name = f"127.0.0.1:{server.ports.grpc}", f"{repository.resolve().name}, {label}"
            held, steps = step_streams(lambda n, url=url, server=server: run_streams(url, server, n), most,
                                       runs=1, on_step=lambda r, name=name: say(name, r))
        out[label] = {"capacity": held, "steps": steps}
    with serving(repository, log, lipsync_instances=lipsync_instances) as (server, limit):
        over = run_streams(f"127.0.0.1:{server.ports.grpc}", server, 2 * limit)
        say(f"{repository.resolve().name}, calibrated limit {limit}, 2× the limit", over)
    out["calibrated"] = {"max_streams": limit, "twice": over}
    return out


def model_bytes(repository: Path) -> int:
    """The models a reply runs through (LLM, TTS, Wav2Lip); ASR is excluded: the baseline has none."""
    files = [*(repository / "llm_decoder" / "1").glob("model.onnx"), repository / "tts" / "1" / "voice.onnx",
             *(repository / "wav2lip" / "1").glob("model.onnx")]
    return sum(f.stat().st_size for f in files if f.is_file())


def build(preset: str, root: Path, db: Path, quick: bool = False) -> Path:
    """The preset's build; `quick`: with the tests' short repair schedule (the same networks and
    sizes, so the same speed; their quality is the compression benchmark's business)."""
    from talkserve.compress.presets import preset as compression
    from talkserve.recipe import Recipe
    from talkserve.server.repository import build as do_build
    from talkserve.targets.cpu import STEPS

    recipe = Recipe(name=preset, compress=compression(preset))
    if quick:
        c = recipe.compress
        c.held_out, c.max_examples, c.accept_failed_gates = 3, 12, True
        c.llm.distill.steps, c.wav2lip.distill.steps = 40, 8
    recipe.serving.avatar_db = db
    start = time.monotonic()
    current = do_build(recipe, root / preset, STEPS, progress=lambda s: None)
    print(f"built {preset} in {time.monotonic() - start:.0f}s", flush=True)
    return current


def two_panels(draw, path: Path, legend_size: int = 8) -> None:
    """A two-panel figure: `draw(axes)` plots, then legends, layout and the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    draw(axes)
    for ax in axes:
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot(report: dict, path: Path) -> None:
    two_panels(lambda axes: _plot_served(report, axes), path)


def _plot_served(report: dict, axes) -> None:
    base = report["baseline"]
    for preset, runs in report["served"].items():
        ns = sorted(int(n) for n in runs)
        axes[0].plot(ns, [runs[str(n)]["ttfc_p50_s"] for n in ns], marker="o", label=f"talkserve {preset}")
        axes[1].plot(ns, [runs[str(n)]["throughput"] for n in ns], marker="o", label=f"talkserve {preset}")
    axes[0].axhline(base["first_chunk_s"], color="k", ls="--", label="eager sequential baseline")
    axes[1].axhline(base["video_s"] / base["total_s"], color="k", ls="--", label="eager sequential baseline")
    axes[0].set(xlabel="concurrent streams", ylabel="time to first chunk p50 (s)")
    axes[1].set(xlabel="concurrent streams", ylabel="seconds of video per second")


def capacity_summary(report: dict) -> list[str]:
    base, lines = report["baseline"], []
    base_rate = base["video_s"] / base["total_s"]
    for preset, c in report["capacity"].items():
        for label in ("without degradation", "with degradation"):
            steps = c[label]["steps"]
            at = next((r for r in steps if r["streams"] == c[label]["capacity"]), None)
            detail = "" if at is None else (
                f" (throughput {at['throughput'] / base_rate:.2f}× the baseline, peak RSS {at['peak_rss_mb']:.0f} MB "
                f"vs baseline {base['peak_rss_mb']:.0f} MB, first chunk p95 {at['ttfc_p95_s']:.2f}s, "
                f"degraded sentences {at['degraded_sentences']:.0f})")
            lines.append(f"{preset} {label}: real-time capacity {c[label]['capacity']} streams{detail}")
        over = c["calibrated"]["twice"]
        lines.append(f"{preset}: calibrated max_streams {c['calibrated']['max_streams']}; at 2× ({over['streams']} "
                     f"streams): {over['admitted']} admitted with {over['stalls']} stalls, {over['refused']} refused "
                     f"(slowest {1000 * (over['refusal_max_s'] or 0):.0f} ms), other errors {len(over['errors'])}; "
                     f"model bytes {base['model_bytes'] / report['bytes'][preset]:.1f}× smaller than the baseline's")
    return lines


def plot_capacity(report: dict, path: Path) -> None:
    two_panels(lambda axes: _plot_capacity(report, axes), path, legend_size=7)


def _plot_capacity(report: dict, axes) -> None:
    for preset, c in report["capacity"].items():
        for label, style in (("without degradation", "--"), ("with degradation", "-")):
            steps = c[label]["steps"]
            ns = [r["streams"] for r in steps]
            axes[0].plot(ns, [r["stall_s"] / r["streams"] for r in steps], style, marker="o", label=f"{preset} {label}")
            axes[1].plot(ns, [r["ttfc_p95_s"] for r in steps], style, marker="o", label=f"{preset} {label}")
    axes[1].axhline(1.5, color="k", ls=":", label="1.5 s")
    axes[0].set(xlabel="concurrent streams", ylabel="stalled seconds per stream")
    axes[1].set(xlabel="concurrent streams", ylabel="time to first chunk p95 (s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--presets", default="fp32,pruned30-int8")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    ap.add_argument("--capacity", action="store_true", help="find each preset's real-time capacity instead")
    ap.add_argument("--most", type=int, default=6, help="--capacity: most streams to try")
    ap.add_argument("--quick", action="store_true", help="build the presets with the tests' short repair schedule")
    ap.add_argument("--lipsync-instances", type=int, default=None, help="--capacity: lipsync instances (the build's)")
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    with bench_home() as (root, db):
        run = subprocess.run([sys.executable, "-c", BASELINE, QUESTION, str(db), str(root / "baseline.mp4")],
                             capture_output=True, text=True, check=True)
        base = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"baseline (eager FP32, sequential): {base['video_s']:.1f}s of video in {base['total_s']:.1f}s, "
              f"first chunk {base['first_chunk_s']:.1f}s, peak RSS {base['peak_rss_mb']:.0f} MB", flush=True)
        report = {"question": QUESTION, "baseline": base, "served": {}, "bytes": {}, "capacity": {}}
        for preset in args.presets.split(","):
            current = build(preset, root, db, args.quick)
            if args.capacity:
                report["capacity"][preset] = capacity(current, args.most, args.lipsync_instances)
            else:
                report["served"][preset] = {str(k): v for k, v in served(current, streams).items()}
            report["bytes"][preset] = model_bytes(current)
    if args.capacity:
        report["summary"] = capacity_summary(report)
        (args.out / "capacity.json").write_text(json.dumps(report, indent=2, default=float))
        plot_capacity(report, args.out / "capacity.png")
        print("\n".join(report["summary"]))
        return
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
