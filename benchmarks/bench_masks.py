"""Benchmark: the face segmenter against the landmark hull on held-out faces with unseen occluders.

Faces: one photo each of the first ``--faces`` people of LFW's peopleDevTest list (people the
segmenter never saw), aligned like the training faces. Each gets one seeded synthetic occluder
(``swaplab.faces.occlusion``) of the kinds held out of training (scarf, cup), of the training
kinds, or none; the truth is the hull label with the occluder's exact mask on top. Rows: the hull
mask (face inside the hull, never an occluder), ``mask=segment`` (the segmenter's argmax) and
``mask=segment+hull`` (face where both say face). Columns: IoU of the face and occluder classes,
pooled over all pixels at 128 px. Then ms per face: the hull's rasterisation against the segmenter
at batch 1 and 16, fp32 and bf16 autocast, side by side in one run.

    .venv/bin/python benchmarks/bench_masks.py [--faces 200] [--threads 1] [--weights FILE]

Uses the installed ``face-segmenter`` (``swaplab nets build face-segmenter``) unless ``--weights``.
``--smoke``: builds the ``test`` segmenter in a temporary user cache, 8 faces, one timing repeat
(the numbers mean nothing; it checks the script end to end).
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, load_average, machine, use_threads  # noqa: E402

from swaplab.faces.masks import landmark_mask  # noqa: E402
from swaplab.faces.occlusion import FACE_LABEL, HELD_OUT_KINDS, OCCLUDER_LABEL, TRAIN_KINDS  # noqa: E402
from swaplab.metrics.segmentation import class_iou  # noqa: E402
from swaplab.models.installed import as_batch  # noqa: E402
from swaplab.models.segmentation import FaceSegmenter, load_face_segmenter  # noqa: E402
from swaplab.system import autocast  # noqa: E402
from swaplab.train.recipes.segmenter import lfw_faceset, load_labelled_faces, occluded_set  # noqa: E402

SIZE = 128
CLIP = Path("videos/hdtf_sadtalker/WDA_KatieHill_000.mp4")


def predict(net: FaceSegmenter, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat(
            [net.segment(as_batch(images[i : i + 32])).argmax(1) for i in range(0, len(images), 32)]
        ).numpy()


def scores(name: str, predicted: np.ndarray, truth: np.ndarray) -> str:
    face = class_iou(predicted, truth, FACE_LABEL)
    if not (truth == OCCLUDER_LABEL).any():
        return f"  {name:<14} {face:>9.3f} {'-':>12}"
    return f"  {name:<14} {face:>9.3f} {class_iou(predicted, truth, OCCLUDER_LABEL):>12.3f}"


def timing(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="a face-segmenter weights file (default: the installed one)")
    parser.add_argument("--frames", type=int, default=60, help="frames of the clip for the temporal part")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    data_root()
    threads = use_threads(args.threads)
    if args.smoke:
        from swaplab.train.built_networks import build_network

        os.environ["SWAPLAB_CACHE"] = tempfile.mkdtemp(prefix="bench-masks-")
        args.faces, args.repeats, args.frames = 8, 1, 4
        args.weights = str(build_network("face-segmenter", "test", progress=False))
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()} (other jobs share this machine: times are upper bounds)")
    net = load_face_segmenter(args.weights)
    print(f"segmenter: {net.config.resolution} px, widths {net.config.widths}, "
          f"{sum(p.numel() for p in net.parameters()):,} parameters")  # fmt: skip
    faces = load_labelled_faces([lfw_faceset(args.faces, "eval", progress=False)], SIZE)
    print(
        f"held-out faces: {len(faces.ids)} (LFW peopleDevTest, first {args.faces} people, photo 0001), seed {args.seed}"
    )
    hull_truth = faces.labels  # the hull labels of the clean faces: the hull mask's own prediction
    print("\n1. IoU at 128 px (pooled over faces)")
    print(f"  {'mask':<14} {'face IoU':>9} {'occluder IoU':>12}")
    for title, kinds in (
        ("occluders NOT seen in training: " + ", ".join(HELD_OUT_KINDS), HELD_OUT_KINDS),
        ("occluders seen in training: " + ", ".join(TRAIN_KINDS), TRAIN_KINDS),
        ("no occluder", ()),
    ):
        print(f" {title}")
        if kinds:
            images, truth = occluded_set(faces, SIZE, tuple(kinds), seed=args.seed)
        else:
            images, truth = faces.images, faces.labels
        segmented = predict(net, images)
        both = np.where((segmented == FACE_LABEL) & (hull_truth != FACE_LABEL), 0, segmented)
        print(scores("hull", hull_truth, truth))
        print(scores("segment", segmented, truth))
        print(scores("segment+hull", both, truth))

    print("\n2. ms per face (median of repeats)")
    crops16 = faces.images[:16] if len(faces.images) >= 16 else np.resize(faces.images, (16, SIZE, SIZE, 3))
    landmarks = _landmarks(args.faces)
    some = landmarks[:16]
    hull_ms = 1000 * timing(lambda: [landmark_mask(p, SIZE) for p in some], args.repeats) / len(some)
    print(f"  hull rasterisation            {hull_ms:8.2f}")
    for label, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
        for batch in (1, 16):
            x = as_batch(crops16[:batch]).contiguous(memory_format=torch.channels_last)

            def run(x: torch.Tensor = x, dtype: torch.dtype | None = dtype) -> None:
                with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
                    net.segment(x)

            ms = 1000 * timing(run, args.repeats) / batch
            print(f"  segmenter {label:<13} b{batch:<3}  {ms:8.2f}   ({ms / hull_ms:.0f}x the hull)")
    temporal(net, args.frames)
    print(f"\nthreads: {threads}; load average at end: {load_average()}")


def temporal(net: FaceSegmenter, frames: int) -> None:
    """Frame-to-frame change of the segment mask in crop space on a talking-head clip, raw and smoothed
    by the swap's mask smoothers (``mask_smoothing``), landmarks tracked and smoothed as the swap does."""
    from swaplab.faces.align import alignment_matrix, warp_face
    from swaplab.faces.analyze import FaceAnalyzer, FaceAnalyzerConfig
    from swaplab.io.video import VideoReader
    from swaplab.models.segmentation import FACE
    from swaplab.swap.smoothing import SMOOTHERS

    clip = data_root() / CLIP
    analyzer = FaceAnalyzer(FaceAnalyzerConfig(embed=False), template="whole_face", size=64)
    tracker, points_smoother = analyzer.tracker(), SMOOTHERS.create("one_euro", strength=0.5)
    raw = []
    for frame in VideoReader(clip, stop=frames):
        faces = tracker.update(frame.image)
        if not faces:
            continue
        points = points_smoother.update(faces[0].landmarks_source, frame.time)
        crop = warp_face(frame.image, alignment_matrix(points, analyzer.template, 64), 64)
        with torch.inference_mode():
            raw.append(net.segment(as_batch(crop))[0, FACE].numpy())
    print(f"\n3. temporal: segment mask on {len(raw)} frames of {CLIP.name} (64 px crops, landmarks one_euro 0.5)")
    print(f"  {'mask_smoothing':<18} {'frame-to-frame change':>22} {'difference from raw':>20}")
    for name, strength in (("none", 0.5), ("one_euro", 0.5), ("kalman", 0.5), ("one_euro", 0.9)):
        smoother = SMOOTHERS.create(name, strength=strength)
        smoothed = [np.clip(smoother.update(m, i / 25.0), 0, 1) for i, m in enumerate(raw)]
        change = np.mean([np.abs(b - a).mean() for a, b in zip(smoothed, smoothed[1:])]) if len(raw) > 1 else 0.0
        lag = np.mean([np.abs(a - b).mean() for a, b in zip(smoothed, raw)])
        print(f"  {name + f' {strength:g}':<18} {change:22.4f} {lag:20.4f}")


def _landmarks(people: int) -> list[np.ndarray]:
    from swaplab.facesets.format import Faceset

    faceset = Faceset(lfw_faceset(people, "eval", progress=False))
    from swaplab.train.data import scale_points

    return [scale_points(record.landmarks_array, SIZE / faceset.size) for record in faceset.records]


if __name__ == "__main__":
    main()
