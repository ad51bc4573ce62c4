"""Inference engines: what runs one batch of windows, ``engine(windows) -> logits``.

The sliding window (``sliding.py``) and the streamed engine (``streamed.py``) place,
flip and blend the windows; an engine only turns a (B, C, *patch) float32 batch into
(B, K, *patch) logits. Three small adapters sit behind that one call:

- ``TorchEngine``: the PyTorch network itself (autocast, channels-last on the CPU);
  the only engine on CUDA, and the one validation uses during training;
- ``OpenVINOEngine``: the network's ONNX graph compiled by OpenVINO for the CPU,
  once per window shape (compiled models and their infer requests are kept);
- ``OnnxRuntimeEngine``: the same graph in ONNX Runtime.

``infer.backend: auto`` takes OpenVINO on a CPU when it is installed (about twice
PyTorch's speed there at the same precision, ``benchmarks/infer_speed.py``) and PyTorch otherwise; the
choice and its reason are logged.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from importlib.util import find_spec
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..runtime import autocast, channels_last, input_layout

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
INSTALL = {"openvino": "pip install openvino", "onnxruntime": "pip install onnxruntime"}


class Engine(Protocol):
    """Runs the network on a batch of windows."""

    name: str
    device: torch.device

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, *patch) of ``windows`` (B, C, *patch) float32 on ``device``."""


class TorchEngine:
    """The PyTorch network, in eval mode for each call (training's own model keeps its mode)."""

    name = "torch"

    def __init__(self, model: nn.Module, amp_dtype: torch.dtype | None):
        self.device = next(model.parameters()).device
        self.model = channels_last(model) if self.device.type == "cpu" else model
        self.amp_dtype = amp_dtype

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast(self.device, self.amp_dtype):
                return self.model(windows.contiguous(memory_format=input_layout(self.model)))
        finally:
            self.model.train(was_training)


class OpenVINOEngine:
    """An ONNX graph compiled by OpenVINO for the CPU, one compiled model per window shape.

    ``precision`` is ``f32`` or ``bf16`` (``INFERENCE_PRECISION_HINT``); ``threads`` matches
    PyTorch's, so both engines use the same cores.
    """

    name = "openvino"
    device = torch.device("cpu")

    def __init__(self, onnx: bytes, precision: str, threads: int):
        import openvino as ov

        self.core = ov.Core()
        self.graph = self.core.read_model(io.BytesIO(onnx))
        self.config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
                       "PERFORMANCE_HINT": "LATENCY"}
        self.requests: dict[tuple[int, ...], object] = {}

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        shape = tuple(windows.shape)
        if shape not in self.requests:  # a static shape compiles to faster kernels than a dynamic one
            graph = self.graph.clone()
            graph.reshape({graph.inputs[0]: list(shape)})
            self.requests[shape] = self.core.compile_model(graph, "CPU", self.config).create_infer_request()
            log.debug("openvino: compiled for windows %s", shape)
        batch = np.ascontiguousarray(windows.detach().float().cpu().numpy())
        result = self.requests[shape].infer({0: batch}, share_outputs=False)  # a copy: the next call reuses the buffer
        return torch.from_numpy(result[0])


class OnnxRuntimeEngine:
    """An ONNX graph in ONNX Runtime on the CPU."""

    name = "onnxruntime"
    device = torch.device("cpu")

    def __init__(self, onnx: bytes, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(windows.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input: batch})[0])


def installed(backend: str) -> bool:
    return backend == "torch" or find_spec(backend) is not None


def resolve_backend(backend: str, device: torch.device) -> tuple[str, str]:
    """The backend ``infer.backend`` means on ``device``, and why (a phrase for the log).

    Raises UserError for a graph backend on CUDA or one that is not installed."""
    if backend not in BACKENDS:
        raise UserError(f"infer.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type != "cpu":
            return "torch", f"auto on {device.type}: PyTorch runs the GPU"
        if installed("openvino"):
            return "openvino", "auto on the CPU, where OpenVINO ran 1.8x PyTorch in benchmarks/infer_speed.py"
        return "torch", "auto on the CPU: OpenVINO is not installed (pip install openvino: 1.8x in benchmarks)"
    if backend != "torch" and device.type != "cpu":
        raise UserError(f"infer.backend: {backend} runs on the CPU here; use torch or auto on {device.type}")
    if not installed(backend):
        raise UserError(f"infer.backend: {backend} is not installed; {INSTALL[backend]}, or set infer.backend=torch")
    return backend, "infer.backend says so"


def build_engine(backend: str, device: torch.device, model: Callable[[], nn.Module], onnx: Callable[[], bytes],
                 amp_dtype: torch.dtype | None) -> Engine:
    """The engine for ``infer.backend`` on ``device``: ``model()`` gives the PyTorch network, ``onnx()``
    its ONNX graph; each is called only when the chosen engine needs it. The choice is logged."""
    name, reason = resolve_backend(backend, device)
    threads = torch.get_num_threads()
    if name == "torch":
        engine: Engine = TorchEngine(model().to(device).eval(), amp_dtype)
    elif name == "openvino":
        engine = OpenVINOEngine(onnx(), "bf16" if amp_dtype == torch.bfloat16 else "f32", threads)
    else:
        engine = OnnxRuntimeEngine(onnx(), threads)
    precision = "bf16" if amp_dtype == torch.bfloat16 and name != "onnxruntime" else \
        "fp16" if amp_dtype == torch.float16 and name == "torch" else "fp32"
    log.info("inference engine: %s (%s), %s, %d thread(s)", name, reason, precision, threads)
    return engine


class EnsembleEngine:
    """Several engines of one architecture and patch (the folds of a cross-validation) as one: the log of
    the mean of their softmax probabilities, so that blending, flips, argmax and softmax downstream treat
    it as logits and the softmax of the result is the folds' mean probability (nnU-Net's ensemble)."""

    def __init__(self, engines: list[Engine]):
        self.engines = engines
        self.name = f"ensemble of {len(engines)} {engines[0].name}"
        self.device = engines[0].device

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        mean = sum(torch.softmax(engine(windows).float(), dim=1) for engine in self.engines) / len(self.engines)
        return torch.log(mean.clamp_min(torch.finfo(torch.float32).tiny))
