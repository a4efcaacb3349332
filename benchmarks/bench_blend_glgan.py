"""Benchmark: GL-GAN's blender (``blend=glgan``) against alpha and Poisson blending, on pastes whose
truth is known.

Pastes: an LFW peopleDevTest face (never trained on) with a recoloured copy of itself pasted back
under its landmark hull (per-channel gain 1 +- 0.2 and shift +- 0.08, seeded: the light mismatch a
swap's paste leaves, as the ``glgan-blend`` recipe makes them), so the unpasted face is the answer.
For each blender, side by side in one run: the mean absolute error to that face in a 6 px band
around the mask's edge (the seam) and inside the mask, in grey levels, and ms per face at 128 px.

    .venv/bin/python benchmarks/bench_blend_glgan.py [--faces 200] [--threads 1] [--feather 4]

Uses the installed ``glgan-blender`` (``swaplab nets build glgan-blender data.train=[FACESET]``)
unless ``--weights``. ``--smoke``: the ``test`` blender built in a temporary user cache, 6 faces.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, load_average, machine, seam_band, use_threads  # noqa: E402

from swaplab.swap.blend import blend  # noqa: E402
from swaplab.train.recipes.blender import load_faces_with_hulls  # noqa: E402
from swaplab.train.recipes.segmenter import lfw_faceset  # noqa: E402

MODES = ("alpha", "poisson", "glgan")


def recoloured_paste(face: np.ndarray, hull: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``face`` with a recoloured copy of itself inside ``hull`` (hard edge): the paste to blend."""
    gain = 1.0 + rng.uniform(-0.2, 0.2, 3)
    shift = 255.0 * rng.uniform(-0.08, 0.08, 3)
    pasted = np.clip(face.astype(np.float32) * gain + shift, 0, 255)
    return np.where(hull[..., None] >= 0.5, pasted, face).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feather", type=int, default=4, help="feather_px of every blender (the swap's mask blur)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="a glgan-blender weights file (default: the installed one)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    root = data_root()
    threads = use_threads(args.threads)
    if args.smoke:
        from swaplab.train.built_networks import build_network

        os.environ["SWAPLAB_CACHE"] = tempfile.mkdtemp(prefix="bench-glgan-blend-")
        args.faces, args.repeats = 6, 1
        train = lfw_faceset(6, "train", progress=False)
        words = [f"data.train=[{train}]", f"data.lists_dir={root / 'lfw'}"]
        args.weights = str(build_network("glgan-blender", "test", words, progress=False))
    if args.weights:
        os.environ["SWAPLAB_GLGAN_BLENDER"] = args.weights
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()} (other jobs share this machine: times are upper bounds)")
    faces, hulls = load_faces_with_hulls([lfw_faceset(args.faces, "eval", progress=False)], 128)
    rng = np.random.default_rng(args.seed)
    pastes = [(face, recoloured_paste(face, hull, rng), hull) for face, hull in zip(faces, hulls)]
    print(
        f"pastes: {len(pastes)} LFW peopleDevTest faces at 128 px, each with a recoloured copy of itself "
        f"pasted under its hull (gain 1 +- 0.2, shift +- 0.08), seed {args.seed}, feather_px {args.feather}"
    )
    print("\n1. error to the unpasted face (grey levels, mean absolute)")
    print(f"  {'blend':<8} {'seam band (6 px)':>17} {'inside the mask':>16} {'ms per face':>12}")
    for mode in MODES:
        seam, inside, times = [], [], []
        for real, pasted, mask in pastes:
            out = blend(real, pasted, mask, mode, feather_px=args.feather)
            error = np.abs(out.astype(np.float32) - real.astype(np.float32)).mean(axis=2)
            seam.append(error[seam_band(mask, 6)].mean())
            inside.append(error[mask >= 0.5].mean())
        for _ in range(args.repeats):
            start = time.perf_counter()
            for real, pasted, mask in pastes[:16]:
                blend(real, pasted, mask, mode, feather_px=args.feather)
            times.append((time.perf_counter() - start) / len(pastes[:16]))
        print(f"  {mode:<8} {np.mean(seam):17.2f} {np.mean(inside):16.2f} {1000 * statistics.median(times):12.2f}")
    print(f"\nthreads: {threads}; load average at end: {load_average()}")


if __name__ == "__main__":
    main()
