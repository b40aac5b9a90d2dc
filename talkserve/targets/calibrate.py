"""How many replies this machine carries in real time: the build's default `serving.max_streams`
(admission control, talkserve.runtime.admission).

A viewer's player starts at the first chunk and *stalls* whenever the next part lands after what it
had has played out. The real-time capacity is the most concurrent streams with no stall and first
chunk p95 within `serving.first_chunk_p95_s`. The build measures it as a user would meet it: at its
end it serves the finished repository on the real tritonserver and steps the stream count (1, 2, …)
until a count misses, then writes the last count that held as the limit of both entry models
(`admit`, `asr`). An earlier version timed the voice and the generator alone and set ⌊0.75 / cost⌋:
that left out the LLM, the IPC and the warp that takes the sentences Wav2Lip cannot follow, and gave
1 where pruned30-int8 carried 2. `bench/pipeline.py --capacity` runs the same stepping beside the
eager baseline.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from talkserve import spec
from talkserve.server import repository as repo

QUESTION = "How does this work?"  # what each stream asks (the benchmark's question)
AVATAR = "sample"
DEGRADED = "talkserve_lipsync_degraded_sentences_total"


def stream_once(url: str, question: str = QUESTION, avatar: str = AVATAR, retry=None,
                video_codec: str | None = None) -> dict:
    """One reply as a player meets it: first chunk, stalls and where they fell, or why it was refused."""
    from talkserve.client import NO_RETRY, TalkClient, TalkError
    from talkserve.playback import stall_points

    sent = time.monotonic()
    try:
        with TalkClient(url, retry=retry or NO_RETRY) as client:
            chunks = list(client.stream(question, avatar, video_codec=video_codec))
    except TalkError as e:  # counted and reported, not hidden
        return {"status": e.status, "after_s": time.monotonic() - sent, "error": str(e)[:200]}
    if not chunks:
        return {"status": "EMPTY", "after_s": time.monotonic() - sent, "error": "the reply had no chunks"}
    points = stall_points((c.seconds, len(c.audio) / c.sample_rate) for c in chunks)
    return {"status": "OK", "ttfc_s": chunks[0].seconds, "stalls": len(points), "stall_s": sum(w for _, w in points),
            "video_bytes": sum(len(c.h264) or c.video.nbytes for c in chunks), "parts": len(chunks),
            "video_s": sum(len(c.audio) / c.sample_rate for c in chunks),
            # where: (sentence, part) of each late chunk, and how long the player waited
            "late": [(chunks[i].index, chunks[i].part, round(w, 3)) for i, w in points]}


def served_metric(metrics_port: int, name: str) -> float:
    """The sum of a metric's series on a server's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        return sum(float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                   if line.startswith((name + "{", name + " ")))


def run_streams(url: str, n: int, metrics_port: int | None = None, retry=None, question: str = QUESTION,
                video_codec: str | None = None) -> dict:
    """`n` concurrent replies: admitted or refused (and how fast), first chunk percentiles, stalls,
    video seconds per wall second, and (given the metrics port) sentences degraded to the warp."""
    before = served_metric(metrics_port, DEGRADED) if metrics_port else 0.0
    streams: list[dict] = []
    start = time.monotonic()
    workers = [threading.Thread(target=lambda: streams.append(stream_once(url, question, retry=retry,
                                                                          video_codec=video_codec)))
               for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.monotonic() - start
    ok = [s for s in streams if s["status"] == "OK"]
    refused = [s for s in streams if s["status"] == "RESOURCE_EXHAUSTED"]
    ttfc = [s["ttfc_s"] for s in ok]
    q = np.percentile(ttfc, [50, 95, 99]).tolist() if ttfc else [float("nan")] * 3
    video = sum(s["video_s"] for s in ok)
    return {"streams": n, "admitted": len(ok), "refused": len(refused),
            "refusal_max_s": max((s["after_s"] for s in refused), default=None),
            "errors": [s["error"] for s in streams if s["status"] not in ("OK", "RESOURCE_EXHAUSTED")],
            "stalls": sum(s["stalls"] for s in ok), "stall_s": sum(s["stall_s"] for s in ok),
            "streams_stalled": sum(1 for s in ok if s["stalls"]), "late": [s["late"] for s in ok if s["late"]],
            "degraded_sentences": (served_metric(metrics_port, DEGRADED) - before) if metrics_port else None,
            "ttfc_s": ttfc, "ttfc_p50_s": q[0], "ttfc_p95_s": q[1], "ttfc_p99_s": q[2], "wall_s": wall,
            "video_s": video, "throughput": video / wall, "rtf": wall / max(video, 1e-9),
            "video_bytes": sum(s["video_bytes"] for s in ok), "parts": sum(s["parts"] for s in ok)}


def meets_real_time(r: dict, first_chunk_p95_s: float = 1.5) -> bool:
    """One run carried `streams` in real time: all admitted, none stalled, no error, first chunk p95 in bound."""
    return count_holds([r], first_chunk_p95_s)


def step_streams(run: Callable[[int], dict], most: int, first_chunk_p95_s: float = 1.5,
                 on_step: Callable[[dict], None] | None = None, runs: int = 2) -> tuple[int, list[dict]]:
    """Run 1, 2, … `most` streams, each count `runs` times, and stop after a count that missed:
    (the most streams that held, 0 if none did; every run, with its try number). The first chunk is a
    distribution: a count is judged on the p95 of all its runs' first chunks (one run of 4 streams has
    4, so its p95 is its slowest; on 2 cores the same count read 1.41 s and 1.72 s in two runs). A stall
    is an event: a count holds while most of its runs have none (one by chance had turned a limit of 2
    into 1). Errors and refusals fail a count outright."""
    steps: list[dict] = []
    held = 0
    for n in range(1, most + 1):
        mine = []
        for attempt in range(1, runs + 1):
            mine.append({**run(n), "try": attempt})
            mine[-1]["pooled_ttfc_p95_s"] = _pooled_p95(mine)
            steps.append(mine[-1])
            if on_step:
                on_step(mine[-1])
        if not count_holds(mine, first_chunk_p95_s):
            break
        held = n
    return held, steps


def count_holds(runs: list[dict], first_chunk_p95_s: float = 1.5) -> bool:
    """Every run admitted all its streams without error, most ran without a stall, and the p95 of all
    their first chunks is within the bound."""
    clean = [r["admitted"] == r["streams"] and not r["errors"] for r in runs]
    stalled = sum(1 for r in runs if r["stalls"])
    return all(clean) and stalled <= len(runs) // 2 and _pooled_p95(runs) <= first_chunk_p95_s


def _pooled_p95(runs: list[dict]) -> float:
    ttfc = [t for r in runs for t in r.get("ttfc_s", [])]
    return float(np.percentile(ttfc, 95)) if ttfc else max(r["ttfc_p95_s"] for r in runs)


@contextlib.contextmanager
def _served_for_calibration(root: Path, most: int):
    """`root` served with room for `most` streams and a scratch avatar store holding the sample
    portrait; every config it changed is put back byte for byte when it stops."""
    from talkserve.client import TalkClient, TalkError
    from talkserve.lipsync.avatars import AvatarStore
    from talkserve.recipe import SAMPLE_PORTRAIT
    from talkserve.server.serve import Ports, Server, ServerError

    changed = [root / m for m in (spec.ADMIT.name, spec.ASR.name, spec.LLM.name, spec.LIPSYNC.name)]
    saved = {d: (d / "config.pbtxt").read_bytes() for d in changed if (d / "config.pbtxt").is_file()}
    built = set(root.rglob("*"))
    with tempfile.TemporaryDirectory(prefix="talkserve-calibrate-") as tmp:
        db = Path(tmp) / "avatars.db"
        AvatarStore(db).add(SAMPLE_PORTRAIT, AVATAR)
        try:
            admit = repo.update_params(root / spec.ADMIT.name, max_streams=most)
            repo.update_params(root / spec.ASR.name, admission=admit.model_dump())
            for model in (spec.LLM.name, spec.LIPSYNC.name):
                repo.update_params(root / model, avatar_db=str(db))
            log = Path(tmp) / "tritonserver.log"
            server = Server(root, Ports.free(), log=log)
            try:
                server.start()
            except ServerError as e:
                raise RuntimeError(f"the built repository does not serve: {e}\n{_tail(log)}") from e
            try:
                url = f"127.0.0.1:{server.ports.grpc}"
                try:
                    with TalkClient(url) as client:  # warm-up: the first reply pays lazy initialisation
                        list(client.stream("Hello!", AVATAR))
                except TalkError as e:
                    raise RuntimeError(f"the built repository served no reply: {e}\n{_tail(log)}") from e
                yield server, url, log
            finally:
                server.stop()
        finally:
            for d, text in saved.items():
                (d / "config.pbtxt").write_bytes(text)
            # what the stubs wrote (their bytecode: the embedded interpreter ignores PYTHONDONTWRITEBYTECODE)
            for path in sorted(set(root.rglob("*")) - built, reverse=True):
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else ""


def calibrate(root: Path, most: int, first_chunk_p95_s: float = 1.5, runs: int = 2,
              progress: Callable[[str], None] = lambda s: None) -> dict:
    """Serve the repository at `root`, step the stream count, and return the limit and every step.
    A single reply that fails is a build that does not serve: RuntimeError with the server's log."""
    start = time.monotonic()
    with _served_for_calibration(root, most) as (server, url, log):
        def run(n: int) -> dict:
            return run_streams(url, n, server.ports.metrics)

        def report(r: dict) -> None:
            streams = f"{r['streams']} stream{'s' * (r['streams'] > 1)}"
            if r["try"] > 1:
                streams += f", run {r['try']} (first chunk p95 over its runs {r['pooled_ttfc_p95_s']:.2f}s)"
            progress(f"{streams}: first chunk p95 {r['ttfc_p95_s']:.2f}s, {r['stalls']} stalls, "
                     f"{r['degraded_sentences']:.0f} sentences degraded, {len(r['errors'])} errors")
            if r["streams"] == 1 and r["try"] == 1 and r["errors"]:
                raise RuntimeError(f"the built repository served no reply: {r['errors'][0]}\n{_tail(log)}")

        held, steps = step_streams(run, most, first_chunk_p95_s, report, runs)
    keep = ("streams", "try", "admitted", "stalls", "stall_s", "degraded_sentences", "ttfc_s", "ttfc_p50_s",
            "ttfc_p95_s", "pooled_ttfc_p95_s", "throughput", "errors")
    return {"from": "served run", "max_streams": max(1, held), "real_time": held >= 1, "tried_up_to": most,
            "runs_per_count": runs, "first_chunk_p95_bound_s": first_chunk_p95_s,
            "seconds": round(time.monotonic() - start, 1), "steps": [{k: r[k] for k in keep} for r in steps]}
