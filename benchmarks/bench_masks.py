"""Benchmark: the face segmenter against the landmark hull on held-out faces with unseen occluders.

Faces: one photo each of the first ``--faces`` people of LFW's peopleDevTest list (people the
segmenter never saw), aligned like the training faces. Each gets one seeded synthetic occluder
(``swaplab.faces.occlusion``) of the kinds held out of training (scarf, cup), of the training
kinds, or none; the truth is the hull label with the occluder's exact mask on top. Rows: the hull
mask (face inside the hull, never an occluder), ``mask=segment`` (the segmenter's argmax) and
``mask=segment+hull`` (face where both say face). Columns: IoU of the face and occluder classes,
pooled over all pixels at 128 px. Then ms per face: the hull's rasterisation against the segmenter
at batch 1 and 16, fp32 and bf16 autocast, side by side in one run.

    .venv/bin/python benchmarks/bench_masks.py [--faces 200] [--threads 1] [--weights FILE] [--real LABELS]

Then real occlusions (hands, microphones, a medal, sunglasses, another head) outlined by hand on
LFW peopleDevTest photos (``benchmarks/real_occluders.json``, the user polygon format keyed by
photo stem, in 128 px ``whole_face`` crops: the face hull, the occluders over it; drawn from
enlarged views, so edges are good to a few pixels): the same three masks, pooled and per face.
``swaplab/train/outlines/occluders_train.json`` (twelve) and ``occluders_train_more.json`` (seven)
outline other photos, of peopleDevTrain people, which the default segmenter build learns from
(docs/masks.md); ``--prepare`` extracts the photos of such a file into a faceset and prints it:

    .venv/bin/python benchmarks/bench_masks.py --prepare swaplab/train/outlines/occluders_train.json

With ``--swap-model MODEL`` the outlined photos are then swapped by that model (any exported model;
its identity does not matter here) under each mask, and the bench reports how much the swap changed
the outlined occluders' pixels (they should stay: 0 keeps them) beside the change inside the
outlined face around them (the swap itself), pooled over the photos; "share of hull" divides by the
hull mask's occluder change.

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
from common import data_root, load_average, machine, pair_model, use_threads  # noqa: E402

from swaplab.faces.masks import landmark_mask  # noqa: E402
from swaplab.faces.occlusion import FACE_LABEL, HELD_OUT_KINDS, OCCLUDER_LABEL, TRAIN_KINDS  # noqa: E402
from swaplab.metrics.segmentation import class_iou  # noqa: E402
from swaplab.models.installed import as_batch  # noqa: E402
from swaplab.models.segmentation import FaceSegmenter, load_face_segmenter  # noqa: E402
from swaplab.system import autocast  # noqa: E402
from swaplab.train.recipes.segmenter import (  # noqa: E402
    lfw_faceset,
    lfw_outlined_faceset,
    load_labelled_faces,
    occluded_set,
)

SIZE = 128
CLIP = Path("videos/hdtf_sadtalker/WDA_KatieHill_000.mp4")
#: Real occluders (hands, microphones, a medal, sunglasses, another head) outlined by hand on ten
#: LFW peopleDevTest photos, in the user polygon format keyed by photo stem.
REAL_OCCLUDERS = Path(__file__).resolve().parent / "real_occluders.json"


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
    parser.add_argument("--real", default=str(REAL_OCCLUDERS), help="outlines of real occluders on LFW photos")
    parser.add_argument(
        "--prepare", help="only extract the photos a labels file outlines into a faceset (for training) and print it"
    )
    parser.add_argument("--swap-model", help="an exported model: also swap the outlined photos under each mask")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    data_root()
    threads = use_threads(args.threads)
    if args.prepare:
        print(lfw_outlined_faceset(Path(args.prepare)))
        return
    if args.smoke:
        from swaplab.train.built_networks import build_network

        os.environ["SWAPLAB_CACHE"] = tempfile.mkdtemp(prefix="bench-masks-")
        args.faces, args.repeats, args.frames = 8, 1, 4
        args.weights = str(build_network("face-segmenter", "test", progress=False))
        args.swap_model = str(pair_model(Path(os.environ["SWAPLAB_CACHE"]) / "stand-in", steps=1, photos=8))
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
    real_faceset = lfw_outlined_faceset(Path(args.real))
    real_occluders(net, real_faceset)
    temporal(net, args.frames)
    if args.swap_model:
        occluders_in_swaps(Path(args.swap_model), args.weights, real_faceset)
    print(f"\nthreads: {threads}; load average at end: {load_average()}")


def real_occluders(net: FaceSegmenter, faceset: Path) -> None:
    """IoU of the three masks on the faces of ``faceset`` that its ``mask_polygons.json`` outlines."""
    from swaplab.facesets.format import Faceset
    from swaplab.facesets.mask_polygons import POLYGONS_FILE, read_mask_polygons
    from swaplab.train.recipes.segmenter import hull_labels

    outlined = read_mask_polygons(faceset / POLYGONS_FILE)
    labelled = load_labelled_faces([faceset], SIZE)  # the outlined faces take their polygons' labels
    rows = [i for i, face_id in enumerate(labelled.ids) if face_id in outlined]
    opened = Faceset(faceset)
    scale = SIZE / opened.size
    hull = np.stack([hull_labels(opened.records[i].landmarks_array, SIZE, scale) for i in rows])
    images, truth = labelled.images[rows], labelled.labels[rows]
    segmented = predict(net, images)
    both = np.where((segmented == FACE_LABEL) & (hull != FACE_LABEL), 0, segmented)
    print(f"\n3. real occluders outlined by hand: {len(rows)} faces of {faceset} (IoU at {SIZE} px, pooled)")
    print(f"  {'mask':<14} {'face IoU':>9} {'occluder IoU':>12}")
    for name, predicted in (("hull", hull), ("segment", segmented), ("segment+hull", both)):
        print(scores(name, predicted, truth))
    print(
        f"  {'face':<40} {'occluded':>9} {'segment occ. IoU':>17} {'segment+hull face IoU':>22} {'hull face IoU':>14}"
    )
    for k, i in enumerate(rows):
        inside = hull[k] == FACE_LABEL  # the share of the face (hull) that the occluders cover
        occluded = float((inside & (truth[k] == OCCLUDER_LABEL)).sum()) / max(1, int(inside.sum()))
        print(
            f"  {labelled.ids[i][:40]:<40} {occluded:>9.2f} {class_iou(segmented[k], truth[k], OCCLUDER_LABEL):>17.3f}"
            f" {class_iou(both[k], truth[k], FACE_LABEL):>22.3f} {class_iou(hull[k], truth[k], FACE_LABEL):>14.3f}"
        )


def _crop_to_frame(mask: np.ndarray, matrix: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """A boolean mask in crop coordinates mapped into ``frame`` by the inverse of the frame -> crop ``matrix``."""
    import cv2

    height, width = frame.shape[:2]
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(mask.astype(np.uint8), matrix, (width, height), flags=flags).astype(bool)


def occluders_in_swaps(model: Path, weights: str | None, faceset: Path) -> None:
    """The outlined photos swapped by ``model`` under each mask: how much the swap changed the pixels of
    the outlined occluders (they should stay) and of the outlined face around them (it should change)."""
    from swaplab.facesets.format import Faceset
    from swaplab.facesets.mask_polygons import POLYGONS_FILE, read_mask_polygons
    from swaplab.io.images import read_image
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig
    from swaplab.train.recipes.segmenter import load_labelled_faces

    if weights:
        os.environ["SWAPLAB_FACE_SEGMENTER"] = weights  # the swap's segmenter is the one measured above
    outlined = read_mask_polygons(faceset / POLYGONS_FILE)
    opened = Faceset(faceset)
    labelled = load_labelled_faces([faceset], opened.size)
    cases = []  # (frame, landmarks in the frame, occluder mask, face-without-occluder mask), frame pixels
    for index, face_id in enumerate(labelled.ids):
        if face_id not in outlined:
            continue
        record = opened.records[index]
        frame = read_image(record.source)[0]
        label = labelled.labels[index]
        occluder, face = (
            _crop_to_frame(label == value, record.matrix_array, frame) for value in (OCCLUDER_LABEL, FACE_LABEL)
        )
        cases.append((frame, record.landmarks_source, occluder, face))
    print(f"\n5. real occluders through a swap: {len(cases)} photos, model {model} (mean absolute change, 0-255)")
    print(f"  {'mask':<14} {'occluder change':>16} {'share of hull':>14} {'face change':>12}")
    hull_change = None
    for name in ("hull", "segment", "segment+hull"):
        swapper = FaceSwapper(model, SwapConfig(mask=name))
        occluder_sum = occluder_count = face_sum = face_count = 0.0
        for frame, landmarks, occluder, face in cases:
            aligned = swapper.analyzer.from_landmarks(frame, [np.asarray(landmarks, np.float32)], embed=False)
            swapped, _ = swapper.swap_frame(frame, aligned)
            change = np.abs(swapped.astype(np.float32) - frame.astype(np.float32)).mean(-1)
            occluder_sum, occluder_count = occluder_sum + change[occluder].sum(), occluder_count + occluder.sum()
            face_sum, face_count = face_sum + change[face].sum(), face_count + face.sum()
        occluder_change = occluder_sum / max(occluder_count, 1)
        hull_change = hull_change or occluder_change
        print(
            f"  {name:<14} {occluder_change:>16.2f} {occluder_change / hull_change:>14.2f} "
            f"{face_sum / max(face_count, 1):>12.2f}"
        )


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
    print(f"\n4. temporal: segment mask on {len(raw)} frames of {CLIP.name} (64 px crops, landmarks one_euro 0.5)")
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
