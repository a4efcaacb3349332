"""Domain adaptation of the swap detector (DANN): its AUC on a new domain without and with adaptation.

The source domain: central crops of LFW peopleDevTrain photos, real against the same crops with
the face softly blurred (sigma 1 px) and pasted back with a feathered seam (the manipulation the
detector learns). The target domain: the same manipulation on other people's photos that then went
through another camera (sensor noise of 8 grey levels, JPEG quality 60), which hides the missing
fine texture the detector leans on. All detectors see labelled source crops; the adapted one also
sees the unlabelled target crops; a third, trained on the target crops with their labels, is the
reference a label-free method can at best approach. Tested on peopleDevTest people of each
domain, side by side in one run, over several training seeds.

    python benchmarks/bench_domain_adaptation.py            # 150 training people per domain, 100 test, 3 seeds
    python benchmarks/bench_domain_adaptation.py --smoke    # a few crops and steps: checks it runs
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, machine  # noqa: E402

CROP = 128


def people_crops(lfw: Path, listing: str, count: int, offset: int = 0) -> list[np.ndarray]:
    """Central crops of the first photo of ``count`` people of an LFW list (file order) from ``offset``."""
    from swaplab.io.images import read_image

    names = [line.split("\t")[0] for line in (lfw.parent / listing).read_text().splitlines()[1:]]
    crops = []
    for name in names[offset : offset + count]:
        image, _ = read_image(sorted((lfw / name).glob("*.jpg"))[0])
        start = (image.shape[0] - CROP) // 2
        crops.append(np.ascontiguousarray(image[start : start + CROP, start : start + CROP]))
    return crops


def manipulate(crop: np.ndarray, blur: float, feather: float) -> np.ndarray:
    """The face ellipse blurred (``blur`` px sigma) and pasted back, its seam feathered by ``feather`` px
    (0: a hard seam)."""
    mask = np.zeros((CROP, CROP), np.float32)
    cv2.ellipse(mask, (CROP // 2, CROP // 2 + 6), (36, 46), 0, 0, 360, 1.0, -1)
    if feather:
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
    blurred = cv2.GaussianBlur(crop, (0, 0), blur).astype(np.float32)
    out = mask[..., None] * blurred + (1.0 - mask[..., None]) * crop.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def other_camera(crop: np.ndarray, scale: float, quality: int, noise: float, seed: int) -> np.ndarray:
    """Another device: shrunk by ``scale`` and upscaled back, sensor noise of ``noise`` grey levels, JPEG at
    ``quality``."""
    side = max(8, round(CROP * scale))
    small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    big = cv2.resize(small, (CROP, CROP), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big += np.random.default_rng(seed).normal(0.0, noise, big.shape).astype(np.float32)
    big = np.clip(big + 0.5, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", big[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].copy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=150, help="training people per domain")
    parser.add_argument("--test", type=int, default=100, help="test people per domain")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blur", type=float, default=1.0, help="the manipulation's blur sigma (px)")
    parser.add_argument("--feather", type=float, default=3.0, help="the manipulation's seam feathering (px)")
    parser.add_argument("--scale", type=float, default=1.0, help="the target camera's shrink factor")
    parser.add_argument("--quality", type=int, default=60, help="the target camera's JPEG quality")
    parser.add_argument("--noise", type=float, default=8.0, help="the target camera's noise (grey levels)")
    parser.add_argument("--weight", type=float, default=None, help="the domain loss' weight (default: the preset's)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per detector")
    parser.add_argument("--smoke", action="store_true", help="a few crops and steps: checks that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.train, args.test, args.steps, args.seeds = 12, 8, 4, 1
    import torch

    from swaplab.evaluate.detectability import detector_config, train_detector
    from swaplab.metrics import roc_auc

    torch.set_num_threads(args.threads)
    lfw = data_root() / "lfw" / "lfw-deepfunneled"
    print(f"machine: {machine()}")
    print(f"load average at start: {Path('/proc/loadavg').read_text().split()[0]}")
    fake = lambda crop: manipulate(crop, args.blur, args.feather)  # noqa: E731
    camera = lambda crop, seed: other_camera(crop, args.scale, args.quality, args.noise, seed)  # noqa: E731
    source_real = people_crops(lfw, "peopleDevTrain.txt", args.train)
    source_fake = [fake(c) for c in source_real]
    # The target domain: other people's photos through the other camera, as they are and swapped first (the
    # manipulation happens, then the camera's processing). DANN sees them without their labels.
    others = people_crops(lfw, "peopleDevTrain.txt", args.train, offset=args.train)
    target_real = [camera(c, i) for i, c in enumerate(others)]
    target_fake = [camera(fake(c), len(others) + i) for i, c in enumerate(others)]
    test_real = people_crops(lfw, "peopleDevTest.txt", args.test)
    tests = {
        "source (LFW's camera)": (test_real, [fake(c) for c in test_real]),
        f"target (x{args.scale:g}, noise {args.noise:g}, JPEG q{args.quality})": (
            [camera(c, 10_000 + i) for i, c in enumerate(test_real)],
            [camera(fake(c), 20_000 + i) for i, c in enumerate(test_real)],
        ),
    }
    print(
        f"{args.train} training people per domain, {args.test} peopleDevTest people per test, {args.steps} steps; "
        f"manipulation: blur {args.blur:g} px, seam feathered {args.feather:g} px"
    )
    # The reference a label-free method can at best approach: the same detector trained on the target crops
    # with their labels.
    runs = (
        ("source only", "default", (source_real, source_fake), None),
        ("DANN", "dann", (source_real, source_fake), target_real + target_fake),
        ("target labels", "default", (target_real, target_fake), None),
    )
    rows: dict[str, dict[str, list[float]]] = {name: {d: [] for d in (*tests, "seconds")} for name, *_ in runs}
    for seed in range(args.seeds):
        for name, preset, (real, swapped), unlabelled in runs:
            start = time.perf_counter()
            config = detector_config(preset, steps=args.steps, seed=seed)
            if preset == "dann" and args.weight is not None:
                adaptation = dataclasses.replace(config.adaptation, weight=args.weight)
                config = dataclasses.replace(config, adaptation=adaptation)
            detector = train_detector(
                real,
                swapped,
                config,
                real_groups=list(range(len(real))),
                fake_groups=list(range(len(swapped))),
                target_domain=unlabelled,
            )
            rows[name]["seconds"].append(time.perf_counter() - start)
            precision = config.trainer.precision
            for domain, (test_real_crops, test_fake_crops) in tests.items():
                auc = roc_auc(detector.logits(test_real_crops, precision), detector.logits(test_fake_crops, precision))
                rows[name][domain].append(auc)
        print(f"seed {seed}: " + ", ".join(f"{name} {values[list(tests)[1]][-1]:.3f}" for name, values in rows.items()))

    def cell(values: list[float]) -> str:
        spread = f" +- {np.std(values):.3f}" if len(values) > 1 else ""
        return f"{np.mean(values):.3f}{spread}"

    print(f"AUC, mean over {args.seeds} seed(s) +- their standard deviation")
    print(f"{'detector':14s} " + " ".join(f"{d:>40s}" for d in tests) + "   train s")
    for name, values in rows.items():
        print(
            f"{name:14s} "
            + " ".join(f"{cell(values[d]):>40s}" for d in tests)
            + f"   {np.mean(values['seconds']):7.1f}"
        )
    without, adapted, oracle = (cell(rows[name][list(tests)[1]]) for name in ("source only", "DANN", "target labels"))
    print(f"AUC on the target domain: {without} without adaptation, {adapted} with (trained on its labels: {oracle})")
    print(f"load average at end: {Path('/proc/loadavg').read_text().split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
