"""GL-GAN's throughput: training steps (G + D) and swaps per face, fp32 NCHW against bf16 autocast + channels_last.

1. One training step = the glgan recipe's phase-1 step: the discriminators' update (global
   multi-scale on the faces, local PatchGANs on the eye and mouth crops, hinge, the interpolate
   gradient penalty on the global one) and the generators' update (global U-Net, local
   generators, fusion network; global and local adversarial and feature-matching terms, identity
   through the dlib port, same-identity L1), each with Adam; half the pairs same-identity. Printed
   side by side per preset: seconds per step (best, median), images/s, the step's counted GFLOPs
   (convolutions and matmuls, forward and backward) over the time, and that rate as a share of
   this CPU's bf16 matmul peak measured in the same run.
2. Swap per face: the generator alone (eval mode, no gradients) at batch 1 and 8, milliseconds
   per face. The swap pipeline's other stages (detection, colour, blending) are
   ``bench_swap.py``'s and do not depend on the model.

Random images (throughput does not depend on content). Not a test: numbers vary with load.

    .venv/bin/python benchmarks/bench_glgan.py [--reps 3] [--threads N] [--presets glgan-tiny:8 glgan-128:4] [--smoke]

``--smoke``: ``glgan-tiny`` at batch 2, one timed repeat, a small matmul for the peak: checks the
script end to end (the numbers mean nothing). On a shared machine (load above 0.5) it runs on one
thread unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simswap import count_step_flops  # noqa: E402
from common import AdversarialStep, machine, matmul_peak_gflops, seconds  # noqa: E402

from swaplab.config import config_group  # noqa: E402
from swaplab.losses.adversarial import SimSwapObjective  # noqa: E402
from swaplab.losses.glgan import GLGANLossConfig, GLGANObjective  # noqa: E402
from swaplab.models.glgan import GLGANDiscriminator, GLGANGenerator  # noqa: E402
from swaplab.models.simswap import TemplateChipIdentity  # noqa: E402

DEFAULT_PRESETS = ("glgan-tiny:8", "glgan-128:4")
MODES = ("fp32 NCHW", "bf16 + channels_last")


class GLGANStep(AdversarialStep):
    """Models, optimisers and one fixed batch; ``__call__`` runs one D step and one G step."""

    def __init__(self, preset: str, batch: int, fast: bool, identity_net: torch.nn.Module) -> None:
        torch.manual_seed(0)
        config = config_group("model").create(preset)
        self.prepare(GLGANGenerator(config), GLGANDiscriminator(config), config.resolution, batch, fast)
        loss = GLGANLossConfig()
        identity = TemplateChipIdentity(config.template, config.resolution, network=identity_net)
        self.objective = GLGANObjective(loss, SimSwapObjective(loss, identity))

    def __call__(self) -> None:
        with self.autocast():
            fake = self.generator(self.target, self.identity)
            d_terms = self.objective.discriminator_loss(self.discriminator, self.target, fake.float())
        self.opt_d.zero_grad(set_to_none=True)
        d_terms.total.backward()
        self.opt_d.step()
        self.discriminator.requires_grad_(False)
        with self.autocast():
            g_terms = self.objective.generator_loss(self.discriminator, fake, self.target, self.identity, self.same)
        self.opt_g.zero_grad(set_to_none=True)
        g_terms.total.backward()
        self.discriminator.requires_grad_(True)
        self.opt_g.step()

    @torch.no_grad()
    def swapseconds(self, batch: int) -> float:
        """Seconds of one eval-mode generator call on ``batch`` faces."""
        self.generator.eval()
        faces, identity = self.target[:1].expand(batch, -1, -1, -1).contiguous(), self.identity[:1].expand(batch, -1)
        if self.fast:
            faces = faces.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            self.generator(faces, identity)  # warm-up
            took = seconds(lambda: self.generator(faces, identity))
        self.generator.train()
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed steps per preset and mode")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: 1 if the machine is busy)")
    parser.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS), help="preset:batch pairs")
    parser.add_argument("--smoke", action="store_true", help="glgan-tiny:2, 1 step: checks the script only")
    args = parser.parse_args()
    if args.smoke:
        args.reps, args.presets = 1, ["glgan-tiny:2"]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = args.threads or (1 if load > 0.5 else torch.get_num_threads())
    torch.set_num_threads(threads)
    print(f"machine: {machine()}")
    print(f"load average {load:.2f} at start; {threads} thread(s)")
    from swaplab.identity import load_dlib_identity

    identity_net = load_dlib_identity()
    size = 512 if args.smoke else 2048
    peak_bf16 = matmul_peak_gflops(torch.bfloat16, size, reps=5)
    print(f"matmul peak ({size}^2, same threads): bf16 {peak_bf16:.0f} GFLOP/s\n")

    print("1. training step (D + G), glgan recipe phase 1")
    header = f"{'preset':<13}{'batch':>6}  {'mode':<22}{'s/step best':>12}{'median':>9}{'img/s':>8}"
    header += f"{'GFLOP/step':>12}{'GFLOP/s':>9}{'of bf16 peak':>14}"
    print(header)
    swaps: list[str] = []
    for item in args.presets:
        preset, _, batch_text = item.partition(":")
        batch = int(batch_text or 8)
        steps = {mode: GLGANStep(preset, batch, mode != MODES[0], identity_net) for mode in MODES}
        flops = count_step_flops(steps[MODES[0]])  # also the fp32 warm-up step
        steps[MODES[1]]()  # warm-up
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.reps):  # interleaved, so both modes share the same load
            for mode, step in steps.items():
                times[mode].append(seconds(step))
        best = {}
        for mode, samples in times.items():
            best[mode] = min(samples)
            rate = flops / best[mode] / 1e9
            print(
                f"{preset:<13}{batch:>6}  {mode:<22}{best[mode]:>12.3f}{statistics.median(samples):>9.3f}"
                f"{batch / best[mode]:>8.2f}{flops / 1e9:>12.1f}{rate:>9.0f}{rate / peak_bf16:>14.1%}"
            )
        print(f"{'':<19}  speed-up of bf16 + channels_last: {best[MODES[0]] / best[MODES[1]]:.2f}x")
        for swap_batch in (1, 8):
            per_face = {
                mode: min(steps[mode].swapseconds(swap_batch) for _ in range(max(1, args.reps))) / swap_batch
                for mode in MODES
            }
            swaps.append(
                f"{preset:<13}{swap_batch:>6}  {per_face[MODES[0]] * 1e3:>12.1f}{per_face[MODES[1]] * 1e3:>14.1f}"
                f"{per_face[MODES[0]] / per_face[MODES[1]]:>10.2f}x"
            )
    print("\n2. swap per face (generator alone, eval, no gradients), ms per face")
    print(f"{'preset':<13}{'batch':>6}  {'fp32 NCHW':>12}{'bf16 + CL':>14}{'speed-up':>11}")
    for line in swaps:
        print(line)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
