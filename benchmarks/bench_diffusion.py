"""Cost of the DDPM family: sampling seconds per face for each sampler and step count, and training faces/s,
fp32 NCHW against bf16 autocast + channels_last, side by side in one run.

1. Sampling: ``ddpm-64`` (64 px, 4.3 M parameters; the weights do not change the cost, so an untrained
   model is timed) draws a batch of faces with each registered sampler at 10/25/50/100 steps; both settings
   run in turn on the same batch, so both see the same load. Seconds per face = batch time / batch size.
   Annealed Langevin costs steps x (langevin_steps + 1) network calls, the others one per step.
2. Training: ``ddpm`` training steps (``swaplab.models.diffusion`` forward and backward, Adam) of
   ``ddpm-tiny`` (32 px) at batch 32 on random images of that shape (the cost does not depend on the
   pixels), alternating the two settings step by step; with the step's FLOPs (torch's counting
   formulas), the GFLOP/s reached and its share of the matmul peak of the same dtype, measured in
   the same run.
3. Pixel against latent diffusion: ``ddpm-tiny`` against ``ldm-tiny`` (32 px faces diffused as 4 x 8 x 8
   codes), seconds per face of a 25-step DDIM draw, decoder included (untrained: same cost as trained).
4. Pruning: ``ddpm-64`` against itself with ``model.unet_keep=0.5`` (swaplab.models.diffusion_pruning).
5. Averaged weights (``--run RUN``, a trained DDPM run): the run's validation (held-out denoising loss,
   Frechet distances of ``preview_sampler``'s samples) on its latest checkpoint's last weights and on
   their moving average (the recipe's ``ema``), the same held-out faces, noise and seeds for both.

    OMP_NUM_THREADS=1 python benchmarks/bench_diffusion.py --threads 1
    OMP_NUM_THREADS=1 python benchmarks/bench_diffusion.py --threads 1 --tables 3   # one table
    OMP_NUM_THREADS=1 python benchmarks/bench_diffusion.py --threads 1 --tables 5 --run runs/ddpm
    python benchmarks/bench_diffusion.py --smoke      # seconds: checks the script only (numbers mean nothing)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count_flops, load_average, machine, matmul_peak_gflops, use_threads  # noqa: E402

from swaplab.config import config_group  # noqa: E402
from swaplab.models.diffusion import DDPM, DDPMConfig, LatentAutoencoderConfig  # noqa: E402
from swaplab.models.samplers import SAMPLERS  # noqa: E402
from swaplab.system import autocast  # noqa: E402

SETTINGS = {"fp32 NCHW": (None, torch.contiguous_format), "bf16 + channels_last": (torch.bfloat16, torch.channels_last)}


def sampling_table(config: DDPMConfig, batch: int, step_counts: list[int]) -> None:
    torch.manual_seed(0)
    model = DDPM(config).eval()
    print(f"\n1. sampling, {config.name} ({config.resolution} px, batch {batch}): seconds per face")
    print(f"{'sampler':<14}{'steps':>6}" + "".join(f"{name:>22}" for name in SETTINGS) + f"{'ratio':>8}")
    for name in SAMPLERS.names():
        for steps in step_counts:
            model.configure(sampler=name, **{"sampler.steps": str(steps)})
            seconds = {}
            for label, (dtype, memory_format) in SETTINGS.items():
                model.to(memory_format=memory_format)
                start = time.perf_counter()
                with autocast(torch.device("cpu"), dtype):
                    model.sample(batch, torch.Generator().manual_seed(0))
                seconds[label] = (time.perf_counter() - start) / batch
            values = list(seconds.values())
            print(f"{name:<14}{steps:>6}" + "".join(f"{v:>22.3f}" for v in values) + f"{values[0] / values[1]:>8.2f}")


def training_table(config: DDPMConfig, batch: int, steps: int) -> None:
    torch.manual_seed(0)
    models = {label: DDPM(config).to(memory_format=mf) for label, (_, mf) in SETTINGS.items()}
    optimizers = {label: torch.optim.Adam(m.parameters(), lr=2e-4) for label, m in models.items()}
    images = torch.rand(batch, config.channels, config.resolution, config.resolution).mul(2).sub(1)
    spent = dict.fromkeys(SETTINGS, 0.0)
    for step in range(steps + 1):
        for label, (dtype, memory_format) in SETTINGS.items():
            model, x0 = models[label], images.contiguous(memory_format=memory_format)
            start = time.perf_counter()
            t = torch.randint(0, 1000, (batch,))
            eps = torch.randn_like(x0)
            with autocast(torch.device("cpu"), dtype):
                loss = torch.nn.functional.mse_loss(model(model.schedule.q_sample(x0, t, eps), t).float(), eps)
            loss.backward()
            optimizers[label].step()
            optimizers[label].zero_grad(set_to_none=True)
            if step:  # the first step warms up
                spent[label] += time.perf_counter() - start
    rates = {label: batch * steps / s for label, s in spent.items()}
    flops_per_face = training_flops(config, batch) / batch
    # Peaks measured now, under the same load as the steps: each setting against its own dtype's.
    peaks = {label: matmul_peak_gflops(dtype or torch.float32) for label, (dtype, _) in SETTINGS.items()}
    print(f"\n2. training, {config.name} ({config.resolution} px, batch {batch}, {steps} timed steps): faces/s")
    print(f"   {flops_per_face / 1e9:.3f} GFLOP per face (forward + backward, counted by torch's formulas)")
    for label, rate in rates.items():
        achieved = rate * flops_per_face / 1e9
        print(
            f"   {label:<22}{rate:8.1f}   {achieved:6.1f} GFLOP/s = {achieved / peaks[label]:.1%} "
            f"of this run's {'bf16' if SETTINGS[label][0] else 'fp32'} matmul peak ({peaks[label]:.0f} GFLOP/s)"
        )
    values = list(rates.values())
    print(f"   bf16 + channels_last / fp32 NCHW: {values[1] / values[0]:.2f}x")


def training_flops(config: DDPMConfig, batch: int) -> int:
    """FLOPs of one fp32 training step's forward and backward (convolutions, matmuls, attention)."""
    torch.manual_seed(0)
    model = DDPM(config)
    x0 = torch.rand(batch, config.channels, config.resolution, config.resolution).mul(2).sub(1)
    t = torch.randint(0, 1000, (batch,))

    def step() -> None:
        eps = torch.randn_like(x0)
        torch.nn.functional.mse_loss(model(model.schedule.q_sample(x0, t, eps), t), eps).backward()

    _, counts = count_flops(step)
    return sum(counts.values())


def latent_table(pixel: DDPMConfig, latent: DDPMConfig, batch: int, steps: int) -> None:
    """Pixel against latent diffusion at one resolution: parameters, and seconds per face of a DDIM draw
    (the latent model's includes its decoder), in bf16 + channels_last."""
    torch.manual_seed(0)
    print(f"\n3. pixel against latent diffusion ({pixel.resolution} px, DDIM {steps} steps, bf16 + channels_last)")
    seconds = {}
    for config in (pixel, latent):
        model = DDPM(config).eval().to(memory_format=torch.channels_last)
        model.configure(sampler="ddim", **{"sampler.steps": str(steps)})
        start = time.perf_counter()
        with autocast(torch.device("cpu"), torch.bfloat16):
            model.sample(batch, torch.Generator().manual_seed(0))
        seconds[config.name] = (time.perf_counter() - start) / batch
        unet = sum(p.numel() for p in model.unet.parameters())
        shape = "x".join(map(str, model.diffusion_shape))
        print(
            f"   {config.name:<10} diffuses {shape:<9} U-Net {unet / 1e6:5.2f} M",
            f"  {seconds[config.name]:.3f} s per face",
        )
    print(f"   latent / pixel time per face: {seconds[latent.name] / seconds[pixel.name]:.2f}")


def pruning_table(config: DDPMConfig, batch: int, steps: int) -> None:
    """The U-Net pruned to half its residual blocks' inner channels against the full one: parameters and
    seconds per face of a DDIM draw, bf16 + channels_last (fine-tuning restores the quality; not timed)."""
    import dataclasses

    print(f"\n4. pruning, {config.name} ({config.resolution} px, DDIM {steps} steps, bf16 + channels_last)")
    seconds = {}
    for keep in (1.0, 0.5):
        torch.manual_seed(0)
        model = DDPM(dataclasses.replace(config, unet_keep=keep)).eval().to(memory_format=torch.channels_last)
        model.configure(sampler="ddim", **{"sampler.steps": str(steps)})
        start = time.perf_counter()
        with autocast(torch.device("cpu"), torch.bfloat16):
            model.sample(batch, torch.Generator().manual_seed(0))
        seconds[keep] = (time.perf_counter() - start) / batch
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"   unet_keep {keep:<4} {params:5.2f} M parameters  {seconds[keep]:.3f} s per face")
    print(f"   pruned / full time per face: {seconds[0.5] / seconds[1.0]:.2f}")


def average_table(run: Path) -> None:
    """Validation of ``run``'s latest checkpoint on its last weights against their moving average."""
    from swaplab.system import autocast_dtype
    from swaplab.train.checkpoint import load_latest_good
    from swaplab.train.recipe import Session
    from swaplab.train.run import read_run_config
    from swaplab.train.session import Distributed, resolve_device

    recipe_cls, cfg = read_run_config(run)
    device = resolve_device("cpu")
    session = Session(cfg.trainer, Distributed(), device, autocast_dtype(cfg.trainer.precision, device),
                      torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format, run)  # fmt: skip
    recipe = recipe_cls(cfg, session)
    checkpoint, _ = load_latest_good(run / "checkpoints", with_optimizer=False)
    if checkpoint is None:
        raise SystemExit(f"{run}: no usable checkpoint")
    module = recipe.build().to(memory_format=session.memory_format)
    module.load_state_dict(recipe.complete_checkpoint(checkpoint.model))
    recipe.module = module.eval()
    average = recipe.average
    updates = int(average.updates) if average is not None else 0
    print(f"\n5. averaged weights: {run} at step {checkpoint.step} (ema={cfg.ema}, {updates} averaged steps)")
    rows = {"last weights": recipe._validate(checkpoint.step), "averaged weights": recipe.validate(checkpoint.step)}
    keys = [
        k for k in ("val/loss", "val/fd_pixels", "val/fd_features", "val/kid_features") if k in rows["last weights"]
    ]
    print(f"{'weights':<18}" + "".join(f"{k:>18}" for k in keys))
    for name, values in rows.items():
        print(f"{name:<18}" + "".join(f"{values[k]:>18.4f}" for k in keys))
    print(
        "averaged / last"
        + " " * 3
        + "".join(f"{rows['averaged weights'][k] / rows['last weights'][k]:>18.3f}" for k in keys)
    )


def smoke_run(root: Path) -> Path:
    """A 6-step 16 px DDPM run on the built-in digits, to check table 5 end to end."""
    from swaplab.cli import main as cli

    run = root / "run"
    words = ["train", "model=ddpm-tiny", "model.resolution=16", "model.widths=[16,32]", "model.attention=[false,true]",
             "model.channels=1", "data.source=digits", "trainer=ddpm-test", "preview_sampler.steps=2",
             "validation_network=", "trainer.progress=false", f"run_dir={run}"]  # fmt: skip
    if cli(words) != 0:
        raise SystemExit("the smoke run did not train")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--tables", default="1,2,3,4", help="which tables to measure, e.g. 3 (5 needs --run)")
    parser.add_argument("--run", default="", help="a trained DDPM run folder, for table 5")
    args = parser.parse_args()
    use_threads(args.threads or torch.get_num_threads())
    print(f"machine: {machine()}; load average at start: {load_average()}")
    if args.smoke:
        tiny = DDPMConfig(name="smoke", resolution=16, widths=[16, 32], attention=[False, True])
        sampling_table(tiny, 2, [2])
        training_table(tiny, 4, 1)
        latent = DDPMConfig(name="smoke-ldm", resolution=16, widths=[16, 32], attention=[False, True],
                            autoencoder=LatentAutoencoderConfig(widths=[16, 32]))  # fmt: skip
        latent_table(tiny, latent, 2, 2)
        pruning_table(tiny, 2, 2)
        with tempfile.TemporaryDirectory() as scratch:
            average_table(smoke_run(Path(scratch)))
    else:
        tables = set(args.tables.split(","))
        if "1" in tables:
            sampling_table(config_group("model").create("ddpm-64"), args.batch, [10, 25, 50, 100])
        if "2" in tables:
            training_table(DDPMConfig(), 32, 6)
        if "3" in tables:
            presets = config_group("model")
            latent_table(presets.create("ddpm-tiny"), presets.create("ldm-tiny"), args.batch, 25)
        if "4" in tables:
            pruning_table(config_group("model").create("ddpm-64"), args.batch, 25)
        if "5" in tables:
            if not args.run:
                raise SystemExit("table 5 compares a trained run's weights: give --run RUN")
            average_table(Path(args.run))
    print(f"load average at end: {load_average()} (other jobs share this machine: trust ratios over times)")


if __name__ == "__main__":
    main()
