"""Model packages and inference engines: export, round trip without the run folder, refusals, agreement."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import run_cli
from models3d import build_model
from pipeline.config import InferConfig
from pipeline.errors import UserError
from pipeline.predict import Predictor
from pipeline.predict.engines import OnnxRuntimeEngine, OpenVINOEngine, TorchEngine, resolve_backend
from pipeline.predict.onnx_graph import to_onnx
from pipeline.predict.package import MANIFEST, NETWORK, WEIGHTS, read_package
from pipeline.predict.sliding import predict_volume

openvino = pytest.importorskip("openvino")


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted((folder / "predictions").glob("*.nii.gz"))}


@pytest.fixture(scope="module")
def exported(smoke_run, tiny_dataset, tmp_path_factory):
    """A copy of the session's smoke run tested with the torch engine, its package, and the copy deleted."""
    base = tmp_path_factory.mktemp("export")
    run = Path(shutil.copytree(smoke_run, base / "runs" / smoke_run.name))
    tested = run_cli("test.py", "--run", str(run), "--images", str(tiny_dataset / "imagesTs"), "--labels",
                     str(tiny_dataset / "labelsTs"), "--out", str(base / "from_run"), "--set", "infer.backend=torch")
    assert tested.returncode == 0, tested.stderr[-2000:]
    result = run_cli("-m", "pipeline.export", "--run", str(run), "--out", str(base / "model.zip"))
    assert result.returncode == 0, result.stderr[-2000:]
    shutil.rmtree(base / "runs")  # nothing below may need the run folder
    return base, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_a_package_predicts_the_run_s_labels_without_the_run_folder(exported, tiny_dataset, backend):
    base, _ = exported
    out = base / f"from_package_{backend}"
    result = run_cli("test.py", "--model", str(base / "model.zip"), "--images", str(tiny_dataset / "imagesTs"),
                     "--labels", str(tiny_dataset / "labelsTs"), "--out", str(out), "--set", f"infer.backend={backend}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"inference engine: {backend}" in result.stderr
    before, after = _labels(base / "from_run"), _labels(out)
    assert before.keys() == after.keys() and len(before) == 2
    for name in before:
        if backend == "torch":  # the same weights in the same network class: the same labels
            assert np.array_equal(before[name], after[name]), name
        else:  # another engine, float32 both: a handful of near-tied voxels at most
            assert np.mean(before[name] == after[name]) > 0.999, name
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["scored"] == "given"


@pytest.mark.slow
def test_export_prints_what_the_package_holds(exported):
    base, stdout = exported
    assert "medseg-model version 1, ONNX opset 18" in stdout
    assert "input: (B, 1, 32, 32, 16) float32" in stdout and "labels: 0=background, 1=organ, 2=vessel" in stdout
    inspected = run_cli("-m", "pipeline.export", "--inspect", str(base / "model.zip"))
    assert inspected.returncode == 0 and inspected.stdout == stdout
    meta = read_package(base / "model.zip").meta
    assert meta["config"]["infer"]["backend"] == "auto"  # the smoke run's torch is not carried along
    assert meta["inference"]["normalisation"] == {"modalities": None, "modality": "CT", "window": [-200.0, 300.0],
                                                  "target": [0.0, 1.0]}
    assert meta["provenance"]["checkpoint"] == "best.pt" and meta["provenance"]["split"]["train"] == 3


def _rewrite(source: Path, target: Path, change) -> Path:
    """A copy of the package ``source`` with its members passed through ``change(members) -> members``."""
    with zipfile.ZipFile(source) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in change(members).items():
            archive.writestr(name, data)
    return target


def _manifest(**changes):
    def change(members):
        meta = json.loads(members[MANIFEST])
        meta.update(changes)
        return {**members, MANIFEST: json.dumps(meta).encode()}
    return change


@pytest.mark.slow
@pytest.mark.parametrize("damage, message", [
    (lambda m: {**m, NETWORK: m[NETWORK][:-10] + b"0123456789"}, "network.onnx does not match its digest"),
    (lambda m: {k: v for k, v in m.items() if k != WEIGHTS}, "not a model package (no weights.pt)"),
    (_manifest(version=99), "package version 99, this pipeline reads version 1"),
    (_manifest(opset=99), "ONNX opset 99"),
    (_manifest(format="someone-else"), "not a model package of this tool"),
])
def test_a_damaged_or_foreign_package_is_one_line(exported, tiny_dataset, tmp_path, damage, message):
    bad = _rewrite(exported[0] / "model.zip", tmp_path / "bad.zip", damage)
    result = run_cli("test.py", "--model", str(bad), "--data", str(tiny_dataset), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: ")
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_truncated_package_and_a_missing_test_source_are_one_line(tmp_path, tiny_dataset):
    truncated = tmp_path / "model.zip"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="not a readable model package"):
        read_package(truncated)
    result = run_cli("test.py", "--model", str(truncated))
    assert result.returncode == 2 and "give --data ROOT or --images DIR" in result.stderr


def test_auto_chooses_openvino_on_the_cpu_and_torch_on_a_gpu():
    assert resolve_backend("auto", torch.device("cpu"))[0] == "openvino"
    assert resolve_backend("auto", torch.device("cuda"))[0] == "torch"
    assert resolve_backend("torch", torch.device("cpu")) == ("torch", "infer.backend says so")
    with pytest.raises(UserError, match="infer.backend: openvino runs on the CPU here"):
        resolve_backend("openvino", torch.device("cuda"))
    with pytest.raises(UserError, match="not one of auto, torch, openvino, onnxruntime"):
        resolve_backend("tensorrt", torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("name, patch", [("resunet", (32, 32, 16)), ("usegnet2", (64, 48, 1))])
def test_every_engine_gives_the_network_s_logits(name, patch):
    """The ONNX graph in OpenVINO and ONNX Runtime against PyTorch, float32 all: window batches of two
    sizes (each compiled once) and a whole sliding-window volume."""
    torch.manual_seed(0)
    model = build_model(name, 1, 3, channels=(8, 16, 32), patch_size=patch).eval()
    graph = to_onnx(model, 1, patch)
    engines = [OpenVINOEngine(graph, "f32", 1)]
    if _has("onnxruntime"):
        engines.append(OnnxRuntimeEngine(graph, 1))
    reference = TorchEngine(model, None)
    for batch in (3, 1, 3):
        windows = torch.randn(batch, 1, *patch)
        expected = reference(windows)
        for engine in engines:
            torch.testing.assert_close(engine(windows), expected, rtol=1e-4, atol=1e-4)
    assert sorted(engines[0].requests) == [(1, 1, *patch), (3, 1, *patch)]  # compiled once per shape
    volume = torch.randn(1, 1, *(s * 2 - s // 4 if s > 1 else 1 for s in patch))
    infer = InferConfig(overlap=0.5, blend="gaussian", precision="fp32")
    torch.testing.assert_close(predict_volume(engines[0], volume, patch, infer),
                               predict_volume(reference, volume, patch, infer), rtol=1e-4, atol=1e-4)


def _has(module: str) -> bool:
    from importlib.util import find_spec
    return find_spec(module) is not None


@pytest.fixture
def checkpoint_run(tmp_path) -> Path:
    """A run folder with a checkpoint of an untrained network (no training needed to export)."""
    from pipeline.config import Config, config_to_dict, save_config
    from pipeline.checkpoint import save_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    raw = config_to_dict(Config())
    raw["model"]["channels"], raw["train"]["patch_size"] = [8, 16], [16, 16, 8]
    save_config(Config(), run / "config.yaml")
    torch.manual_seed(0)
    model = build_model("resunet", 1, 2, channels=(8, 16), patch_size=(16, 16, 8))
    save_checkpoint({"model": model.state_dict(), "config": raw, "labels": {0: "background", 1: "organ"},
                     "in_channels": 1, "epoch": 3, "best_metric": 0.5}, run / "checkpoints" / "best.pt")
    return run


@pytest.mark.slow
def test_the_package_carries_the_decided_post_processing(checkpoint_run, tmp_path):
    """A run's postprocessing.json is folded into the package's configuration when it was decided with the
    exported weights; the weights are the run's."""
    from pipeline.predict.export import export_run
    from pipeline.checkpoint import load_checkpoint, weights_digest

    weights = load_checkpoint(checkpoint_run / "checkpoints" / "best.pt")["model"]
    decision = {"infer.tta": False, "infer.largest_component": [1]}
    (checkpoint_run / "postprocessing.json").write_text(json.dumps({**decision, "weights": "0" * 64}))
    other = read_package(export_run(checkpoint_run, "best", tmp_path / "other.zip"))
    assert other.meta["config"]["infer"].get("largest_component", False) is False  # decided for other weights
    (checkpoint_run / "postprocessing.json").write_text(json.dumps({**decision, "weights": weights_digest(weights)}))
    package = read_package(export_run(checkpoint_run, "best", tmp_path / "m.zip"))
    assert package.meta["config"]["infer"]["largest_component"] == [1]
    assert package.meta["config"]["infer"]["tta"] is False
    assert package.meta["provenance"]["validation_dice"] == 0.5 and package.meta["provenance"]["epoch"] == 3
    predictor = Predictor.from_package(package, ["infer.backend=torch"])
    assert predictor.cfg.infer.largest_component == (1,) and predictor.in_channels == 1
    for key, value in weights.items():
        assert torch.equal(predictor.model.state_dict()[key].cpu(), value), key


@pytest.mark.slow
def test_export_never_overwrites_and_a_folder_package_reads_the_same(checkpoint_run, tmp_path):
    from pipeline.predict.export import export_run

    (tmp_path / "model.zip").write_bytes(b"a colleague's model")
    result = run_cli("-m", "pipeline.export", "--run", str(checkpoint_run), "--out", str(tmp_path / "model.zip"))
    assert result.returncode == 2 and "exists; choose another --out" in result.stderr
    assert (tmp_path / "model.zip").read_bytes() == b"a colleague's model"
    folder = read_package(export_run(checkpoint_run, "best", tmp_path / "model_dir"))
    assert sorted(p.name for p in (tmp_path / "model_dir").iterdir()) == sorted([MANIFEST, NETWORK, WEIGHTS])
    with zipfile.ZipFile(tmp_path / "zipped.zip", "w") as archive:  # the same members, zipped by hand
        for member in (tmp_path / "model_dir").iterdir():
            archive.write(member, member.name)
    zipped = read_package(tmp_path / "zipped.zip")
    assert folder.meta == zipped.meta and folder.onnx == zipped.onnx
