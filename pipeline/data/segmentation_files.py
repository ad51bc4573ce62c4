"""Label maps as the clinical tools read them: 3D Slicer's ``.seg.nrrd`` (named, coloured segments, via
``slicerio``) and DICOM SEG (via ``highdicom``) referencing the DICOM series the case was read from.

Both are written on the source grid: a label map (x, y, z) as ``load_image`` returned the image, with
its voxel-to-RAS affine. Class names and colours are the run's (``label_maps.CLASS_COLOURS``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import atomic_write
from .dicom_series import RAS_TO_LPS
from .formats import pick_series
from .io import kind_of
from .label_maps import class_colour

OUTPUT_FORMATS = ("nifti", "nrrd-seg", "dicom-seg")
SUFFIXES = {"nifti": ".nii.gz", "nrrd-seg": ".seg.nrrd", "dicom-seg": ".seg.dcm"}
CLINICAL_SUFFIXES = (SUFFIXES["nrrd-seg"], SUFFIXES["dicom-seg"])  # written beside the NIfTI, not scored again


@dataclass(frozen=True)
class Algorithm:
    """Who made the segmentation, as DICOM SEG's algorithm identification records it."""

    name: str  # the network, e.g. resunet
    source: str  # the run folder's or the model package's name
    version: str = ""  # the pipeline's version (default: the installed one)

    def version_or_installed(self) -> str:
        if self.version:
            return self.version
        try:
            return metadata.version("medseg-pipeline")
        except metadata.PackageNotFoundError:
            return "unknown"


def write_seg_nrrd(label: np.ndarray, affine: np.ndarray, labels: Mapping[int, str], out: Path) -> Path:
    """``out`` (.seg.nrrd): one segment per foreground class of ``labels`` (named, coloured, label value =
    class id), voxels (x, y, z) on the grid of ``affine`` (RAS; stored as Slicer does, in LPS)."""
    import slicerio  # optional dependency of one output format

    segments = [{"id": f"Segment_{class_id}", "name": name, "labelValue": int(class_id), "layer": 0,
                 "color": list(class_colour(int(class_id)))}
                for class_id, name in sorted(labels.items()) if int(class_id) > 0]
    segmentation = {"voxels": np.asarray(label, dtype=np.uint8 if max(labels) < 256 else np.uint16),
                    "ijkToLPS": RAS_TO_LPS @ np.asarray(affine, dtype=np.float64), "segments": segments,
                    "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap"}
    return atomic_write(out, lambda tmp: slicerio.write_segmentation(str(tmp), segmentation))


# A class name (lower case, spaces and hyphens as underscores) -> the SNOMED CT concept in pydicom's
# code dictionary; a name found nowhere gets the generic "Tissue". Tumours are "morphologically
# abnormal structures" (category), everything else an anatomical structure.
CONCEPTS = {"kidney": "Kidney", "liver": "Liver", "spleen": "Spleen", "pancreas": "Pancreas", "lung": "Lung",
            "heart": "Heart", "left_atrium": "LeftAtrium", "vessel": "BloodVessel", "blood_vessel": "BloodVessel",
            "vessels": "BloodVessel", "artery": "Artery", "vein": "Vein", "aorta": "Aorta", "organ": "Organ",
            "bone": "Bone", "brain": "Brain", "prostate": "Prostate", "hippocampus": "Hippocampus",
            "colon": "Colon", "retina": "Retina", "nucleus": "Nucleus", "nuclei": "Nucleus", "tumour": "Tumor",
            "tumor": "Tumor", "lesion": "Lesion", "mass": "Mass", "neoplasm": "Neoplasm"}
ABNORMAL = {"Tumor", "Lesion", "Mass", "Neoplasm"}


def coded_concept(name: str):
    """(category, type) codes of a class name: a standard SNOMED CT concept where the name maps to one."""
    from pydicom.sr.codedict import codes

    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    concept = CONCEPTS.get(key) or CONCEPTS.get(key.split("_")[-1])
    if concept is None:
        return codes.SCT.Tissue, codes.SCT.Tissue
    category = codes.SCT.MorphologicallyAbnormalStructure if concept in ABNORMAL else codes.SCT.AnatomicalStructure
    return category, getattr(codes.SCT, concept)


def segment_descriptions(labels: Mapping[int, str], algorithm: Algorithm) -> list:
    """One highdicom segment description per foreground class (number = class id): name, codes, colour."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, version=algorithm.version_or_installed(), family=codes.cid7162.ArtificialIntelligence,
        source=algorithm.source)
    descriptions = []
    for class_id, name in sorted((int(k), v) for k, v in labels.items() if int(k) > 0):
        category, concept = coded_concept(name)
        rgb = [round(255 * c) for c in class_colour(class_id)]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=class_id, segment_label=name, segmented_property_category=category,
            segmented_property_type=concept, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification, tracking_uid=hd.UID(), tracking_id=name,
            display_color=hd.color.CIELabColor.from_rgb(*rgb)))
    return descriptions


def write_dicom_seg(label: np.ndarray, source: Path, labels: Mapping[int, str], out: Path, algorithm: Algorithm,
                    selector: str | None = None, probabilities: np.ndarray | None = None) -> Path:
    """``out``: a DICOM SEG of the series in ``source`` (``selector``: ``data.dicom_series``) that the case
    was read from, one segment per foreground class. Binary from ``label`` (x, y, z), or fractional
    (8 bits) from ``probabilities`` (C, x, y, z; class 0 first) when given."""
    import highdicom as hd
    import pydicom

    if kind_of(source) != "dicom":
        raise UserError(f"{source}: DICOM SEG needs a DICOM source (this case is not a DICOM series); "
                        "write nifti or nrrd-seg for it")
    series = pick_series(source, selector)
    images = [pydicom.dcmread(name) for name in series.files]  # in the order read_dicom stacked them
    if probabilities is None:
        # (x, y, z) -> frames (z, rows = y, columns = x): frame k is the k-th file read
        pixels, kind = np.ascontiguousarray(np.asarray(label).transpose(2, 1, 0)), hd.seg.SegmentationTypeValues.BINARY
        pixels = pixels.astype(np.uint8 if pixels.max(initial=0) < 256 else np.uint16)
    else:
        pixels = np.ascontiguousarray(np.asarray(probabilities[1:], np.float32).transpose(3, 2, 1, 0))
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
    first = images[0]
    seg = hd.seg.Segmentation(
        source_images=images, pixel_array=pixels, segmentation_type=kind,
        segment_descriptions=segment_descriptions(labels, algorithm), series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="medseg-pipeline", manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version_or_installed(), device_serial_number=algorithm.source,
        series_description=f"{algorithm.name} segmentation", omit_empty_frames=False)
    return atomic_write(out, lambda tmp: seg.save_as(tmp))
