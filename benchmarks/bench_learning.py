"""Learning, honestly measured: per-pair presets trained on a real LFW pair for a fixed CPU budget.

Extracts George_W_Bush (src) and Colin_Powell (dst) from LFW, trains each model preset for the
same budget, then scores reconstructions of **held-out** faces of each person inside the face
mask (SSIM, PSNR, L1) and writes the preview grid of those held-out faces. Numbers go to
``WORK/learning.json``; commit the numbers and this command, never the weights.

    .venv/bin/python benchmarks/bench_learning.py --models df-cpu liae-cpu --minutes 30 --threads 1

With ``--threads 1`` and two models, both train at once, one core each: 30 CPU-minutes apiece.

``--smoke``: the first 8 photos of each person (2 held out), 2 seconds of training per model, in a
temporary folder (``--work`` is ignored): checks the script end to end in seconds (the numbers mean
nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_root, machine  # noqa: E402

PAIR = ("George_W_Bush", "Colin_Powell")
HOLDOUT = 24  # faces per person never trained on
SMOKE_PHOTOS, SMOKE_HOLDOUT = 8, 2  # --smoke: photos per person extracted, and held out


def extract_pair(work: Path, photos: int = 0) -> tuple[Path, Path]:
    """Both people's facesets: every photo, or the first ``photos`` by file name."""
    from swaplab.facesets.extract import ExtractConfig, extract

    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1  # LFW photos sometimes show a second person at the edge
    lfw = data_root() / "lfw" / "lfw-deepfunneled"
    out = []
    for person in PAIR:
        dest = work / f"faceset-{person}"
        source = sorted((lfw / person).glob("*.jpg"))[:photos] if photos else lfw / person
        extract(source, dest, cfg, progress=False)  # resumes: free after the first run
        out.append(dest)
    return out[0], out[1]


def train_one(
    model: str, src: Path, dst: Path, work: Path, minutes: float, threads: int, seed: int, holdout: int = HOLDOUT
) -> subprocess.Popen:
    run = work / f"run-{model}"
    overrides = [
        f"model={model}",
        f"data.src={src}",
        f"data.dst={dst}",
        f"data.holdout={holdout}",
        "trainer=cpu-quick",
        "trainer.steps=1000000",
        f"trainer.time_budget_s={minutes * 60}",
        "trainer.preview_every=1000",
        "trainer.checkpoint_every=2000",
        "trainer.keep_last=1",
        "trainer.progress=false",
        f"trainer.seed={seed}",
        f"run_dir={run}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = open(work / f"train-{model}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "swaplab.train", *overrides], env=env, stdout=log, stderr=log)


def train_seconds(run: Path) -> float | None:
    """Wall seconds of the run's training loop (its last session), from ``metrics.jsonl``'s ``time_s``."""
    from swaplab.train.run import RunFolder

    times = [row["time_s"] for row in RunFolder(run).read_metrics() if "time_s" in row]
    return times[-1] if times else None


def score(model: str, work: Path, src: Path, dst: Path, holdout: int = HOLDOUT) -> dict:
    import torch

    from swaplab.metrics.reconstruction import masked_l1, masked_psnr, masked_ssim
    from swaplab.models.card import load_model
    from swaplab.provenance import Provenance, write_marked_image
    from swaplab.train.data import PairData, to_float
    from swaplab.train.export import export_model
    from swaplab.train.preview import preview_grid
    from swaplab.train.run import RunFolder

    run = work / f"run-{model}"
    export_model(run, work / f"model-{model}", overwrite=True)  # --score-only scores the latest checkpoint
    net = load_model(work / f"model-{model}")  # the bare per-pair network: reconstruct_src/dst, swap
    data = PairData(src, dst, net.resolution, holdout=holdout, seed=0)
    result: dict = {"model": model}
    with torch.inference_mode():
        for side, reconstruct in (("src", net.reconstruct_src), ("dst", net.reconstruct_dst)):
            held = data.holdout[side]
            batch = to_float({"image": held.images, "mask": held.masks})
            rgb, _ = reconstruct(batch["image"])
            result[side] = {
                "faces": len(held),
                "ssim": float(masked_ssim(rgb, batch["image"], batch["mask"]).mean),
                "psnr": float(masked_psnr(rgb, batch["image"], batch["mask"]).mean),
                "l1": float(masked_l1(rgb, batch["image"], batch["mask"]).mean),
            }
        faces = data.preview_faces(6)
        floats = to_float(faces)
        grid = preview_grid(net, floats["src"], floats["dst"], step=-1)
    write_marked_image(work / f"heldout-{model}.png", grid, Provenance.create(f"bench-learning-{model}"))
    card = json.loads((work / f"model-{model}" / "model.json").read_text())
    metrics = [row for row in RunFolder(run).read_metrics() if "loss" in row]
    result.update(
        steps=card["step"],
        final_loss=metrics[-1].get("loss") if metrics else None,
        train_seconds=train_seconds(run),
        parameters=sum(p.numel() for p in net.parameters()),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["df-cpu", "liae-cpu"])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-learning"))
    parser.add_argument("--score-only", action="store_true", help="score existing runs without training")
    parser.add_argument("--smoke", action="store_true", help="8 photos each, 2 s of training, in a temporary folder")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
            args.work, args.minutes, args.score_only = Path(tmp), 2 / 60, False
            run(args, photos=SMOKE_PHOTOS, holdout=SMOKE_HOLDOUT)
        print("(smoke: that temporary folder is removed on exit)")
    else:
        run(args)


def run(args: argparse.Namespace, photos: int = 0, holdout: int = HOLDOUT) -> None:
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    src, dst = extract_pair(args.work, photos)
    if not args.score_only:
        started = time.time()
        parallel = args.threads * len(args.models) <= (os.cpu_count() or 1)
        print(
            f"training {', '.join(args.models)} for {args.minutes:g} min each, {args.threads} thread(s) each, "
            f"{'concurrently' if parallel else 'one after another'}"
        )
        procs = []
        for model in args.models:
            procs.append(train_one(model, src, dst, args.work, args.minutes, args.threads, args.seed, holdout))
            if not parallel:
                procs[-1].wait()
        for proc in procs:
            if proc.wait() != 0:
                for log in sorted(args.work.glob("train-*.log")):
                    print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
                sys.exit(f"training failed: see {args.work}/train-*.log")
        print(f"trained in {(time.time() - started) / 60:.1f} min wall")
    results = [score(model, args.work, src, dst, holdout) for model in args.models]
    print(f"\nheld-out reconstruction inside the face mask ({holdout} faces per person never trained on)")
    columns = ("params", "steps", "src SSIM", "src PSNR", "dst SSIM", "dst PSNR")
    print(f"{'model':10s} " + " ".join(f"{c:>9s}" for c in columns))
    for r in results:
        print(
            f"{r['model']:10s} {r['parameters'] / 1e6:7.1f}M {r['steps']:6d} {r['src']['ssim']:9.3f} "
            f"{r['src']['psnr']:8.2f}dB {r['dst']['ssim']:9.3f} {r['dst']['psnr']:8.2f}dB"
        )
    out = {
        "machine": machine(),
        "minutes": args.minutes,
        "threads": args.threads,
        "pair": PAIR,
        "holdout": holdout,
        "results": results,
    }
    (args.work / "learning.json").write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.work / 'learning.json'} and held-out preview grids {args.work}/heldout-*.png")


if __name__ == "__main__":
    main()
