"""Training-step throughput of the SimSwap-style swapper: fp32 NCHW against bf16 autocast + channels_last.

One step = SimSwap's generator step (G forward, D on the swap with gradients and on the target
without, adversarial hinge + identity through the dlib port + same-identity L1 + weak feature
matching, backward, Adam) and its discriminator step (D on target and swap, hinge, the
interpolate gradient penalty with its double backward, Adam); half the pairs same-identity.
Printed side by side per preset: seconds per step (best and median), images/s, the step's
counted GFLOPs (``FlopCounterMode``: convolutions and matmuls, forward and backward) divided by
the time, and that rate as a fraction of this CPU's bf16 matmul peak measured in the same run.
Presets: ``simswap-128`` at batch 8 and ``simswap-paper`` (224 px) at batch 2, plus
``simswap-tiny`` at batch 8 (the CPU study's model). Random images: throughput does not depend
on content. Not a test: numbers vary with load.

    .venv/bin/python benchmarks/bench_simswap.py [--reps 2] [--threads N] [--presets simswap-128:8 ...] [--smoke]

``--smoke``: ``simswap-tiny`` at batch 2, one timed step per mode, a small matmul for the peak: checks
the script end to end in seconds (the numbers mean nothing).

On a shared machine (load above 0.5) it runs on one thread unless told otherwise: two OpenMP
threads spinning against other processes run several times slower than one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import AdversarialStep, machine, matmul_peak_gflops, seconds  # noqa: E402

from swaplab.config import config_group  # noqa: E402
from swaplab.losses import SimSwapLossConfig, SimSwapObjective  # noqa: E402
from swaplab.models import TemplateChipIdentity, create_discriminator, create_model  # noqa: E402

DEFAULT_PRESETS = ("simswap-tiny:8", "simswap-128:8", "simswap-paper:2")


class SimSwapStep(AdversarialStep):
    """Models, optimisers and one fixed batch; ``__call__`` runs one G step and one D step."""

    def __init__(self, preset: str, batch: int, fast: bool, identity_net: torch.nn.Module) -> None:
        torch.manual_seed(0)
        config = config_group("model").create(preset)
        # SimSwap's Adam betas (0, 0.99) are the shared default.
        self.prepare(create_model(config), create_discriminator(config), config.resolution, batch, fast)
        identity = TemplateChipIdentity("whole_face", config.resolution, network=identity_net)
        self.objective = SimSwapObjective(SimSwapLossConfig(), identity)

    def __call__(self) -> None:
        with self.autocast():
            swapped = self.generator(self.target, self.identity)
            with torch.no_grad():
                real_output = self.discriminator(self.target)
            g_terms = self.objective.generator_loss(
                swapped, self.target, self.identity, self.same, self.discriminator(swapped), real_output
            )
        self.opt_g.zero_grad(set_to_none=True)
        g_terms.total.backward()
        self.opt_g.step()
        with self.autocast():
            d_terms = self.objective.discriminator_loss(self.discriminator, self.target, swapped)
        self.opt_d.zero_grad(set_to_none=True)
        d_terms.total.backward()
        self.opt_d.step()


class _GlobalOnly:
    """A stand-in for FlopCounterMode's module tracker, whose backward hooks break
    ``autograd.grad`` (the gradient penalty): count everything under "Global" only."""

    parents = ("Global",)

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def count_step_flops(step: SimSwapStep) -> int:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    with counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="timed steps per preset and mode")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: 1 if the machine is busy)")
    parser.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS), help="preset:batch pairs")
    parser.add_argument("--smoke", action="store_true", help="simswap-tiny:2, 1 step: checks the script only")
    args = parser.parse_args()
    if args.smoke:
        args.reps, args.presets = 1, ["simswap-tiny:2"]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = args.threads or (1 if load > 0.5 else torch.get_num_threads())
    torch.set_num_threads(threads)
    print(f"machine: {machine()}")
    print(
        f"load average {load:.2f} at start; {threads} thread(s)"
        + (" (the machine is shared: one thread avoids OpenMP spinning)" if threads == 1 and load > 0.5 else "")
    )
    from swaplab.identity import load_dlib_identity

    identity_net = load_dlib_identity()
    size = 512 if args.smoke else 2048
    peak_bf16, peak_fp32 = (
        matmul_peak_gflops(torch.bfloat16, size, reps=5),
        matmul_peak_gflops(torch.float32, size, reps=5),
    )
    print(f"matmul peak ({size}^2, same threads): bf16 {peak_bf16:.0f} GFLOP/s, fp32 {peak_fp32:.0f} GFLOP/s\n")

    header = f"{'preset':<15}{'batch':>6}  {'mode':<22}{'s/step best':>12}{'median':>9}{'img/s':>8}"
    header += f"{'GFLOP/step':>12}{'GFLOP/s':>9}{'of bf16 peak':>14}"
    print(header)
    for item in args.presets:
        preset, _, batch_text = item.partition(":")
        batch = int(batch_text or 8)
        steps = {
            "fp32 NCHW": SimSwapStep(preset, batch, fast=False, identity_net=identity_net),
            "bf16 + channels_last": SimSwapStep(preset, batch, fast=True, identity_net=identity_net),
        }
        flops = count_step_flops(steps["fp32 NCHW"])  # also the fp32 warm-up step
        steps["bf16 + channels_last"]()  # warm-up
        times: dict[str, list[float]] = {mode: [] for mode in steps}
        for _ in range(args.reps):  # interleaved, so both modes share the same load
            for mode, step in steps.items():
                times[mode].append(seconds(step))
        best = {}
        for mode, samples in times.items():
            best[mode] = min(samples)
            rate = flops / best[mode] / 1e9
            print(
                f"{preset:<15}{batch:>6}  {mode:<22}{best[mode]:>12.3f}{statistics.median(samples):>9.3f}"
                f"{batch / best[mode]:>8.2f}{flops / 1e9:>12.1f}{rate:>9.0f}{rate / peak_bf16:>14.1%}"
            )
        print(f"{'':<21}  speed-up of bf16 + channels_last: {best['fp32 NCHW'] / best['bf16 + channels_last']:.2f}x")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
