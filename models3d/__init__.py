"""The network family and its registry: ``build_model(name, ...)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import nn

from .segnet import SegNet
from .unet import UNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "unet": partial(UNet, residual=False),
    "resunet": partial(UNet, residual=True, strided=True),
    "segnet": partial(SegNet, skips=0),
    "usegnet1": partial(SegNet, skips=1),
    "usegnet2": partial(SegNet, skips=2),
    "usegnet3": partial(SegNet, skips=3),
    "resusegnet": partial(SegNet, skips=3, residual=True),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def build_model(
    name: str,
    in_channels: int = 1,
    out_channels: int = 2,
    channels: Sequence[int] | None = None,
    base_width: int = 16,
    depth: int = 5,
    **kw,
) -> nn.Module:
    """Build a network of the family by name.

    Widths come from ``channels`` (one per level, top to bottom) or from
    ``base_width`` doubled over ``depth`` levels. Other keywords (``norm``,
    ``dropout``, ``patch_size``, ``deep_supervision``) go to the class. Raises ValueError for an
    unknown name, listing the valid ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if channels is None:
        channels = tuple(base_width * 2**i for i in range(depth))
    if any(int(c) < 1 for c in channels):
        raise ValueError(f"channels must be positive integers, got {tuple(channels)}")
    return _REGISTRY[name](in_channels=in_channels, out_channels=out_channels, channels=tuple(channels), **kw)


def build_from_config(model, in_channels: int, out_channels: int, patch_size: Sequence[int]) -> nn.Module:
    """The network a configuration's ``model`` section describes (``name``, ``channels``, ``norm``,
    ``dropout``, ``deep_supervision``), its operators and pooling planned for ``patch_size`` (H, W, D).

    Raises ValueError naming the configuration keys when they do not describe a valid network.
    """
    try:
        return build_model(model.name, in_channels, out_channels, channels=model.channels, norm=model.norm,
                           dropout=model.dropout, patch_size=tuple(patch_size),
                           deep_supervision=getattr(model, "deep_supervision", False))
    except ValueError as err:
        raise ValueError(f"model.name / model.channels / train.patch_size: {err}") from None


__all__ = ["MODEL_NAMES", "SegNet", "UNet", "build_from_config", "build_model"]
