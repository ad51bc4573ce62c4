"""Sliding-window inference: MONAI's ``sliding_window_inference`` vs our ``Predictor``, same network.

    python benchmarks/infer_speed.py [--run outputs/latest] [--shape 256 256 160]

Uses the trained network of ``--run`` (run ``make demo`` first) on a demo test
case preprocessed by the pipeline's own transforms and mirrored out to
``--shape`` (padding with air instead would put windows of nothing but air,
which a model trained on body-cropped volumes never saw, in front of every method).
Each run in its own process so its peak RSS is its own, each timed the same way
(the volume's logits or label map, wall clock; an engine's one-off setup, the ONNX
export for a graph engine, is timed apart and printed):

- MONAI ``sliding_window_inference`` at its defaults: fp32, contiguous memory,
  overlap 0.25, constant blending;
- MONAI ``sliding_window_inference`` with our precision and layout: bf16 autocast
  (where the CPU runs it natively, else fp32) and channels-last, same overlap and blending;
- ours, per engine (``infer.backend`` torch and openvino at the same precision; onnxruntime, fp32):
  ``Predictor.logits`` with the run's ``infer`` settings, and ``Predictor.label_map``,
  the engine of ``test.py`` (the same windows, blended slab by slab into
  classes-last buffers, argmax per slab). OpenVINO compiles once per window shape,
  inside the timed call.

Prints Mvoxel/s, peak RSS, the ratios and the Dice between label maps; then our
peak RSS on the same case mirrored to 512 x 512 x 300 (the default engine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.layouts import load_dataset  # noqa: E402
from pipeline.data.transforms import IMAGE, build_transforms  # noqa: E402
from pipeline.metrics import dice  # noqa: E402
from pipeline.predict import Predictor  # noqa: E402
from pipeline.runtime import autocast, cpu_has_native_bf16, cpu_model  # noqa: E402

PRECISION = "bf16" if cpu_has_native_bf16() else "fp32"
METHODS = {
    "monai-defaults": "MONAI sliding_window_inference defaults (fp32, contiguous)",
    "monai-same": f"MONAI sliding_window_inference, {PRECISION} + channels-last",
    "ours-torch": f"ours, torch engine: Predictor.logits ({PRECISION} + channels-last)",
    "ours-slabs-torch": f"ours, torch engine: Predictor.label_map, test.py's engine ({PRECISION} + channels-last)",
    "ours-openvino": f"ours, openvino engine: Predictor.logits ({PRECISION})",
    "ours-slabs-openvino": f"ours, openvino engine: Predictor.label_map, test.py's engine ({PRECISION})",
    "ours-slabs-onnxruntime": "ours, onnxruntime engine: Predictor.label_map, test.py's engine (fp32)",
}


def prepare(run: str, shape: tuple[int, int, int], out: str) -> None:
    """A demo test case through the run's deterministic transforms, mirrored out to ``shape``."""
    cfg = Predictor.from_run(run, overrides=["infer.backend=torch"], device=torch.device("cpu")).cfg
    split = json.loads((Path(run) / "split.json").read_text(encoding="utf-8"))
    case = load_dataset(split["root"], cfg.data).case(split["test"][0])
    image = build_transforms(cfg, train=False, keys=(IMAGE,))({IMAGE: str(case.image)})[IMAGE].as_tensor()
    pad = [(0, 0)] + [(0, max(t - s, 0)) for t, s in zip(shape, image.shape[1:])]
    mirrored = np.pad(image.numpy(), pad, mode="symmetric")[(slice(None), *[slice(0, t) for t in shape])]
    np.save(out, mirrored.astype(np.float32))


def measure(method: str, run: str, volume_file: str, out: str | None) -> dict:
    """Seconds, Mvoxel/s and peak RSS of one method on one volume (run in a child process)."""
    from monai.inferers import sliding_window_inference

    backend = method.rsplit("-", 1)[1] if method.startswith("ours") else "torch"
    setup = time.perf_counter()
    predictor = Predictor.from_run(run, overrides=[f"infer.backend={backend}"], device=torch.device("cpu"))
    setup = time.perf_counter() - setup
    x = torch.from_numpy(np.load(volume_file))[None]
    infer, roi = predictor.cfg.infer, predictor.cfg.train.patch_size
    start = time.perf_counter()
    if method.startswith("ours-slabs"):
        labels = predictor.label_map(x[0])  # (1, H, W, D) uint8
    elif method.startswith("ours"):
        logits = predictor.logits(x)
    else:
        if method == "monai-defaults":  # fp32 and PyTorch's default (contiguous) layout
            model, amp = predictor.model.to(memory_format=torch.contiguous_format), None
        else:  # the Predictor's model is channels-last already; the input follows it
            model, amp, x = predictor.model, predictor.amp_dtype, x.to(memory_format=torch.channels_last_3d)
        with torch.inference_mode(), autocast(x.device, amp):
            logits = sliding_window_inference(x, roi, infer.sw_batch_size, model, overlap=infer.overlap,
                                              mode=infer.blend)
    seconds = time.perf_counter() - start
    if out:
        np.save(out, (labels[0] if method.startswith("ours-slabs") else logits.argmax(1)[0].to(torch.uint8)).numpy())
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": seconds, "mvox_s": float(np.prod(x.shape[2:])) / seconds / 1e6, "rss_gb": rss_gb,
            "setup": setup if method.startswith("ours") else 0.0}


def run_child(method: str, run: str, volume_file: str, out: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--run", run, "--volume", volume_file]
    result = subprocess.run(cmd + (["--out", out] if out else []), capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/latest")
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 160))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.run, args.volume, args.out)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        prepare(args.run, tuple(args.shape), f"{tmp}/volume.npy")
        prepare(args.run, (512, 512, 300), f"{tmp}/big.npy")
        results = {m: run_child(m, args.run, f"{tmp}/volume.npy", f"{tmp}/{m}.npy") for m in METHODS}
        big = run_child("ours-slabs-openvino", args.run, f"{tmp}/big.npy")
        labels = {m: np.load(f"{tmp}/{m}.npy") for m in METHODS}
    print_table(args, results, labels)
    print(f"test.py's engine (label_map, openvino) on 512 x 512 x 300: {big['seconds']:.1f} s, "
          f"{big['mvox_s']:.2f} Mvoxel/s, peak RSS {big['rss_gb']:.2f} GB")


def print_table(args: argparse.Namespace, results: dict, labels: dict) -> None:
    """The table, the Dice of each label map against the torch engine's, and the ratios."""
    infer = Predictor.from_run(args.run, overrides=["infer.backend=torch"], device=torch.device("cpu")).cfg.infer
    print(f"volume {tuple(args.shape)}, network of {Path(args.run).resolve().name}, overlap {infer.overlap}, "
          f"{infer.blend} blending, {torch.get_num_threads()} threads, {cpu_model()}; one process per row")
    print("| inference | setup (s) | seconds | Mvoxel/s | peak RSS (GB) | Dice vs torch engine |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    for method, title in METHODS.items():
        r, a, b = results[method], labels[method], labels["ours-torch"]
        agreement = np.mean([dice(a == c, b == c) for c in np.union1d(np.unique(a), np.unique(b)) if c > 0])
        print(f"| {title} | {r['setup']:.1f} | {r['seconds']:.1f} | {r['mvox_s']:.2f} | {r['rss_gb']:.2f} | "
              f"{agreement:.4f} |")
    same = results["monai-same"]["mvox_s"]
    for backend in ("torch", "openvino", "onnxruntime"):
        print(f"test.py's engine (label_map, {backend}) / MONAI with the same precision and layout: "
              f"{results[f'ours-slabs-{backend}']['mvox_s'] / same:.2f}x")
    ratio = results["ours-openvino"]["mvox_s"] / results["monai-defaults"]["mvox_s"]
    print(f"ours, openvino logits / MONAI defaults: {ratio:.2f}x")


if __name__ == "__main__":
    main()
