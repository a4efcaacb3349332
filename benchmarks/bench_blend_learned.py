"""Benchmark: the learned blender against Poisson, Laplacian and alpha blending on held-out pastes.

Pastes: one LFW peopleDevTest face (never trained on) pasted over another under the latter's
landmark hull, with a seeded per-channel colour gain of up to 25% (the mismatch a seam shows), as
the ``learned-blender`` recipe makes them. For each blender: the seam's gradient error against
Poisson's result (mean absolute difference of the horizontal and vertical intensity gradients in a
6 px band around the mask's edge, grey levels per pixel), the mean absolute difference from
Poisson's result inside the mask, and ms per face at 128 and 256 px, side by side in one run.

    .venv/bin/python benchmarks/bench_blend_learned.py [--faces 200] [--threads 1]

Uses the installed ``learned-blender`` (``swaplab nets build learned-blender``) unless ``--weights``.
``--smoke``: the ``test`` blender built in a temporary user cache, 8 faces, one repeat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, load_average, machine, seam_band, use_threads  # noqa: E402

from swaplab.swap.blend import blend  # noqa: E402
from swaplab.train.recipes.blender import load_faces_with_hulls, paste_example  # noqa: E402
from swaplab.train.recipes.segmenter import lfw_faceset  # noqa: E402

MODES = ("alpha", "laplacian", "poisson", "learned")


def gradients(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.stack([cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)]) / 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="a learned-blender weights file (default: the installed one)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    data_root()
    threads = use_threads(args.threads)
    if args.smoke:
        from swaplab.train.built_networks import build_network

        os.environ["SWAPLAB_CACHE"] = tempfile.mkdtemp(prefix="bench-blend-")
        args.faces, args.repeats = 8, 1
        args.weights = str(build_network("learned-blender", "test", progress=False))
    if args.weights:
        os.environ["SWAPLAB_LEARNED_BLENDER"] = args.weights
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()} (other jobs share this machine: times are upper bounds)")
    faces, hulls = load_faces_with_hulls([lfw_faceset(args.faces, "eval", progress=False)], 128)
    rng = np.random.default_rng(args.seed)
    pastes = [paste_example(faces, hulls, rng, 0.25) for _ in range(len(faces))]
    print(f"pastes: {len(pastes)} of LFW peopleDevTest faces at 128 px, colour gain up to 25%, seed {args.seed}")
    print("\n1. against Poisson's result (grey levels)")
    print(f"  {'blend':<10} {'seam gradient error':>20} {'inside-mask difference':>23}")
    for mode in MODES:
        seam, inside = [], []
        for frame, face, mask, poisson in pastes:
            out = blend(frame, face, mask, mode)
            band = seam_band(mask, 3)
            seam.append(np.abs(gradients(out) - gradients(poisson))[:, band].mean())
            inside.append(np.abs(out.astype(np.float32) - poisson)[mask >= 0.5].mean())
        print(f"  {mode:<10} {np.mean(seam):20.2f} {np.mean(inside):23.2f}")
    print("\n2. ms per face (median of repeats, every paste once)")
    print(f"  {'blend':<10} {'128 px':>8} {'256 px':>8}")
    for mode in MODES:
        row = []
        for size in (128, 256):
            scaled = [
                (cv2.resize(f, (size, size)), cv2.resize(g, (size, size)), cv2.resize(m, (size, size)))
                for f, g, m, _ in pastes[:16]
            ]
            blend(*scaled[0], mode)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for frame, face, mask in scaled:
                    blend(frame, face, mask, mode)
                times.append((time.perf_counter() - start) / len(scaled))
            row.append(1000 * statistics.median(times))
        print(f"  {mode:<10} {row[0]:8.2f} {row[1]:8.2f}")
    print(f"\nthreads: {threads}; load average at end: {load_average()}")


if __name__ == "__main__":
    main()
