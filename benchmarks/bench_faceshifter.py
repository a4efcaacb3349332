"""FaceShifter's throughput: AEI-Net training steps (G + D) in fp32 NCHW against bf16 autocast +
channels_last, and swaps per face (AEI-Net alone and with HEAR-Net).

One training step = the discriminator step (multi-scale PatchGAN on target and detached swap,
hinge, Adam) and the generator step (AEI forward, D on the swap, hinge + attribute loss (the
attribute encoder on the swap) + identity through the dlib port + same-identity L2, backward,
Adam), half the pairs same-identity: what ``swaplab.train.recipes.faceshifter`` runs. Printed
side by side per preset: seconds per step (best and median), images/s, the step's counted
GFLOPs (convolutions and matmuls, forward and backward) over the time, and that rate as a share
of this CPU's bf16 matmul peak measured in the same run. Then swaps per face at batch 8 in eval
mode (the target's own embedding for HEAR's error included). Random images: throughput does not
depend on content. Not a test: numbers vary with load.

    .venv/bin/python benchmarks/bench_faceshifter.py [--reps 2] [--threads N] [--presets PRESET:BATCH ...] [--smoke]

``--smoke``: ``faceshifter-tiny`` at batch 2, one timed step per mode: checks the script only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import AdversarialStep, count_flops, load_average, machine, matmul_peak_gflops, seconds, use_threads  # noqa: E402

from swaplab.config import config_group  # noqa: E402
from swaplab.losses.faceshifter import FaceShifterLossConfig, FaceShifterObjective  # noqa: E402
from swaplab.models.faceshifter import FaceShifter, create_discriminator  # noqa: E402
from swaplab.models.simswap import TemplateChipIdentity  # noqa: E402

DEFAULT_PRESETS = ("faceshifter-tiny:8", "faceshifter-128:8")
MODES = ("fp32 NCHW", "bf16 + channels_last")


class TrainStep(AdversarialStep):
    """AEI-Net, its discriminator, optimisers and one fixed batch; ``__call__`` runs one D and one G step."""

    def __init__(self, preset: str, batch: int, fast: bool, identity_net: torch.nn.Module) -> None:
        torch.manual_seed(0)
        config = config_group("model").create(preset)
        model, discriminator = FaceShifter(config), create_discriminator(config)
        self.prepare(model, discriminator, config.resolution, batch, fast, betas=(0.0, 0.999))
        identity = TemplateChipIdentity("whole_face", config.resolution, network=identity_net)
        self.objective = FaceShifterObjective(FaceShifterLossConfig(), identity)

    def __call__(self) -> None:
        with self.autocast():
            swap, z_att = self.generator.aei(self.target, self.identity)
            d_terms = self.objective.discriminator_loss(self.discriminator, self.target, swap.float())
        self.opt_d.zero_grad(set_to_none=True)
        d_terms.total.backward()
        self.opt_d.step()
        self.discriminator.requires_grad_(False)
        with self.autocast():
            g_terms = self.objective.generator_loss(
                swap.float(),
                self.target,
                self.identity,
                self.same,
                lambda: self.generator.attributes(swap),
                z_att,
                self.discriminator(swap),
            )
        self.opt_g.zero_grad(set_to_none=True)
        g_terms.total.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)


def swap_rate(preset: str, batch: int, fast: bool, hear: bool, identity_net: torch.nn.Module, reps: int) -> float:
    """Faces per second through ``FaceShifter`` in eval mode (HEAR: its error pass and the target's embedding)."""
    torch.manual_seed(0)
    config = dataclasses.replace(config_group("model").create(preset), with_hear=hear)
    memory = torch.channels_last if fast else torch.contiguous_format
    model = FaceShifter(config).eval().to(memory_format=memory)
    own = TemplateChipIdentity("whole_face", config.resolution, network=identity_net)
    target = torch.rand(batch, 3, config.resolution, config.resolution).contiguous(memory_format=memory)
    source = torch.randn(batch, 128)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if fast else nullcontext()

    def run() -> None:
        with torch.no_grad(), context:
            model(target, source, own(target) if hear else None)

    run()
    return batch / min(seconds(run) for _ in range(reps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="timed steps per preset and mode")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: 1 if the machine is busy)")
    parser.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS), help="preset:batch pairs")
    parser.add_argument("--smoke", action="store_true", help="faceshifter-tiny:2, 1 step: checks the script only")
    args = parser.parse_args()
    if args.smoke:
        args.reps, args.presets = 1, ["faceshifter-tiny:2"]
    load = os.getloadavg()[0]
    threads = use_threads(args.threads or (1 if load > 0.5 else 0))
    print(f"machine: {machine()}")
    print(f"load average {load_average()} at start; {threads} thread(s)")
    from swaplab.identity import load_dlib_identity

    identity_net = load_dlib_identity()
    size = 512 if args.smoke else 2048
    peak = matmul_peak_gflops(torch.bfloat16, size, reps=3 if args.smoke else 10)
    print(f"bf16 matmul peak ({size}^2, same threads): {peak:.0f} GFLOP/s\n")

    print(
        f"{'preset':<18}{'batch':>6}  {'mode':<22}{'s/step best':>12}{'median':>9}{'img/s':>8}"
        f"{'GFLOP/step':>12}{'GFLOP/s':>9}{'of bf16 peak':>14}"
    )
    for item in args.presets:
        preset, _, batch_text = item.partition(":")
        batch = int(batch_text or 8)
        steps = {mode: TrainStep(preset, batch, mode != MODES[0], identity_net) for mode in MODES}
        _, flops_by_op = count_flops(steps[MODES[0]])  # also the fp32 warm-up step
        flops = sum(flops_by_op.values())
        steps[MODES[1]]()  # warm-up
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.reps):  # interleaved, so both modes share the same load
            for mode, step in steps.items():
                times[mode].append(seconds(step))
        best = {mode: min(samples) for mode, samples in times.items()}
        for mode, samples in times.items():
            rate = flops / best[mode] / 1e9
            print(
                f"{preset:<18}{batch:>6}  {mode:<22}{best[mode]:>12.3f}{statistics.median(samples):>9.3f}"
                f"{batch / best[mode]:>8.2f}{flops / 1e9:>12.1f}{rate:>9.0f}{rate / peak:>14.1%}"
            )
        print(f"{'':<24}  speed-up of bf16 + channels_last: {best[MODES[0]] / best[MODES[1]]:.2f}x")
        del steps

    swap_batch = 2 if args.smoke else 8
    title = f"swap, faces/s (batch {swap_batch})"
    print(f"\n{title:<26}{'AEI fp32':>10}{'AEI bf16+cl':>13}{'+HEAR fp32':>12}{'+HEAR bf16+cl':>15}")
    for item in args.presets:
        preset = item.partition(":")[0]
        rates = [
            swap_rate(preset, swap_batch, fast, hear, identity_net, args.reps)
            for hear in (False, True)
            for fast in (False, True)
        ]
        print(f"{preset:<26}" + "".join(f"{r:>{w}.1f}" for r, w in zip(rates, (10, 13, 12, 15))))
    print(f"\nload average {load_average()} at the end")


if __name__ == "__main__":
    main()
