"""FLOPs, parameters and training-step speed of the per-pair model presets on this machine.

Prints, side by side: forward GFLOPs per face and parameter counts of every ``model`` preset;
the training step (batch 16 per identity: forward of src and dst, DeepFaceLab's losses,
backward, Adam) of liae-ud at 128 px with DeepFaceLab's dims in fp32 NCHW eager and in bf16
autocast + channels_last, with faces/s and the fraction of this CPU's measured bf16 matmul peak;
the same for the CPU presets; and our DSSIM against kornia's. Not a test: numbers vary with load.

    .venv/bin/python benchmarks/bench_model_flops.py [--reps 3] [--reps-cpu 8] [--skip-dfl-step] [--smoke]

``--smoke``: the CPU presets only, one timed step at batch 2, to check the script end to end in
seconds (the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import kornia
import torch
from torch.utils.flop_counter import FlopCounterMode

from swaplab.config import config_group
from swaplab.losses import DSSIMLoss, LossConfig, ReconstructionObjective
from swaplab.models import ModelConfig, create_model, model_preset


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load:.2f}"
    )


def timed(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, tuple[float, float]]:
    """(best, median) wall time of each function, run interleaved so they share the same load.

    On a machine shared with other jobs the best run is the closest to the code's own speed;
    the median shows what the load costs.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 8) -> float:
    """GFLOP/s of the best of ``reps`` square matmuls in ``dtype`` (this CPU's practical peak)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    best, _ = timed({"matmul": lambda: a @ b}, reps)["matmul"]
    return 2 * size**3 / best / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def forward_flops_per_face(name: str) -> tuple[float, float]:
    """(GFLOPs of one face's swap forward, millions of parameters)."""
    model = create_model(model_preset(name)).eval()
    size = model.resolution
    with torch.no_grad():
        flops = count_flops(lambda: model.swap(torch.rand(1, 3, size, size)))
    return flops / 1e9, sum(p.numel() for p in model.parameters()) / 1e6


def training_step(name: str, batch: int, fast: bool) -> tuple[Callable[[], None], int]:
    """A closure running one training step, and its FLOPs (forward + backward, counted once)."""
    torch.manual_seed(0)
    cfg = model_preset(name)
    model = create_model(cfg)
    memory = torch.channels_last if fast else torch.contiguous_format
    model = model.to(memory_format=memory)
    objective = ReconstructionObjective(LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)
    size = cfg.resolution
    src = torch.rand(batch, 3, size, size).contiguous(memory_format=memory)
    dst = torch.rand(batch, 3, size, size).contiguous(memory_format=memory)
    mask = torch.zeros(batch, 1, size, size)
    mask[..., size // 8 : -size // 8, size // 6 : -size // 6] = 1.0
    targets = {"target": src, "mask": mask}, {"target": dst, "mask": mask}

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            out = model(src, dst)
        terms = objective.pair((out.src_rgb, out.src_mask), (out.dst_rgb, out.dst_mask), *targets)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    flops = count_flops(step)  # also the warm-up step
    return step, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed steps of the 128 px model")
    parser.add_argument("--reps-cpu", type=int, default=8, help="timed steps of the (cheap) CPU presets")
    parser.add_argument("--batch", type=int, default=16, help="faces per identity per step")
    parser.add_argument("--skip-dfl-step", action="store_true", help="skip the 128 px liae-ud step timing")
    parser.add_argument("--smoke", action="store_true", help="CPU presets, 1 step at batch 2: checks the script only")
    args = parser.parse_args()
    if args.smoke:
        args.reps, args.reps_cpu, args.batch, args.skip_dfl_step = 1, 1, 2, True
    print(f"machine: {machine()}\n")

    bf16_peak, fp32_peak = matmul_peak(torch.bfloat16), matmul_peak(torch.float32)
    print(f"matmul 2048^3: bf16 {bf16_peak:.0f} GFLOP/s, fp32 {fp32_peak:.0f} GFLOP/s\n")

    print(f"{'preset':<10} {'res':>4} {'params (M)':>10} {'fwd GFLOP/face':>15}")
    # Per-pair presets only: the one-shot (SimSwap) presets have their own benchmark.
    per_pair = [name for name in config_group("model").names() if isinstance(model_preset(name), ModelConfig)]
    if args.smoke:
        per_pair = [name for name in per_pair if name.endswith("-cpu")]
    for name in per_pair:
        gflops, params = forward_flops_per_face(name)
        print(f"{name:<10} {model_preset(name).resolution:>4} {params:>10.1f} {gflops:>15.2f}")

    print(
        f"\ntraining step, batch {args.batch} per identity ({2 * args.batch} faces: forward src+dst, "
        f"DFL losses, backward, Adam); best (median) of {args.reps_cpu} (CPU presets) or {args.reps}; "
        "faces/s and peak use the best:"
    )
    header = f"{'preset':<10} {'mode':<22} {'s/step':>15} {'faces/s':>8} {'GFLOP/step':>11} {'of bf16 peak':>13}"
    print(header)
    names = ["df-cpu", "liae-cpu"] + ([] if args.skip_dfl_step else ["liae-ud"])
    modes = {"fp32 NCHW eager": False, "bf16 + channels_last": True}
    rows = []
    for name in names:
        steps, flops = {}, 0
        for mode, fast in modes.items():
            steps[mode], flops = training_step(name, args.batch, fast)
        reps = args.reps_cpu if name.endswith("-cpu") else args.reps
        rows.append((name, flops, timed(steps, reps, warmup=0)))
    # The peak again after the steps: under a shared load, the better of the two is the truer one.
    bf16_peak = max(bf16_peak, matmul_peak(torch.bfloat16))
    for name, flops, results in rows:
        for mode, (best, median) in results.items():
            print(
                f"{name:<10} {mode:<22} {best:>6.3f} ({median:>6.3f}) {2 * args.batch / best:>8.1f} "
                f"{flops / 1e9:>11.1f} {flops / best / 1e9 / bf16_peak:>12.1%}"
            )
        speedup = results["fp32 NCHW eager"][0] / results["bf16 + channels_last"][0]
        print(f"{name:<10} {'bf16+CL speed-up':<22} {speedup:>6.2f}x")
    print(f"(bf16 peak used: {bf16_peak:.0f} GFLOP/s, the best of the runs before and after the steps)")

    # DSSIM (forward + backward) at 128 px, batch 16: ours (separable, channels_last) vs kornia.
    pred = torch.rand(16, 3, 128, 128, requires_grad=True)
    target = torch.rand(16, 3, 128, 128)
    ours = DSSIMLoss(window_sizes=[11])
    results = timed(
        {
            "ours": lambda: ours(pred, target).backward(),
            "kornia": lambda: kornia.losses.ssim_loss(pred, target, 11).backward(),
        },
        args.reps + 2,
    )
    ours_s, kornia_s = results["ours"][0], results["kornia"][0]
    print(
        f"\nDSSIM fwd+bwd, 16x3x128x128, window 11: swaplab {ours_s * 1e3:.0f} ms, "
        f"kornia {kornia_s * 1e3:.0f} ms ({kornia_s / ours_s:.2f}x, best of {args.reps + 2})"
    )


if __name__ == "__main__":
    main()
