"""Extraction throughput on a 512x512 talking-head clip: tracking against detecting every frame.

Frames per second end to end (decode, detect/track, landmarks, align, identity, JPEG write),
measured side by side in one run, model loading excluded (a warm-up extraction runs first).

    .venv/bin/python benchmarks/bench_extract.py [--frames 200] [--clip PATH] [--smoke]

``--smoke``: 2 frames per setting (and a 2-frame warm-up), to check the script end to end in seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_root, machine  # noqa: E402

from swaplab.facesets.extract import ExtractConfig, extract  # noqa: E402


def run(clip: Path, frames: int, detect_every: int, embed: bool = True) -> tuple[float, int]:
    cfg = ExtractConfig(size=256, max_frames=frames)
    cfg.faces.detect_every = detect_every
    cfg.faces.embed = embed
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = extract(clip, Path(tmp) / "fs", cfg, progress=False)
        seconds = time.perf_counter() - start
    return summary.frames / seconds, summary.faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="2 frames per setting: checks the script, not the speed")
    args = parser.parse_args()
    if args.smoke:
        args.frames = 2
    clip = args.clip or data_root() / "videos" / "hdtf_sadtalker" / "WDA_KatieHill_000.mp4"
    print(f"machine: {machine()}")
    print(f"clip: {clip.name}, first {args.frames} frames, crops 256 px, JPEG q95")
    run(clip, 2 if args.smoke else 10, 5)  # warm-up: loads dlib's models and the identity network once
    rows = [
        ("detect every frame", 1, True),
        ("track, detect every 5", 5, True),
        ("track, detect every 10", 10, True),
        ("track every 5, no identity", 5, False),
    ]
    results = {}
    for name, every, embed in rows:
        fps, faces = run(clip, args.frames, every, embed)
        results[name] = fps
        print(f"{name:28s} {fps:6.1f} frames/s  ({faces} faces)")
    base = results["detect every frame"]
    print(f"tracking (every 5) is {results['track, detect every 5'] / base:.2f}x detecting every frame")


if __name__ == "__main__":
    main()
