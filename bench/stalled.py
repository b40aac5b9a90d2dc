"""Benchmark: what a client that stops reading costs the server, and what is left after it leaves.

N clients each start a reply and stop reading after its first response (their gRPC reader blocks,
so HTTP/2 flow control stops the server's writes); the server tree's resident memory is sampled
while they hold their streams, then after they cancel and disconnect. One reading client runs beside
them to show the others' cost to it.

    python bench/stalled.py --readers 3 --seconds 20
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import tritonclient.grpc as grpcclient
from pipeline import build, process_tree_rss_mb, serving

QUESTION = "Tell me about pruning and quantization and distillation, please."


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--preset", default="fp32")
    args = ap.parse_args()
    from talkserve.avatars import AvatarStore
    from talkserve.client import TalkClient
    from talkserve.recipe import SAMPLE_PORTRAIT

    with tempfile.TemporaryDirectory(prefix="talkserve-stalled-") as tmp:
        root = Path(tmp)
        db = root / "avatars.db"
        AvatarStore(db).add(SAMPLE_PORTRAIT, "sample")
        current = build(args.preset, root, db)
        with serving(current, root / "triton.log", max_streams=args.readers + 1) as (server, _):
            url = f"127.0.0.1:{server.ports.grpc}"
            rss = lambda: process_tree_rss_mb(server.proc.pid)  # noqa: E731
            idle = rss()
            readers = [stalled_reader(url) for _ in range(args.readers)]
            start, peak = time.monotonic(), idle
            with TalkClient(url) as client:
                chunks = list(client.stream("Hello!", "sample"))
            print(f"a reading client beside them: first chunk {chunks[0].seconds:.2f}s", flush=True)
            while time.monotonic() - start < args.seconds:
                time.sleep(1)
                peak = max(peak, rss())
            for client, release, _ in readers:
                release.set()
                client.stop_stream(cancel_requests=True)
                client.close()
            left = time.monotonic()
            time.sleep(10)
            after = rss()
            print(f"server tree: idle {idle:.0f} MB, peak {peak:.0f} MB with {args.readers} stalled readers "
                  f"(+{(peak - idle) / args.readers:.0f} MB per reader), {after:.0f} MB 10 s after they left "
                  f"(+{after - idle:.0f} MB kept); leave → sample {time.monotonic() - left:.0f} s")


if __name__ == "__main__":
    main()
