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

    python bench/stalled.py --readers 3 --seconds 20
"""

from __future__ import annotations

import argparse
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


def measure(server, url: str, readers: int, seconds: float, start_reader, settle: float) -> dict:
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
    for release in releases:
        release()
    time.sleep(10)
    after, after_by = rss(), by_process(server)
    kept = {k: round(v - idle_by.get(k, 0.0)) for k, v in after_by.items() if abs(v - idle_by.get(k, 0.0)) >= 5}
    return {"idle": idle, "peak": peak, "held": held, "after": after, "per_reader": (held - idle) / readers,
            "peak_per_reader": (peak - idle) / readers,
            "first": reply[0].seconds, "kept_by_process": kept}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--preset", default="fp32")
    ap.add_argument("--repository", type=Path, help="a built repository/current to use instead of building")
    args = ap.parse_args()
    from talkserve.lipsync.avatars import AvatarStore
    from talkserve.recipe import SAMPLE_PORTRAIT

    with tempfile.TemporaryDirectory(prefix="talkserve-stalled-") as tmp:
        root = Path(tmp)
        db = root / "avatars.db"
        AvatarStore(db).add(SAMPLE_PORTRAIT, "sample")
        current = args.repository or build(args.preset, root, db)
        kept = arena_kept(current, root / "arena-kept")
        settle = repo.read_params(current / "wav2lip", OnnxParams).arena_release_s + 1.0
        results = {}
        glibc = {name: None for name in SERVING_ENV if name.startswith("MALLOC_")}
        runs = (("receipts", stalled_talker, {}, current), ("plain", plain_reader, {}, current),
                ("receipts, arena kept", stalled_talker, {}, kept),
                ("receipts, glibc defaults", stalled_talker, glibc, current))
        for mode, start_reader, env, repository in runs:
            # a fresh server per mode, warmed up alike: memory a process once grew is not returned
            log = root / f"triton-{mode.replace(', ', '-').replace(' ', '-')}.log"
            with serving(repository, log, max_streams=args.readers + 1, env=env) as (server, _):
                url = f"127.0.0.1:{server.ports.grpc}"
                warm_up(url, args.readers)  # concurrent replies grow the server's buffers once: not a reader's cost
                r = results[mode] = measure(server, url, args.readers, args.seconds, start_reader, settle)
            print(f"{mode:>24}: server tree idle {r['idle']:.0f} MB; with {args.readers} stalled readers peak "
                  f"{r['peak']:.0f} MB (+{r['peak_per_reader']:.0f} MB per reader), held {r['held']:.0f} MB "
                  f"(+{r['per_reader']:.0f} MB per reader); {r['after']:.0f} MB 10 s after they left "
                  f"(+{r['after'] - r['idle']:.0f} MB kept: {r['kept_by_process']}); a reading client beside "
                  f"them: first chunk {r['first']:.2f} s", flush=True)
        plain, rec, big, dflt = (results[m] for m in ("plain", "receipts", "receipts, arena kept",
                                                     "receipts, glibc defaults"))
        print(f"held per stalled reader: receipts {rec['per_reader']:.0f} MB vs plain {plain['per_reader']:.0f} MB; "
              f"kept 10 s after leaving: {rec['after'] - rec['idle']:.0f} MB (arena given back after "
              f"{settle - 1:.0f} s idle) vs {big['after'] - big['idle']:.0f} MB (arena kept) vs "
              f"{dflt['after'] - dflt['idle']:.0f} MB (glibc's defaults); served tree idle "
              f"{rec['idle']:.0f} MB vs {big['idle']:.0f} MB (arena kept)")


def arena_kept(current: Path, copy: Path) -> Path:
    """A copy of the repository whose generator keeps its ONNX Runtime arena (arena_release_s 0)."""
    shutil.copytree(current.resolve(), copy)
    repo.update_params(copy / "wav2lip", arena_release_s=0.0)
    return copy


if __name__ == "__main__":
    main()
