"""The prediction stage: the Predictor reads each file once, feeds the network exactly what the
file-based transforms would, and puts the prediction back on the source grid."""

from __future__ import annotations

import numpy as np
import torch

from conftest import REPO
from pipeline.config import load_config
from pipeline.data import io
from pipeline.data.io import load_image, reader_options
from pipeline.data.monai_reader import to_meta_tensor
from pipeline.data.transforms import IMAGE, build_transforms, preprocess_transforms
from pipeline.predict import Predictor, predictor as predictor_module


def _fixed_network() -> torch.nn.Module:
    """A 1x1x1 convolution with three classes: logits 0, 20 x - 10, 60 x - 45 (class 2 where x > 0.875)."""
    model = torch.nn.Conv3d(1, 3, kernel_size=1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([0.0, 20.0, 60.0]).view(3, 1, 1, 1, 1))
        model.bias.copy_(torch.tensor([0.0, -10.0, -45.0]))
    return model.eval()


def test_an_array_already_read_enters_the_transforms_as_the_file_would(tiny_dataset):
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.root={tiny_dataset}"])
    path = tiny_dataset / "imagesTs" / "case_004.nii.gz"
    from_file = build_transforms(cfg, train=False, keys=(IMAGE,))({IMAGE: str(path)})[IMAGE]
    array, affine = load_image(path, **reader_options(cfg.data))
    from_array = preprocess_transforms(cfg)({IMAGE: to_meta_tensor(array, affine, path)})[IMAGE]
    assert torch.equal(from_file.as_tensor(), from_array.as_tensor())
    assert np.array_equal(np.asarray(from_file.affine), np.asarray(from_array.affine))
    assert np.array_equal(from_file.meta["original_affine"], from_array.meta["original_affine"])
    assert [op["class"] for op in from_file.applied_operations] == [op["class"] for op in from_array.applied_operations]


def test_predict_reads_each_file_once_and_returns_what_it_used(tiny_dataset, monkeypatch):
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.root={tiny_dataset}"])
    reads = []
    original = io.load_image
    monkeypatch.setattr(predictor_module, "load_image",
                        lambda path, **kw: reads.append(str(path)) or original(path, **kw))
    path = tiny_dataset / "imagesTs" / "case_004.nii.gz"
    result = Predictor(_fixed_network(), cfg, {0: "background", 1: "a", 2: "b"}).predict(path, probabilities=True)
    assert reads == [str(path)]
    image, affine = original(path)
    assert np.array_equal(result.image, image) and np.array_equal(result.affine, affine)
    assert result.label.shape == image.shape and result.label.dtype == np.uint8
    assert result.probabilities.shape == (3, *image.shape)
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert result.network_input.ndim == 4 and result.network_input.shape[0] == 1


def test_a_resampled_run_takes_the_argmax_on_the_source_grid(tiny_dataset):
    """With data.spacing the network runs on a coarser grid (2x in-plane here); the label map is the
    argmax of its probabilities resampled linearly to the input's grid, not a nearest-neighbour
    copy of the coarse label map (which differs from that argmax along every boundary)."""
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.root={tiny_dataset}", "data.spacing=[1.6,1.6,2.0]"])
    model = torch.nn.Conv3d(1, 3, kernel_size=1)  # logits: 0, 20 x - 10, 60 x - 45 (class 2 where x > 0.875)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([0.0, 20.0, 60.0]).view(3, 1, 1, 1, 1))
        model.bias.copy_(torch.tensor([0.0, -10.0, -45.0]))
    predictor = Predictor(model.eval(), cfg, {0: "background", 1: "a", 2: "b"})
    path = tiny_dataset / "imagesTs" / "case_004.nii.gz"
    result = predictor.predict(path, probabilities=True)
    pred, affine, prob = result.label, result.affine, result.probabilities
    image, image_affine = load_image(path)
    assert pred.shape == image.shape and prob.shape == (3, *image.shape)
    assert np.allclose(affine, image_affine)
    assert min((pred == 1).sum(), (pred == 2).sum()) > 100  # boundaries to compare along
    assert np.array_equal(pred, prob.argmax(axis=0))
    alone = predictor.predict(path).label  # the class-at-a-time path without probabilities
    assert np.array_equal(alone, pred)


def test_an_image_smaller_than_the_patch_is_padded_and_predicted_on_its_own_grid(tiny_dataset):
    """The plan gives small images a patch past their shape (40 x 56 x 40 for 35 x 50 x 35): the windows
    pad the image and the label map comes back on its grid, equal to a prediction with a patch inside it
    (the network here is pointwise, so the window cannot change the answer). A slab-by-slab prediction
    would have no window to slide: the image goes the in-memory way."""
    from pipeline.predict.stack_job import streamed_stack

    path = tiny_dataset / "imagesTs" / "case_004.nii.gz"  # 48 x 48 x 24
    labels = {0: "background", 1: "a", 2: "b"}
    configs = [load_config(REPO / "configs" / "smoke.yaml", [f"data.root={tiny_dataset}", f"train.patch_size={patch}",
                                                             "infer.stream_voxels=0"])
               for patch in ("[64,56,32]", "[16,16,8]")]
    big, small = (Predictor(_fixed_network(), cfg, labels).predict(path, probabilities=True) for cfg in configs)
    assert big.label.shape == (48, 48, 24) and np.array_equal(big.label, small.label)
    np.testing.assert_allclose(big.probabilities, small.probabilities, atol=1e-6)
    assert (big.label == 2).sum() > 100  # something to compare
    assert streamed_stack(path, configs[0]) is None and streamed_stack(path, configs[1]) is not None
