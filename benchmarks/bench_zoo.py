"""Training throughput of the generative-model zoo: fp32 NCHW against bf16 autocast + channels_last, side by side.

What it measures, in one process (3. is a column of table 1):

1. Every zoo family's representative preset on digits (8 px) and every faces preset (32 px): images/s
   of real training steps in fp32 NCHW and in bf16 autocast + channels_last, and their ratio. Each preset's two
   training loops (``swaplab.train.loop.TrainingLoop`` with the recipe's own trainer preset, ``zoo``, or
   ``zoo-stylegan`` for StyleGAN: batch 64 either way, only ``trainer.precision`` and ``trainer.channels_last``
   differ) are built in temporary run folders, warmed up, then stepped in turn, one step of each (which goes
   first alternates), so both see the same load. A step is what ``TrainingLoop.run`` does per step: the
   learning rate on every optimiser, the recipe's ``train_step`` (data, forward, losses, backward, every
   optimiser's update), and the metrics row every ``trainer.log_every`` steps. images/s = the recipe's
   ``samples_per_step`` (64 real images a step; CycleGAN: 64 per domain) x timed steps / their summed time;
   "best" uses the fastest step instead.
2. StyleGAN against its light (MobileStyleGAN-style, depthwise-separable) variant: parameters, convolution
   multiply-adds per image, and forward ms per batch of 32 in fp32 and bf16 (``forward_cost``).
3. Folded into table 1: each throughput as a share of this CPU's matmul peak in that precision (measured in
   the same run), from the training step's FLOPs per image counted by ``torch.utils.flop_counter``'s formulas
   (``common.count_flops``: FlopCounterMode's numbers without its module tracker, which R1 breaks) over real
   steps: matmuls and convolutions, forward + backward + any extra pass the step takes (R1's double
   backward, ISTA's iterations, the Jacobian penalties); elementwise work counts 0.

    OMP_NUM_THREADS=1 python benchmarks/bench_zoo.py --threads 1          # every preset (5-10 min, 2 vCPUs)
    python benchmarks/bench_zoo.py --models vae-digits,stylegan-faces --steps 8
    python benchmarks/bench_zoo.py --smoke                                # seconds: checks the script only

Data: the bundled 8 px digits (``data=digits``); the faces presets get the same digits upscaled (cubic) to
32 px and repeated to RGB, which the data config does for any 3-channel 32 px model when no faceset is named:
the tensor shapes, hence the work per step, are those of ``data=faces32``, and no faces are extracted.
Conditional presets with fewer classes than the ten digits are given ``model.num_classes=10``.
Stacked autoencoders are timed in their end-to-end fine-tuning stage (the loop starts at that step); the
greedy stages before it train one layer at a time and cost less. StyleGAN's lazy R1 penalty runs every
``r1_every`` (4) steps: its FLOPs are counted over one such cycle and its timed steps are a whole number of
cycles. ``--smoke``: two digit presets at batch 8, 1 warm-up and 2 timed steps, the digit StyleGANs'
forward at batch 4, small matmuls for the peak (the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import count_flops, load_average, machine, matmul_peak_gflops, use_threads  # noqa: E402

#: One preset per family on digits (and StyleGAN's light variant), then every 32 px faces preset.
PRESETS = (
    "ae-digits",
    "sparse-ae-digits",
    "denoising-ae-digits",
    "contractive-ae-digits",
    "stacked-ae-digits",
    "sparse-coding-digits",
    "vae-digits",
    "gan-digits",
    "cgan-digits",
    "dcgan-digits",
    "stylegan-digits",
    "stylegan-light-digits",
    "cyclegan-digits",
    "ae-faces",
    "sparse-ae-faces",
    "denoising-ae-faces",
    "contractive-ae-faces",
    "stacked-ae-faces",
    "sparse-coding-faces",
    "vae-faces",
    "cgan-faces32",
    "dcgan-faces32",
    "stylegan-faces",
    "stylegan-light-faces",
    "cyclegan-faces",
)
SMOKE_PRESETS = ("ae-digits", "dcgan-digits")
STYLEGAN_PAIRS = (("stylegan-digits", "stylegan-light-digits"), ("stylegan-faces", "stylegan-light-faces"))

#: The two columns: only these trainer fields differ between them.
SETTINGS = {
    "fp32": ["trainer.precision=fp32", "trainer.channels_last=false"],
    "bf16": ["trainer.precision=bf16", "trainer.channels_last=true"],
}
DIGIT_CLASSES = 10


@dataclass
class Measured:
    """One preset's two columns."""

    preset: str
    recipe: str = ""
    params: int = 0
    flops_per_image: float = 0.0
    images_per_step: int = 0
    seconds: dict[str, list[float]] = field(default_factory=dict)  # setting -> timed step times
    notes: list[str] = field(default_factory=list)
    load: float = 0.0  # 1-minute load average when the preset finished

    def rate(self, setting: str, best: bool = False) -> float:
        times = self.seconds[setting]
        return self.images_per_step / min(times) if best else self.images_per_step * len(times) / sum(times)


# ---------------------------------------------------------------- training loops


def model_preset(name: str) -> Any:
    """The ``model`` preset ``name`` (importing the recipe modules registers every preset)."""
    import swaplab.train.recipe  # noqa: F401
    from swaplab.config import config_group

    return config_group("model").create(name)


def run_overrides(preset: str, batch: int) -> tuple[list[str], list[str]]:
    """The overrides every setting of ``preset`` shares, and notes on what differs from the preset's own run."""
    overrides = [f"model={preset}", "data=digits", "trainer.progress=false", "trainer.preview_every=0"]
    overrides += ["trainer.checkpoint_every=0"]
    notes = []
    model = model_preset(preset)
    if model.channels == 3:
        notes.append(f"digits upscaled to {model.resolution} px RGB")
    if 0 < getattr(model, "num_classes", 0) < DIGIT_CLASSES:
        overrides.append(f"model.num_classes={DIGIT_CLASSES}")
        notes.append(f"num_classes {model.num_classes} -> {DIGIT_CLASSES}")
    if batch:
        overrides.append(f"trainer.batch_size={batch}")
    return overrides, notes


def first_step(cfg: Any) -> int:
    """Where timing starts: 0, or for a stacked autoencoder the first step of its end-to-end fine-tuning."""
    model = cfg.model
    if hasattr(model, "stage") and hasattr(model, "hidden"):
        return model.layer_steps * len(model.hidden)
    return 0


def step_cycle(cfg: Any) -> int:
    """Steps after which the step's work repeats: StyleGAN's lazy R1 every ``r1_every`` steps, else 1."""
    return getattr(cfg, "r1_every", 1)


def build_loop(overrides: list[str], run_dir: Path) -> Any:
    from swaplab.train.entry import build_config
    from swaplab.train.loop import TrainingLoop
    from swaplab.train.recipe import recipe_for_config
    from swaplab.train.session import Distributed

    cfg = build_config([*overrides, f"run_dir={run_dir}"])
    loop = TrainingLoop(recipe_for_config(cfg), cfg, Distributed(), torch.device("cpu"))
    loop.step = first_step(cfg)
    loop.module.train()
    return loop


def take_step(loop: Any) -> None:
    """One step as ``TrainingLoop.run`` takes it: the schedule's LR on every optimiser, the recipe's step,
    the metrics row (metrics.jsonl + TensorBoard) every ``log_every`` steps."""
    from swaplab.train.session import learning_rate, set_learning_rate

    lr = learning_rate(loop.step, loop.tcfg, loop.lr_scale)
    for name, optimizer in loop.optimizers.items():
        set_learning_rate(optimizer, lr, loop.lr_scales[name])
    outcome = loop.recipe.train_step(loop.step)
    loop.step += 1
    if loop.step % loop.tcfg.log_every == 0:
        loop._log(outcome.values, 0.0, not outcome.applied, 0.0)


def close_loop(loop: Any) -> None:
    if loop.tb is not None:
        loop.tb.close()
    loop.lock.close()


def measure(preset: str, args: argparse.Namespace) -> Measured:
    """Build both loops of ``preset``, count the FLOPs of a cycle of fp32 steps, warm up, time in turn."""
    shared, notes = run_overrides(preset, args.batch)
    result = Measured(preset, notes=notes)
    with tempfile.TemporaryDirectory(prefix="bench-zoo-") as tmp, contextlib.ExitStack() as stack:
        loops = {}
        for setting, overrides in SETTINGS.items():
            loops[setting] = build_loop([*shared, *overrides], Path(tmp) / setting)
            stack.callback(close_loop, loops[setting])
        reference = loops["fp32"]
        cfg, recipe = reference.cfg, reference.recipe
        result.recipe = recipe.name
        result.params = sum(p.numel() for p in reference.module.parameters())
        result.images_per_step = recipe.samples_per_step
        cycle = step_cycle(cfg)
        if first_step(cfg):
            result.notes.append(f"timed from step {first_step(cfg)} (fine-tuning)")

        # FLOPs of one cycle of real steps (also the first warm-up); the bf16 loop takes the same steps.
        _, flops = count_flops(lambda: [take_step(reference) for _ in range(cycle)])
        for _ in range(cycle):
            take_step(loops["bf16"])
        result.flops_per_image = sum(flops.values()) / (cycle * result.images_per_step)

        for _ in range(args.warmup):
            for loop in loops.values():
                take_step(loop)
        timed = math.ceil(args.steps / cycle) * cycle
        result.seconds = {setting: [] for setting in loops}
        for index in range(timed):
            # Each setting goes first every other step, so neither always follows the other's step.
            order = list(loops.items()) if index % 2 == 0 else list(loops.items())[::-1]
            for setting, loop in order:
                start = time.perf_counter()
                take_step(loop)
                result.seconds[setting].append(time.perf_counter() - start)
    result.load = os.getloadavg()[0]
    gc.collect()  # the two loops' models and optimiser states, before the next preset's
    return result


# ---------------------------------------------------------------- StyleGAN full against light


def conv_macs_per_image(config: Any) -> tuple[float, float]:
    """(convolution multiply-adds, all counted multiply-adds) of one image's generator forward, counted on a
    batch of one by ``torch.utils.flop_counter``'s formulas (2 FLOPs per multiply-add)."""
    from swaplab.models.zoo.stylegan import StyleGANGenerator

    torch.manual_seed(0)
    model = StyleGANGenerator(config).eval()
    with torch.no_grad():
        _, flops = count_flops(lambda: model(torch.randn(1, config.latent)))
    conv = sum(count for op, count in flops.items() if "convolution" in op)
    return conv / 2, sum(flops.values()) / 2


def stylegan_table(pairs: tuple[tuple[str, str], ...], batch: int, repeats: int) -> None:
    from swaplab.models.zoo.stylegan import forward_cost

    print(f"\n2. StyleGAN full against light (depthwise-separable): generator forward, batch {batch}, median of "
          f"{repeats} after 1 warm-up (swaplab.models.zoo.stylegan.forward_cost);")  # fmt: skip
    print("   multiply-adds per image by torch.utils.flop_counter's formulas on a batch of one")
    print(f"{'preset':22s} {'params':>9s} {'conv MMAC/img':>13s} {'all MMAC/img':>12s} {'fp32 ms':>8s} "
          f"{'bf16 ms':>8s} {'bf16 speed-up':>13s}")  # fmt: skip
    rows = {}
    for pair in pairs:
        for name in pair:
            config = model_preset(name)
            cost = forward_cost(config, batch=batch, repeats=repeats, device="cpu")
            conv, total = conv_macs_per_image(config)
            rows[name] = {**cost, "conv": conv, "total": total}
            r = rows[name]
            print(f"{name:22s} {r['parameters'] / 1e3:8.1f}k {conv / 1e6:13.2f} {total / 1e6:12.2f} "
                  f"{r['fp32_ms']:8.1f} {r['bf16_ms']:8.1f} {r['fp32_ms'] / r['bf16_ms']:12.2f}x")  # fmt: skip
    print("light / full:")
    for full, light in pairs:
        a, b = rows[full], rows[light]
        print(f"  {light} / {full}: params {b['parameters'] / a['parameters']:.2f}x, "
              f"conv MACs {b['conv'] / a['conv']:.2f}x, fp32 time {b['fp32_ms'] / a['fp32_ms']:.2f}x, "
              f"bf16 time {b['bf16_ms'] / a['bf16_ms']:.2f}x")  # fmt: skip


# ---------------------------------------------------------------- report


def training_table(results: list[Measured], peaks: dict[str, float]) -> None:
    print("\n1. training throughput, images/s (mean over the timed steps; 'best': fastest step), "
          "and share of the matmul peak of that precision")  # fmt: skip
    header = (
        f"{'preset':22s} {'recipe':23s} {'params':>8s} {'MFLOP/img':>9s} {'fp32 NCHW':>9s} {'bf16 + CL':>9s} "
        f"{'ratio':>6s} {'best':>6s} {'fp32 %pk':>8s} {'bf16 %pk':>8s} {'load':>5s}  notes"
    )
    print(header)
    for r in results:
        fp32, bf16 = r.rate("fp32"), r.rate("bf16")
        share = {s: r.flops_per_image * r.rate(s) / (peaks[s] * 1e9) for s in SETTINGS}
        best = r.rate("bf16", best=True) / r.rate("fp32", best=True)
        print(
            f"{r.preset:22s} {r.recipe:23s} {r.params / 1e6:7.2f}M {r.flops_per_image / 1e6:9.1f} {fp32:9.0f} "
            f"{bf16:9.0f} {bf16 / fp32:5.2f}x {best:5.2f}x {100 * share['fp32']:7.2f}% {100 * share['bf16']:7.2f}% "
            f"{r.load:5.2f}  {'; '.join(r.notes)}".rstrip()
        )
    print("ratio: bf16 + channels_last images/s over fp32 NCHW (mean step times); best: the same from the fastest")
    print("step of each. MFLOP/img: torch.utils.flop_counter's count (matmuls and convolutions, forward + backward)")
    print("of real training steps per image; %pk: MFLOP/img x images/s over the matmul peak of that precision.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated presets (default: the table's list)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per setting (after the counted ones)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's choice)")
    parser.add_argument("--batch", type=int, default=0, help="override trainer.batch_size (0: the preset's, 64)")
    parser.add_argument("--forward-batch", type=int, default=32, help="StyleGAN forward table batch")
    parser.add_argument("--forward-repeats", type=int, default=15, help="timed forwards per precision")
    parser.add_argument("--no-stylegan", action="store_true", help="skip the StyleGAN full/light table")
    parser.add_argument("--smoke", action="store_true", help="two presets, batch 8, 2 steps: checks the script only")
    args = parser.parse_args()
    presets = [m for m in args.models.split(",") if m] or list(PRESETS)
    pairs, peak_size, peak_reps = STYLEGAN_PAIRS, 2048, 10
    if args.smoke:
        presets = [m for m in args.models.split(",") if m] or list(SMOKE_PRESETS)
        args.warmup, args.steps, args.batch = 1, 2, args.batch or 8
        args.forward_batch, args.forward_repeats = 4, 1
        pairs, peak_size, peak_reps = STYLEGAN_PAIRS[:1], 512, 2

    threads = use_threads(args.threads)
    started = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}; intra-op threads {threads}")
    print(f"load average at start: {load_average()}")
    peaks = {"bf16": matmul_peak_gflops(torch.bfloat16, peak_size, peak_reps)}
    peaks["fp32"] = matmul_peak_gflops(torch.float32, peak_size, peak_reps)
    print(f"matmul peak ({peak_size}^2, best of {peak_reps}): bf16 {peaks['bf16']:.0f} GFLOP/s, "
          f"fp32 {peaks['fp32']:.0f} GFLOP/s")  # fmt: skip
    batch = f"batch {args.batch} (smoke)" if args.batch else "batch 64"
    print(f"trainer: each recipe's preset (zoo; zoo-stylegan for StyleGAN), {batch}; columns differ only in")
    print("  trainer.precision=fp32, channels_last=false  against  trainer.precision=bf16, channels_last=true")
    print("data: digits (8 px grey); faces presets get digits upscaled to 32 px RGB (the shapes of data=faces32,")
    print("  so the same work per step; no faces extracted)")
    print(f"{args.warmup} warm-up + {args.steps} timed steps per setting (StyleGAN: whole R1 cycles), the two")
    print("  settings stepped in turn")

    results, failed = [], []
    for preset in presets:
        try:
            results.append(measure(preset, args))
        except Exception as error:  # one broken preset must not hide the others' numbers
            print(f"{preset}: FAILED ({type(error).__name__}: {error})")
            failed.append(preset)

    # The peak again after the runs: the better of both, since load only lowers it.
    end = {"bf16": matmul_peak_gflops(torch.bfloat16, peak_size, peak_reps)}
    end["fp32"] = matmul_peak_gflops(torch.float32, peak_size, peak_reps)
    peaks = {key: max(value, end[key]) for key, value in peaks.items()}
    print(f"matmul peak used (best of start and end): bf16 {peaks['bf16']:.0f}, fp32 {peaks['fp32']:.0f} GFLOP/s")
    if results:
        training_table(results, peaks)
    if not args.no_stylegan:
        stylegan_table(pairs, args.forward_batch, args.forward_repeats)
    print(f"\nload average at end: {load_average()}; wall {time.perf_counter() - started:.0f} s")
    if failed:
        sys.exit(f"{len(failed)} preset(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
