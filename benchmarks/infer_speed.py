"""Sliding-window inference: MONAI's defaults vs our ``predict_volume`` defaults.

    python benchmarks/infer_speed.py [--run outputs/latest]

Uses the trained demo model of ``--run`` (run ``make demo`` first) on a demo test
case preprocessed by the pipeline's own transforms and mirrored out to
256 x 256 x 160 (padding with air instead would put windows of nothing but air,
which a model trained on body-cropped volumes never saw, in front of both methods): MONAI ``sliding_window_inference`` with its defaults
(overlap 0.25, constant blending, fp32) against ``pipeline.inference.predict_volume``
with the config defaults (bf16 autocast where native, channels-last). Each
measurement runs in its own process so peak RSS is its own. Prints voxels per
second, peak RSS, the ratio and the Dice between the two label maps; then peak
RSS of ours on the same case padded to 512 x 512 x 300 (3 classes). Volumes
are prepared in the parent process, so a child's peak RSS is inference alone
(plus Python, torch and the input volume).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def prepare(run: str, shape: tuple[int, int, int], out: str) -> None:
    """A demo test case through the run's deterministic transforms, mirrored out to ``shape``."""
    import json as _json

    from pipeline.data.layouts import load_dataset
    from pipeline.testing import load_trained
    from pipeline.transforms import IMAGE, build_transforms

    cfg = load_trained(Path(run), "best").cfg
    split = _json.loads((Path(run) / "split.json").read_text(encoding="utf-8"))
    case = load_dataset(split["root"], cfg.data).case(split["test"][0])
    image = build_transforms(cfg, train=False, keys=(IMAGE,))({IMAGE: str(case.image)})[IMAGE].as_tensor()
    pad = [(0, 0)] + [(0, max(t - s, 0)) for t, s in zip(shape, image.shape[1:])]
    np.save(out, np.pad(image.numpy(), pad, mode="symmetric")[(slice(None), *[slice(0, t) for t in shape])].astype(np.float32))


def measure(which: str, run: str, volume_file: str, out: str | None) -> dict:
    from monai.inferers import sliding_window_inference

    from pipeline.config import InferConfig
    from pipeline.predict.sliding import predict_volume
    from pipeline.runtime import resolve_precision
    from pipeline.testing import load_trained

    trained = load_trained(Path(run), "best")
    x = torch.from_numpy(np.load(volume_file))[None]
    shape = x.shape[2:]
    roi = trained.cfg.train.patch_size
    start = time.perf_counter()
    if which == "monai":
        with torch.no_grad():
            logits = sliding_window_inference(x, roi, 1, trained.model)
    else:
        model = trained.model.to(memory_format=torch.channels_last_3d)
        logits = predict_volume(model, x, roi, InferConfig(), resolve_precision(InferConfig().precision, torch.device("cpu")))
    seconds = time.perf_counter() - start
    labels = logits.argmax(1)[0].to(torch.uint8).numpy()
    if out:
        np.save(out, labels)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": seconds, "mvox_s": float(np.prod(shape)) / seconds / 1e6, "rss_gb": rss_gb}


def run_child(which: str, args, volume_file: str, out=None) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--run", args.run, "--volume", volume_file]
    if out:
        cmd += ["--out", out]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
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

    import tempfile

    from pipeline.metrics import dice

    with tempfile.TemporaryDirectory() as tmp:
        prepare(args.run, tuple(args.shape), f"{tmp}/volume.npy")
        prepare(args.run, (512, 512, 300), f"{tmp}/big.npy")
        monai = run_child("monai", args, f"{tmp}/volume.npy", f"{tmp}/monai.npy")
        ours = run_child("ours", args, f"{tmp}/volume.npy", f"{tmp}/ours.npy")
        big = run_child("ours", args, f"{tmp}/big.npy")
        a, b = np.load(f"{tmp}/monai.npy"), np.load(f"{tmp}/ours.npy")
    classes = [c for c in np.union1d(np.unique(a), np.unique(b)) if c > 0]
    agreement = float(np.mean([dice(a == c, b == c) for c in classes]))
    print(f"volume {tuple(args.shape)}, model of {Path(args.run).resolve().name}, {torch.get_num_threads()} threads")
    print("| inference | seconds | Mvoxel/s | peak RSS (GB) |\n| --- | ---: | ---: | ---: |")
    print(f"| MONAI sliding_window_inference defaults (overlap 0.25, constant, fp32) | {monai['seconds']:.1f} | "
          f"{monai['mvox_s']:.2f} | {monai['rss_gb']:.2f} |")
    print(f"| ours: predict_volume defaults (overlap 0.25, constant, bf16 where native, channels-last) | "
          f"{ours['seconds']:.1f} | {ours['mvox_s']:.2f} | {ours['rss_gb']:.2f} |")
    print(f"ours is {ours['mvox_s'] / monai['mvox_s']:.2f}x MONAI's voxels per second; "
          f"mean foreground Dice between the two label maps {agreement:.4f}")
    print(f"ours on 512 x 512 x 300: {big['seconds']:.1f} s, {big['mvox_s']:.2f} Mvoxel/s, peak RSS {big['rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
