"""Benchmark: one `lipsync` instance vs two, at 1, 2 and 4 concurrent streams, side by side.

Each instance draws any stream's sentences and joins the Wav2Lip parts of those it draws into
shared generator calls; each stream's parts still leave in order (lipsync.batching.InOrder). Per
instance count and stream count: lip-sync frames per second (frames drawn over the run's wall
time, all streams together), generator calls and frames per call, first chunk p50/p95, stalls.
Degradation is off, so every frame is Wav2Lip's. Same build, same question, one invocation.

    python bench/instances.py [--preset fp32] [--streams 1,2,4] [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import bench_home, build, run_streams, served_metric, serving

FRAMES, CALLS = "talkserve_lipsync_frames_total", "talkserve_lipsync_generator_calls_total"


def measure(repository: Path, instances: int, streams: list[int]) -> dict:
    out = {}
    log = repository.parent.parent / f"bench-triton-{instances}.log"
    with serving(repository, log, max_streams=64, degrade=False, lipsync_instances=instances) as (server, _):
        for n in streams:
            frames, calls = served_metric(server, FRAMES), served_metric(server, CALLS)
            r = run_streams(f"127.0.0.1:{server.ports.grpc}", server, n)
            r["frames"], r["calls"] = served_metric(server, FRAMES) - frames, served_metric(server, CALLS) - calls
            r["fps"] = r["frames"] / r["wall_s"]
            out[n] = r
            print(f"  {instances} instance(s) × {n} streams: {r['fps']:.1f} frames/s, {r['calls']:.0f} generator "
                  f"calls ({r['frames'] / max(r['calls'], 1):.1f} frames each), first chunk p50 "
                  f"{r['ttfc_p50_s']:.2f}s p95 {r['ttfc_p95_s']:.2f}s, stalls {r['stalls']}, "
                  f"errors {len(r['errors'])}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="fp32")
    ap.add_argument("--streams", default="1,2,4")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    ap.add_argument("--quick", action="store_true", help="build with the tests' short repair schedule")
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    with bench_home() as (root, db):
        current = build(args.preset, root, db, args.quick)
        report = {i: measure(current, i, streams) for i in (1, 2)}
    lines = [f"{args.preset}, two lipsync instances vs one (same build, same run):"]
    for n in streams:
        one, two = report[1][n], report[2][n]
        lines.append(f"  × {n}: {two['fps']:.1f} vs {one['fps']:.1f} frames/s ({two['fps'] / one['fps']:.2f}×), "
                     f"first chunk p95 {two['ttfc_p95_s']:.2f} vs {one['ttfc_p95_s']:.2f}s, "
                     f"stalls {two['stalls']} vs {one['stalls']}")
    (args.out / "instances.json").write_text(json.dumps({"preset": args.preset, "runs": report}, indent=2,
                                                        default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
