"""Swap throughput on a 512x512 talking-head clip, per stage, beside the model's own throughput.

A per-pair model (default ``liae-ud`` at 128 px with DeepFaceLab's dims; ``--model liae-cpu`` for
the 64 px CPU preset; the weights do not matter for speed, so it is trained for one step) swaps the
HDTF clip end to end: decode, detect/track, align, model, mask, colour, blend, watermark, encode.
In the same run the model alone is timed on the same crops, so the pipeline's overhead is the
difference. Then the temporal jitter of the pasted face with
landmark smoothing on and off.

    .venv/bin/python benchmarks/bench_swap.py [--frames 200] [--model liae-ud] [--threads 1] [--smoke]

``--smoke``: ``liae-cpu`` trained on 6 frames, 4 frames per pipeline setting, 3 model-only runs and
jitter over 5 frames: checks the script end to end in seconds (the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_root, load_average, machine  # noqa: E402

from swaplab.config import apply_overrides  # noqa: E402
from swaplab.swap.pipeline import FaceSwapper, SwapConfig, swap  # noqa: E402

CLIP = Path("videos/hdtf_sadtalker/WDA_KatieHill_000.mp4")


def make_model(work: Path, preset: str, frames: int = 16) -> Path:
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.per_pair import TrainConfig

    clip = data_root() / CLIP
    faces = work / "faces"
    extract(clip, faces, ExtractConfig(size=128, max_frames=frames), progress=False)
    cfg = apply_overrides(
        TrainConfig(),
        [
            f"model={preset}",
            f"data.src={faces}",
            f"data.dst={faces}",
            "data.holdout=0",
            "trainer=test",
            "trainer.steps=1",
            "trainer.precision=auto",
            f"run_dir={work / 'run'}",
        ],
    )
    train(cfg)
    export_model(work / "run", work / "model")
    return work / "model"


def model_only(model_dir: Path, clip: Path, frames: int, batch: int, crops_from: int = 16) -> float:
    """Faces/s of the model alone on the clip's own aligned crops, ``batch`` at a time as the pipeline runs."""
    swapper = FaceSwapper(model_dir, SwapConfig())
    from swaplab.io.video import VideoReader

    crops = []
    for frame in VideoReader(clip, stop=crops_from):
        crops.extend(f.crop for f in swapper.analyzer.analyze(frame.image, embed=False)[:1])
    stack = np.stack([crops[i % len(crops)] for i in range(batch)])
    for _ in range(2):
        swapper._run_model(stack)
    calls = max(1, frames // batch)
    start = time.perf_counter()
    for _ in range(calls):
        swapper._run_model(stack)
    return calls * batch / (time.perf_counter() - start)


def jitter(clip: Path, model_dir: Path, frames: int, smoothing: str) -> float:
    """Mean frame-to-frame acceleration of the pasted face's landmarks over the target's own.

    Real motion is smooth; detector noise shows up as acceleration. Ratio < 1: the paste shakes
    less than the raw landmarks; 1: no smoothing effect.
    """
    from swaplab.io.video import VideoReader
    from swaplab.swap.pipeline import SwapReport, _Session

    swapper = FaceSwapper(model_dir, SwapConfig(smoothing=smoothing))
    session = _Session(swapper, 25.0)
    raw, pasted = [], []
    report = SwapReport(output="")
    for frame in VideoReader(clip, stop=frames):
        faces = session.tracker.update(frame.image)
        if not faces:
            continue
        raw.append(faces[0].landmarks_source.copy())
        pasted.append(session._smoothed(frame.image, faces[0], frame.time).landmarks_source.copy())
    del report

    def accel(points: list[np.ndarray]) -> float:
        track = np.stack(points)
        return float(np.linalg.norm(track[2:] - 2 * track[1:-1] + track[:-2], axis=2).mean())

    return accel(pasted) / accel(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--model", default="liae-ud")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--smoke", action="store_true", help="liae-cpu, 4 frames: checks the script only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train_frames, model_runs, jitter_frames = 16, 50, 100
    if args.smoke:
        args.frames, args.model = 4, "liae-cpu"
        train_frames, model_runs, jitter_frames = 6, 3, 5
    clip = data_root() / CLIP
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = make_model(work, args.model, train_frames)
        resolution = json.loads((model_dir / "model.json").read_text())["resolution"]
        fps_model = {b: model_only(model_dir, clip, model_runs, b, min(16, train_frames)) for b in (1, 8)}
        fps = {}
        for batch_frames, overlap in ((1, False), (8, False), (8, True)):
            cfg = SwapConfig(max_frames=args.frames, overwrite=True, batch_frames=batch_frames, overlap=overlap)
            report = swap(model_dir, clip, work / "out.mp4", cfg, progress=False)
            fps[batch_frames, overlap] = report.fps
            stages = ", ".join(f"{k} {1000 * v / report.frames:.1f}" for k, v in report.stage_seconds.items() if v)
            print(
                f"pipeline (batch_frames={batch_frames}, overlap={overlap}): {report.fps:.1f} frames/s "
                f"over {report.frames} frames at 512x512"
            )
            note = " (on 3 threads: the sum exceeds the wall time)" if overlap else ""
            print(f"  ms per frame and stage{note}: {stages}")
        for batch in (1, 8):
            print(
                f"model alone ({args.model}, {resolution} px, batch {batch}, {torch.get_num_threads()} threads): "
                f"{fps_model[batch]:.1f} faces/s"
            )
        print(f"overlap / sequential at batch 8: {fps[8, True] / fps[8, False]:.2f}")
        print(f"pipeline / model alone at batch 8: sequential {fps[8, False] / fps_model[8]:.2f}, ", end="")
        print(f"overlapped {fps[8, True] / fps_model[8]:.2f} (aim 0.90)")
        for smoothing in ("none", "one_euro", "kalman"):
            ratio = jitter(clip, model_dir, jitter_frames, smoothing)
            print(f"jitter of the pasted face, smoothing={smoothing}: {ratio:.2f} x the raw landmarks'")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
