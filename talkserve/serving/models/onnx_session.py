"""Triton python model: one ONNX Runtime session, IO named by config.pbtxt.

Serves `llm_decoder` and `wav2lip` on the CPU target (the embedded tritonserver has only the
python backend); on GPU targets the same names are served by `tensorrt_plan` engines, so the
callers' BLS code does not change.
"""

import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from talkserve.runtime.cpu_sessions import ArenaRelease, session_options
from talkserve.serving.triton import Metrics, ModelArgs, apply_cpu_nice, run_each
from talkserve.spec import OnnxParams


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args, OnnxParams)
        apply_cpu_nice(self.args.params.cpu_nice)
        opts = session_options(self.args.params.intra_op_threads)
        path = self.args.files / self.args.params.onnx_file
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.session = ArenaRelease(session, self.args.params.arena_release_s)
        self.inputs = [i["name"] for i in self.args.config["input"]]
        self.outputs = [o["name"] for o in self.args.config["output"]]
        self.metrics = Metrics(self.args.name)

    def _run(self, request):
        feeds = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
        values = self.session.run(self.outputs, feeds)
        return [pb_utils.Tensor(name, value) for name, value in zip(self.outputs, values, strict=True)]

    def execute(self, requests):
        return run_each(requests, self._run, self.metrics)

    def finalize(self):
        self.session.close()
