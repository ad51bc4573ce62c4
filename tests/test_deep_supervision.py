"""Deep supervision (model.deep_supervision): auxiliary heads on the decoder levels in training only,
the loss per output against nearest-downsampled labels with nnU-Net's halving weights, and nothing of it
at inference or in the weights a network without it would use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from conftest import REPO
from models3d import MODEL_NAMES, build_from_config, build_model
from pipeline.config import load_config
from pipeline.plan.budget import time_steps
from pipeline.train.losses import build_loss

PATCH = (32, 32, 16)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_returns_the_top_logits_then_each_lower_decoder_level_and_inference_the_top_only(name):
    torch.manual_seed(0)
    net = build_model(name, 1, 3, channels=(4, 8, 8, 16), patch_size=PATCH, deep_supervision=True)
    x = torch.randn(2, 1, *PATCH)
    net.train()
    outputs = net(x)
    # UNets decode to 1/4, 1/2, 1 of the patch (4 levels), SegNets from the bottom's 1/8: all but the
    # top and the lowest are supervised
    halves = [1, 2] if name in ("unet", "resunet") else [1, 2, 4]
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32 // h, 32 // h, 16 // h) for h in halves]
    assert net.supervised_outputs == len(halves)
    net.eval()
    with torch.no_grad():
        logits = net(x)
    assert torch.is_tensor(logits) and torch.allclose(logits, outputs[0].detach(), atol=1e-6)  # instance norm


def test_without_the_auxiliary_heads_the_weights_predict_the_same():
    """The heads are dropped at inference: the network without them, given the same weights, is the same."""
    torch.manual_seed(0)
    supervised = build_model("resunet", 1, 2, channels=(4, 8, 16, 16), patch_size=PATCH, deep_supervision=True)
    plain = build_model("resunet", 1, 2, channels=(4, 8, 16, 16), patch_size=PATCH)
    weights = {k: v for k, v in supervised.state_dict().items() if not k.startswith("aux_heads.")}
    plain.load_state_dict(weights)  # strict: the heads are the only difference
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        assert torch.equal(supervised.eval()(x), plain.eval()(x))


def test_the_loss_weighs_each_output_by_halves_against_the_nearest_downsampled_label():
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    torch.manual_seed(0)
    label = torch.randint(0, 3, (2, 1, 16, 16, 8)).float()
    outputs = [torch.randn(2, 3, 16 // h, 16 // h, 8 // h) for h in (1, 2, 4)]
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=cfg.train.dice_weight,
                         lambda_ce=cfg.train.ce_weight, include_background=cfg.train.dice_background,
                         batch=cfg.train.batch_dice)
    by_hand = sum(w * dice_ce(o, F.interpolate(label, size=o.shape[2:], mode="nearest-exact"))
                  for w, o in zip((4 / 7, 2 / 7, 1 / 7), outputs))
    assert float(build_loss(cfg, 3, outputs=3)(outputs, label)) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(build_loss(cfg, 3)(outputs[0], label)) == pytest.approx(float(dice_ce(outputs[0], label)), rel=1e-6)
    for dtype in (torch.uint8, torch.int64):  # a label of class indices as the plan's timed steps and stores give it
        assert float(build_loss(cfg, 3, outputs=3)(outputs, label.to(dtype))) == pytest.approx(float(by_hand), rel=1e-6)


def test_the_plan_times_a_deeply_supervised_step():
    cfg = load_config(REPO / "configs" / "smoke.yaml", ["model.deep_supervision=true", "model.channels=[4, 8, 8, 16]",
                                                         f"train.patch_size={list(PATCH)}"])
    assert time_steps(cfg, 1, 3, steps=1, warmup=0) > 0  # an integer label through the auxiliary heads' loss


def test_a_network_too_shallow_for_auxiliary_heads_is_refused_by_name():
    with pytest.raises(ValueError, match="model.channels.*deep_supervision needs a decoder level"):
        build_from_config(load_config(None, ["model.deep_supervision=true", "model.channels=[8, 16, 32]"]).model,
                          1, 2, PATCH)


def test_every_auxiliary_head_gets_a_gradient():
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    net = build_model("usegnet2", 1, 3, channels=(4, 8, 8, 16), patch_size=PATCH, deep_supervision=True).train()
    label = torch.randint(0, 3, (1, 1, *PATCH)).float()
    build_loss(cfg, 3, net.supervised_outputs)(net(torch.randn(1, 1, *PATCH)), label).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.aux_heads.parameters())


@pytest.mark.slow
def test_a_deeply_supervised_run_trains_its_heads_and_tests_with_the_top_one(tiny_dataset, tmp_path):
    from pipeline.predict.export import export_run
    from pipeline.predict.package import read_package
    from pipeline.predict.predictor import Predictor
    from pipeline.train.run import run_training

    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.root={tiny_dataset}", f"output_dir={tmp_path}",
                                                         "train.epochs=1", "model.deep_supervision=true",
                                                         "model.channels=[8, 16, 32, 32]"])
    run = run_training(cfg)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("aux_heads.") for k in state["model"])  # kept, so the run resumes with them
    image = tiny_dataset / "imagesTs" / "case_004.nii.gz"
    prediction = Predictor.from_run(run, "last", ["infer.tta=false"]).predict(image, probabilities=True)
    assert prediction.label.shape == (48, 48, 24) and prediction.label.max() <= 2
    package = read_package(export_run(run, "last", tmp_path / "model.zip"))  # the plain network, heads dropped
    assert not any(k.startswith("aux_heads.") for k in package.weights)
    assert package.meta["config"]["model"]["deep_supervision"] is False
    exported = Predictor.from_package(package, ["infer.backend=onnxruntime", "infer.tta=false"]).predict(
        image, probabilities=True)
    np.testing.assert_allclose(exported.probabilities, prediction.probabilities, atol=1e-4)
