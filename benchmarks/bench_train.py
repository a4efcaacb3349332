"""End-to-end training throughput of per-pair models: fp32 NCHW eager vs bf16 autocast + channels_last.

Measures faces/s of the real training step (faceset crops in memory -> augmentation -> model
forward -> losses -> backward -> AdamW -> metrics logging) for DeepFaceLab's LIAE-ud at 128 px
with SAEHD's default dims at batch 16, in both precisions side by side, plus swaplab's CPU presets.
Each setting runs in its own subprocess so that peak RSS is per setting. Also reports the model's
FLOPs per face (``torch.utils.flop_counter.FlopCounterMode``, forward + backward) and the share
of a bf16 (or fp32) matmul peak measured in the same run.

    python benchmarks/bench_train.py                      # extracts the reference pair once (~30 s)
    python benchmarks/bench_train.py --src A --dst B      # any two facesets of >= 128 px crops
    python benchmarks/bench_train.py --quick              # fewer steps
    python benchmarks/bench_train.py --smoke              # seconds: checks the script end to end

The step is the per-pair recipe's ``train_step`` driven as ``swaplab.train.loop.TrainingLoop``
drives it (learning rate set on every optimiser, then the step, then the logged row), on a loop
built in a temporary run folder. Faces counted: src + dst faces (the recipe's
``samples_per_step``: a batch of 16 is 32 faces per step). Data: the first 24 LFW images of
George_W_Bush and Colin_Powell (shared/data), extracted at 128 px, whole_face. ``--smoke``: the
first 8 images of each (extracted into a temporary folder), the two CPU presets only, batch 2,
1 warm-up and 2 timed steps, small matmuls for the peak (the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, machine  # noqa: E402

PAIR = ("George_W_Bush", "Colin_Powell")

#: (label, overrides). liae-ud is DeepFaceLab's default dims (ae 256, e 64, d 64, mask 22) at 128 px.
FP32_NCHW = ["trainer.precision=fp32", "trainer.channels_last=false"]
BF16_CL = ["trainer.precision=bf16", "trainer.channels_last=true"]
SETTINGS = [
    ("liae-ud 128 fp32 NCHW", ["model=liae-ud", *FP32_NCHW]),
    ("liae-ud 128 bf16 + channels_last", ["model=liae-ud", *BF16_CL]),
    ("liae-cpu 64 bf16 + channels_last", ["model=liae-cpu", *BF16_CL]),
    ("df-cpu 64 bf16 + channels_last", ["model=df-cpu", *BF16_CL]),
]


def matmul_peak_gflops(dtype_name: str, size: int = 2048, reps: int = 10) -> float:
    """The best of ``reps`` square matmuls, in GFLOP/s (the best: other processes only slow it)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def ensure_pair(cache: Path, images_per_person: int = 24) -> tuple[Path, Path]:
    from swaplab.facesets.extract import ExtractConfig, extract

    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1
    out = []
    for person in PAIR:
        dest = cache / person
        if not (dest / "faceset.json").is_file() or not list((dest / "shards").glob("*.json")):
            images = sorted((data_root() / "lfw" / "lfw-deepfunneled" / person).glob("*.jpg"))[:images_per_person]
            extract(images, dest, cfg, progress=False)
        out.append(dest)
    return out[0], out[1]


def child(args: argparse.Namespace) -> None:
    """One setting: build the training loop, warm up, time ``--steps`` steps, print one JSON line."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as run_dir:
        result = measure(args, Path(run_dir) / "run")
    print("RESULT " + json.dumps(result))


def measure(args: argparse.Namespace, run_dir: Path) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from swaplab.train.data import to_float
    from swaplab.train.entry import build_config
    from swaplab.train.loop import TrainingLoop
    from swaplab.train.recipe import recipe_for_config
    from swaplab.train.session import Distributed, learning_rate, set_learning_rate

    overrides = json.loads(args.child)
    cfg = build_config(
        [
            f"data.src={args.src}",
            f"data.dst={args.dst}",
            f"run_dir={run_dir}",
            f"trainer.batch_size={args.batch}",
            "trainer.progress=false",
            "trainer.preview_every=0",
            "trainer.checkpoint_every=0",
            "trainer.log_every=1",
            *overrides,
        ]
    )
    loop = TrainingLoop(recipe_for_config(cfg), cfg, Distributed(), torch.device("cpu"))
    recipe, model = loop.recipe, loop.module
    params = sum(p.numel() for p in model.parameters())

    # FLOPs of the model's forward + backward per face (two faces per batch row: src and dst).
    res = cfg.model.resolution
    probe = torch.rand(2, 3, res, res)
    with FlopCounterMode(display=False) as counter:
        out = model(probe, probe)
        sum(t.float().mean() for t in out).backward()
    model.zero_grad(set_to_none=True)
    flops_per_face = counter.get_total_flops() / (2 * len(probe))

    def train_step():
        """One step as ``TrainingLoop.run`` takes it: the schedule's LR on every optimiser, then the step."""
        lr = learning_rate(loop.step, cfg.trainer, loop.lr_scale)
        for name, optimizer in loop.optimizers.items():
            set_learning_rate(optimizer, lr, loop.lr_scales[name])
        outcome = recipe.train_step(loop.step)
        loop.step += 1
        return outcome

    model.train()
    for _ in range(args.warmup):
        train_step()
    faces_per_step = recipe.samples_per_step
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        outcome = train_step()
        loop._log(outcome.values, 0.0, not outcome.applied, 0.0)  # the metrics.jsonl + TensorBoard write
        times.append(time.perf_counter() - start)
    # The fastest step: on a shared machine other processes only ever slow a step down.
    step_s = min(times)

    # The data pipeline alone (sampling, uint8 -> float, masks, augmentation of both sides).
    def pipeline(step: int) -> None:
        raw = recipe.data.batch(step, batch_size=cfg.trainer.batch_size)
        recipe._augment(to_float(raw, loop.device, cfg.trainer.channels_last), step, 0)

    pipeline_times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        pipeline(step)
        pipeline_times.append(time.perf_counter() - start)
    pipeline_s = min(pipeline_times[1:])
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if loop.tb is not None:
        loop.tb.close()
    return {
        "params_m": params / 1e6,
        "gflops_per_face": flops_per_face / 1e9,
        "step_s": step_s,
        "step_s_all": times,
        "step_s_median": statistics.median(times),
        "pipeline_share": pipeline_s / step_s,
        "faces_per_s": faces_per_step / step_s,
        "peak_rss_mb": peak_rss_mb,
        "amp": str(recipe.session.amp_dtype),
        "loss": outcome.values.get("loss"),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path)
    parser.add_argument("--dst", type=Path)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps per setting")
    parser.add_argument("--only", default="", help="comma-separated setting numbers (1-based)")
    parser.add_argument("--smoke", action="store_true", help="CPU presets, batch 2, 2 steps: checks the script only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.steps = 1, 2
    if args.child:
        child(args)
        return
    if args.smoke:
        args.warmup, args.steps, args.batch = 1, 2, 2
        args.only = args.only or ",".join(str(i + 1) for i, (label, _) in enumerate(SETTINGS) if "-cpu" in label)
        with tempfile.TemporaryDirectory(prefix="bench-train-smoke-") as tmp:
            if args.src is None or args.dst is None:
                args.src, args.dst = ensure_pair(Path(tmp), images_per_person=8)
            compare(args, peak_size=512, peak_reps=2)
        return
    if args.src is None or args.dst is None:
        args.src, args.dst = ensure_pair(Path(tempfile.gettempdir()) / "swaplab-bench-pair")
    compare(args)


def compare(args: argparse.Namespace, peak_size: int = 2048, peak_reps: int = 10) -> None:
    """Run the chosen settings side by side, each in its own process, and print the table and ratios."""
    import torch

    from swaplab.system import cpu_supports_bf16

    def peak(dtype: str) -> float:
        return matmul_peak_gflops(dtype, peak_size, peak_reps)

    peaks = {"bf16": peak("bfloat16"), "fp32": peak("float32")}
    print(f"machine: {machine()}")
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_supports_bf16()}")
    print(f"matmul peak ({peak_size}^2): bf16 {peaks['bf16']:.0f} GFLOP/s, fp32 {peaks['fp32']:.0f} GFLOP/s")
    print(f"load average at start: {os.getloadavg()}")
    print(f"data: {args.src} / {args.dst}; batch {args.batch} per side")
    print(f"{args.warmup} warm-up + {args.steps} timed steps per setting; the fastest step counts")
    print()

    chosen = [int(i) - 1 for i in args.only.split(",") if i] or range(len(SETTINGS))
    results, failed = {}, []
    for index in chosen:
        label, overrides = SETTINGS[index]
        command = [sys.executable, __file__, "--child", json.dumps(overrides), "--src", str(args.src)]
        command += ["--dst", str(args.dst), "--batch", str(args.batch)]
        command += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            print(f"{label}: FAILED\n{done.stderr[-2000:]}")
            failed.append(label)
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        result["wall_s"] = time.perf_counter() - started
        results[label] = result

    # Measured again after the runs: the best of both, since load from other processes only lowers it.
    end_peaks = {"bf16": peak("bfloat16"), "fp32": peak("float32")}
    peaks = {key: max(value, end_peaks[key]) for key, value in peaks.items()}
    print(f"matmul peak used (best of start and end): bf16 {peaks['bf16']:.0f}, fp32 {peaks['fp32']:.0f}")
    for label, r in results.items():
        top = peaks["bf16"] if "bf16" in label else peaks["fp32"]
        r["peak_share"] = r["gflops_per_face"] * r["faces_per_s"] / top
    header = f"{'setting':36s} {'params':>8s} {'GFLOP/face':>10s} {'s/step':>7s} {'median':>7s} "
    header += f"{'faces/s':>8s} {'% of peak':>9s} {'data+aug':>8s} {'peak RSS':>9s} {'wall':>6s}"
    print(header)
    for label, r in results.items():
        print(
            f"{label:36s} {r['params_m']:7.1f}M {r['gflops_per_face']:10.2f} {r['step_s']:7.2f} "
            f"{r['step_s_median']:7.2f} "
            f"{r['faces_per_s']:8.1f} {100 * r['peak_share']:8.1f}% {100 * r['pipeline_share']:7.1f}% "
            f"{r['peak_rss_mb']:7.0f}MB {r['wall_s']:5.0f}s"
        )
    fp32, bf16 = results.get(SETTINGS[0][0]), results.get(SETTINGS[1][0])
    if fp32 and bf16:
        ratio = bf16["faces_per_s"] / fp32["faces_per_s"]
        print(f"\nbf16 + channels_last vs fp32 NCHW (liae-ud 128): {ratio:.2f}x faces/s")
    print("(% of peak: model FLOPs (fwd+bwd) x faces/s over the matmul peak of that precision;")
    print(" data+aug: batch sampling and augmentation of both sides, as a share of the whole step)")
    print(f"load average at end: {os.getloadavg()}")
    if failed:
        sys.exit(f"{len(failed)} setting(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
