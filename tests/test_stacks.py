"""Slice stacks at kidney scale: the generator and the dataset check work one slab at a time,
give what the whole-volume path gives, and name a missing or differently sized slice."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from pipeline.config import DataConfig
from pipeline.data.check import check_case, check_dataset, main as check_main
from pipeline.data.io import load_image
from pipeline.data.kidney import KidneySpec, generate_kidney_stacks, kidney_slice, vessel_tree, write_kidney_stack
from pipeline.data.layouts import load_dataset
from pipeline.data.stack import SliceStack, stack_statistics
from pipeline.errors import UserError

SPEC = KidneySpec(shape=(48, 40, 24), seed=1, generations=4)


@pytest.fixture(scope="module")
def kidney_root(tmp_path_factory):
    return generate_kidney_stacks(tmp_path_factory.mktemp("kidney") / "stacks", SPEC, cases=2)


def test_generator_writes_the_sennet_layout_with_an_organ_and_vessels(kidney_root):
    images = sorted((kidney_root / "kidney_1" / "images").iterdir())
    labels = sorted((kidney_root / "kidney_1" / "labels").iterdir())
    assert [p.name for p in images] == [f"{z:04d}.tif" for z in range(24)] == [p.name for p in labels]
    image, _ = load_image(kidney_root / "kidney_1" / "images")
    raw_label = np.stack([np.asarray(Image.open(p)) for p in labels], axis=-1)
    assert image.shape == raw_label.shape == (48, 40, 24) and image.dtype == np.uint8
    assert set(np.unique(raw_label)) == {0, 255}  # SenNet's 0/255 masks
    vessel = raw_label > 0
    assert 0.002 < vessel.mean() < 0.2
    assert image[vessel].mean() > image[~vessel].mean() + 50  # contrast-filled vessels
    z = 12  # any slice can be redrawn on its own, identically
    again_image, again_label = kidney_slice(SPEC, vessel_tree(SPEC), z)
    assert np.array_equal(again_image, image[..., z]) and np.array_equal(again_label, raw_label[..., z])
    other, _ = load_image(kidney_root / "kidney_2" / "images")
    assert not np.array_equal(other, image)  # each case has its own tree and noise


def test_generator_memory_does_not_grow_with_the_number_of_slices(tmp_path):
    def peak(slices: int) -> int:
        tracemalloc.start()
        write_kidney_stack(tmp_path / f"k{slices}", KidneySpec(shape=(96, 96, slices), generations=4))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(8), peak(64)
    assert large < 1.3 * small, (small, large)


def test_streamed_check_equals_the_whole_volume_statistics(kidney_root):
    data = DataConfig()
    dataset = load_dataset(kidney_root, data)
    assert dataset.layout == "stack" and dataset.labels == {0: "background", 1: "label 1"}
    case = dataset.training[0]
    problems, stats = check_case(case, dataset, data, need_label=True)
    assert problems == []
    image, _ = load_image(case.image)
    label, _ = load_image(case.label, label=True)
    values, counts = np.unique(label, return_counts=True)
    assert stats.shape == image.shape and stats.channels == 1
    assert stats.intensity == (float(image.min()), float(image.max()))
    assert stats.label_counts == dict(zip(values.tolist(), counts.tolist()))


def test_stack_statistics_read_one_slab_at_a_time(kidney_root):
    stack = SliceStack(kidney_root / "kidney_1" / "images")
    assert stack.shape == (48, 40, 24)
    seen = []
    original = stack.slab
    stack.slab = lambda start, stop: seen.append(stop - start) or original(start, stop)
    stack_statistics(stack, thickness=5)
    assert max(seen) <= 5 and sum(seen[:-1] if len(seen) > 5 else seen) >= 24  # whole stack, 5 slices at most


def test_missing_label_slice_and_odd_slice_size_are_named(kidney_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(kidney_root, root)
    (root / "kidney_1" / "labels" / "0010.tif").unlink()
    odd = root / "kidney_2" / "images" / "0007.tif"
    Image.fromarray(np.zeros((48, 41), np.uint8)).save(odd)
    report = check_dataset(load_dataset(root), DataConfig())
    messages = {p.file: p.message for p in report.errors}
    assert "differs from image shape (48, 40, 24)" in messages[str(root / "kidney_1" / "labels")]
    assert messages[str(odd)] == ("slice shape (48, 41) differs from 0000.tif (48, 40); every slice of a stack must "
                                  "have the same size")
    with pytest.raises(SystemExit) as stop:
        check_main(["--data", str(root)])
    assert stop.value.code == 1 and str(odd) in capsys.readouterr().out


def test_a_multi_page_slice_is_refused(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    pages = [Image.fromarray(np.full((8, 8), i, np.uint8)) for i in range(3)]
    pages[0].save(folder / "0000.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(UserError, match="holds 3 pages"):
        SliceStack(folder)
