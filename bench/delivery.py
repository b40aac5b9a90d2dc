"""Benchmark: how a reply's video travels, raw RGB vs H.264 parts, side by side on one served build.

Per codec, on the same server (a deterministic voice and degradation off, so both codecs draw the
very same frames for the same question): video bytes per second of speech, server encode time per
part (`talkserve_lipsync_h264_encode_seconds_total`), the client's decode time per part, first chunk
p50/p95 of single replies, and real-time capacity (1, 2, … streams: no stall, first chunk p95 ≤ 1.5 s,
with the build's degradation on). Then the same reply both ways: frames of the h264 parts decoded
against the raw frames (PSNR), and frames written to an mp4 from the h264 parts against its audio.

    python bench/delivery.py [--most 4] [--replies 5] [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pipeline import bench_home

QUESTION = "Tell me a joke."
ENCODE = "talkserve_lipsync_h264_encode_seconds_total"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def replies(url: str, codec: str, n: int) -> list[list]:
    from talkserve.client import TalkClient

    out = []
    with TalkClient(url) as client:
        for _ in range(n):
            out.append(list(client.stream(QUESTION, "sample", video_codec=codec, decode_video=False)))
    return out


def decode_seconds(chunks) -> float:
    from talkserve.video_codec import H264Decoder

    decoder, start = H264Decoder(), time.perf_counter()
    for c in chunks:
        decoder.decode(c.h264)
    return (time.perf_counter() - start) / len(chunks)


def same_reply(url: str, out: Path) -> dict:
    """One question both ways on the deterministic server: decoded h264 vs raw frames, and the mp4."""
    from talkserve.apps.speak import speak
    from talkserve.client import TalkClient
    from talkserve.client.media import probe

    with TalkClient(url) as client:
        raw = list(client.stream(QUESTION, "sample"))
        coded = list(client.stream(QUESTION, "sample", video_codec="h264"))
    a, b = np.concatenate([c.video for c in raw]), np.concatenate([c.video for c in coded])
    assert a.shape == b.shape, (a.shape, b.shape)
    result = speak(url, QUESTION, "sample", out / "h264.mp4", video_codec="h264")
    frames, audio = probe(result.path)["frames"], result.audio_seconds
    return {"psnr_db": psnr(b, a), "frames": len(a), "mp4_frames": frames, "mp4_audio_frames": round(audio * 25)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--most", type=int, default=4, help="most concurrent streams to try")
    ap.add_argument("--replies", type=int, default=5, help="single replies per codec")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    from talkserve import spec
    from talkserve.recipe import Recipe
    from talkserve.server import repository as repo
    from talkserve.server.repository import build
    from talkserve.server.serve import Ports, Server
    from talkserve.targets.calibrate import run_streams, served_metric, step_streams
    from talkserve.targets.cpu import STEPS

    report: dict = {}
    with bench_home() as (root, db):
        recipe = Recipe()
        recipe.llm.model, recipe.serving.avatar_db, recipe.serving.max_streams = "starter", db, 16
        current = build(recipe, root / "repo", STEPS, progress=lambda s: None)
        # the same frames both ways: no voice sampling noise, no degradation by load
        copy = Path(tempfile.mkdtemp(prefix="talkserve-bench-")) / "repository"
        shutil.copytree(current.resolve(), copy, symlinks=True)
        repo.update_params(copy / "tts", noise_scale=0.0, noise_w_scale=0.0)
        degrade = repo.read_params(copy / "lipsync", spec.LipsyncParams).degrade
        repo.update_params(copy / "lipsync", degrade=degrade.model_copy(update={"enabled": False}).model_dump())
        with Server(copy, Ports.free(), log=root / "triton.log") as server:
            url = f"127.0.0.1:{server.ports.grpc}"
            replies(url, "raw", 1)  # warm-up
            report["same_reply"] = same_reply(url, root)
            for codec in ("raw", "h264"):
                encoded = served_metric(server.ports.metrics, ENCODE)
                done = replies(url, codec, args.replies)
                speech = sum(len(c.audio) / c.sample_rate for r in done for c in r)
                parts = sum(len(r) for r in done)
                first = [r[0].seconds for r in done]
                report[codec] = {
                    "video_bytes_per_speech_s": sum(len(c.h264) or c.video.nbytes for r in done for c in r) / speech,
                    "encode_ms_per_part": (served_metric(server.ports.metrics, ENCODE) - encoded) / parts * 1e3,
                    "decode_ms_per_part": decode_seconds(done[0]) * 1e3 if codec == "h264" else 0.0,
                    "first_chunk_p50_s": float(np.percentile(first, 50)),
                    "first_chunk_p95_s": float(np.percentile(first, 95))}
        shutil.rmtree(copy.parent, ignore_errors=True)
        with Server(current, Ports.free(), log=root / "triton-capacity.log") as server:  # degradation on
            url = f"127.0.0.1:{server.ports.grpc}"
            for codec in ("raw", "h264"):
                held, runs = step_streams(lambda n, c=codec: run_streams(url, n, server.ports.metrics,
                                                                         video_codec=c), args.most)
                report[codec]["capacity"] = held
                report[codec]["capacity_runs"] = [{k: r[k] for k in ("streams", "stalls", "ttfc_p95_s", "errors")}
                                                  for r in runs]
    raw, h264, same = report["raw"], report["h264"], report["same_reply"]
    ratio = raw["video_bytes_per_speech_s"] / h264["video_bytes_per_speech_s"]
    print(f"\nvideo bytes per second of speech: raw {raw['video_bytes_per_speech_s'] / 1e6:.2f} MB, h264 "
          f"{h264['video_bytes_per_speech_s'] / 1e3:.0f} kB → {ratio:.0f}× fewer")
    print(f"server encode per part {h264['encode_ms_per_part']:.1f} ms, client decode per part "
          f"{h264['decode_ms_per_part']:.1f} ms")
    for codec in ("raw", "h264"):
        r = report[codec]
        print(f"{codec}: first chunk p50 {r['first_chunk_p50_s']:.2f}s p95 {r['first_chunk_p95_s']:.2f}s, "
              f"capacity {r['capacity']} streams")
    print(f"same reply: PSNR of decoded h264 vs raw {same['psnr_db']:.1f} dB over {same['frames']} frames; mp4 from "
          f"h264 parts {same['mp4_frames']} frames for {same['mp4_audio_frames']} frames of audio")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "delivery.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
