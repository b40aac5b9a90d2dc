"""The only module that imports TensorRT: build a strongly typed engine from ONNX, run it.

Written against the documented TensorRT 10/11 Python API. Precision lives in the ONNX, not in
builder flags: INT8 comes from explicit Q/DQ nodes, FP16 from layers converted before the build
(`talkserve.targets.precision.to_fp16`). Implicit INT8 calibration is deprecated in 10.1 and gone in 11;
`BuilderFlag.FP16`/`INT8` are gone in 11, where every network is strongly typed (the flag we set is
required on 10.x and accepted, ignored, on 11.x). TensorRT is not on PyPI for these machines; this
runs inside NVIDIA's NGC containers on the GPU node (see `talkserve build --target gpu`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input → (min, opt, max)


class EngineBuildError(RuntimeError):
    pass


def _trt():
    import tensorrt as trt

    return trt


def version() -> str:
    return _trt().__version__


def build_engine(onnx_path: Path, plan_path: Path, shapes: Shapes, timing_cache: Path,
                 workspace_bytes: int) -> None:
    """Parse `onnx_path` into a strongly typed network, build it with one optimization profile
    (`shapes`), reuse and update `timing_cache`, write the serialized plan to `plan_path`."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path.name}: TensorRT could not parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"{onnx_path.name}: TensorRT failed to build an engine (see its log above)")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    plan_path.write_bytes(memoryview(plan))


class Engine:
    """A deserialized plan run on the current CUDA device, IO as numpy (for validation and benchmarks)."""

    def __init__(self, plan_path: Path):
        import torch

        trt = _trt()
        self.torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"{plan_path}: not a plan this TensorRT/GPU can load")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: torch.from_numpy(np.zeros(0, trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
                       for n in names}

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = []
        for name in self.inputs:
            t = torch.from_numpy(np.ascontiguousarray(feeds[name])).to("cuda", self.dtypes[name])
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out, allocator = {}, _allocator(torch)
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if -1 in shape:  # data-dependent (e.g. mel frames from predicted durations)
                self.context.set_output_allocator(name, allocator)
                continue
            out[name] = torch.empty(shape, dtype=self.dtypes[name], device="cuda")
            self.context.set_tensor_address(name, out[name].data_ptr())
        stream = torch.cuda.Stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineBuildError("TensorRT execution failed")
        stream.synchronize()
        for name, shape in allocator.shapes.items():
            n = int(np.prod(shape))
            out[name] = allocator.buffers[name].view(self.dtypes[name])[:n].reshape(shape)
        return {name: t.cpu().numpy() for name, t in out.items()}


def _allocator(torch):
    """Output memory for data-dependent shapes, sized by TensorRT once it knows them."""
    trt = _trt()

    class Allocator(trt.IOutputAllocator):
        def __init__(self):
            super().__init__()
            self.buffers, self.shapes = {}, {}

        def reallocate_output(self, name, memory, size, alignment):
            self.buffers[name] = torch.empty(max(size, 1), dtype=torch.uint8, device="cuda")
            return self.buffers[name].data_ptr()

        def notify_shape(self, name, shape):
            self.shapes[name] = tuple(shape)

    return Allocator()
