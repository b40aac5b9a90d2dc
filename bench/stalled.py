"""Benchmark: what a client that stops reading costs the server, and what is left after it leaves.

N clients each start a reply and stop reading after its first response; the server tree's resident
memory is sampled while they hold their streams, then after they cancel and disconnect. One reading
client runs beside them to show the others' cost to it. Side by side, in one run on one server:
`plain` readers (tritonclient only: their gRPC reader blocks, so HTTP/2 flow control stops the
server's writes and what lipsync sent waits in the frontend) and `receipts` readers (TalkClient,
which acknowledges each part it takes: the server computes at most `serving.unread_parts` ahead of
it and gives it up after `serving.unread_timeout_s`). Two more runs repeat the receipts readers:
with the generator keeping its ONNX Runtime arena (`wav2lip.arena_release_s` 0), and with glibc's
allocator defaults instead of the server's `SERVING_ENV` (fixed mmap threshold, two arenas), to
show what each gives back once the readers leave. Per reader: `held` (the last 5 s of their stall,
what they keep) and `peak` (their first parts drawn, in generator calls shared by several streams).
`plain, no budget` is the plain readers on the same build with `serving.unreceipted_mb` 0 (what a
plain reader cost before the bound). Beside the stalled readers: one TalkClient reply (receipts) and,
in the plain modes, one plain tritonclient reply that reads (first chunk, stalls at its player).

    python bench/stalled.py --readers 3 --seconds 20 [--modes receipts,plain,plain-unbounded,arena,glibc]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import tritonclient.grpc as grpcclient
from pipeline import build, process_tree_rss_mb, pss_mb, serving

from talkserve.server import repository as repo
from talkserve.server.serve import SERVING_ENV
from talkserve.spec import OnnxParams

QUESTION = "Tell me about pruning and quantization and distillation, please."


def stalled_talker(url: str):
    """A TalkClient (read receipts on) that takes the first chunk and then nothing; a release()."""
    from talkserve.client import TalkClient

    client = TalkClient(url, receipts=True)
    chunks = client.stream(QUESTION, "sample", max_new_tokens=200)
    next(chunks)

    def release():
        chunks.close()  # the abandoned stream is cancelled
        client.close()
    return release


def stalled_reader(url: str):
    """A stream whose reader blocks after the first response; (client, release event, responses seen)."""
    from talkserve.client import MAX_RECEIVE_BYTES, OUTPUTS, request_inputs

    release, seen = threading.Event(), []

    def callback(result, error):
        seen.append(time.monotonic())
        release.wait()  # stop reading: the reader thread blocks here

    client = grpcclient.InferenceServerClient(
        url, channel_args=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
    client.start_stream(callback=callback)
    client.async_stream_infer("talking_head", request_inputs(QUESTION, "sample", max_new_tokens=200),
                              outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS])
    return client, release, seen


def plain_reader(url: str):
    client, event, _ = stalled_reader(url)

    def release():
        event.set()
        client.stop_stream(cancel_requests=True)
        client.close()
    return release


def plain_read(url: str, codec: str = "raw") -> tuple[float, int, float]:
    """A plain tritonclient reply that reads: (first chunk seconds, stalls, seconds stalled)."""
    import queue

    import numpy as np

    from talkserve.client import MAX_RECEIVE_BYTES, OUTPUTS, request_inputs
    from talkserve.playback import stalls

    got: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(
        url, channel_args=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
    client.start_stream(callback=lambda result, error: got.put((time.monotonic(), result, error)))
    codec_input = grpcclient.InferInput("video_codec", [1], "BYTES")
    codec_input.set_data_from_numpy(np.array([codec.encode()], dtype=np.object_))
    sent, chunks = time.monotonic(), []
    client.async_stream_infer("talking_head", [*request_inputs("Hello!", "sample"), codec_input],
                              outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS],
                              enable_empty_final_response=True)
    try:
        while True:
            at, result, error = got.get(timeout=120)
            if error is not None:
                raise RuntimeError(error.message())
            if result.get_response().outputs:
                chunks.append((at - sent, len(result.as_numpy("audio")) / int(result.as_numpy("sample_rate")[0])))
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    return (chunks[0][0], *stalls(chunks))


def warm_up(url: str, streams: int) -> None:
    """`streams` readers that read, side by side, each the reply the stalled ones will ask for."""
    from talkserve.client import TalkClient

    def read():
        with TalkClient(url) as client:
            list(client.stream(QUESTION, "sample", max_new_tokens=200))

    threads = [threading.Thread(target=read) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def by_process(server) -> dict[str, float]:
    """Proportional set size (MB) of tritonserver and of each python model's stub (by model name)."""
    from talkserve.server.health import processes

    out = {}
    for pid, ppid, _ in processes():
        if pid != server.proc.pid and ppid != server.proc.pid:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        model = next((a.decode() for a in cmd if a.endswith(b"model.py")), "stub/1/model.py")
        name = "tritonserver" if pid == server.proc.pid else Path(model).parent.parent.name
        out[name] = out.get(name, 0.0) + pss_mb(pid)
    return out


def measure(server, url: str, readers: int, seconds: float, start_reader, settle: float, plain: bool) -> dict:
    """The server tree's memory with `readers` stalled readers: peak (their first parts drawn, in
    generator calls of several streams), held (the last 5 s of `seconds`: what they keep while they
    stall) and 10 s after they left."""
    from talkserve.client import TalkClient

    rss = lambda: process_tree_rss_mb(server.proc.pid)  # noqa: E731
    time.sleep(settle)  # the warm-up's last generator call gives its arena back first
    idle, idle_by = rss(), by_process(server)
    releases = [start_reader(url) for _ in range(readers)]
    start, samples = time.monotonic(), []
    while time.monotonic() - start < seconds:  # the stalled readers alone
        time.sleep(0.5)
        samples.append((time.monotonic() - start, rss()))
    peak = max([idle] + [m for _, m in samples])
    held = statistics.median(m for t, m in samples if t >= seconds - 5)  # what they hold once settled
    with TalkClient(url) as client:  # then one that reads, beside them
        reply = list(client.stream("Hello!", "sample"))
    plain_reply = plain_read(url) if plain else None  # and a plain one that reads
    for release in releases:
        release()
    time.sleep(10)
    after, after_by = rss(), by_process(server)
    kept = {k: round(v - idle_by.get(k, 0.0)) for k, v in after_by.items() if abs(v - idle_by.get(k, 0.0)) >= 5}
    return {"idle": idle, "peak": peak, "held": held, "after": after, "per_reader": (held - idle) / readers,
            "peak_per_reader": (peak - idle) / readers,
            "first": reply[0].seconds, "kept_by_process": kept,
            "plain_reader": None if plain_reply is None else dict(zip(("first", "stalls", "stalled_s"), plain_reply,
                                                                      strict=True))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--preset", default="fp32")
    ap.add_argument("--repository", type=Path, help="a built repository/current to use instead of building")
    ap.add_argument("--modes", default="receipts,plain,plain-unbounded,arena,glibc")
    args = ap.parse_args()
    from talkserve.lipsync.avatars import AvatarStore
    from talkserve.recipe import SAMPLE_PORTRAIT

    with tempfile.TemporaryDirectory(prefix="talkserve-stalled-") as tmp:
        root = Path(tmp)
        db = root / "avatars.db"
        AvatarStore(db).add(SAMPLE_PORTRAIT, "sample")
        current = args.repository or build(args.preset, root, db)
        settle = repo.read_params(current / "wav2lip", OnnxParams).arena_release_s + 1.0
        results = {}
        glibc = {name: None for name in SERVING_ENV if name.startswith("MALLOC_")}
        runs = {"receipts": lambda: ("receipts", stalled_talker, {}, current),
                "plain": lambda: ("plain", plain_reader, {}, current),
                "plain-unbounded": lambda: ("plain, no budget", plain_reader, {},
                                            edited(current, root / "unbounded", lipsync={"unreceipted_mb": 0})),
                "arena": lambda: ("receipts, arena kept", stalled_talker, {},
                                  edited(current, root / "arena-kept", wav2lip={"arena_release_s": 0.0})),
                "glibc": lambda: ("receipts, glibc defaults", stalled_talker, glibc, current)}
        for key in args.modes.split(","):
            mode, start_reader, env, repository = runs[key]()
            # a fresh server per mode, warmed up alike: memory a process once grew is not returned
            log = root / f"triton-{mode.replace(', ', '-').replace(' ', '-')}.log"
            with serving(repository, log, max_streams=args.readers + 1, env=env) as (server, _):
                url = f"127.0.0.1:{server.ports.grpc}"
                warm_up(url, args.readers)  # concurrent replies grow the server's buffers once: not a reader's cost
                r = results[mode] = measure(server, url, args.readers, args.seconds, start_reader, settle,
                                            plain=start_reader is plain_reader)
            print(f"{mode:>24}: server tree idle {r['idle']:.0f} MB; with {args.readers} stalled readers peak "
                  f"{r['peak']:.0f} MB (+{r['peak_per_reader']:.0f} MB per reader), held {r['held']:.0f} MB "
                  f"(+{r['per_reader']:.0f} MB per reader); {r['after']:.0f} MB 10 s after they left "
                  f"(+{r['after'] - r['idle']:.0f} MB kept: {r['kept_by_process']}); a reading client beside "
                  f"them: first chunk {r['first']:.2f} s (receipts)"
                  + ("" if not (p := r["plain_reader"]) else f", {p['first']:.2f} s plain with {p['stalls']} "
                     f"stall(s) ({p['stalled_s']:.2f} s)"), flush=True)
        print("held per stalled reader: " + ", ".join(f"{m} {r['per_reader']:+.0f} MB" for m, r in results.items())
              + "; kept 10 s after they left: " + ", ".join(f"{m} {r['after'] - r['idle']:+.0f} MB"
                                                           for m, r in results.items()))
        out = Path("bench-results")
        out.mkdir(exist_ok=True)
        (out / "stalled.json").write_text(json.dumps(results, indent=1))


def edited(current: Path, copy: Path, **changes: dict) -> Path:
    """A copy of the repository with some models' parameters changed (as a recipe would write them)."""
    shutil.copytree(current.resolve(), copy, symlinks=True)
    for model, params in changes.items():
        repo.update_params(copy / model, **params)
    return copy


if __name__ == "__main__":
    main()
