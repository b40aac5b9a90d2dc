"""Benchmark: where a part's H.264 encode costs least — inside `lipsync`, or in a model of its own.

On the real tritonserver, one python model draws parts as `lipsync` sends them (15 frames of the
sample portrait at 512², its mouth region changing from frame to frame) and encodes each either
**inline** (talkserve.video_codec.H264Encoder in the same stub, as `lipsync` does) or through a
**separate** `encode` model on its own instance, called by BLS per part (the raw frames cross into
tritonserver and out to the encoder's stub; the encoder keeps one x264 stream per sentence, so that
model must see every part of a sentence in order: one instance, or a sequence batcher). Side by
side in one run, per part: the time the drawing stub waits for its bytes (p50/p95), and the bytes
of raw frames each way moves between processes.

    python bench/encode_placement.py [--sentences 6] [--parts 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import textwrap
from pathlib import Path

import numpy as np

DRAW = '''
import time
import numpy as np
import triton_python_backend_utils as pb_utils
from talkserve.video_codec import H264Encoder


def frames_of(portrait, part, n=15):
    out = np.repeat(portrait[None], n, axis=0)
    for i in range(n):  # a mouth that opens and closes: the region x264 has to code afresh
        h = 8 + int(22 * abs(np.sin((part * n + i) / 3)))
        out[i, 330:330 + h, 200:312] = (60 + 4 * i) % 255
    return out


class TritonPythonModel:
    def initialize(self, args):
        self.portrait = np.load("PORTRAIT")

    def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "mode").as_numpy()[0].decode()
            sentences, parts = (int(x) for x in pb_utils.get_input_tensor_by_name(request, "shape").as_numpy())
            waits, sizes = [], []
            for s in range(sentences):
                encoder = H264Encoder(512, 512, 25.0) if mode == "inline" else None
                for p in range(parts):
                    frames = frames_of(self.portrait, p)
                    start = time.perf_counter()
                    if encoder is not None:
                        coded = encoder.encode(frames)
                    else:
                        out = pb_utils.InferenceRequest(
                            model_name="encode", requested_output_names=["h264"],
                            inputs=[pb_utils.Tensor("frames", frames),
                                    pb_utils.Tensor("sentence", np.array([str(s).encode()], np.object_)),
                                    pb_utils.Tensor("last", np.array([p == parts - 1]))]).exec()
                        if out.has_error():
                            raise RuntimeError(out.error().message())
                        coded = pb_utils.get_output_tensor_by_name(out, "h264").as_numpy().tobytes()
                    waits.append(time.perf_counter() - start)
                    sizes.append(len(coded))
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("wait_s", np.array(waits, np.float64)),
                pb_utils.Tensor("bytes", np.array(sizes, np.int64))]))
        return responses
'''

ENCODE = '''
import numpy as np
import triton_python_backend_utils as pb_utils
from talkserve.video_codec import H264Encoder


class TritonPythonModel:
    def initialize(self, args):
        self.encoders = {}  # sentence → its x264 stream: every part of a sentence must reach this instance

    def execute(self, requests):
        responses = []
        for request in requests:
            frames = pb_utils.get_input_tensor_by_name(request, "frames").as_numpy()
            sentence = pb_utils.get_input_tensor_by_name(request, "sentence").as_numpy()[0]
            last = bool(pb_utils.get_input_tensor_by_name(request, "last").as_numpy()[0])
            encoder = self.encoders.setdefault(sentence, H264Encoder(frames.shape[2], frames.shape[1], 25.0))
            coded = encoder.encode(frames)
            if last:
                del self.encoders[sentence]
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("h264", np.frombuffer(coded, np.uint8))]))
        return responses
'''

CONFIGS = {
    "draw": '''name: "draw"
backend: "python"
max_batch_size: 0
input [ { name: "mode" data_type: TYPE_STRING dims: [ 1 ] }, { name: "shape" data_type: TYPE_INT32 dims: [ 2 ] } ]
output [ { name: "wait_s" data_type: TYPE_FP64 dims: [ -1 ] }, { name: "bytes" data_type: TYPE_INT64 dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
''',
    "encode": '''name: "encode"
backend: "python"
max_batch_size: 0
input [ { name: "frames" data_type: TYPE_UINT8 dims: [ -1, -1, -1, 3 ] },
        { name: "sentence" data_type: TYPE_STRING dims: [ 1 ] }, { name: "last" data_type: TYPE_BOOL dims: [ 1 ] } ]
output [ { name: "h264" data_type: TYPE_UINT8 dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
''',
}


def repository(root: Path) -> Path:
    import cv2

    from talkserve.paths import SAMPLE_PORTRAIT

    portrait = cv2.cvtColor(cv2.resize(cv2.imread(str(SAMPLE_PORTRAIT)), (512, 512)), cv2.COLOR_BGR2RGB)
    np.save(root / "portrait.npy", portrait)
    repo = root / "repository"
    for name, source in (("draw", DRAW.replace("PORTRAIT", str(root / "portrait.npy"))), ("encode", ENCODE)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(CONFIGS[name])
        (repo / name / "1" / "model.py").write_text(textwrap.dedent(source))
    return repo


def run(url: str, mode: str, sentences: int, parts: int) -> dict:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    inputs = [grpcclient.InferInput("mode", [1], "BYTES"), grpcclient.InferInput("shape", [2], "INT32")]
    inputs[0].set_data_from_numpy(np.array([mode.encode()], np.object_))
    inputs[1].set_data_from_numpy(np.array([sentences, parts], np.int32))
    result = client.infer("draw", inputs, client_timeout=600)
    client.close()
    waits = result.as_numpy("wait_s")[parts:]  # the first sentence warms both paths up
    return {"wait_p50_ms": 1000 * statistics.median(waits), "wait_p95_ms": 1000 * float(np.percentile(waits, 95)),
            "h264_bytes_per_part": float(result.as_numpy("bytes").mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=6)
    ap.add_argument("--parts", type=int, default=6)
    args = ap.parse_args()
    from talkserve.server.serve import Ports, Server

    raw_part = 15 * 512 * 512 * 3
    report: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="talkserve-encode-") as tmp, \
            Server(repository(Path(tmp)), Ports.free(), log=Path(tmp) / "tritonserver.log") as server:
        url = f"127.0.0.1:{server.ports.grpc}"
        for _ in range(2):  # alternate the two, twice: neither gets a quieter machine
            for mode in ("inline", "separate"):
                report.setdefault(mode, []).append(run(url, mode, args.sentences, args.parts))
    summary = {m: {k: statistics.mean(r[k] for r in runs) for k in runs[0]} for m, runs in report.items()}
    summary["inline"]["raw_bytes_between_processes_per_part"] = 0
    summary["separate"]["raw_bytes_between_processes_per_part"] = 2 * raw_part  # stub → server → encoder stub
    i, s = summary["inline"], summary["separate"]
    print(f"per 15-frame 512² part: inline encode {i['wait_p50_ms']:.1f} ms p50 ({i['wait_p95_ms']:.1f} p95), "
          f"separate model via BLS {s['wait_p50_ms']:.1f} ms p50 ({s['wait_p95_ms']:.1f} p95): "
          f"{s['wait_p50_ms'] / i['wait_p50_ms']:.2f}× the wait, plus {2 * raw_part / 1e6:.1f} MB of raw frames "
          f"copied between processes per part; H.264 {i['h264_bytes_per_part'] / 1e3:.1f} vs "
          f"{s['h264_bytes_per_part'] / 1e3:.1f} kB per part")
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "encode_placement.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
