"""Learning, honestly measured: per-pair recipes trained side by side on a real LFW pair at equal budgets.

Extracts George_W_Bush (src) and Colin_Powell (dst) from LFW **without** the photos ``per_pair_v1``
holds out (the last 24 of each by file name), trains each recipe (``VARIANTS``) for the same wall
budget at the same threads, then, for each: scores reconstructions of the held-out photos inside
the face mask (SSIM, PSNR, L1), writes the held-out preview grid (``heldout-<name>.png``), and
scores the exported model with ``swaplab eval`` on ``per_pair_v1`` (identity by every built
network, pose, expression, sharpness, FD/KID; no detectability classifier). Numbers go to
``WORK/learning.json``; commit the numbers and this command, never the weights.

    .venv/bin/python benchmarks/bench_learning.py --minutes 30 --threads 1
    .venv/bin/python benchmarks/bench_learning.py --models baseline-df64 liae-cpu --minutes 30

The recipes: ``baseline-df64`` (the reference line: a plain DeepFakes autoencoder at 64 px, L1 on
the whole face, no warp tricks, no GAN, no pretraining), ``liae-cpu`` (DeepFaceLab losses),
``liae-cpu-sharp`` (eye-aware weights, edge loss, the final 20 % without random warp at a tenth of
the LR), ``liae-cpu-gan`` (that plus GAN power 0.1), ``liae-cpu-pretrained`` (``liae-cpu-sharp``
started from ``liae-cpu`` pretrained on LFW training people without the pair, for
``--pretrain-minutes``, counted separately; the pretraining run in ``--work`` is reused, and one
shorter than ``--pretrain-minutes`` is trained on for the difference first), ``liae-cpu-128-sharp``
(``liae-cpu-sharp`` at 128 px: a 64 px output caps the sharpness ratio, see
``bench_sharpness_ceiling.py``), ``faceswap-gan-64``; ``liae-cpu-sharp-dst-flip``,
``liae-cpu-128-sharp-dst-flip`` and ``liae-cpu-pretrained-dst-flip`` are their namesakes with 40 %
of dst faces mirrored (the default since 2026-12-05: the other recipes pin ``data.dst_flip=0``, as
they were measured);
``liae-cpu-pretrained-lr2x``, ``-stretch40`` and ``-dst-prior`` are ``liae-cpu-pretrained-dst-flip``
with twice the LR, a final stretch of 40 % and a quarter of each dst batch from the pretraining
faces (``data.dst_prior``); ``-stretch40-dst-prior`` both of the last two; ``liae-cpu-sharp-stretch40``
is ``liae-cpu-sharp-dst-flip`` with the 40 % stretch, without pretraining.
A recipe's final stretch is the last fifth of its budget, begun by the trainer in the same session.
(Until 2026-12-05 the stretch ran as a second session after a first of 80 % of the budget; since
time budgets count the whole run (2026-12-04), that second session found the budget spent and did
nothing, so those runs trained 80 % of ``--minutes``, their stretch inside the first session.)

``swaps-side-by-side.png`` shows every recipe's swap of the same held-out photos in one picture.

``--smoke``: ``baseline-df64`` and ``liae-cpu-pretrained`` only (4 pretraining people), 8 photos
each (2 held out), a few seconds of training each, no ``swaplab eval``, in a temporary folder
(``--work`` is ignored): checks the script end to end (the numbers mean nothing).
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_root, load_average, machine  # noqa: E402

PAIR = ("George_W_Bush", "Colin_Powell")
PROTOCOL_HELDOUT = 24  # per_pair_v1 holds out the last 24 photos of each person by file name
SMOKE_PHOTOS, SMOKE_HOLDOUT = 8, 2  # --smoke: training photos per person, and held-out photos
SMOKE_MODELS = ["baseline-df64", "liae-cpu-pretrained"]  # --smoke: the reference line, pretraining, a stretch
FINAL_STRETCH = 0.2
#: A reused pretraining this close to ``--pretrain-minutes`` counts as done (a budget ends on a
#: step, and a session's start-up is not in its loop seconds).
PRETRAIN_SLACK_S = 60.0
SHARP = ["loss=dfl-sharp", f"trainer.final_stretch={FINAL_STRETCH}"]

NO_FLIP = "data.dst_flip=0"  # the recipes measured before mirrored dst faces were the default
PRETRAINED_FLIP = ["model=liae-cpu", *SHARP, "data.dst_flip=0.4"]
PRETRAIN_FACES = "{work}/faceset-pretrain"  # the pretraining faces, in the benchmark's --work

#: name -> (train overrides, uses the pretrained run). Each is one command a user can type.
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "baseline-df64": (["model=df-64-plain", "loss=deepfakes", NO_FLIP], False),
    "liae-cpu": (["model=liae-cpu", "loss=dfl", NO_FLIP], False),
    "liae-cpu-sharp": (["model=liae-cpu", *SHARP, NO_FLIP], False),
    "liae-cpu-sharp-dst-flip": (["model=liae-cpu", *SHARP, "data.dst_flip=0.4"], False),
    "liae-cpu-sharp-stretch40": (["model=liae-cpu", *SHARP, "data.dst_flip=0.4", "trainer.final_stretch=0.4"], False),
    "liae-cpu-gan": (["model=liae-cpu", *SHARP, "gan.power=0.1", NO_FLIP], False),
    "liae-cpu-pretrained": (["model=liae-cpu", *SHARP, NO_FLIP], True),
    "liae-cpu-pretrained-dst-flip": (PRETRAINED_FLIP, True),
    "liae-cpu-pretrained-lr2x": ([*PRETRAINED_FLIP, "trainer.lr=0.0002"], True),
    "liae-cpu-pretrained-stretch40": ([*PRETRAINED_FLIP, "trainer.final_stretch=0.4"], True),
    "liae-cpu-pretrained-dst-prior": ([*PRETRAINED_FLIP, f"data.dst_prior={PRETRAIN_FACES}"], True),
    "liae-cpu-pretrained-stretch40-dst-prior": (
        [*PRETRAINED_FLIP, "trainer.final_stretch=0.4", f"data.dst_prior={PRETRAIN_FACES}"],
        True,
    ),
    "liae-cpu-128-sharp": (["model=liae-cpu", "model.resolution=128", *SHARP, NO_FLIP], False),
    "liae-cpu-128-sharp-dst-flip": (["model=liae-cpu", "model.resolution=128", *SHARP, "data.dst_flip=0.4"], False),
    "faceswap-gan-64": (["model=faceswap-gan-64", "loss=faceswap-gan", "gan.power=0.1", NO_FLIP], False),
}
PRETRAIN_MODEL = ["model=liae-cpu", "loss=dfl-sharp", NO_FLIP]  # as the reused pretraining runs were made


def protocol_heldout() -> dict[str, list[Path]]:
    from swaplab.evaluate.protocol import load_protocol

    protocol = load_protocol("per_pair_v1")
    root = data_root()
    return {side: [root / p for p in protocol.heldout[side]] for side in ("src", "dst")}


def extract_pair(work: Path, photos: int = 0, holdout: int = PROTOCOL_HELDOUT) -> dict[str, Path]:
    """Training facesets (every photo but the protocol's held-out ones, or the first ``photos``) and
    held-out facesets (the protocol's held-out photos, or the first ``holdout`` of them)."""
    from swaplab.facesets.extract import ExtractConfig, extract

    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1  # LFW photos sometimes show a second person at the edge
    lfw = data_root() / "lfw" / "lfw-deepfunneled"
    held = protocol_heldout()
    out = {}
    for side, person in zip(("src", "dst"), PAIR, strict=True):
        kept = {p.name for p in held[side]}
        train_photos = [p for p in sorted((lfw / person).glob("*.jpg")) if p.name not in kept]
        out[side] = work / f"faceset-{person}"
        extract(train_photos[:photos] if photos else train_photos, out[side], cfg, progress=False)  # resumes
        out[f"{side}_heldout"] = work / f"heldout-{person}"
        extract(held[side][:holdout], out[f"{side}_heldout"], cfg, progress=False)
    return out


def launch(overrides: list[str], log: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    handle = open(log, "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "swaplab.train", *overrides], env=env, stdout=handle, stderr=handle)


def common_overrides(run: Path, seconds: float, seed: int) -> list[str]:
    return [
        "trainer=cpu-quick",
        "trainer.steps=1000000",
        f"trainer.time_budget_s={seconds}",
        "trainer.preview_every=1000",
        "trainer.checkpoint_every=2000",
        "trainer.keep_last=1",
        "trainer.progress=false",
        f"trainer.seed={seed}",
        f"run_dir={run}",
    ]


def last_step(run: Path) -> int:
    from swaplab.train.checkpoint import load_latest_good

    checkpoint, _ = load_latest_good(run / "checkpoints", with_optimizer=False)
    return checkpoint.step if checkpoint else 0


def train_variant(name: str, faces: dict[str, Path], work: Path, seconds: float, args, pretraining=None) -> None:
    """One recipe for ``seconds`` in one session; a recipe with ``trainer.final_stretch`` gets its
    stretch from the trainer, as the last part of the same budget. ``pretraining``: the future of
    :func:`pretrain` to start from (waited for here)."""
    overrides = [override.replace("{work}", str(work)) for override in VARIANTS[name][0]]
    pretrained = pretraining.result()[0] if pretraining is not None else None
    run, log = work / f"run-{name}", work / f"train-{name}.log"
    # The recipe's overrides come after the common ones: ``trainer=cpu-quick`` replaces the whole
    # trainer section, so a ``trainer.*`` field set before it would be lost.
    base = [*overrides, f"data.src={faces['src']}", f"data.dst={faces['dst']}", "data.holdout=2"]
    if pretrained is not None:
        base.append(f"init={pretrained}")
    if launch([*common_overrides(run, seconds, args.seed), *base], log, args.threads).wait() != 0:
        raise RuntimeError(f"training {name} failed: see {log}")


def pretraining_faces(work: Path, people: int, per_person: int) -> tuple[Path, dict]:
    """The pretraining faceset: LFW training people without the pair (extracted once, resumable)."""
    from swaplab.data.fetch import data_root as root
    from swaplab.train.pretrain import build_pretraining_faceset

    started = time.time()
    faces = work / "faceset-pretrain"
    summary = build_pretraining_faceset(
        faces,
        root() / "lfw" / "lfw-deepfunneled",
        per_person=per_person,
        max_people=people,
        exclude=PAIR,
        progress=False,
    )
    return faces, {"faces": summary.faces, "extract_s": round(time.time() - started, 1)}


def pretrain(work: Path, args, faces: Path, info: dict) -> tuple[Path, dict]:
    """``liae-cpu`` trained on the pretraining faces for ``--pretrain-minutes``."""
    run = work / "run-pretrain"
    info = {**info, "minutes": args.pretrain_minutes}
    # A time budget counts the whole run, so a pretraining of an earlier call is reused as it is
    # and one shorter than asked is trained on for the minutes it lacks (a new session of the
    # same run): a longer pretraining costs only its difference.
    before = last_step(run)
    if before and args.pretrain_minutes * 60 - train_seconds(run) < PRETRAIN_SLACK_S:
        return run, {**info, "steps": before, "train_seconds": round(train_seconds(run), 1), "reused": True}
    overrides = common_overrides(run, args.pretrain_minutes * 60, args.seed)
    overrides += [*PRETRAIN_MODEL, f"data.src={faces}", f"data.dst={faces}", "data.holdout=2"]
    if launch(overrides, work / "train-pretrain.log", args.threads).wait() != 0:
        raise RuntimeError(f"pretraining failed: see {work / 'train-pretrain.log'}")
    extended = {"extended_from_steps": before} if before else {}
    return run, {**info, "steps": last_step(run), "train_seconds": round(train_seconds(run), 1), **extended}


def train_seconds(run: Path) -> float:
    """Wall seconds of the run's training loop over its sessions, from ``metrics.jsonl``'s ``time_s``."""
    from swaplab.train.run import RunFolder

    total, previous = 0.0, 0.0
    for row in RunFolder(run).read_metrics():
        if "time_s" in row:
            if row["time_s"] < previous:  # a new session restarts the clock
                total += previous
            previous = row["time_s"]
    return total + previous


def score(name: str, work: Path, faces: dict[str, Path], evaluate_too: bool) -> dict:
    import torch

    from swaplab.metrics.reconstruction import masked_l1, masked_psnr, masked_ssim
    from swaplab.models.card import load_model
    from swaplab.provenance import Provenance, write_marked_image
    from swaplab.train.data import load_faces, to_float
    from swaplab.train.export import export_model
    from swaplab.train.preview import preview_grid

    run, model_dir = work / f"run-{name}", work / f"model-{name}"
    export_model(run, model_dir, overwrite=True)  # --score-only scores the latest checkpoint
    net = load_model(model_dir)
    result: dict = {"model": name, "overrides": VARIANTS[name][0]}
    held = {side: load_faces(faces[f"{side}_heldout"], net.resolution) for side in ("src", "dst")}
    with torch.inference_mode():
        for side, reconstruct in (("src", net.reconstruct_src), ("dst", net.reconstruct_dst)):
            batch = to_float({"image": held[side].images, "mask": held[side].masks})
            rgb, _ = reconstruct(batch["image"])
            result[side] = {
                "faces": len(held[side]),
                "ssim": float(masked_ssim(rgb, batch["image"], batch["mask"]).mean),
                "psnr": float(masked_psnr(rgb, batch["image"], batch["mask"]).mean),
                "l1": float(masked_l1(rgb, batch["image"], batch["mask"]).mean),
            }
        grid = preview_grid(
            net, to_float({"f": held["src"].images[:6]})["f"], to_float({"f": held["dst"].images[:6]})["f"], -1
        )
    write_marked_image(work / f"heldout-{name}.png", grid, Provenance.create(f"bench-learning-{name}"))
    card = json.loads((model_dir / "model.json").read_text())
    result.update(
        steps=card["step"],
        train_seconds=round(train_seconds(run), 1),
        parameters=sum(p.numel() for p in net.parameters()),
    )
    if evaluate_too:
        from swaplab.evaluate.evaluator import evaluate
        from swaplab.evaluate.results import EvalOptions

        evaluation = evaluate(model_dir, out_dir=work / f"eval-{name}", options=EvalOptions(detector_pairs=-1))
        result["eval"] = {key: float(value) for key, value in evaluation.summary.items()}
    return result


def side_by_side(work: Path, names: list[str], faces: dict[str, Path], rows: int = 6, size: int = 128) -> Path:
    """One picture of every recipe's swap of the same held-out dst photos (to the src person),
    each shown at ``size`` px, between the targets and held-out photos of the src person."""
    import cv2
    import torch

    from swaplab.models.card import load_model
    from swaplab.provenance import Provenance, write_marked_image
    from swaplab.train.data import load_faces, to_float
    from swaplab.train.preview import compose_grid, to_hwc

    def shown(images: torch.Tensor) -> np.ndarray:
        return np.stack([cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC) for face in to_hwc(images)])

    def held(side: str, resolution: int) -> torch.Tensor:
        return to_float({"f": load_faces(faces[f"{side}_heldout"], resolution).images[:rows]})["f"]

    columns, labels = [shown(held("dst", size))], ["target"]
    for name in names:
        net = load_model(work / f"model-{name}")
        with torch.inference_mode():
            swapped, _ = net.swap(held("dst", net.resolution))
        columns.append(shown(swapped))
        labels.append(name)
    columns.append(shown(held("src", size)))
    labels.append("src person")
    grid = compose_grid(columns, tuple(labels), title="held-out swaps dst -> src")
    out = work / "swaps-side-by-side.png"
    write_marked_image(out, grid, Provenance.create("bench-learning"))
    return out


EVAL_COLUMNS = (
    ("identity_retrieval/lfw-arcface top1", "id top1 (arcface)"),
    ("pose_error", "pose err"),
    ("expression_error", "expr err"),
    ("sharpness_ratio", "sharpness"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--pretrain-minutes", type=float, default=30.0, help="pretraining budget (counted apart)")
    parser.add_argument("--pretrain-people", type=int, default=0, help="LFW training people to pretrain on (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--parallel", type=int, default=0, help="trainings at once (0 = CPUs / threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-learning"))
    parser.add_argument("--score-only", action="store_true", help="score existing runs without training")
    parser.add_argument("--no-eval", action="store_true", help="skip `swaplab eval` (held-out reconstruction only)")
    parser.add_argument("--smoke", action="store_true", help="8 photos each, seconds of training, no eval, temporary")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
            args.models = SMOKE_MODELS
            args.work, args.minutes, args.pretrain_minutes, args.score_only, args.no_eval = (
                Path(tmp),
                3 / 60,
                2 / 60,
                False,
                True,
            )
            run(args, photos=SMOKE_PHOTOS, holdout=SMOKE_HOLDOUT, pretrain_people=4, per_person=1)
        print("(smoke: that temporary folder is removed on exit)")
    else:
        run(args, pretrain_people=args.pretrain_people)


def run(args, photos: int = 0, holdout: int = PROTOCOL_HELDOUT, pretrain_people: int = 0, per_person: int = 2) -> None:
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"load before: {load_average()}")
    faces = extract_pair(args.work, photos, holdout)
    pretrain_info = None
    if not args.score_only:
        started = time.time()
        parallel = args.parallel or max(1, (os.cpu_count() or 1) // args.threads)
        print(
            f"training {', '.join(args.models)} for {args.minutes:g} min each, {args.threads} thread(s) each, "
            f"{parallel} at a time"
        )
        from concurrent.futures import ThreadPoolExecutor

        # Pretraining takes a slot of its own beside the first recipes; a recipe that starts from it
        # is queued right behind them, so it waits for it, not for every other recipe.
        plain = [name for name in args.models if not VARIANTS[name][1]]
        from_pretrained = [name for name in args.models if VARIANTS[name][1]]
        order = plain[: parallel - 1] + from_pretrained + plain[parallel - 1 :]
        with ThreadPoolExecutor(parallel) as pool:
            pretraining = None
            if from_pretrained:
                faceset, info = pretraining_faces(args.work, pretrain_people, per_person)
                pretraining = pool.submit(pretrain, args.work, args, faceset, info)
            jobs = [
                pool.submit(
                    train_variant,
                    name,
                    faces,
                    args.work,
                    args.minutes * 60,
                    args,
                    pretraining if VARIANTS[name][1] else None,
                )
                for name in order
            ]
            for job in jobs:
                job.result()
            if pretraining is not None:
                pretrain_info = pretraining.result()[1]
                print(f"pretraining (counted apart): {pretrain_info}")
        print(f"trained in {(time.time() - started) / 60:.1f} min wall")
    results = [score(name, args.work, faces, not args.no_eval) for name in args.models]
    picture = side_by_side(args.work, args.models, faces, rows=min(6, holdout))
    print(f"load after: {load_average()}")
    print(f"\nheld-out reconstruction inside the face mask ({holdout} faces per person never trained on)")
    columns = ("params", "steps", "src SSIM", "src PSNR", "dst SSIM", "dst PSNR")
    print(f"{'model':20s} " + " ".join(f"{c:>9s}" for c in columns))
    for r in results:
        print(
            f"{r['model']:20s} {r['parameters'] / 1e6:7.1f}M {r['steps']:6d} {r['src']['ssim']:9.3f} "
            f"{r['src']['psnr']:8.2f}dB {r['dst']['ssim']:9.3f} {r['dst']['psnr']:8.2f}dB"
        )
    if not args.no_eval:
        print("\nswaplab eval on per_pair_v1 (24 held-out Colin_Powell photos swapped to George_W_Bush)")
        print(f"{'model':20s} " + " ".join(f"{label:>18s}" for _, label in EVAL_COLUMNS))
        for r in results:
            values = [r["eval"].get(key, float("nan")) for key, _ in EVAL_COLUMNS]
            print(f"{r['model']:20s} " + " ".join(f"{v:18.3f}" for v in values))
    out = {
        "machine": machine(),
        "minutes": args.minutes,
        "threads": args.threads,
        "pair": PAIR,
        "holdout": holdout,
        "pretraining": pretrain_info,
        "results": results,
    }
    (args.work / "learning.json").write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.work / 'learning.json'}, held-out preview grids {args.work}/heldout-*.png")
    print(f"and every recipe's held-out swaps side by side: {picture}")


if __name__ == "__main__":
    main()
