"""The prediction in the formats clinical tools open, beside the NIfTI that scoring and ``--resume``
read (``infer.output_format``): ``<case>.seg.nrrd`` for 3D Slicer, ``<case>.seg.dcm`` (DICOM SEG) for
PACS and DICOM viewers, on the source's grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..config import Config
from ..data.cases import Case
from ..data.io import kind_of
from ..data.segmentation_files import SUFFIXES, Algorithm, write_dicom_seg, write_seg_nrrd
from ..errors import UserError
from .predictor import Prediction

log = logging.getLogger(__name__)


def output_formats(cfg: Config) -> tuple[str, ...]:
    """``infer.output_format`` as a tuple; NIfTI is always written."""
    value = cfg.infer.output_format
    return (value,) if isinstance(value, str) else tuple(value)


def check_sources(cfg: Config, cases: Sequence[Case]) -> None:
    """Before any prediction: DICOM SEG is asked for, so every case must come from a DICOM series."""
    if "dicom-seg" not in output_formats(cfg):
        return
    for case in cases:
        if kind_of(case.image) != "dicom":
            raise UserError(f"{case.image}: infer.output_format dicom-seg needs a DICOM source, and case {case.id} "
                            "is not a DICOM series; drop dicom-seg or test DICOM cases only")


def needs_probabilities(cfg: Config) -> bool:
    return "dicom-seg" in output_formats(cfg) and cfg.infer.dicom_seg_type == "fractional"


def write_clinical_outputs(result: Prediction, case: Case, cfg: Config, labels: dict[int, str], folder: Path,
                           source: str) -> list[Path]:
    """The formats of ``infer.output_format`` other than NIfTI, into ``folder``; ``source`` names the run or
    model package in DICOM SEG's algorithm identification."""
    written = []
    formats = output_formats(cfg)
    if "nrrd-seg" in formats:
        written.append(write_seg_nrrd(result.label, result.affine, labels, folder / f"{case.id}{SUFFIXES['nrrd-seg']}"))
    if "dicom-seg" in formats:
        probabilities = result.probabilities if cfg.infer.dicom_seg_type == "fractional" else None
        written.append(write_dicom_seg(result.label, case.image, labels, folder / f"{case.id}{SUFFIXES['dicom-seg']}",
                                       Algorithm(cfg.model.name, source), cfg.data.dicom_series, probabilities))
    return written


def warn_if_streamed(cfg: Config, case: Case) -> None:
    """A case predicted slab by slab is written as label slices or a streamed NIfTI only: say so once."""
    extra = [f for f in output_formats(cfg) if f != "nifti"]
    if extra:
        log.warning("%s: predicted slab by slab (larger than infer.stream_voxels): %s not written for it; "
                    "these formats need the whole volume in memory", case.id, " and ".join(extra))
