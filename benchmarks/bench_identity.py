"""Benchmark: swaplab's PyTorch port of dlib's face-recognition ResNet against dlib itself.

Prints faces per second at batch 1 and 16 for the port (fp32 NCHW, fp32 channels-last weights as
``load_dlib_identity`` returns it, bf16 autocast + channels-last) and for dlib's
``compute_face_descriptor`` on the same 150x150 chips, the ratios, and the agreement of the
descriptors. Chips come from real LFW photos (deep-funneled), first photos of the people listed
below, detected with dlib's HOG detector and aligned with dlib.get_face_chip.

    .venv/bin/python benchmarks/bench_identity.py [--data ../shared/data] [--repeats 7] [--threads N] [--smoke]

``--smoke``: one repeat, to check the script end to end in seconds (the numbers mean nothing).

dlib runs on one thread. On a busy 2-core machine torch's two threads wait on each other at every
layer (batch-1 timings then swing by 10-60x); ``--threads 1`` gives steady numbers there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np
import torch
from PIL import Image

from swaplab.identity import chip_from_landmarks, default_dlib_model_path, load_dlib_identity
from swaplab.system import cpu_model

PEOPLE = (
    "George_W_Bush",
    "Colin_Powell",
    "Tony_Blair",
    "Donald_Rumsfeld",
    "Gerhard_Schroeder",
    "Ariel_Sharon",
    "Hugo_Chavez",
    "Junichiro_Koizumi",
)
PHOTOS_PER_PERSON = 2  # 8 people x 2 = 16 chips


def load_faces(lfw: Path) -> tuple[list[Path], list[np.ndarray], list, np.ndarray, np.ndarray]:
    """Files, images, dlib shapes, 5-point landmarks (N, 5, 2) and chips (N, 150, 150, 3) of 16 faces."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    files, images, shapes, landmarks, chips = [], [], [], [], []
    for person in PEOPLE:
        for k in range(1, PHOTOS_PER_PERSON + 1):
            path = lfw / person / f"{person}_{k:04d}.jpg"
            image = np.asarray(Image.open(path).convert("RGB"))
            boxes = detector(image, 1)
            if not boxes:
                raise SystemExit(f"no face found in {path}")
            shape = predictor(image, max(boxes, key=lambda r: r.area()))
            files.append(path)
            images.append(image)
            shapes.append(shape)
            landmarks.append([[p.x, p.y] for p in shape.parts()])
            chips.append(dlib.get_face_chip(image, shape, 150, 0.25))
    return files, images, shapes, np.array(landmarks, dtype=np.float32), np.stack(chips)


def interleaved_fps(
    contenders: dict[str, dict[int, Callable[[], object]]], repeats: int
) -> dict[str, dict[int, float]]:
    """Faces per second of each contender at each batch size, from medians of interleaved runs."""
    times: dict[tuple[str, int], list[float]] = {}
    for name, calls in contenders.items():
        for n, fn in calls.items():
            fn()  # warm-up
            times[name, n] = []
    for _ in range(repeats):
        for name, calls in contenders.items():
            for n, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[name, n].append(time.perf_counter() - start)
    return {name: {n: n / statistics.median(times[name, n]) for n in calls} for name, calls in contenders.items()}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("SWAPLAB_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--data", default=default_data, help="folder holding lfw/lfw-deepfunneled")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default); 1 is steadier when other processes share the cores",
    )
    parser.add_argument("--smoke", action="store_true", help="1 repeat: checks the script, not the speed")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    lfw = Path(args.data) / "lfw" / "lfw-deepfunneled"

    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), dlib {dlib.__version__}"
    )
    # Other processes on a 2-core machine distort timings badly (torch's threads then wait on
    # each other): the load average before and after says how much to trust the run.
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    files, images, shapes, landmarks, chips = load_faces(lfw)
    print(f"chips: {len(chips)} LFW faces, {PHOTOS_PER_PERSON} first photos of each of: {', '.join(PEOPLE)}")

    recognizer = dlib.face_recognition_model_v1(str(default_dlib_model_path()))
    ports = {
        "fp32 NCHW": (load_dlib_identity(channels_last=False), False),
        "fp32 channels_last": (load_dlib_identity(channels_last=True), False),
        "bf16 autocast + channels_last": (load_dlib_identity(channels_last=True), True),
    }
    all_chips = torch.from_numpy(chips).permute(0, 3, 1, 2).float().div(255).contiguous()

    def run_port(model: torch.nn.Module, bf16: bool, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(batch).float()

    reference = np.array([np.array(d) for d in recognizer.compute_face_descriptor(list(chips))])
    fp32 = run_port(*ports["fp32 NCHW"], all_chips).numpy()

    # Interleave the contenders round by round so that load from other processes hits all alike.
    contenders: dict[str, dict[int, Callable[[], object]]] = {
        "dlib compute_face_descriptor": {
            1: lambda: recognizer.compute_face_descriptor(chips[0]),
            16: lambda: recognizer.compute_face_descriptor(list(chips[:16])),
        }
    }
    for name, (model, bf16) in ports.items():
        contenders[name] = {n: (lambda m=model, b=bf16, x=all_chips[:n]: run_port(m, b, x)) for n in (1, 16)}
    fps = interleaved_fps(contenders, args.repeats)

    print(f"\nfaces per second (median of {args.repeats} interleaved runs; higher is better)")
    print(f"{'':32s}{'batch 1':>10s}{'batch 16':>10s}{'vs dlib b1':>12s}{'vs dlib b16':>12s}")
    dlib_fps = fps["dlib compute_face_descriptor"]
    for name, row in fps.items():
        ratios = f"{row[1] / dlib_fps[1]:11.2f}x{row[16] / dlib_fps[16]:11.2f}x"
        print(f"{name:32s}{row[1]:10.1f}{row[16]:10.1f} {ratios}")
    base = fps["fp32 NCHW"]
    for name in list(ports)[1:]:
        print(
            f"ratio {name} / fp32 NCHW: batch 1 {fps[name][1] / base[1]:.2f}x, batch 16 {fps[name][16] / base[16]:.2f}x"
        )

    print("\nagreement of descriptors (128-d, same chips)")
    for name, (model, bf16) in ports.items():
        ours = run_port(model, bf16, all_chips).numpy()
        diff = np.abs(ours - reference)
        distance = np.linalg.norm(ours - reference, axis=1)
        print(f"{name:32s} vs dlib: max abs {diff.max():.2e}, mean abs {diff.mean():.2e}, max L2 {distance.max():.2e}")
        if bf16:
            vs_fp32 = np.abs(ours - fp32)
            print(
                f"{'':32s} vs port fp32: max abs {vs_fp32.max():.2e}, "
                f"max L2 {np.linalg.norm(ours - fp32, axis=1).max():.2e} (same-person threshold 0.6)"
            )

    # The differentiable torch chip against dlib's chip, and the descriptor it gives.
    sizes = {img.shape for img in images}
    if len(sizes) == 1:
        batch_images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).contiguous()
        torch_chips = chip_from_landmarks(batch_images, landmarks)
        pixel_diff = np.abs(torch_chips.permute(0, 2, 3, 1).numpy() * 255 - chips)
        chip_seconds = median_seconds(lambda: chip_from_landmarks(batch_images, landmarks), args.repeats)
        dlib_chip_seconds = median_seconds(
            lambda: [dlib.get_face_chip(img, shape, 150, 0.25) for img, shape in zip(images, shapes)],
            args.repeats,
        )
        embedded = run_port(*ports["fp32 channels_last"], torch_chips).numpy()
        print(
            f"\ntorch chip_from_landmarks vs dlib.get_face_chip: mean abs {pixel_diff.mean():.3f}, "
            f"max abs {pixel_diff.max():.2f} grey levels; descriptor L2 to dlib's "
            f"max {np.linalg.norm(embedded - reference, axis=1).max():.4f}"
        )
        print(f"chip extraction, 16 faces: torch {chip_seconds * 1e3:.1f} ms, dlib {dlib_chip_seconds * 1e3:.1f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("files: " + ", ".join(p.name for p in files))


if __name__ == "__main__":
    main()
