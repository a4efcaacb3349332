"""FSGAN's cost: time per face of each swap stage (each network beside its classical stand-in), the
whole swap's frames/s on the 512x512 HDTF clip, and the reenactment training step in fp32 NCHW
against bf16 autocast + channels_last.

- Stages, at batch 8 on random crops with the clip's real landmark layout (speed does not depend
  on the weights): reenact (net, one step and iterative; warp), segment (the face segmenter;
  hull), inpaint (net; none), blend (learned blender; Poisson; alpha). The segmenter and blender
  are freshly initialised networks of the built ones' shapes when none is built here.
- Whole swap: an FSGAN trained for a few steps on the clip's first frames, exported, swapping the
  clip (decode, track, align, the four stages, mask, colour, paste, mark, encode) with every
  network stage and with every classical one.
- Training: one step of what ``swaplab.train.recipes.fsgan`` runs (D step; reenactor with pixel,
  adversarial, mask and stepwise terms; inpainter on random holes), fp32 vs bf16 + channels_last.

    .venv/bin/python benchmarks/bench_fsgan.py [--preset fsgan-tiny] [--frames 100] [--reps 3] [--smoke]

``--smoke``: batch 2, 3 clip frames, one timed repetition: checks the script only. Numbers vary
with the machine's load (printed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, load_average, machine  # noqa: E402

from swaplab.config import config_group  # noqa: E402
from swaplab.losses.adversarial import AdversarialLoss  # noqa: E402
from swaplab.models.fsgan import FSGAN, FSGANSwapper, hull_masks, interpolated_landmarks  # noqa: E402
from swaplab.train.recipes.fsgan import random_holes  # noqa: E402

CLIP = Path("videos/hdtf_sadtalker/WDA_KatieHill_000.mp4")


def _best(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def clip_faces(work: Path, resolution: int, frames: int) -> Path:
    from swaplab.facesets.extract import ExtractConfig, extract

    faces = work / "faces"
    extract(data_root() / CLIP, faces, ExtractConfig(size=resolution, max_frames=frames), progress=False)
    return faces


def make_model(work: Path, faces: Path, preset: str) -> Path:
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    overrides = [f"model={preset}", "trainer=fsgan-test", f"data.train=[{faces}]", f"run_dir={work / 'run'}"]
    train(build_config(overrides))
    export_model(work / "run", work / "model")
    return work / "model"


def stand_in_built_networks(work: Path) -> None:
    """The face segmenter and learned blender the swap loads: the built ones when built here, else
    freshly initialised ones of the same shapes (their speed does not depend on their weights)."""
    import os

    from swaplab.models.installed import find_weights, save_built
    from swaplab.models.learned_blend import BLENDER_NAME, LearnedBlender, LearnedBlenderConfig
    from swaplab.models.segmentation import SEGMENTER_NAME, FaceSegmenter, FaceSegmenterConfig

    for name, module, config, env in (
        (SEGMENTER_NAME, FaceSegmenter, FaceSegmenterConfig(), "SWAPLAB_FACE_SEGMENTER"),
        (BLENDER_NAME, LearnedBlender, LearnedBlenderConfig(), "SWAPLAB_LEARNED_BLENDER"),
    ):
        if find_weights(name) is None:
            os.environ[env] = str(save_built(name, module(config), config, work / f"{name}.safetensors"))
            print(f"{name}: not built here, timing an untrained one of the same shape")


def stage_times(preset: str, faces: Path, batch: int, reps: int) -> dict[str, float]:
    """Milliseconds per face of each stage implementation."""
    from swaplab.facesets.format import Faceset

    config = config_group("model").create(preset)
    swapper = FSGANSwapper(FSGAN(config).eval(), {"resolution": config.resolution, "arch": "fsgan"})
    faceset = Faceset(faces)
    scale = config.resolution / faceset.header.size
    points = [faceset.landmarks(i) * scale for i in range(len(faceset))]
    target_points = torch.from_numpy(np.stack([points[(k + 1) % len(points)] for k in range(batch)])).float()
    source_points = torch.from_numpy(np.stack([points[0]] * batch)).float()
    size = config.resolution
    source, targets = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
    region = hull_masks(target_points, size)
    face, face_mask = swapper.model.reenact(source, source_points, target_points)
    cases: dict[str, tuple[str, str, Callable[[], object]]] = {
        "reenact net (1 step)": ("iterative", "off", lambda: swapper.reenact(source, source_points, target_points)),
        f"reenact net ({config.iterations} steps)": (
            "iterative",
            "on",
            lambda: swapper.reenact(source, source_points, target_points),
        ),
        "reenact warp": ("reenact", "warp", lambda: swapper.reenact(source, source_points, target_points)),
        "segment net": ("segment", "net", lambda: swapper.segment(targets, target_points)),
        "segment hull": ("segment", "hull", lambda: swapper.segment(targets, target_points)),
        "inpaint net": ("inpaint", "net", lambda: swapper.inpaint(face, face_mask, region)),
        "inpaint none": ("inpaint", "none", lambda: swapper.inpaint(face, face_mask, region)),
        "blend learned": ("blend", "learned", lambda: swapper.blend(targets, face, region)),
        "blend poisson": ("blend", "poisson", lambda: swapper.blend(targets, face, region)),
        "blend alpha": ("blend", "alpha", lambda: swapper.blend(targets, face, region)),
    }
    out = {}
    with torch.inference_mode():
        for name, (option, value, fn) in cases.items():
            swapper.configure(**{"reenact": "net", option: value})
            out[name] = 1000 * _best(fn, reps) / batch
    return out


class TrainStep:
    """The recipe's step on a fixed random batch (no perceptual term: its dlib network is the same
    in both modes and is measured by bench_losses-style benchmarks elsewhere)."""

    def __init__(self, preset: str, batch: int, fast: bool, points: torch.Tensor) -> None:
        torch.manual_seed(0)
        config = config_group("model").create(preset)
        memory = torch.channels_last if fast else torch.contiguous_format
        self.model = FSGAN(config).to(memory_format=memory)
        self.discriminator = config.discriminator.build(config.discriminator_part, config.resolution).to(
            memory_format=memory
        )
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        size = config.resolution
        self.source = torch.rand(batch, 3, size, size).contiguous(memory_format=memory)
        self.target = torch.rand(batch, 3, size, size).contiguous(memory_format=memory)
        self.source_points, self.target_points = points[:batch], points[1 : batch + 1]
        self.hull = hull_masks(self.target_points, size)
        self.holes = random_holes(self.target_points, size, 0, 0.12, 0.3)
        self.adversarial = AdversarialLoss("hinge")
        self.fast = fast

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.fast else nullcontext()

    def __call__(self) -> None:
        model, target = self.model, self.target
        with self.autocast():
            steps = model.reenact_steps(self.source, self.source_points, self.target_points)
            fake, mask = steps[-1]
            d_loss = self.adversarial.discriminator_loss(self.discriminator(target), self.discriminator(fake.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        self.discriminator.requires_grad_(False)
        with self.autocast():
            adv = self.adversarial.generator_loss(self.discriminator(fake))
            heatmaps = model.heatmaps(self.target_points)
            walk = interpolated_landmarks(self.source_points, self.target_points, len(steps))
            jumps = [model.reenactor(f, model.heatmaps(p), heatmaps)[0] for (f, _), p in zip(steps[:-1], walk[:-1])]
            filled = model.inpainter(target, self.holes)
        loss = (fake.float() - target).abs().mean() + 0.05 * adv
        loss = loss + 0.1 * torch.nn.functional.binary_cross_entropy(mask.float().clamp(1e-4, 1 - 1e-4), self.hull)
        for jump in jumps:
            loss = loss + 0.5 * (jump.float() - target).abs().mean() / len(jumps)
        loss = loss + ((filled.float() - target).abs() * self.holes).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="fsgan-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=100, help="clip frames for the whole-swap rate")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script only")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.frames, args.reps = 2, 3, 1
    print(f"machine: {machine()}; load average {load_average()}; {torch.get_num_threads()} threads")
    config = config_group("model").create(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stand_in_built_networks(work)
        faces = clip_faces(work, config.resolution, max(args.batch + 2, 6 if args.smoke else 16))

        print(f"\nstage time per face ({args.preset}, {config.resolution} px, batch {args.batch}):")
        for name, ms in stage_times(args.preset, faces, args.batch, args.reps).items():
            print(f"  {name:28s} {ms:8.2f} ms")

        from swaplab.facesets.format import Faceset

        faceset = Faceset(faces)
        scale = config.resolution / faceset.header.size
        points = torch.from_numpy(
            np.stack([faceset.landmarks(i % len(faceset)) * scale for i in range(args.batch + 1)])
        ).float()
        print(f"\nreenactment training step ({args.preset}, batch {args.batch}, iterations {config.steps}):")
        rates = {}
        for fast in (False, True):
            step = TrainStep(args.preset, args.batch, fast, points)
            seconds = [_best(step, 1) for _ in range(args.reps)]
            rates[fast] = args.batch / min(seconds)
            mode = "bf16 + channels_last" if fast else "fp32 NCHW"
            best, median = min(seconds), statistics.median(seconds)
            print(f"  {mode:22s} {best:.3f} s/step (median {median:.3f}), {rates[fast]:.1f} images/s")
        print(f"  bf16 + channels_last / fp32: {rates[True] / rates[False]:.2f}x")

        from swaplab.io.images import write_image
        from swaplab.swap.pipeline import SwapConfig, swap

        model = make_model(work, faces, args.preset)
        photo = work / "source.png"
        write_image(photo, faceset.image(0))
        print(f"\nwhole swap of {args.frames} frames of the 512x512 clip (source: the clip's first face):")
        for label, options in (
            ("networks (reenact, segment, inpaint, learned blend)", {}),
            (
                "classical (warp, hull, none, poisson)",
                dict(reenact="warp", segment="hull", inpaint="none", blend="poisson"),
            ),
        ):
            cfg = SwapConfig(source=[photo], max_frames=args.frames, overwrite=True, options=options, mask="learned")
            report = swap(model, data_root() / CLIP, work / "out.mp4", cfg, progress=False)
            stages = ", ".join(f"{k} {1000 * v / report.frames:.1f}" for k, v in report.stage_seconds.items() if v)
            print(f"  {label}: {report.fps:.2f} frames/s; ms per frame: {stages}")


if __name__ == "__main__":
    main()
