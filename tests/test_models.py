"""The network family: shapes, gradients, pinned sizes, readable keys, unpooling, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models3d
from models3d import MODEL_NAMES, build_model
from models3d.blocks import plan_levels

PATCHES = {"3d": (32, 32, 16), "anisotropic": (48, 32, 8), "single-slice": (64, 64, 1)}

# Parameter counts for channels (8, 16, 32, 64), 1 input channel, 3 classes. A change here
# means the architecture changed: update deliberately, never to make a test pass.
PINNED_PARAMS = {
    "unet": 342_635,
    "resunet": 367_291,
    "segnet": 332_755,
    "usegnet1": 334_483,
    "usegnet2": 337_939,
    "usegnet3": 351_763,
    "resusegnet": 358_283,
}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("patch", PATCHES.values(), ids=PATCHES.keys())
def test_output_has_input_shape(name, patch):
    model = build_model(name, in_channels=2, out_channels=3, channels=(8, 16, 32, 64), patch_size=patch)
    x = torch.randn(2, 2, *patch)
    assert model(x).shape == (2, 3, *patch)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backward_gives_finite_gradients_everywhere(name):
    torch.manual_seed(0)
    model = build_model(name, out_channels=3, channels=(8, 16, 32, 64), patch_size=(32, 32, 16))
    model(torch.randn(2, 1, 32, 32, 16)).logsumexp(1).mean().backward()
    for key, param in model.named_parameters():
        assert param.grad is not None, key
        assert torch.isfinite(param.grad).all(), key


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_is_pinned(name):
    model = build_model(name, out_channels=3, channels=(8, 16, 32, 64), patch_size=(32, 32, 16))
    assert sum(p.numel() for p in model.parameters()) == PINNED_PARAMS[name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_keys_read_like_the_diagram(name):
    keys = list(build_model(name, channels=(8, 16, 32, 64), patch_size=(32, 32, 16)).state_dict())
    assert "encoder.level1.conv1.conv.weight" in keys
    assert any(k.startswith("decoder.level1.") for k in keys)
    assert "head.weight" in keys
    assert all(k.split(".")[0] in {"encoder", "decoder", "head"} for k in keys)


def test_single_slice_never_convolves_or_pools_across_the_slice_axis():
    model = build_model("unet", channels=(8, 16, 32, 64), patch_size=(64, 64, 1))
    assert all(p[2] == 1 for p in model.plan.pools)
    assert all(len(k) == 2 for k in model.kernels) and all(len(p) == 2 for p in model.pools)
    for module in model.modules():
        assert not isinstance(module, (nn.Conv3d, nn.ConvTranspose3d))


def test_anisotropic_patch_pools_each_axis_only_while_wide():
    plan = plan_levels((112, 112, 16), depth=5)
    assert plan.pools == ((2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1))
    assert plan.total_pool == (16, 16, 4)


def test_segnet_decoder_really_uses_pooling_indices():
    """Unpooling puts each value where the encoder's maximum was; interpolation would not."""
    model = build_model("segnet", channels=(4, 8), patch_size=(8, 8, 8))
    x = torch.zeros(1, 4, 8, 8, 8)
    x[0, :, 1, 0, 1] = 5.0  # one maximum off the corner of its 2x2x2 window
    pooled, idx = F.max_pool3d(x, 2, 2, return_indices=True)
    unpooled = F.max_unpool3d(pooled, idx, 2, 2, output_size=x.shape[2:])
    assert torch.equal(unpooled, x)  # the mechanism itself

    captured = {}
    model.decoder["level1"].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    model.encoder["level1"].register_forward_hook(lambda m, a, out: captured.setdefault("enc", out))
    model(torch.randn(1, 1, 8, 8, 8))
    enc, unpooled = captured["enc"], captured["x"]
    # after unpooling, each 2x2x2 window holds exactly one non-zero, at the encoder's argmax
    windows = unpooled.reshape(1, 4, 4, 2, 4, 2, 4, 2).permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(1, 4, 64, 8)
    assert ((windows != 0).sum(-1) <= 1).all()
    _, enc_idx = F.max_pool3d(enc, 2, 2, return_indices=True)
    nonzero = unpooled.flatten(2) != 0
    where = torch.zeros_like(nonzero).scatter_(2, enc_idx.flatten(2), True)
    assert (nonzero <= where).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "vnet"}, "valid names: unet, resunet"),
        ({"name": "unet", "patch_size": (112, 112, 81)}, "try (112, 112, 80)"),
        ({"name": "unet", "patch_size": (32, 32)}, "three positive integers"),
        ({"name": "unet", "channels": (16,)}, "at least 2 levels"),
        ({"name": "usegnet3", "channels": (8, 16, 32)}, "skips must be between 0 and 2"),
        ({"name": "unet", "norm": "group"}, "norm must be 'instance' or 'batch'"),
        ({"name": "unet", "channels": (8, 0, 16)}, "positive"),
    ],
)
def test_bad_arguments_raise_value_error_with_a_useful_message(kwargs, message):
    kwargs = {"patch_size": (32, 32, 16), **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(**kwargs)


def test_input_not_divisible_by_the_pooling_is_refused():
    model = build_model("unet", channels=(8, 16, 32), patch_size=(32, 32, 16))
    with pytest.raises(ValueError, match="divisible by"):
        model(torch.randn(1, 1, 30, 32, 16))


def _blob_volume(size=(16, 16, 16)):
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in size], indexing="ij"))
    centre = torch.tensor([s / 2 for s in size]).view(3, 1, 1, 1)
    label = ((grid - centre) ** 2).sum(0) < 25
    g = torch.Generator().manual_seed(0)
    image = label.float() + 0.3 * torch.randn(size, generator=g)
    return image[None, None], label[None].long()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_overfits_one_tiny_volume(name):
    torch.manual_seed(0)
    image, label = _blob_volume()
    model = build_model(name, channels=(8, 16, 32, 32), patch_size=(16, 16, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(image), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(image).argmax(1)
    inter = ((pred == 1) & (label == 1)).sum().item()
    dice = 2 * inter / ((pred == 1).sum().item() + (label == 1).sum().item())
    assert dice >= 0.9, f"{name}: Dice {dice:.3f} after 60 steps"


def test_registry_lists_exactly_the_seven_names():
    assert models3d.MODEL_NAMES == ("unet", "resunet", "segnet", "usegnet1", "usegnet2", "usegnet3", "resusegnet")


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("patch", [(16, 16, 1), (16, 1, 16)], ids=["flat-depth", "flat-width"])
def test_single_slice_network_is_2d_and_equals_the_3d_operations(name, patch):
    """A single-slice patch builds Conv2d/pool2d operators (whichever axis is flat) that compute
    what 3D operators with kernels of size 1 along that axis compute: same values and gradients,
    and the 3D-shaped weights of earlier checkpoints load into it."""
    torch.manual_seed(0)
    flat = build_model(name, 2, 3, channels=(4, 8, 16, 16), patch_size=patch)
    assert not any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d)) for m in flat.modules())
    assert any(isinstance(m, nn.Conv2d) for m in flat.modules())
    full = build_model(name, 2, 3, channels=(4, 8, 16, 16), patch_size=patch, spatial_dims=3)
    assert any(isinstance(m, nn.Conv3d) for m in full.modules())
    flat.load_state_dict(full.state_dict())  # (O, I, 3, 3, 1) kernels squeezed on load
    x = torch.randn(2, 2, *patch, requires_grad=True)
    out_flat, out_full = flat(x), full(x)
    assert out_flat.shape == (2, 3, *patch)
    torch.testing.assert_close(out_flat, out_full, rtol=1e-4, atol=1e-5)
    out_flat.square().sum().backward()
    grad_flat, x.grad = x.grad.clone(), None
    out_full.square().sum().backward()
    scale = x.grad.abs().max().item()  # gradients reach ~40 here: float32 sums differ in the 7th digit of that
    torch.testing.assert_close(grad_flat, x.grad, rtol=1e-4, atol=1e-5 * scale)


def test_single_slice_network_refuses_a_volume():
    model = build_model("resunet", channels=(4, 8), patch_size=(16, 16, 1))
    with pytest.raises(ValueError, match="single-slice"):
        model(torch.randn(1, 1, 16, 16, 4))


def test_count_macs_is_the_hand_count_of_a_convolution_and_a_transposed_one():
    from models3d.__main__ import count_macs

    conv = torch.nn.Conv3d(3, 5, kernel_size=3, padding=1)
    assert count_macs(conv, torch.zeros(2, 3, 8, 6, 4)) == 2 * 5 * 8 * 6 * 4 * 3 * 27  # output voxels x fan-in
    up = torch.nn.ConvTranspose3d(4, 2, kernel_size=2, stride=2)
    assert count_macs(up, torch.zeros(1, 4, 3, 3, 3)) == 4 * 27 * 2 * 8  # each input voxel scatters a kernel
