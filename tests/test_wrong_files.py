"""Files that used to be read wrongly or end in a traceback, each with the test that failed before:
multi-page and colour images, HDF5 files holding the wrong things, dataset.json values of the wrong
kind, symlink loops, NaN labels, extra channels and unknown NIfTI datatypes."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from pipeline.errors import UserError


def test_a_multi_page_tiff_is_read_as_a_volume_and_an_animated_gif_refused(tmp_path):
    """Before: a 16-page TIFF became 32 x 32 x 1 (its first page) without a word."""
    import tifffile
    from PIL import Image

    from pipeline.data.io import load_image

    pages = np.random.default_rng(0).integers(0, 255, (16, 32, 30)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "em.tif", pages)
    volume, _ = load_image(tmp_path / "em.tif")
    assert volume.shape == (32, 30, 16) and all(np.array_equal(volume[..., k], pages[k]) for k in range(16))
    frames = [Image.fromarray(page) for page in pages[:3]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(UserError, match="anim.gif: holds 3 frames; store a volume as a multi-page TIFF"):
        load_image(tmp_path / "anim.gif")


def test_a_colour_coded_label_is_refused_and_a_grey_one_stored_as_rgb_read(tmp_path):
    """Before: red = class 1, green = class 2 was read as its red channel: the green class vanished."""
    from PIL import Image

    from pipeline.data.io import load_image

    rgb = np.zeros((12, 10, 3), np.uint8)
    rgb[2:5, 2:5, 0] = 1  # red: class 1
    rgb[6:9, 2:5, 1] = 2  # green: class 2
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(UserError, match="colour.png: a colour-coded label .3 channels that differ."):
        load_image(tmp_path / "colour.png", label=True)
    grey = np.repeat(rgb.max(axis=-1, keepdims=True), 3, axis=-1)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    label, _ = load_image(tmp_path / "grey.png", label=True)
    assert label.shape == (12, 10, 1) and sorted(np.unique(label).tolist()) == [0, 1, 2]


@pytest.mark.parametrize("make, message", [
    (lambda f: f.create_group("image").create_dataset("data", data=np.zeros((4, 4, 4))),
     "'image' is a group, not an array"),
    (lambda f: f.create_dataset("image", data=np.zeros((4, 4, 4))).attrs.__setitem__("spacing", (1.0, 1.0)),
     r"spacing attribute \[1.0, 1.0\] is not three positive voxel sizes"),
    (lambda f: f.create_dataset("image", data=np.zeros((4, 4, 4))).attrs.__setitem__("spacing", (1.0, 0.0, 1.0)),
     r"spacing attribute \[1.0, 0.0, 1.0\] is not three positive voxel sizes"),
])
def test_hdf5_files_that_hold_the_wrong_things_are_one_line(tmp_path, make, message):
    """Before: a group ended in an AttributeError traceback; a spacing of two values or a zero passed the
    check and crashed in training."""
    import h5py

    from pipeline.data.io import load_image
    from pipeline.data.volume_slabs import VolumeSlabs

    with h5py.File(tmp_path / "c.h5", "w") as f:
        make(f)
    with pytest.raises(UserError, match=f"c.h5: {message}"):
        load_image(tmp_path / "c.h5")
    if "group" not in message:
        with pytest.raises(UserError, match=f"c.h5: {message}"):
            VolumeSlabs(tmp_path / "c.h5")


@pytest.mark.parametrize("text, message", [
    ('{"training": [{"image": 5, "label": "./labelsTr/c.nii.gz"}]}', "5 is not a file path"),
    ('{"training": [{"image": "./imagesTr/c.nii.gz", "label": null}]}', "None is not a file path"),
    ('{"labels": {"0": "b", "1": "x"}, "modality": "CT", "training": []}', "'modality' must map channel numbers"),
    ('{"labels": {"0": "b"}, "labels": {"0": "b", "1": "x"}, "training": []}', "key 'labels' appears twice"),
])
def test_a_dataset_json_with_values_of_the_wrong_kind_is_one_line(tmp_path, text, message):
    """Before: a number or null as a path and a string modality ended in tracebacks; a key given twice
    was read as its last value without a word (YAML presets already refused duplicates)."""
    from pipeline.data.layouts import load_dataset

    (tmp_path / "dataset.json").write_text(text.replace('"training": []', '"training": [{"image": '
                                                        '"./imagesTr/c.nii.gz", "label": "./labelsTr/c.nii.gz"}]'))
    with pytest.raises(UserError, match=f"dataset.json: .*{re.escape(message)}"):
        load_dataset(tmp_path)


def test_a_symlink_loop_in_a_dataset_path_is_one_line(tmp_path):
    from pipeline.data.layouts import load_dataset

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr" / "loop.nii.gz").symlink_to(tmp_path / "imagesTr" / "loop.nii.gz")
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "b", "1": "x"}, "training": '
                                           '[{"image": "./imagesTr/loop.nii.gz", "label": "./imagesTr/loop.nii.gz"}]}')
    with pytest.raises(UserError, match="dataset.json: path './imagesTr/loop.nii.gz' cannot be resolved"):
        load_dataset(tmp_path)


def _nan_label(root):
    path = sorted((root / "labelsTr").iterdir())[0]
    image = nib.load(path)
    array = np.asanyarray(image.dataobj).astype(np.float32)
    array[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(array, image.affine), path)
    return path, "holds nan, not a class id"


def _two_channels(root):
    path = sorted((root / "imagesTr").iterdir())[0]
    image = nib.load(path)
    array = np.asanyarray(image.dataobj)
    nib.save(nib.Nifti1Image(np.stack([array, array], axis=-1), image.affine), path)
    return path, "has 2 channel(s), the dataset declares 1 (CT)"


def _unknown_datatype(root):
    import gzip

    path = sorted((root / "imagesTr").iterdir())[0]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[70:72] = (1234).to_bytes(2, "little")  # the header's datatype code
    path.write_bytes(gzip.compress(bytes(raw)))
    return path, "cannot read image data (data code 1234 not recognized)"


@pytest.mark.parametrize("damage", [_nan_label, _two_channels, _unknown_datatype], ids=lambda f: f.__name__)
def test_the_check_names_nan_labels_extra_channels_and_unknown_datatypes(tiny_dataset, tmp_path, damage):
    """Before: a NaN label and an unknown NIfTI datatype ended in tracebacks; a 2-channel image in a dataset
    declaring one modality passed the check (and failed in training)."""
    import shutil

    from pipeline.config import DataConfig
    from pipeline.data.check import check_dataset
    from pipeline.data.layouts import load_dataset

    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    path, message = damage(root)
    report = check_dataset(load_dataset(root), DataConfig())
    assert [(p.file, message in p.message) for p in report.errors] == [(str(path), True)]


def test_links_that_leave_the_root_are_refused_in_folder_layouts_too(tmp_path):
    """The docstring said so; folder layouts (no dataset.json) read such links anyway."""
    from PIL import Image

    from pipeline.data.layouts import load_dataset

    root = tmp_path / "drive"
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "elsewhere.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "labels" / "a.png")
    (root / "images" / "a.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(UserError, match=f"a.png: a link to {tmp_path / 'elsewhere.png'}, outside the dataset root"):
        load_dataset(root)
    (root / "images" / "a.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "images" / "a.png")
    assert [c.id for c in load_dataset(root).training] == ["a"]
