"""Detectability detector: training and scoring throughput, fp32 against bf16 autocast + channels_last.

    .venv/bin/python benchmarks/bench_detectability.py [--preset default] [--pairs 200] [--steps 30] [--auc] [--smoke]

Inputs (fixed, so numbers can be reproduced): the first photo of the first ``--pairs`` people of
LFW's ``peopleDevTrain.txt`` (list order), their central 128 px as "real" crops and the same crops
with the face ellipse blurred (sigma 2 px) and pasted back with a hard seam as "swaps". Training
cost per step is the time of ``train_detector`` (the ``swap-detector`` recipe in the one training
loop) with ``5 + --steps`` steps minus that with 5 steps, divided by ``--steps`` (so set-up, the
run folder, first-call costs and the data preparation cancel); scoring is ``SwapDetector.logits``
(in the variant's precision, weights in the variant's memory format; ``logits`` always feeds
channels_last inputs) on all 2 x ``--pairs`` crops (resizing 128 -> the preset's resolution
included), the median of 3 runs after a warm-up. ``--auc`` also trains each variant fully
(``holdout_detectability``: ``measure_detectability`` on a 70/30 pair-aware split) to show that
bf16 does not change what is learned. torch runs on ONE thread: the evaluation preset is sized for it.

``--smoke``: the ``test`` preset cut to 4 steps, 8 pairs, 2 timed steps, one scoring run, and the
``--auc`` path too: checks the script end to end in seconds (the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # before numpy is imported: BLAS reads them once

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import data_root, machine  # noqa: E402

from swaplab.evaluate.detectability import detector_config, holdout_detectability, train_detector  # noqa: E402
from swaplab.io.images import read_image  # noqa: E402

#: (label, precision, channels_last)
VARIANTS = (
    ("fp32, NCHW", "fp32", False),
    ("fp32, channels_last", "fp32", True),
    ("bf16 autocast, NCHW", "bf16", False),
    ("bf16 autocast, channels_last", "bf16", True),
)


def load_pairs(lfw: Path, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    names = [line.split("\t")[0] for line in (lfw.parent / "peopleDevTrain.txt").read_text().splitlines()[1:]]
    ellipse = np.zeros((128, 128), np.uint8)
    cv2.ellipse(ellipse, (64, 70), (36, 46), 0, 0, 360, 1, -1)
    inside = ellipse[..., None].astype(bool)
    real, fake = [], []
    for name in names[:count]:
        image, _ = read_image(sorted((lfw / name).glob("*.jpg"))[0])
        crop = np.ascontiguousarray(image[61:189, 61:189])
        real.append(crop)
        fake.append(np.where(inside, cv2.GaussianBlur(crop, (0, 0), 2.0), crop))
    return real, fake


def seconds(fn, repeats: int = 1) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--preset", default="default", help="a detector preset (default, test)")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per variant")
    parser.add_argument("--auc", action="store_true", help="also train each variant fully and report its AUC")
    parser.add_argument("--smoke", action="store_true", help="test preset, 4 steps, 8 pairs: checks the script only")
    args = parser.parse_args()
    score_repeats = 3
    if args.smoke:
        args.preset, args.pairs, args.steps, args.auc, score_repeats = "test", 8, 2, True, 1
    torch.set_num_threads(1)
    lfw = (args.data or data_root()) / "lfw" / "lfw-deepfunneled"
    base = detector_config(args.preset)
    if args.smoke:
        base = detector_config(base, steps=4)
    model, trainer = base.model, base.trainer
    print(f"machine: {machine()}")
    print(
        f"preset {args.preset!r} (model {model.name}): {model.resolution} px, widths {model.widths}, "
        f"{model.convs_per_stage} convs per stage, batch {trainer.batch_size}, {trainer.steps} steps; "
        "one torch thread\n"
    )
    real, fake = load_pairs(lfw, args.pairs)
    crops = real + fake

    results = {}
    for label, precision, channels_last in VARIANTS:
        config = detector_config(base, precision=precision, channels_last=channels_last)
        short = detector_config(config, steps=5)
        long = detector_config(config, steps=5 + args.steps)
        train_detector(real, fake, short)  # warm-up: first-call costs (oneDNN kernels, imports)
        long_s = seconds(lambda c=long: train_detector(real, fake, c))
        step_s = (long_s - seconds(lambda c=short: train_detector(real, fake, c))) / args.steps
        memory = torch.channels_last if channels_last else torch.contiguous_format
        detector = train_detector(real, fake, short).to(memory_format=memory)
        detector.logits(crops[:32], precision)
        score_s = seconds(lambda d=detector, p=precision: d.logits(crops, p), repeats=score_repeats)
        auc = holdout_detectability(real, fake, config, paired=True)[0].auc if args.auc else float("nan")
        results[label] = (step_s, score_s, auc)

    header = f"{'variant':30s} {'train step':>11s} {'train crops/s':>14s} {'full training':>14s} {'score crops/s':>14s}"
    print(header + ("   held-out AUC" if args.auc else ""))
    reference_step, reference_score, _ = results[VARIANTS[0][0]]
    for label, (step_s, score_s, auc) in results.items():
        line = (
            f"{label:30s} {step_s * 1e3:8.1f} ms {trainer.batch_size / step_s:14.0f} "
            f"{step_s * trainer.steps:12.1f} s {len(crops) / score_s:14.0f}"
        )
        print(line + (f"   {auc:.3f}" if args.auc else ""))
    print("\nspeed-up over fp32 NCHW (time ratio, higher is faster):")
    for label, (step_s, score_s, _) in results.items():
        print(f"  {label:30s} training x{reference_step / step_s:4.2f}   scoring x{reference_score / score_s:4.2f}")


if __name__ == "__main__":
    main()
