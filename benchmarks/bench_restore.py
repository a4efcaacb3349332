"""Benchmark: the face restorer on held-out degraded faces and on real swaps.

1. Held-out faces: one photo each of the first ``--faces`` LFW peopleDevTest people (never trained
   on), aligned at 128 px, each degraded once with a seeded draw of the training degradations
   (downscale 2-4x, blur, noise, JPEG, bicubic back up). PSNR and SSIM against the clean face and
   the sharpness ratio (restored over clean, inside the face hull), for the degraded input and the
   restorer at strength 0.5 and 1.
2. Real swaps (``--model``, e.g. the demo's ``demo-output/model``): ``--frames`` frames of the
   target clip swapped with ``restore=off`` and ``restore=on``; inside the target's face hull at
   256 px, the sharpness ratio swap over target, and the identity distance (1 - cosine) of the
   swapped face to the source clip's mean face by ``lfw-arcface``, the identity network that
   trained nothing here; then the swap's ms per face for each. Then the same frames swapped by a
   perfect model at each ``--ceiling`` size (the aligned target given back unchanged), without and
   with the restorer: the sharpness a model of that output size can reach on these frames at all.
   Each restored row for each ``--pass-scales`` value: one pass straight at the footprint (0), or
   passes that upscale by at most that factor each (the swap's ``restore_pass_scale``).
   ``--grid PATH`` draws the first frames' faces of every row side by side (the target first): the
   numbers alone can mislead, since an identity network also rewards a caricature of the source.

    .venv/bin/python benchmarks/bench_restore.py [--faces 200] [--model demo-output/model] [--frames 20] \
        [--weights l1=PATH gan=PATH ...] [--grid restore-swaps.png]

Uses the installed ``face-restorer`` (``swaplab nets build face-restorer``) unless ``--weights``:
one or more weights files (``LABEL=PATH``, or a path labelled by its folder), each scored in the
same run on the same faces and frames, side by side (e.g. the ``cpu`` and ``cpu-gan`` builds).
``--smoke``: the ``test`` restorer built in a temporary user cache, 6 faces, and a 2-step model on
3 frames, scored by the test build of lfw-arcface (the numbers mean nothing; it checks the script end to end).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, load_average, machine, pass_through_swapper, use_threads  # noqa: E402

from swaplab.faces.masks import landmark_masks_torch  # noqa: E402
from swaplab.metrics.reconstruction import masked_psnr, masked_ssim, sharpness_ratio  # noqa: E402
from swaplab.models.restoration import load_face_restorer, restore_faces  # noqa: E402
from swaplab.train.degradation import degraded_set  # noqa: E402
from swaplab.train.recipes.segmenter import lfw_faceset  # noqa: E402

GRID_ROWS = 4  # frames shown per setting in --grid
SOURCE_CLIP = Path("videos/hdtf_sadtalker/WDA_AlexandriaOcasioCortez_000.mp4")
TARGET_CLIP = Path("videos/hdtf_sadtalker/WDA_KatieHill_000.mp4")


def nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0).contiguous()


def held_out(args: argparse.Namespace, nets: dict[str, object]) -> None:
    from swaplab.facesets.format import Faceset
    from swaplab.train.data import scale_points

    faceset = Faceset(lfw_faceset(args.faces, "eval", progress=False))
    size = 128
    import cv2

    clean = np.stack(
        [cv2.resize(faceset.image(i), (size, size), interpolation=cv2.INTER_AREA) for i in range(len(faceset))]
    )
    points = np.stack([scale_points(r.landmarks_array, size / faceset.size) for r in faceset.records]).astype(
        np.float32
    )
    mask = landmark_masks_torch(points, size)
    degraded = degraded_set(clean, seed=args.seed)
    print(
        f"\n1. held-out degraded faces: {len(clean)} (LFW peopleDevTest, first {args.faces} people), seed {args.seed}"
    )
    print(f"  {'input':<38} {'PSNR dB':>8} {'SSIM':>7} {'sharpness vs clean':>19}")
    rows = [("degraded (bicubic)", degraded)]
    for label, net in nets.items():
        for strength in (0.5, 1.0):
            rows.append((f"{label}: restored, strength {strength:g}", restore_faces(degraded, strength, net)))
        rows.append((f"{label}: clean, restored (1)", restore_faces(clean, 1.0, net)))
    truth = nchw(clean)
    for name, images in rows:
        x = nchw(images)
        psnr, ssim = masked_psnr(x, truth, mask).mean, masked_ssim(x, truth, mask).mean
        sharp = sharpness_ratio(x, truth, mask).mean
        print(f"  {name:<38} {psnr:8.2f} {ssim:7.4f} {sharp:19.3f}")


def real_swaps(args: argparse.Namespace, model: Path, weights: dict[str, str]) -> None:
    """Section 2: each setting's sharpness, identity distance and time on the frames, a table row
    each; with ``--grid``, their first frames' faces side by side."""
    import dataclasses

    from swaplab.faces.align import warp_face
    from swaplab.faces.analyze import FaceAnalyzer, FaceAnalyzerConfig
    from swaplab.identity.embed import embed_faces
    from swaplab.identity.registry import IDENTITY_ENCODERS
    from swaplab.io.video import VideoReader
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    root = data_root()
    frames = [f.image for i, f in enumerate(VideoReader(root / TARGET_CLIP, stop=args.frames * 10)) if i % 10 == 0]
    sources = [f.image for i, f in enumerate(VideoReader(root / SOURCE_CLIP, stop=100)) if i % 10 == 0]
    analyzer = FaceAnalyzer(dataclasses.replace(FaceAnalyzerConfig(), embed=False), template="whole_face", size=256)
    network = IDENTITY_ENCODERS.create("lfw-arcface")
    found = [(image, analyzer.analyze(image, embed=False)) for image in sources]
    source_faces = [(image, max(faces, key=lambda f: f.box.area)) for image, faces in found if faces]
    source = embed_faces([i for i, _ in source_faces], [f.landmarks5_source for _, f in source_faces], network).mean(0)
    source /= np.linalg.norm(source)
    print(
        f"\n2. real swaps: {model}, {len(frames)} frames of {TARGET_CLIP.name} (every 10th), source {SOURCE_CLIP.name}"
    )
    print("  identity: lfw-arcface (trained nothing here); sharpness inside the target's face hull at 256 px")
    print("  restore: strength, and one pass at the footprint or passes of at most that factor (restore_pass_scale)")
    print(f"  {'restore':<44} {'sharpness swap/target':>22} {'identity distance':>18} {'ms per face':>12}")
    video = {"which": "largest", "smoothing": "none"}
    # (label, restorer weights or None, the swapper): the model, then a perfect model at each size.
    settings: list[tuple[str, str | None, Callable[[], FaceSwapper]]] = [
        ("off", None, lambda: FaceSwapper(model, SwapConfig(**video)))
    ]
    for name, path in weights.items():
        for passes in args.pass_scales:
            for strength in (1.0, 0.5):
                config = SwapConfig(restore="on", restore_strength=strength, restore_pass_scale=passes, **video)
                make = functools.partial(FaceSwapper, model, config)
                settings.append((f"{name}: on ({strength:g}, {_passes(passes)})", path, make))
    first = next(iter(weights.values()), None)
    for size in args.ceiling:
        unrestored = functools.partial(pass_through_swapper, model, size, False, **video)
        settings.append((f"perfect {size} px model, off", None, unrestored))
        for passes in args.pass_scales if first is not None else ():
            make = functools.partial(pass_through_swapper, model, size, True, restore_pass_scale=passes, **video)
            settings.append((f"perfect {size} px model, on ({_passes(passes)})", first, make))
    shown: dict[str, np.ndarray] = {}  # label -> the first GRID_ROWS aligned faces, for --grid
    for label, path, make_swapper in settings:
        if path is not None:
            os.environ["SWAPLAB_FACE_RESTORER"] = path  # the swap stage loads the restorer from here
        swapper = make_swapper()
        swaps, targets, masks, distances, seconds = [], [], [], [], 0.0
        for frame in frames:
            faces = swapper.analyzer.analyze(frame, embed=False)
            if not faces:
                continue
            started = time.perf_counter()
            out, _ = swapper.swap_frame(frame, faces)
            seconds += time.perf_counter() - started
            target_face = analyzer.analyze(frame, embed=False)[0]
            swaps.append(warp_face(out, target_face.matrix, 256))
            targets.append(target_face.crop)
            masks.append(target_face.landmarks)
            swapped_faces = analyzer.analyze(out, embed=False)
            if swapped_faces:
                emb = embed_faces([out], [swapped_faces[0].landmarks5_source], network)[0]
                distances.append(1.0 - float(emb @ source / np.linalg.norm(emb)))
        shown.setdefault("target", np.stack(targets[:GRID_ROWS]))
        shown[label] = np.stack(swaps[:GRID_ROWS])
        mask = landmark_masks_torch(np.stack(masks).astype(np.float32), 256)
        sharp = sharpness_ratio(nchw(np.stack(swaps)), nchw(np.stack(targets)), mask).mean
        ms = 1000 * seconds / max(1, len(swaps))
        print(f"  {label:<44} {sharp:22.3f} {np.mean(distances):18.3f} {ms:12.1f}")
    target_emb = embed_faces([frames[0]], [analyzer.analyze(frames[0], embed=False)[0].landmarks5_source], network)[0]
    distance = 1 - float(target_emb @ source / np.linalg.norm(target_emb))
    print(f"  (the target itself: identity distance to the source {distance:.3f})")
    if args.grid:
        write_grid(Path(args.grid), shown, f"{model.name}: {TARGET_CLIP.name}, every 10th frame")


def write_grid(path: Path, shown: dict[str, np.ndarray], title: str, size: int = 192) -> None:
    """One column per setting (faces at ``size`` px), marked as synthetic like every output."""
    import cv2

    from swaplab.provenance import Provenance, write_marked_image
    from swaplab.train.preview import compose_grid

    rows = min(len(faces) for faces in shown.values())
    columns = [np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in faces[:rows]])
               for faces in shown.values()]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_marked_image(path, compose_grid(columns, tuple(shown), title=title), Provenance.create("bench-restore"))
    print(f"  grid: {path}")


def _passes(scale: float) -> str:
    return "one pass" if not scale else f"passes of {scale:g}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--model", help="an exported swap model (e.g. the demo's demo-output/model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weights", nargs="+", default=[], help="face-restorer weights files, LABEL=PATH or PATH (default: installed)"
    )
    parser.add_argument(
        "--ceiling", type=int, nargs="*", default=[64, 128, 256],
        help="output sizes of a perfect model to swap the frames with too (what a model of that size can reach)",
    )  # fmt: skip
    parser.add_argument(
        "--pass-scales", type=float, nargs="+", default=[0.0, 3.0],
        help="restore_pass_scale values to compare (0: one pass straight at the footprint)",
    )  # fmt: skip
    parser.add_argument("--grid", type=Path, default=None, help="write the real swaps' faces side by side here (PNG)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    data_root()
    threads = use_threads(args.threads)
    if args.smoke:
        from swaplab.train.built_networks import build_network

        os.environ["SWAPLAB_CACHE"] = tempfile.mkdtemp(prefix="bench-restore-")
        args.faces, args.frames, args.ceiling = 6, 3, [64]
        args.grid = Path(os.environ["SWAPLAB_CACHE"]) / "restore-swaps.png"
        args.weights = [f"test={build_network('face-restorer', 'test', progress=False)}"]
        args.model = str(_smoke_model(Path(os.environ["SWAPLAB_CACHE"])))
        from swaplab.train.recipes.identity_net import build_identity_network

        os.environ.pop("SWAPLAB_LFW_ARCFACE", None)
        build_identity_network("lfw-arcface", "test", progress=False)
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()} (other jobs share this machine: times are upper bounds)")
    weights = labelled_weights(args.weights)
    nets = {label: load_face_restorer(path) for label, path in weights.items()}
    for label, net in nets.items():
        print(f"restorer {label}: widths {net.config.widths}, {sum(p.numel() for p in net.parameters()):,} parameters")
    held_out(args, nets)
    if args.model:
        real_swaps(args, Path(args.model), weights)
    else:
        print("\n2. real swaps: skipped (give --model, e.g. the demo's demo-output/model)")
    print(f"\nthreads: {threads}; load average at end: {load_average()}")


def labelled_weights(given: list[str]) -> dict[str, str]:
    """``LABEL=PATH`` or ``PATH`` words -> {label: path}; none: the installed restorer."""
    from swaplab.models.installed import find_weights

    if not given:
        installed = find_weights("face-restorer")
        if installed is None:
            load_face_restorer()  # raises NetworkMissing, naming the build command
        return {"installed": str(installed)}
    weights = {}
    for word in given:
        label, _, path = word.partition("=") if "=" in word else ("", "", word)
        weights[label or Path(path).parent.name] = path
    return weights


def _smoke_model(root: Path) -> Path:
    """A liae-cpu model trained for 2 steps on faces of the two clips (smoke runs only)."""
    from swaplab.config import apply_overrides
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.per_pair import TrainConfig

    cfg = ExtractConfig(size=128, max_frames=16, every=2)
    cfg.faces.max_faces = 1
    for name, clip in (("src", SOURCE_CLIP), ("dst", TARGET_CLIP)):
        extract(data_root() / clip, root / name, cfg, progress=False)
    run = apply_overrides(
        TrainConfig(),
        ["model=liae-cpu", f"data.src={root / 'src'}", f"data.dst={root / 'dst'}", "trainer=test",
         "trainer.steps=2", "data.holdout=0",
         f"run_dir={root / 'run'}"],
    )  # fmt: skip
    train(run)
    export_model(root / "run", root / "model")
    return root / "model"


if __name__ == "__main__":
    main()
