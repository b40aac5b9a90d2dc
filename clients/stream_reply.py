"""Minimal streaming client for the talking_head ensemble, with tritonclient alone.

Shows the whole request contract in one screen; `talkserve say` (talkserve/client/talk.py +
talkserve/apps/speak.py) is the full client that writes an mp4.

    python clients/stream_reply.py "Hello! Who are you?" --avatar sample --url 127.0.0.1:8001 [--video-codec raw]

Each response's `video_h264` holds its frames as H.264 (Annex-B); this script appends them to
`--h264 FILE` (a reply's parts are one stream: `ffplay FILE` plays it). H.264 by default: this client
sends no read receipts, and a reply without them may be sent `serving.unreceipted_mb` (48 MB) of
video in all — a whole reply as H.264, 2.4 s of raw 512² frames (docs/contract.md).
"""

from __future__ import annotations

import argparse
import queue
import time

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("text")
    ap.add_argument("--avatar", default="sample")
    ap.add_argument("--url", default="127.0.0.1:8001")
    ap.add_argument("--video-codec", choices=["raw", "h264"], default="h264")
    ap.add_argument("--h264", default="reply.h264", help="where --video-codec h264 writes the stream")
    args = ap.parse_args()

    inputs = []
    for name, value in (("text", args.text), ("avatar_id", args.avatar), ("video_codec", args.video_codec)):
        tensor = grpcclient.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([value.encode("utf-8")], dtype=np.object_))
        inputs.append(tensor)

    coded_out = open(args.h264, "wb") if args.video_codec == "h264" else None  # noqa: SIM115 (closed below)
    client = grpcclient.InferenceServerClient(args.url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    start = time.monotonic()
    client.async_stream_infer("talking_head", inputs, enable_empty_final_response=True)
    try:
        while True:
            result, error = responses.get(timeout=600)
            if error is not None:
                raise SystemExit(f"{error.status()}: {error.message()}")
            response = result.get_response()
            if response.outputs:
                video, audio = result.as_numpy("video"), result.as_numpy("audio")
                coded = result.as_numpy("video_h264").tobytes()
                if coded_out:
                    coded_out.write(coded)
                shown = f"{len(coded)} bytes of H.264" if coded else f"{len(video)} frames"
                print(f"{time.monotonic() - start:6.2f}s sentence {result.as_numpy('chunk_index')[0]} "
                      f"part {result.as_numpy('part_index')[0]}: {shown}, "
                      f"{len(audio) / result.as_numpy('sample_rate')[0]:.2f}s audio — "
                      f"{result.as_numpy('reply_text')[0].decode()}")
            if response.parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
        if coded_out:
            coded_out.close()


if __name__ == "__main__":
    main()
