"""A network of the family as an ONNX graph: what OpenVINO and ONNX Runtime run, and what a model package holds.

Exported with PyTorch's own exporter (``torch.onnx.export(dynamo=True)``, the
``torch.export`` path; the TorchScript one is deprecated and cannot trace SegNet's
max-unpooling). The batch axis is dynamic; the spatial axes are the training
patch, the only window shape the sliding window ever feeds. With dynamic spatial
axes PyTorch 2.13's exporter gave SegNet logits 0.2 away from PyTorch's at twice the
patch (the UNet family was exact), so they are not offered.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Sequence

import torch
from torch import nn

OPSET = 18
INPUT, OUTPUT = "image", "logits"
MAX_BATCH = 1024


def to_onnx(model: nn.Module, in_channels: int, patch_size: Sequence[int]) -> bytes:
    """The serialized ONNX graph (float32) of ``model``: input ``image`` (B, C, *patch) -> ``logits``
    (B, K, *patch). ``model`` itself is not changed (a CPU copy in eval mode is exported)."""
    network = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    example = torch.zeros(2, in_channels, *patch_size)  # batch 2: torch.export fixes a size-1 axis
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:  # the exporter prints its progress and warns about operators this network does not use
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                network, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},), verbose=False,
            )
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return program.model_proto.SerializeToString()
