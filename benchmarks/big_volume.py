"""Kidney scale, end to end: check, train, predict and evaluate a slice stack larger than memory.

    python benchmarks/big_volume.py --shape 1024 1024 2000 --work /tmp/big2000 --demo-run outputs/latest

Generates (once, kept in ``--work``) two kidney-like stacks in the SenNet layout,
``kidney_1`` for training and ``kidney_2`` for testing, then runs each stage as a
user would, each in its own process, and prints its wall time and peak RSS
(``wait4``: the child's own maximum resident set):

1. ``python -m pipeline.check`` on the dataset;
2. ``train.py``: the demo network and patch, ``--steps`` steps of two crops, lazy stores
   (``data.lazy=always``, built in this stage on first use), no validation;
3. ``test.py``: the whole test stack predicted slab by slab and scored
   (``infer.stream_voxels=0``);
4. ``python -m pipeline.evaluate`` on the written predictions alone.

Then, on the first 200 slices of the test stack (which MONAI's whole-volume
sliding window can hold), prediction throughput of the same trained network and
patch, each in its own process, timed the same way (a normalised in-memory volume
to its label map): MONAI ``sliding_window_inference`` at its defaults (fp32,
contiguous), MONAI with our precision and layout (bf16 autocast where the CPU
runs it natively, channels-last), and ours (``stream_logits``). Finally a
KiTS-sized CT (512 x 512 x 600, 0.8 x 0.8 x 1.0 mm, 3 classes) through
``test.py`` with the demo network of ``--demo-run``, without and with test-time
flips. Run it alone on the machine: every figure is a timing.

``--engines``: only ``test.py`` predicting one generated stack of ``--shape`` (its
labels removed: prediction alone, slab by slab, ``--data`` of its root) with the
network of ``--demo-run``, once per inference engine (``infer.backend`` torch and openvino), each in its
own process, with wall time, peak RSS and the share of label voxels on which the two agree. The demo
network was trained on CT phantoms, not on this stack: only time, memory and
agreement mean anything there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_stage(name: str, args: list[str], log: Path) -> dict:
    """Run ``python args`` in the repository; wall seconds and the child's peak RSS (GB)."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        child = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{name} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
    return {"stage": name, "seconds": seconds, "rss_gb": usage.ru_maxrss / 2**20}


def kidney_stages(work: Path, shape: tuple[int, int, int], steps: int) -> tuple[list[dict], Path]:
    root = work / "stacks"
    rows = []
    if not (root / "kidney_2" / "labels").is_dir():
        generate = ["-m", "pipeline.synthetic", "--kind", "kidney-stack", "--cases", "2", "--shape", *map(str, shape),
                    "--out", str(root)]
        rows.append(run_stage("generate (2 stacks)", generate, work / "generate.log"))
    rows.append(run_stage("check", ["-m", "pipeline.check", "--data", str(root)], work / "check.log"))
    runs = work / "runs"
    settings = [f"data.root={root}", "data.modality=generic", "data.val_fraction=0", "data.test_cases=[kidney_2]",
                "data.lazy=always", f"data.store_dir={work / 'stores'}", f"output_dir={runs}", "train.epochs=1",
                f"train.volumes_per_epoch={steps}", "train.samples_per_volume=2", "infer.stream_voxels=0"]
    train = ["train.py", "--config", "configs/demo.yaml", "-v", "--set", *settings]
    rows.append(run_stage(f"train ({steps} steps)", train, work / "train.log"))
    waits = re.findall(r"epoch \d+: (\d+) steps, ([\d.]+) s/step, ([\d.]+) % waiting for data",
                       (work / "train.log").read_text())
    rows[-1]["stage"] += f": {waits[-1][1]} s/step, {waits[-1][2]} % of it waiting for data" if waits else ""
    run = (runs / "latest").resolve()
    test_dir = run / f"test-{time.strftime('%H%M%S')}"
    rows.append(run_stage("test.py: predict + score", ["test.py", "--run", str(run), "--checkpoint", "last",
                                                     "--out", str(test_dir)], work / "test.log"))
    ref = work / "ref"
    ref.mkdir(exist_ok=True)
    if not (ref / "kidney_2").exists():
        (ref / "kidney_2").symlink_to(root / "kidney_2")
    rows.append(run_stage("evaluate alone", ["-m", "pipeline.evaluate", "--pred", str(test_dir / "predictions"),
                                             "--ref", str(ref), "--out", str(test_dir / "evaluate"), "--labels", "1"],
                          work / "evaluate.log"))
    return rows, run


def throughput(run: Path, stack: Path, slices: int, method: str, work: Path) -> dict:
    """One method on the first ``slices`` slices of ``stack`` (run in a child process); its label
    map is saved in ``work`` for the comparison."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from pipeline.data.stack import SliceStack, normalised_reader
    from pipeline.predict import Predictor
    from pipeline.predict.streamed import stream_logits
    from pipeline.runtime import autocast

    predictor = Predictor.from_run(run, "last", ["infer.backend=torch"], device=torch.device("cpu"))
    cfg, roi = predictor.cfg, predictor.cfg.train.patch_size
    source = SliceStack(stack)
    volume = normalised_reader(source, cfg.data)(0, slices)  # (1, H, W, slices)
    shape = tuple(volume.shape[1:])
    start = time.perf_counter()
    if method == "ours":
        parts = [s.logits.argmax(0).to(torch.uint8) for s in stream_logits(
            predictor.engine, lambda a, b: volume[..., a:b], shape, roi, cfg.infer, max(predictor.labels) + 1)]
        labels = torch.cat(parts, dim=-1)
    else:
        model, amp = predictor.model, predictor.amp_dtype
        x = volume[None].contiguous(memory_format=torch.channels_last_3d)
        if method == "monai-defaults":
            model, amp, x = model.to(memory_format=torch.contiguous_format), None, volume[None]
        with torch.inference_mode(), autocast(x.device, amp):
            logits = sliding_window_inference(x, roi, cfg.infer.sw_batch_size, model, overlap=cfg.infer.overlap,
                                              mode=cfg.infer.blend)
        argmax_start = time.perf_counter()
        labels = class_max(logits[0])
    seconds = time.perf_counter() - start
    argmax = time.perf_counter() - argmax_start if method != "ours" else 0.0
    np.save(work / f"labels-{method}.npy", labels.numpy())
    return {"seconds": seconds, "argmax": argmax, "mvox_s": float(np.prod(shape)) / seconds / 1e6}


def class_max(logits):
    """The label map (uint8) of classes-first logits (C, ...), as ``argmax(0)`` gives it (ties to the lower
    class) but one class at a time: ``torch.argmax`` over the outermost of five dimensions is a slow
    path on CPU (38 of MONAI's 62 s at 1024 x 1024 x 200), which would flatter us as a baseline."""
    import torch

    best, labels = logits[0], torch.zeros(logits.shape[1:], dtype=torch.uint8)
    for c in range(1, logits.shape[0]):
        better = logits[c] > best
        labels[better] = c
        best = torch.maximum(best, logits[c])
    return labels


def engine_stages(work: Path, shape: tuple[int, int, int], demo_run: Path) -> None:
    """``test.py`` predicting one generated stack (its labels removed: prediction alone) with each engine."""
    import shutil

    import numpy as np

    from pipeline.data.stack import SliceStack

    root = work / "engine_stack"
    if not (root / "kidney_1" / "images").is_dir():
        run_stage("generate (1 stack)", ["-m", "pipeline.synthetic", "--kind", "kidney-stack", "--cases", "1",
                                         "--shape", *map(str, shape), "--out", str(root)], work / "generate.log")
        shutil.rmtree(root / "kidney_1" / "labels")
    rows, voxels = {}, float(np.prod(shape))
    for backend in ("torch", "openvino"):
        out = work / f"engine-{backend}-{time.strftime('%H%M%S')}"
        rows[backend] = run_stage(backend, ["test.py", "--run", str(demo_run), "--data", str(root), "--out", str(out),
                                            "--set", "infer.stream_voxels=0", f"infer.backend={backend}"],
                                  work / f"engine-{backend}.log")
        rows[backend]["labels"] = SliceStack(out / "predictions" / "kidney_1", label=True)
    equal = sum(int(np.count_nonzero(a == b)) for (_, a), (_, b) in zip(rows["torch"]["labels"].slabs(),
                                                                        rows["openvino"]["labels"].slabs()))
    print(f"test.py predicting a generated stack ({'x'.join(map(str, shape))}, {voxels / 1e9:.2f} G voxels, "
          "no labels), "
          f"network of {demo_run.name}, one process each\n| engine | seconds | Mvoxel/s | peak RSS (GB) |\n"
          "| --- | ---: | ---: | ---: |")
    for backend, r in rows.items():
        print(f"| {backend} | {r['seconds']:.0f} | {voxels / r['seconds'] / 1e6:.2f} | {r['rss_gb']:.2f} |")
    print(f"openvino / torch: {rows['torch']['seconds'] / rows['openvino']['seconds']:.2f}x; label voxels equal: "
          f"{equal / voxels:.6f}")


def kits_stages(work: Path, demo_run: Path) -> list[dict]:
    from pipeline.data.synthetic import PhantomSpec, generate_dataset

    root = work / "kits"
    if not (root / "imagesTs").is_dir():
        generate_dataset(root, PhantomSpec(shape=(512, 512, 600), spacing=(0.8, 0.8, 1.0), n_train=1, n_test=1, seed=7))
    rows = []
    for tta in ("false", "true"):
        out = work / f"kits-test-tta-{tta}-{time.strftime('%H%M%S')}"
        rows.append(run_stage(f"KiTS-sized CT, test.py, flips {tta}",
                              ["test.py", "--run", str(demo_run), "--images", str(root / "imagesTs"), "--labels",
                               str(root / "labelsTs"), "--out", str(out), "--set", f"infer.tta={tta}"],
                              work / f"kits-{tta}.log"))
        rows[-1]["dice"] = json.loads((out / "summary.json").read_text())["mean_dice"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(1024, 1024, 2000))
    parser.add_argument("--work", type=Path, required=True, help="working folder (generated data is kept and reused)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--demo-run", type=Path, help="a demo run (make demo) for the KiTS-sized CT rows")
    parser.add_argument("--kits-only", action="store_true", help="only the KiTS-sized CT rows (needs --demo-run)")
    parser.add_argument("--engines", action="store_true",
                        help="only test.py with each inference engine (needs --demo-run)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engines:
        args.work.mkdir(parents=True, exist_ok=True)
        engine_stages(args.work, tuple(args.shape), args.demo_run.resolve())
        return
    if args.child:
        run, stack, slices, method = args.child
        print(json.dumps(throughput(Path(run), Path(stack), int(slices), method, args.work)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.kits_only:
        kidney(args)
    if args.demo_run:
        print("\n| KiTS-sized CT 512x512x600, demo network | seconds | peak RSS (GB) | mean Dice |\n"
              "| --- | ---: | ---: | ---: |")
        for r in kits_stages(args.work, args.demo_run.resolve()):
            print(f"| {r['stage']} | {r['seconds']:.0f} | {r['rss_gb']:.2f} | {r['dice']:.4f} |")


def kidney(args: argparse.Namespace) -> None:
    """The kidney stages and the throughput comparison, printed as tables."""
    rows, run = kidney_stages(args.work, tuple(args.shape), args.steps)
    print(f"kidney stacks {'x'.join(map(str, args.shape))} (two: train kidney_1, test kidney_2), {os.cpu_count()} CPUs")
    print("| stage | seconds | peak RSS (GB) |\n| --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['stage']} | {r['seconds']:.0f} | {r['rss_gb']:.2f} |", flush=True)
    stack, slices = args.work / "stacks" / "kidney_2" / "images", min(200, args.shape[2])
    speed = {}
    for method in ("monai-defaults", "monai-bf16-cl", "ours"):
        out = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--child", str(run), str(stack),
                              str(slices), method], capture_output=True, text=True, check=True)
        speed[method] = json.loads(out.stdout.strip().splitlines()[-1])
    import numpy as np

    ours = np.load(args.work / "labels-ours.npy")
    print(f"\nprediction throughput on {args.shape[0]}x{args.shape[1]}x{slices} of kidney_2, trained network, "
          "one process each")
    print("| inference | seconds | of which its label map (class by class) | Mvoxel/s | voxels equal to ours |\n"
          "| --- | ---: | ---: | ---: | ---: |")
    for method, r in speed.items():
        same = float(np.mean(np.load(args.work / f"labels-{method}.npy") == ours))
        print(f"| {method} | {r['seconds']:.1f} | {r['argmax']:.1f} | {r['mvox_s']:.2f} | {same:.6f} |")
    without = speed["monai-bf16-cl"]["seconds"] - speed["monai-bf16-cl"]["argmax"]
    print(f"MONAI with the same precision and layout, its label map left out: {without:.1f} s against ours "
          f"{speed['ours']['seconds']:.1f} s: {without / speed['ours']['seconds']:.2f}x")
    print(f"ours / MONAI same precision and layout: {speed['ours']['mvox_s'] / speed['monai-bf16-cl']['mvox_s']:.2f}x; "
          f"ours / MONAI defaults: {speed['ours']['mvox_s'] / speed['monai-defaults']['mvox_s']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
