"""One normalisation for every path: against NumPy and MONAI, in memory and slab by slab."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai import transforms as mt

from pipeline.config import DataConfig, load_config
from pipeline.data.monai_reader import to_meta_tensor
from pipeline.data.normalisation import Normalisation
from pipeline.data.stack import SliceStack, normalised_reader
from pipeline.data.transforms import IMAGE, preprocess_transforms
from pipeline.errors import UserError


def _image(rng, shape=(2, 20, 18, 12)) -> np.ndarray:
    image = rng.normal(300.0, 400.0, size=shape).astype(np.float32)
    image[:, :4] = 0.0  # a zero background
    return image


def test_ct_is_monai_s_window_to_the_bit_and_numpy_s_within_rounding():
    rng = np.random.default_rng(0)
    image = _image(rng)
    norm = Normalisation(None, "CT", (-200.0, 300.0), (-1.5, 2.8))
    got = norm.run(image, norm.statistics(image))
    monai = mt.ScaleIntensityRange(a_min=-200.0, a_max=300.0, b_min=-1.5, b_max=2.8, clip=True)(torch.from_numpy(image))
    assert np.array_equal(got, monai.numpy())
    expected = (np.clip(image.astype(np.float64), -200, 300) + 200) / 500 * 4.3 - 1.5
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.min() == np.float32(-1.5) and got.max() == np.float32(2.8)


def test_mr_is_a_z_score_of_the_body_and_generic_of_every_voxel():
    rng = np.random.default_rng(1)
    image = _image(rng, (1, 16, 16, 8))
    mr = Normalisation(None, "MR").run(image, Normalisation(None, "MR").statistics(image))
    body = image[0] != 0
    values = image[0][body].astype(np.float64)
    np.testing.assert_allclose(mr[0][body], (values - values.mean()) / values.std(), rtol=1e-5, atol=1e-5)
    assert np.all(mr[0][~body] == 0)
    generic = Normalisation(None, "generic")
    out = generic.run(image, generic.statistics(image))
    whole = image.astype(np.float64)
    np.testing.assert_allclose(out, (whole - whole.mean()) / whole.std(), rtol=1e-5, atol=1e-5)


def test_each_channel_follows_its_own_modality_and_a_wrong_count_is_named():
    rng = np.random.default_rng(2)
    image = _image(rng)
    norm = Normalisation(("CT", "generic"), "CT", (-200.0, 300.0), (0.0, 1.0))
    out = norm.run(image, norm.statistics(image))
    np.testing.assert_array_equal(out[0], Normalisation(None, "CT").run(image[:1], ((0.0, 1.0),))[0])
    assert abs(out[1].mean()) < 1e-5 and abs(out[1].std() - 1) < 1e-5
    with pytest.raises(UserError, match="data.channel_modality names 2 channel"):
        norm.statistics(image[:1])


def test_slab_moments_equal_the_whole_image_s():
    rng = np.random.default_rng(3)
    image = _image(rng, (1, 30, 20, 40))
    norm = Normalisation(None, "MR")
    slabs = (image[..., z : z + 7] for z in range(0, 40, 7))
    np.testing.assert_allclose(norm.slab_statistics(slabs, 1), norm.statistics(image), rtol=1e-12)


def test_a_case_is_normalised_alike_in_memory_and_slab_by_slab(tmp_path):
    """The in-memory path crops to the foreground, the slab reader does not: both take the whole image's
    moments, so the voxels inside the crop get the same values (before, the crop changed the z-score)."""
    from PIL import Image

    rng = np.random.default_rng(4)
    volume = rng.integers(1, 200, size=(24, 20, 10)).astype(np.uint8)
    volume[:6] = 0  # background that the crop drops
    folder = tmp_path / "images"
    folder.mkdir()
    for z in range(volume.shape[2]):
        Image.fromarray(volume[..., z]).save(folder / f"{z:04d}.png")
    cfg = load_config(None, ["data.modality=generic", "data.crop_foreground=true", "train.patch_size=[8,8,4]"])
    streamed = normalised_reader(SliceStack(folder), cfg.data)(0, volume.shape[2])[0].numpy()
    in_memory = preprocess_transforms(cfg)({IMAGE: to_meta_tensor(volume, np.eye(4), folder)})[IMAGE]
    assert in_memory.shape[1] < volume.shape[0]  # the crop did cut the background
    rows = slice(6 - 2, 24)  # the foreground's bounding box and the crop's 2-voxel margin
    np.testing.assert_allclose(in_memory[0].numpy(), streamed[rows], rtol=1e-6, atol=1e-6)


def test_the_package_record_is_the_configuration_s_numbers():
    d = DataConfig(modality="CT", intensity_range=(10.0, 90.0), intensity_target=(-1.0, 1.0))
    assert Normalisation.from_config(d).to_dict() == {"modalities": None, "modality": "CT", "window": (10.0, 90.0),
                                                       "target": (-1.0, 1.0)}


def test_one_rule_says_what_a_binary_mask_is():
    from pipeline.data.label_maps import is_binary_mask, values_present

    assert is_binary_mask([0, 255], np.uint8) and is_binary_mask({255: 3}, np.uint8)
    assert not is_binary_mask([0], np.uint8)  # nothing at 255: an all-background label map
    assert not is_binary_mask([0, 1, 255], np.uint8)  # class ids up to 255
    assert not is_binary_mask([0, 255], np.uint16)  # 16-bit labels hold class ids
    assert values_present(np.array([[0, 255], [255, 7]], dtype=np.uint8)) == [0, 7, 255]


def test_sources_without_spacing_take_one_default():
    from pipeline.data.io import spacing_or_default

    assert spacing_or_default(None) == (1.0, 1.0, 1.0)
    assert spacing_or_default([0.5, 0.5, 2]) == (0.5, 0.5, 2.0)
    with pytest.raises(UserError, match="data.default_spacing must be three positive numbers"):
        spacing_or_default([1, 0, 1])
