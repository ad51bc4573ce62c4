"""Configuration: presets, overrides, and clear errors for bad keys, types and YAML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import Config, config_from_dict, load_config, save_config
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads_and_describes_a_network_that_builds(preset):
    """Each preset's model, widths and patch build a network whose pooling its patch divides, and it
    names its run after itself (the run folder's prefix)."""
    from models3d import build_from_config

    cfg = load_config(preset)
    model = build_from_config(cfg.model, 1, 2, cfg.train.patch_size)
    assert model.plan.total_pool and all(p % t == 0 for p, t in zip(cfg.train.patch_size, model.plan.total_pool))
    assert cfg.name == preset.stem


def test_contract_keys_exist_and_overrides_apply():
    cfg = load_config(REPO / "configs" / "demo.yaml",
                      ["train.epochs=3", "train.seed=7", "model.name=usegnet2", "data.root=/x",
                       "train.patch_size=[64,64,32]"])
    assert (cfg.train.epochs, cfg.train.seed, cfg.model.name, cfg.data.root) == (3, 7, "usegnet2", "/x")
    assert cfg.train.patch_size == (64, 64, 32)
    assert cfg.train.lr == 0.1  # untouched keys keep the preset's value


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", ["train.class_weights=[0.2,1,2]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epoch=3"], "unknown key 'train.epoch' (did you mean train.epochs?); valid keys: train.epochs"),
        (["trian.epochs=3"], "unknown key 'trian'"),
        (["train.epochs=three"], "train.epochs: expected int, got 'three'"),
        (["train.epochs=2.5"], "train.epochs: expected int"),
        (["train.deterministic=maybe"], "train.deterministic: expected bool"),
        (["train.patch_size=[64,64]"], "train.patch_size: expected 3 values"),
        (["train.precision=fp8"], "train.precision must be one of auto, fp32, bf16, fp16"),
        (["train=5"], "train must be a mapping"),
        (["train.affine_prob=1.5"], "train.affine_prob is a probability and must be in [0, 1], got 1.5"),
        (["data.contrast=gamma"], "data.contrast must be one of none, clahe"),
        (["train.volumes_per_epoch=0"], "train.volumes_per_epoch must be at least 1, got 0"),
        (["train.epochs=-3"], "train.epochs must be at least 1, got -3"),
        (["epochs"], "expected section.key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(overrides, message):
    with pytest.raises(UserError) as err:
        load_config(REPO / "configs" / "demo.yaml", overrides)
    assert message in str(err.value)


def test_duplicate_keys_are_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  epochs: 3\n  epochs: 4\n", encoding="utf-8")
    with pytest.raises(UserError, match="duplicate key 'epochs'"):
        load_config(path)


def test_python_tags_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    with pytest.raises(UserError, match="invalid YAML"):
        load_config(path)
    assert not marker.exists()


def test_missing_config_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_defaults_need_no_file():
    assert config_from_dict({}) == Config()


@pytest.mark.parametrize("item, message", [
    ("train.seed=-1", "train.seed must be >= 0"), ("train.lr=0", "train.lr must be > 0"),
    ("train.momentum=-0.5", "train.momentum must be in [0, 1)"), ("train.lr_step_epochs=0", "must be at least 1"),
    ("infer.overlap=1.0", "infer.overlap must be in [0, 1)"), ("infer.sw_batch_size=0", "must be at least 1"),
    ("data.intensity_range=[300, -200]", "low < high"), ("name=a/b", "must be a plain folder name"),
    ("name=../x", "must be a plain folder name"), ("model.channels=[16]", "at least two widths"),
    ("data.intensity_target=[1, 0]", "low < high"), ("data.channel_modality=[CT, PET]", "one of CT, MR or generic"),
])
def test_out_of_range_values_are_refused_when_the_configuration_is_read(item, message):
    """Before: these passed; infer.* ones failed after a full epoch, name=../x wrote outside output_dir."""
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(None, [item])
