"""Benchmark: a face restorer personal to a per-pair model's source, against the general one.

The general restorer (``swaplab nets build face-restorer``) learned to sharpen anyone's face from
synthetic degradations. Fine-tuned on the source person's own faces (``--preset personal``), the
detail it draws is that person's; with ``data.drawn_by=MODEL`` half of its inputs are the model's
own drawings of those faces (its reconstructions, upscaled as the swap upscales them), so it also
learns to undo that model's particular softness. Given a per-pair model and its source's faces
(``--faces``: the photos its source side trained on, extracted at 192 px or more), this script builds
the ``--restorers`` asked for (``--steps`` each, ``--parallel`` at once; ``RESTORERS`` below: the
recommended build and the settings it was chosen against), then scores the model on
``per_pair_v1`` with each (``off``: no restoration; ``installed``: the general restorer) at each
``--mask-erode``, side by side in one run: identity retrieval and similarity by ``lfw-arcface``
(which trained nothing here; the restorers' perceptual term uses the dlib port, so dlib's retrieval
is shown but does not count), pose, expression, the sharpness ratio (swap over target inside the
face) and the Frechet distance. Writes ``personal-restorer.json`` and ``restorers-side-by-side.png``
(the same held-out swaps per restorer, cropped to the face and enlarged) under ``--work``.

    SWAPLAB_DATA=... .venv/bin/python benchmarks/bench_personal_restorer.py \\
        --model runs/WORK/model-liae-cpu-sharp-dst-flip --faces faces/George_W_Bush-192 \\
        --work runs/personal [--restorers off installed personal-drawn ...] [--mask-erode 0 -2]

``--smoke``: test builds of everything in a temporary folder (a 2-step model, the ``test``
restorer and identity network, ``personal-drawn`` only, 2 pairs scored); the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, load_average, machine  # noqa: E402

#: restorer label -> overrides of `nets build face-restorer --preset personal` (None: not built here).
#: The preset learns from 192 px faces (give --faces extracted at 192 px or more) at gan.power 0.1;
#: the other rows are the settings it was chosen against (docs/masks.md).
DRAWN = ["data.drawn_by={model}", "data.drawn_share=0.5"]
RESTORERS: dict[str, list[str] | None] = {
    "off": None,
    "installed": None,
    "personal-drawn": DRAWN,  # the recommended build
    "personal": [],
    "personal-128": ["data.size=128", "gan.power=0.05"],
    "personal-128-drawn": [*DRAWN, "data.size=128", "gan.power=0.05"],
    "personal-128-drawn-only": [*DRAWN, "data.drawn_share=1", "data.size=128", "gan.power=0.05"],
    "personal-128-drawn-gan0.1": [*DRAWN, "data.size=128"],
    "personal-128-drawn-only-gan0.1": [*DRAWN, "data.drawn_share=1", "data.size=128"],
    "personal-gan0.05": ["gan.power=0.05"],
    "personal-drawn-gan0.05": [*DRAWN, "gan.power=0.05"],
}
DEFAULT_RESTORERS = ["off", "installed", "personal-drawn", "personal-128-drawn"]
COLUMNS = (
    ("identity_retrieval/lfw-arcface top1", "ID top1 arcface"),
    ("identity_similarity/lfw-arcface", "ID sim arcface"),
    ("identity_retrieval/dlib-resnet top1", "ID top1 dlib"),
    ("pose_error", "pose err"),
    ("expression_error", "expr err"),
    ("sharpness_ratio", "sharpness"),
    ("frechet_distance", "FD"),
)
SMOKE_BUILD = ["model=face-restorer-test", "trainer=restorer-test", "data.size=64", "data.patch=32", "data.val_faces=4"]


def cli(*words: str, threads: int, log: Path) -> None:
    """``swaplab WORDS`` in its own process with ``threads`` threads; its output goes to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "swaplab.cli", *words], env=env, stdout=handle, stderr=handle)
    if done.returncode:
        raise SystemExit(f"swaplab {' '.join(words[:3])} ... failed (exit {done.returncode}); see {log}")


def build(label: str, args: argparse.Namespace) -> Path:
    """The personal restorer ``label`` built into ``--work`` (resumes a stopped build)."""
    out = args.work / f"restorer-{label}"
    words = [f"data.facesets=[{args.faces}]", f"trainer.steps={args.steps}", f"trainer.seed={args.seed}"]
    words += [w.format(model=args.model) for w in RESTORERS[label] or []] + (SMOKE_BUILD if args.smoke else [])
    cli("nets", "build", "face-restorer", *words, "--preset", "personal", "--out", str(out), "-q",
        threads=args.threads, log=args.work / f"build-{label}.log")  # fmt: skip
    return out


def evaluate(label: str, erode: int, args: argparse.Namespace) -> dict[str, float]:
    out = args.work / f"eval-{label}-erode{erode}"
    options = [f"mask_erode={erode}"]
    if label != "off":
        options += ["restore=on"] + ([] if label == "installed" else [f"restorer={args.work / f'restorer-{label}'}"])
    limit = ["--limit", "2"] if args.smoke else []
    cli("eval", str(args.model), *options, "-o", str(out), "--protocol", "per_pair_v1", "--detector-pairs", "-1",
        *limit, threads=args.threads, log=args.work / f"eval-{label}-erode{erode}.log")  # fmt: skip
    from swaplab.evaluate.results import headline_numbers

    return headline_numbers(json.loads((out / "metrics.json").read_text())["metrics"])


def side_by_side(args: argparse.Namespace, labels: list[str], erode: int, rows: int = 6, size: int = 192) -> Path:
    """The first ``rows`` held-out swaps of each restorer (``out/swaps``), the middle of each LFW
    frame (where the face is) enlarged to ``size`` px so detail shows, one column per restorer."""
    from swaplab.provenance import Provenance, write_marked_image
    from swaplab.train.preview import compose_grid

    def faces(folder: Path) -> np.ndarray:
        shown = []
        for path in sorted(folder.glob("*.png"))[:rows]:
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            h, w = image.shape[:2]
            crop = image[int(h * 0.25) : int(h * 0.8), int(w * 0.22) : int(w * 0.78)]
            shown.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC))
        return np.stack(shown)

    columns = [faces(args.work / f"eval-{label}-erode{erode}" / "swaps") for label in labels]
    grid = compose_grid(columns, tuple(labels), title=f"held-out swaps, mask_erode={erode}, per restorer")
    out = args.work / "restorers-side-by-side.png"
    write_marked_image(out, grid, Provenance.create("bench-personal-restorer"))
    return out


def run(args: argparse.Namespace) -> None:
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"load before: {load_average()}")
    labels = args.restorers
    built = [label for label in labels if RESTORERS[label] is not None]
    print(f"building {', '.join(built)} ({args.steps} steps each, {args.parallel} at a time, {args.threads} thread(s))")
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda label: build(label, args), built))
        runs = [(label, erode) for erode in args.mask_erode for label in labels]
        jobs = {key: pool.submit(evaluate, *key, args) for key in runs}
        metrics = {key: job.result() for key, job in jobs.items()}
    print(f"load after: {load_average()}")
    print(f"\nswaplab eval on per_pair_v1 ({args.model}), restore=on with each restorer")
    print(f"{'restorer':16s} {'erode':>5s} " + " ".join(f"{label:>15s}" for _, label in COLUMNS))
    for (label, erode), values in metrics.items():
        cells = " ".join(f"{float(values.get(key, float('nan'))):15.3f}" for key, _ in COLUMNS)
        print(f"{label:16s} {erode:5d} {cells}")
    picture = side_by_side(args, labels, args.mask_erode[-1], rows=2 if args.smoke else 6)
    record = {
        "machine": machine(),
        "model": str(args.model),
        "faces": str(args.faces),
        "steps": args.steps,
        "seed": args.seed,
        "results": [{"restorer": label, "mask_erode": erode, **values} for (label, erode), values in metrics.items()],
    }
    (args.work / "personal-restorer.json").write_text(json.dumps(record, indent=1))
    print(f"\nwrote {args.work / 'personal-restorer.json'} and {picture}")


def smoke(args: argparse.Namespace, root: Path) -> None:
    """Everything at test size in ``root``: the pair's faces, a 2-step model, the test builds."""
    from swaplab.config import apply_overrides
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.train.built_networks import build_network
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.identity_net import build_identity_network
    from swaplab.train.recipes.per_pair import TrainConfig

    os.environ["SWAPLAB_CACHE"] = str(root / "cache")
    os.environ.pop("SWAPLAB_LFW_ARCFACE", None)
    os.environ.pop("SWAPLAB_FACE_RESTORER", None)
    build_network("face-restorer", "test", progress=False)
    build_identity_network("lfw-arcface", "test", progress=False)
    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1
    lfw = data_root() / "lfw" / "lfw-deepfunneled"
    for side, person in (("src", "George_W_Bush"), ("dst", "Colin_Powell")):
        extract(sorted((lfw / person).glob("*.jpg"))[:8], root / side, cfg, progress=False)
    words = ["model=liae-cpu", f"data.src={root / 'src'}", f"data.dst={root / 'dst'}", "trainer=test"]
    train(apply_overrides(TrainConfig(), [*words, "trainer.steps=2", "data.holdout=0", f"run_dir={root / 'run'}"]))
    export_model(root / "run", root / "model")
    args.model, args.faces, args.work, args.steps, args.mask_erode = root / "model", root / "src", root / "work", 2, [0]
    args.restorers = ["off", "installed", "personal-drawn"]  # one build, three evaluations: seconds each


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an exported per-pair model")
    parser.add_argument("--faces", type=Path, help="the faceset its source side trained on")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-personal-restorer"))
    parser.add_argument("--steps", type=int, default=1500, help="fine-tuning steps of each personal restorer")
    parser.add_argument(
        "--restorers", nargs="+", default=DEFAULT_RESTORERS, choices=list(RESTORERS), help="restorers to compare"
    )
    parser.add_argument("--mask-erode", type=int, nargs="+", default=[0, -2], help="swap mask_erode values to score")
    parser.add_argument("--seed", type=int, default=0, help="the builds' trainer.seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per build and evaluation")
    parser.add_argument("--parallel", type=int, default=2, help="builds and evaluations at once")
    parser.add_argument("--smoke", action="store_true", help="test sizes in a temporary folder")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="bench-personal-restorer-") as tmp:
            smoke(args, Path(tmp))
            run(args)
        print("(smoke: that temporary folder is removed on exit)")
        return
    if args.model is None or args.faces is None:
        parser.error("--model and --faces are needed (or --smoke)")
    run(args)


if __name__ == "__main__":
    main()
