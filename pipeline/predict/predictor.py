"""``Predictor``: the one inference path, for validation, ``test.py`` and the benchmarks.

It holds a network with its configuration (loaded once from a run folder by
``Predictor.from_run``). ``logits`` runs blended sliding windows over a
preprocessed volume; ``predict`` reads a case once and returns everything a
caller needs: the label map on the source's own grid, optional probabilities,
the source image and geometry, the field-of-view mask and the network input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models3d import build_from_config

from ..config import Config, config_from_dict, merge_overrides
from ..data.cases import Case
from ..data.grids import spacing_from_affine
from ..data.io import load_image, reader_options
from ..data.monai_reader import to_meta_tensor
from ..data.transforms import IMAGE, preprocess_transforms
from ..errors import UserError
from ..runtime import channels_last, resolve_precision, select_device
from ..train.checkpoint import load_checkpoint
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
    """A network ready for inference (channels-last on the CPU): ``cfg.infer`` decides overlap,
    blending, flips and precision."""

    def __init__(self, model: torch.nn.Module, cfg: Config, labels: dict[int, str]):
        self.device = next(model.parameters()).device
        self.model = channels_last(model) if self.device.type == "cpu" else model
        self.cfg, self.labels = cfg, labels
        self.amp_dtype = resolve_precision(cfg.infer.precision, self.device)
        self.preprocess = preprocess_transforms(cfg)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best", overrides: Sequence[str] = (),
                 device: torch.device | None = None) -> Predictor:
        """The network of a run from ``best``, ``last`` or a checkpoint path; ``overrides``
        (``infer.overlap=0.5``, ``evaluate.nsd_tolerance_mm=2`` ...) change the run's inference and
        evaluation settings, nothing else."""
        path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt" if checkpoint in ("best", "last") else Path(checkpoint)
        state = load_checkpoint(path)
        bad = [o for o in overrides if not o.strip().startswith(("infer.", "evaluate.", "data.tubular_classes="))]
        if bad:
            raise UserError(f"--set {bad[0]!r}: test.py changes only infer.*, evaluate.* and data.tubular_classes; "
                            "the rest belongs to the trained run")
        overrides = [*decided_overrides(run_dir), *overrides]  # the run's decision, under the user's keys
        raw = merge_overrides(state["config"], overrides) if overrides else state["config"]
        cfg = config_from_dict(raw, f"{path} (config)" + (" + --set" if overrides else ""))
        labels = {int(k): v for k, v in state["labels"].items()}
        try:
            model = build_from_config(cfg.model, int(state["in_channels"]), max(labels) + 1, cfg.train.patch_size)
            model.load_state_dict(state["model"])
        except (ValueError, RuntimeError) as err:
            raise UserError(f"{path}: weights do not fit model {cfg.model.name} {cfg.model.channels} "
                            f"({str(err).splitlines()[0]})") from None
        return cls(model.to(device or select_device()).eval(), cfg, labels)

    def logits(self, image: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """Logits (B, K, H, W, D) float32 of preprocessed volumes ``image`` (B, C, H, W, D), by blended
        sliding windows of the training patch; ``tta`` (default ``infer.tta``) averages flipped passes."""
        infer = self.cfg.infer if tta is None else dataclasses.replace(self.cfg.infer, tta=tta)
        return predict_volume(self.model, image.to(self.device), self.cfg.train.patch_size, infer, self.amp_dtype)

    def label_map(self, image: torch.Tensor) -> torch.Tensor:
        """Argmax (1, H, W, D) uint8 (CPU) of the blended logits of a preprocessed volume (C, H, W, D),
        at least one patch in every axis, slab by slab (``stream_logits``: the same windows and
        weights as ``logits``, with ``infer.tta`` flips per window batch). Memory holds one patch
        deep of logits instead of the whole volume's (K float32 per voxel)."""
        shape = tuple(image.shape[1:])
        label = torch.empty((1, *shape), dtype=torch.uint8)
        for slab in stream_logits(self.model, lambda a, b: image[..., a:b], shape, self.cfg.train.patch_size,
                                  self.cfg.infer, max(self.labels) + 1, self.amp_dtype):
            label[0, ..., slab.start : slab.start + slab.logits.shape[-1]] = slab.logits.argmax(dim=0).to(torch.uint8).cpu()
        return label

    def _check_input(self, image: np.ndarray, path: Path) -> None:
        """UserError naming ``path`` for an image (x, y, z[, C]) the network cannot take as it is."""
        channels = image.shape[3] if image.ndim == 4 else 1
        expected = next(p for p in self.model.parameters() if p.ndim >= 4).shape[1]  # the first convolution's
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
