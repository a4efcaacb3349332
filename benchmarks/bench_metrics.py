"""Cost of every evaluation metric on realistic batches, per item, with side-by-side variants.

    .venv/bin/python benchmarks/bench_metrics.py [--pairs 256] [--landmark-sets 1000] [--repeats 3] [--smoke]

Inputs (fixed, so numbers can be reproduced): the first photo of the first ``--pairs`` people (in
sorted folder order) of LFW deep-funneled; their central 128 px as targets, a Gaussian-blurred
(sigma 1.2) noisy copy as "swaps", a face-shaped ellipse as mask; their central 150 px as identity
chips (roughly aligned: content does not change the cost). Landmarks: dlib's 68 points of 20 of
those photos, with 1 px noise, tiled to ``--landmark-sets``. Features for FD/KID: Gaussian
(seed 0), 1000 x 256 like the dlib ResNet's penultimate features. Times are medians of
``--repeats`` runs after a warm-up. ``--smoke``: 8 pairs, 20 landmark sets, 100 x 256 features,
2 KID subsets, one repeat: checks the script end to end in seconds (the numbers mean nothing).

torch runs on ONE thread (``torch.set_num_threads(1)``), and so do numpy's and scipy's OpenBLAS
(``OPENBLAS_NUM_THREADS=1`` etc., set before numpy loads unless already set): the machine's 2 cores
are shared with other work, and two threads then wait on each other; one thread is steadier.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # before numpy is imported: BLAS reads them once

import imageio.v3 as iio  # noqa: E402
import kornia  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402
from common import data_root, machine  # noqa: E402

from swaplab.faces.detect import DETECTORS  # noqa: E402
from swaplab.faces.landmarks import LANDMARKERS  # noqa: E402
from swaplab.identity import identity_features, load_dlib_identity  # noqa: E402
from swaplab.metrics import (  # noqa: E402
    expression_error,
    flicker,
    frechet_distance,
    identity_drift,
    identity_retrieval,
    identity_similarity,
    kernel_distance,
    landmark_jitter,
    masked_l1,
    masked_psnr,
    masked_ssim,
    pose_error,
    roc_auc,
    sharpness_ratio,
)


def median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations, model loading
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(name: str, what: str, seconds: float, items: int, unit: str = "item") -> None:
    per = seconds / items
    per_text = f"{per * 1e3:8.3f} ms" if per >= 1e-3 else f"{per * 1e6:8.2f} us"
    print(f"{name:34s} {what:34s} {seconds * 1e3:10.1f} ms  {per_text} / {unit}")


def load_photos(lfw: Path, count: int) -> np.ndarray:
    people = sorted(p for p in lfw.iterdir() if p.is_dir())[:count]
    return np.stack([iio.imread(sorted(person.glob("*.jpg"))[0]) for person in people])


def ellipse_masks(n: int, size: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    inside = ((xx - (size - 1) / 2) / (0.35 * size)) ** 2 + ((yy - 0.55 * size) / (0.45 * size)) ** 2 <= 1
    return inside.float().expand(n, 1, size, size).contiguous()


def frechet_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    """The usual FID code path (pytorch-fid): scipy.linalg.sqrtm of the non-symmetric product."""
    mean_gap = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(mean_gap @ mean_gap + np.trace(cov_a + cov_b - 2 * covmean))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--landmark-sets", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny inputs, 1 repeat: checks the script only")
    args = parser.parse_args()
    features, subsets, frames = 1000, 100, 250
    if args.smoke:
        args.pairs, args.landmark_sets, args.repeats = 8, 20, 1
        features, subsets, frames = 100, 2, 20
    torch.set_num_threads(1)
    lfw = (args.data or data_root()) / "lfw" / "lfw-deepfunneled"
    print(f"machine: {machine()}")
    print(
        "one thread: torch.set_num_threads(1), OPENBLAS_NUM_THREADS="
        f"{os.environ['OPENBLAS_NUM_THREADS']} (the 2 cores are shared with other work right now)\n"
    )
    repeats = args.repeats

    photos = load_photos(lfw, args.pairs)
    n = len(photos)
    gen = torch.Generator().manual_seed(0)
    targets = torch.from_numpy(photos[:, 61:189, 61:189]).permute(0, 3, 1, 2).float().div(255).contiguous()
    swaps = kornia.filters.gaussian_blur2d(targets, (9, 9), (1.2, 1.2))
    swaps = (swaps + 0.01 * torch.randn(swaps.shape, generator=gen)).clamp(0, 1)
    masks = ellipse_masks(n, 128)
    print(f"{'metric':34s} {'input':34s} {'total':>13s}  {'per item':>11s}")
    pairs = f"{n} pairs, 3x128x128 + mask"
    ssim_s = median_s(lambda: masked_ssim(swaps, targets, masks), repeats)
    row("masked_ssim (kornia, NCHW fp32)", pairs, ssim_s, n, "pair")
    swaps_cl, targets_cl = (t.contiguous(memory_format=torch.channels_last) for t in (swaps, targets))
    ssim_cl = median_s(lambda: masked_ssim(swaps_cl, targets_cl, masks), repeats)
    row("masked_ssim (channels_last input)", pairs, ssim_cl, n, "pair")
    ssim_64 = median_s(lambda: masked_ssim(swaps.double(), targets.double(), masks), repeats)
    row("masked_ssim (float64 input)", pairs, ssim_64, n, "pair")
    for metric in (masked_psnr, masked_l1, sharpness_ratio):
        row(metric.__name__, pairs, median_s(lambda m=metric: m(swaps, targets, masks), repeats), n, "pair")
    print(f"  -> SSIM: channels_last / NCHW time {ssim_cl / ssim_s:.2f}; float64 / float32 {ssim_64 / ssim_s:.2f}")

    # Identity: the port at two batch sizes on the same chips.
    chips = np.ascontiguousarray(photos[:, 50:200, 50:200])
    net = load_dlib_identity()
    times = {}
    for batch in (16, 64):
        times[batch] = median_s(lambda b=batch: identity_features(chips, encoder=net, batch_size=b), repeats)
        row(f"identity_features (batch {batch})", f"{n} chips 150x150", times[batch], n, "face")
    print(f"  -> batch 64 / batch 16 time per face: {times[64] / times[16]:.2f}")
    embeddings = identity_features(chips, encoder=net, layer="embedding")
    rng = np.random.default_rng(0)
    gallery = np.repeat(embeddings, 4, axis=0) + 0.05 * rng.normal(size=(4 * n, 128))
    labels = np.repeat(np.arange(n), 4)
    row(
        "identity_similarity",
        f"{n} pairs x 128",
        median_s(lambda: identity_similarity(embeddings, embeddings), repeats),
        n,
        "pair",
    )
    retrieval_s = median_s(lambda: identity_retrieval(embeddings, gallery, labels, np.arange(n)), repeats)
    row("identity_retrieval (cosine)", f"{n} queries, {len(gallery)} gallery", retrieval_s, n, "query")

    # Pose and expression on landmark sets.
    hog, predictor = DETECTORS.create("dlib-hog"), LANDMARKERS.create("dlib-68")
    base = []
    for photo in photos[:20]:
        boxes = hog.detect(photo)
        if boxes:
            base.append(predictor.landmarks(photo, max(boxes, key=lambda b: b.area)))
    count = args.landmark_sets
    tiles = -(-count // len(base))
    target68 = np.tile(np.stack(base), (tiles, 1, 1))[:count] + rng.normal(size=(count, 68, 2))
    swap68 = target68 + rng.normal(size=target68.shape)
    sets = f"{count} x (68, 2) pairs"
    row("pose_error", sets, median_s(lambda: pose_error(target68, swap68, (250, 250)), repeats), count, "pair")
    row("expression_error", sets, median_s(lambda: expression_error(target68, swap68), repeats), count, "pair")

    # Distribution distances on 1000 x 256 features.
    feats_a = rng.normal(size=(features, 256))
    feats_b = 1.1 * rng.normal(size=(features, 256)) + 0.05
    sets = f"{features} x 256 vs {features} x 256"
    fd_s = median_s(lambda: frechet_distance(feats_a, feats_b), repeats)
    row("frechet_distance (eigh route)", sets, fd_s, 1, "call")
    sqrtm_s = median_s(lambda: frechet_sqrtm(feats_a, feats_b), repeats)
    row("  FD by scipy.linalg.sqrtm", sets, sqrtm_s, 1, "call")
    print(
        f"  -> sqrtm / eigh time {sqrtm_s / fd_s:.2f}; values {frechet_distance(feats_a, feats_b):.6f} "
        f"vs {frechet_sqrtm(feats_a, feats_b):.6f}"
    )
    kid_once = median_s(lambda: kernel_distance(feats_a, feats_b, subset_size=features), repeats)
    row("kernel_distance (full sets once)", f"{features} x 256, subset_size {features}", kid_once, 1, "call")
    big_a, big_b = np.tile(feats_a, (2, 1)), np.tile(feats_b, (2, 1))
    kid_sub = median_s(lambda: kernel_distance(big_a, big_b, subsets=subsets, subset_size=features), 1)
    row(
        f"kernel_distance ({subsets} subsets)",
        f"{2 * features} x 256, subsets of {features}",
        kid_sub,
        subsets,
        "subset",
    )

    # Video.
    track = np.repeat(target68[:1], frames, axis=0) + rng.normal(size=(frames, 68, 2))
    row(
        "landmark_jitter (relative)",
        f"T={frames} x (68, 2)",
        median_s(lambda: landmark_jitter(track, track), repeats),
        frames,
        "frame",
    )
    drift = gallery[:frames]
    row(
        "identity_drift",
        f"T={len(drift)} x 128",
        median_s(lambda: identity_drift(drift), repeats),
        len(drift),
        "frame",
    )
    clip = targets[:100]
    clip_masks = masks[:100]
    row(
        "flicker (relative)",
        f"T={len(clip)} x 3x128x128 + masks",
        median_s(lambda: flicker(clip, clip_masks, clip), repeats),
        len(clip),
        "frame",
    )

    scores = 1000 if args.smoke else 10000
    scores_real, scores_fake = rng.normal(size=scores), rng.normal(size=scores) + 1
    row(
        "roc_auc",
        f"{scores} real + {scores} fake scores",
        median_s(lambda: roc_auc(scores_real, scores_fake), repeats),
        2 * scores,
        "score",
    )


if __name__ == "__main__":
    main()
