"""Device, precision, memory layout and seeding: the few facts about the machine the loops need."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import time

import numpy as np
import torch


def process_started() -> float:
    """When this process started, on the ``time.monotonic`` clock: interpreter start and imports included
    (Linux, from /proc); elsewhere, now."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, from field 3 (state)
        after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        return time.monotonic() - (time.clock_gettime(time.CLOCK_BOOTTIME) - after_boot)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()


def select_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPU computes bf16 convolutions natively (checked at run time)."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (timings compare only on the same CPU)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``fp32`` / ``bf16`` / ``fp16`` / ``auto`` (None means plain fp32).

    ``auto``: bf16 on CUDA devices that support it (fp16 on older ones) and on
    CPUs with native bf16; fp32 otherwise.
    """
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        return torch.float16
    if name != "auto":
        raise ValueError(f"precision must be fp32, bf16, fp16 or auto, got {name!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for ``dtype``; a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """A 3D network's convolution weights in ``channels_last_3d`` layout, which the CPU's oneDNN kernels
    run fastest. 2D networks (single-slice data) stay contiguous: with channels-last inputs, PyTorch
    2.13's CPU backward of the strided residual UNet in 2D corrupts the heap (glibc aborts with
    "corrupted size vs. prev_size" within a few steps on DRIVE-sized crops; contiguous runs clean)."""
    return model.to(memory_format=torch.channels_last_3d) if _rank(model) == 5 else model


def input_layout(model: torch.nn.Module) -> torch.memory_format:
    """The memory format of a (B, C, H, W, D) input for ``model`` on the CPU (see ``channels_last``)."""
    return torch.channels_last_3d if _rank(model) == 5 else torch.contiguous_format


def _rank(model: torch.nn.Module) -> int:
    """4 for a network of 2D convolutions, 5 for 3D ones."""
    return max((p.dim() for p in model.parameters()), default=0)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
