"""Shared helpers for the benchmarks: the machine they ran on and its load, the data they read, threads, the
matmul peak and FLOP counts their throughputs are compared with."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def machine() -> str:
    from swaplab.system import cpu_model, cpu_supports_bf16

    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs, bf16 {'yes' if cpu_supports_bf16() else 'no'}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {sys.version.split()[0]}"
    )


def data_root() -> Path:
    from swaplab.data.fetch import data_root as locate

    root = locate()
    if not (root / "lfw").is_dir():
        sys.exit(f"no sample data under {root}: set SWAPLAB_DATA or run `swaplab data fetch lfw`")
    return root


def use_threads(threads: int) -> int:
    """Set torch's intra-op threads (0: leave torch's choice) and return the number in use. On a machine
    shared with other jobs one thread is the steady setting (docs/benchmarks.md, "Threads")."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for a report: other jobs only ever slow the measured code."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min; {os.cpu_count()} logical CPUs)"


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, reps: int = 10) -> float:
    """This CPU's practical matmul peak in ``dtype``: GFLOP/s of the fastest of ``reps`` square matmuls of
    side ``size`` after one untimed (the fastest, since load from other processes only lowers it)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def count_flops(fn: Callable[[], object]) -> tuple[object, dict[str, int]]:
    """``fn()``'s result and its FLOPs per aten op (``aten.mm``, ``aten.convolution_backward`` ...), by the
    formulas of ``torch.utils.flop_counter`` (matmuls, convolutions, attention; elementwise ops count 0).

    ``FlopCounterMode`` itself tracks modules with autograd hooks, which fail on ``autograd.grad`` of a leaf
    (an R1 penalty's gradient with respect to the real images); this mode only counts."""
    from collections import defaultdict

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    counts: dict[str, int] = defaultdict(int)

    class Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                counts[str(func._overloadpacket)] += formula(*args, **kwargs, out_val=out)
            return out

    with Counting():
        result = fn()
    return result, dict(counts)


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class AdversarialStep:
    """What every one-shot family's training-step benchmark shares: a generator and a discriminator
    with Adam, in fp32 NCHW or (``fast``) bf16 autocast + channels-last, and one fixed random batch
    (targets in [0, 1], unit identity embeddings, every other pair the same person). Subclasses build
    the networks (after ``torch.manual_seed(0)``) and define ``__call__`` as one D and one G step."""

    def prepare(
        self,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        resolution: int,
        batch: int,
        fast: bool,
        betas: tuple[float, float] = (0.0, 0.99),
        identity_dim: int = 128,
    ) -> None:
        memory = torch.channels_last if fast else torch.contiguous_format
        self.generator = generator.to(memory_format=memory)
        self.discriminator = discriminator.to(memory_format=memory)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=4e-4, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=4e-4, betas=betas)
        self.target = torch.rand(batch, 3, resolution, resolution).contiguous(memory_format=memory)
        self.identity = torch.nn.functional.normalize(torch.randn(batch, identity_dim), dim=1)
        self.same = torch.arange(batch) % 2 == 0
        self.fast = fast

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.fast else contextlib.nullcontext()


def seam_band(mask, width: int = 3):
    """Pixels within ``width`` of the edge of ``mask >= 0.5``, either side (bool): where a paste's seam lies."""
    import cv2
    import numpy as np

    hard = (np.asarray(mask) >= 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(hard, kernel).astype(bool) & ~cv2.erode(hard, kernel).astype(bool)


def pair_model(work: Path, steps: int, photos: int = 48) -> Path:
    """A ``df-cpu`` trained ``steps`` steps on the first ``photos`` LFW photos of George_W_Bush and
    Colin_Powell (extracted into ``work``), exported to ``work/model``."""
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    lfw = data_root() / "lfw" / "lfw-deepfunneled"
    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1
    facesets = []
    for person in ("George_W_Bush", "Colin_Powell"):
        extract(sorted((lfw / person).glob("*.jpg"))[:photos], work / person, cfg, progress=False)
        facesets.append(work / person)
    overrides = ["model=df-cpu", f"data.src={facesets[0]}", f"data.dst={facesets[1]}", "trainer=test"]
    train(build_config([*overrides, f"trainer.steps={steps}", "trainer.precision=auto", f"run_dir={work / 'run'}"]))
    export_model(work / "run", work / "model")
    return work / "model"


def pass_through_swapper(model: Path, size: int, restore: bool, **options):
    """A ``FaceSwapper`` whose model returns the aligned target untouched, aligned at ``size`` px.

    What a perfect model with a ``size`` px output would swap: the sharpness such swaps reach is the
    ceiling of every model of that size (``model`` only lends its card: template and colour space).
    ``options``: more ``SwapConfig`` fields."""
    from swaplab.faces.analyze import FaceAnalyzer
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    class PassThrough(FaceSwapper):
        def render(self, faces, batch_size: int = 16):
            crops = np.stack([face.crop for face in faces])
            return crops, np.ones(crops.shape[:3], np.float32)

    swapper = PassThrough(model, SwapConfig(mask="hull", restore="on" if restore else "off", **options))
    swapper.resolution = size
    swapper.analyzer = FaceAnalyzer(swapper.config.faces, template=swapper.template, size=size)
    return swapper


def reconstructing_swapper(model: Path, side: str = "dst", **options):
    """A ``FaceSwapper`` that gives each face back through the model's own ``side`` path
    (``Swapper.reconstruct``) instead of swapping it: the model's reconstruction of the target,
    masked, recoloured and pasted exactly like its swaps. ``options``: ``SwapConfig`` fields."""
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    swapper = FaceSwapper(model, SwapConfig(precision="fp32", **options))
    path = swapper.model
    # The pipeline calls ``model.swap``; an instance attribute routes it to the reconstruction.
    path.swap = lambda targets, source=None, generator=None: path.reconstruct(targets, side)
    return swapper


def swap_targets(swapper, jobs, folder: Path) -> int:
    """Each job's target photo through ``swapper``, written as ``<pair id>.png``; returns how many had a face."""
    from swaplab.io.images import read_image
    from swaplab.provenance import write_marked_image

    folder.mkdir(parents=True, exist_ok=True)
    swapped = 0
    for job in jobs:
        frame, _ = read_image(job.target)
        image, count = swapper.swap_frame(frame, swapper.analyzer.analyze(frame))
        swapped += count > 0
        write_marked_image(folder / f"{job.pair.id}.png", image, swapper.provenance(job.pair.id))
    return swapped
