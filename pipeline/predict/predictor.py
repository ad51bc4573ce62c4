"""``Predictor``: the one inference path, for validation, ``test.py`` and the benchmarks.

It holds a network with its configuration (loaded once from a run folder by
``Predictor.from_run``). ``logits`` runs blended sliding windows over a
preprocessed volume; ``predict`` reads a case once and returns everything a
caller needs: the label map on the source's own grid, optional probabilities,
the source image and geometry, the field-of-view mask and the network input.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models3d import build_from_config

from ..config import Config, config_from_dict, merge_overrides
from ..data.cases import Case
from ..data.grids import spacing_from_affine
from ..data.io import load_image, reader_options
from ..data.monai_reader import to_meta_tensor
from ..data.transforms import IMAGE, preprocess_transforms
from ..errors import UserError
from ..runtime import resolve_precision, select_device
from ..checkpoint import load_checkpoint, weights_digest
from .engines import EnsembleEngine, Engine, TorchEngine, build_engine
from .onnx_graph import to_onnx
from .package import Package, read_package
from .postprocess import decided_overrides, postprocess
from .sliding import predict_volume
from .source_grid import label_to_source_grid, to_source_grid
from .streamed import stream_logits


@dataclass
class Prediction:
    """One case predicted on its source grid; arrays in the file's voxel order (x, y, z)."""

    label: np.ndarray  # (x, y, z) uint8 class ids, 0 outside the field of view
    affine: np.ndarray  # 4x4 voxel -> RAS (mm) of the source
    image: np.ndarray  # the source array as read, (x, y, z) or (x, y, z, C)
    probabilities: np.ndarray | None = None  # (K, x, y, z) float32 softmax, background first
    mask: np.ndarray | None = None  # (x, y, z) bool field of view
    network_input: torch.Tensor | None = None  # (C, H, W, D) preprocessed image on the network grid

    @property
    def spacing(self) -> tuple[float, ...]:
        return spacing_from_affine(self.affine)


class Predictor:
    """A network ready for inference behind an engine (``engines.py``): ``cfg.infer`` decides overlap,
    blending, flips, precision and, when loaded from a run or a package, the backend."""

    def __init__(self, network: nn.Module | Engine, cfg: Config, labels: dict[int, str],
                 in_channels: int | None = None):
        """``network``: a PyTorch network (run by ``TorchEngine``: validation, post-processing decisions)
        or an engine; ``in_channels`` of an engine (a PyTorch network's first convolution says it)."""
        self.cfg, self.labels = cfg, labels
        if isinstance(network, nn.Module):
            device = next(network.parameters()).device
            network = TorchEngine(network, resolve_precision(cfg.infer.precision, device))
            in_channels = next(p for p in network.model.parameters() if p.ndim >= 4).shape[1]
        self.engine: Engine = network
        self.model: nn.Module | None = getattr(network, "model", None)  # the PyTorch network, if it runs
        self.device = network.device
        self.amp_dtype = resolve_precision(cfg.infer.precision, self.device)
        self.in_channels = int(in_channels)
        self.preprocess = preprocess_transforms(cfg)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best", overrides: Sequence[str] = (),
                 device: torch.device | None = None) -> Predictor:
        """The network of a run from ``best``, ``last`` or a checkpoint path; ``overrides``
        (``infer.overlap=0.5``, ``infer.backend=torch`` ...) change the run's inference and
        evaluation settings, nothing else."""
        return cls.from_folds(run_dir, [run_dir], checkpoint, overrides, device)

    @classmethod
    def from_folds(cls, parent: str | Path, folds: Sequence[str | Path], checkpoint: str = "best",
                   overrides: Sequence[str] = (), device: torch.device | None = None) -> Predictor:
        """The networks of the run folders ``folds`` (one: that run's network; several: the folds of a
        cross-validation, averaged by ``EnsembleEngine``), each from its ``checkpoint``, with ``parent``'s
        post-processing decision where it was made with these weights; ``overrides`` as for ``from_run``."""
        named = checkpoint in ("best", "last")
        if not named and len(folds) > 1:
            raise UserError(f"--checkpoint {checkpoint}: {parent} averages {len(folds)} folds, each with its own "
                            "checkpoints; use best or last, or test one fold (--run FOLD_DIR)")
        paths = [Path(f) / "checkpoints" / f"{checkpoint}.pt" if named else Path(checkpoint) for f in folds]
        states = [load_checkpoint(path) for path in paths]
        decided = decided_overrides(parent, weights_digest(*(state["model"] for state in states)))
        overrides = [*decided, *_inference_only(overrides)]  # the decision, under the user's keys
        cfg = _config(states[0]["config"], overrides, f"{paths[0]} (config)")
        labels = {int(k): v for k, v in states[0]["labels"].items()}
        in_channels = int(states[0]["in_channels"])
        engines = [_member(cfg, device, in_channels, labels, state["model"], path)
                   for state, path in zip(states, paths)]
        return cls(engines[0] if len(engines) == 1 else EnsembleEngine(engines), cfg, labels, in_channels)

    @classmethod
    def from_package(cls, package: str | Path | Package, overrides: Sequence[str] = (),
                     device: torch.device | None = None) -> Predictor:
        """The network of a model package (``python -m pipeline.export``), without its run folder;
        ``overrides`` as for ``from_run``. Its ONNX graph runs as it is (OpenVINO, ONNX Runtime), its
        weights in the same network class as the run's (PyTorch)."""
        package = package if isinstance(package, Package) else read_package(package)
        cfg = _config(package.meta["config"], _inference_only(overrides), f"{package.path} (config)")
        labels, in_channels = package.labels, int(package.meta["in_channels"])
        def model() -> nn.Module:
            return load_network(cfg, in_channels, labels, package.weights, package.path)

        return cls(_engine(cfg, device, model, lambda: package.onnx), cfg, labels, in_channels)

    def logits(self, image: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """Logits (B, K, H, W, D) float32 of preprocessed volumes ``image`` (B, C, H, W, D), by blended
        sliding windows of the training patch; ``tta`` (default ``infer.tta``) averages flipped passes."""
        infer = self.cfg.infer if tta is None else dataclasses.replace(self.cfg.infer, tta=tta)
        return predict_volume(self.engine, image.to(self.device), self.cfg.train.patch_size, infer)

    def label_map(self, image: torch.Tensor) -> torch.Tensor:
        """Argmax (1, H, W, D) uint8 (CPU) of the blended logits of a preprocessed volume (C, H, W, D),
        at least one patch in every axis, slab by slab (``stream_logits``: the same windows and
        weights as ``logits``, with ``infer.tta`` flips per window batch). Memory holds one patch
        deep of logits instead of the whole volume's (K float32 per voxel)."""
        shape = tuple(image.shape[1:])
        label = torch.empty((1, *shape), dtype=torch.uint8)
        for slab in stream_logits(self.engine, lambda a, b: image[..., a:b], shape, self.cfg.train.patch_size,
                                  self.cfg.infer, max(self.labels) + 1):
            labels = slab.logits.argmax(dim=0).to(torch.uint8).cpu()
            label[0, ..., slab.start : slab.start + labels.shape[-1]] = labels
        return label

    def _check_input(self, image: np.ndarray, path: Path) -> None:
        """UserError naming ``path`` for an image (x, y, z[, C]) the network cannot take as it is."""
        channels = image.shape[3] if image.ndim == 4 else 1
        expected = self.in_channels
        if channels != expected:
            raise UserError(f"{path}: {channels} channel(s), but the network was trained on {expected}; "
                            "give it images of the training data's channels (data.channel picks one)")
        nonfinite = image.size - np.count_nonzero(np.isfinite(image))
        if nonfinite:
            raise UserError(f"{path}: {nonfinite} NaN or infinite voxels; replace them before predicting")

    def predict(self, case: Case | str | Path, probabilities: bool = False) -> Prediction:
        """Read one case (image, and its field-of-view mask when it has one) and predict it on its
        own grid: label map, and with ``probabilities`` the softmax; nothing outside the mask."""
        case = case if isinstance(case, Case) else Case(Path(case).name, Path(case))
        image, affine = load_image(case.image, **reader_options(self.cfg.data))
        self._check_input(image, case.image)
        try:
            data = self.preprocess({IMAGE: to_meta_tensor(image, affine, case.image)})
        except Exception as err:  # MONAI wraps a failing step in RuntimeError naming the transform chain
            raise UserError(f"{case.image}: cannot preprocess ({str(err).splitlines()[-1][:200]})") from None
        resampled = self.cfg.data.spacing is not None
        if probabilities or resampled:
            logits = self.logits(data[IMAGE].as_tensor()[None])
            label, prob = to_source_grid(logits, data, self.preprocess, resampled, probabilities)
            del logits
        else:  # the label map alone: never the whole volume's logits
            label, prob = label_to_source_grid(self.label_map(data[IMAGE].as_tensor()), data, self.preprocess), None
        label = postprocess(np.asarray(label[0]), self.cfg.infer, (k for k in self.labels if k != 0))
        prob = np.asarray(prob, dtype=np.float32) if prob is not None else None
        mask = None
        if case.mask is not None:  # field of view (retina): nothing is predicted outside it
            mask = load_image(case.mask, **reader_options(self.cfg.data, label=True))[0] > 0
            label[~mask] = 0
            if prob is not None:
                prob[:, ~mask] = 0.0
                prob[0][~mask] = 1.0
        return Prediction(label, affine, image, prob, mask, data[IMAGE].as_tensor())


def _inference_only(overrides: Sequence[str]) -> list[str]:
    """``overrides`` when each changes inference or evaluation only; else UserError naming the first other."""
    allowed = ("infer.", "evaluate.", "data.tubular_classes=", "data.dicom_series=")  # which series is read
    bad = [o for o in overrides if not o.strip().startswith(allowed)]
    if bad:
        raise UserError(f"--set {bad[0]!r}: test.py changes only infer.*, evaluate.*, data.tubular_classes and "
                        "data.dicom_series; the rest belongs to the trained network")
    return list(overrides)


def _config(raw: dict, overrides: Sequence[str], source: str) -> Config:
    return config_from_dict(merge_overrides(raw, overrides) if overrides else raw,
                            source + (" + --set" if overrides else ""))


def load_network(cfg: Config, in_channels: int, labels: dict[int, str], weights: dict, source: Path) -> nn.Module:
    """The PyTorch network ``cfg.model`` describes, with ``weights``; UserError naming ``source`` when they
    do not fit."""
    try:
        model = build_from_config(cfg.model, in_channels, max(labels) + 1, cfg.train.patch_size)
        model.load_state_dict(weights)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"{source}: weights do not fit model {cfg.model.name} {cfg.model.channels} "
                        f"({str(err).splitlines()[0]})") from None
    return model.eval()


def _member(cfg: Config, device: torch.device | None, in_channels: int, labels: dict[int, str], weights: dict,
            source: Path) -> Engine:
    """The engine of one network: the PyTorch network built once, whether the engine runs it or exports it."""
    @functools.cache
    def model() -> nn.Module:
        return load_network(cfg, in_channels, labels, weights, source)

    return _engine(cfg, device, model, lambda: to_onnx(model(), in_channels, cfg.train.patch_size))


def _engine(cfg: Config, device: torch.device | None, model, onnx) -> Engine:
    device = device or select_device()
    return build_engine(cfg.infer.backend, device, model, onnx, resolve_precision(cfg.infer.precision, device))
