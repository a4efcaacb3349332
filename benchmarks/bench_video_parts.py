"""Benchmark: the swap's learned parts on video, before and after, on the `video_v1` protocol.

One model (``--model``, e.g. the demo's ``demo-output/model``) swaps the protocol's talking-head
clips once per swap-stage setting, and the evaluator scores each: landmark jitter and flicker of the
swapped clip relative to the original (raw, and with the original's optical flow taken out, which a
sharper face does not inflate), identity drift, and the swap's frames/s. The settings: the
default (the model's mask within the landmark hull), the face segmenter's mask (raw and smoothed
over time), the restorer (in one pass, in its default passes, and with its added detail smoothed
over time), the learned blender, Poisson blending and GL-GAN's smoother across frames, and with
``--restorer FOLDER ...`` other restorer builds (ones personal to the model's source: ``swaplab nets
build face-restorer --preset personal ... --out FOLDER``, e.g. with and without ``loss.temporal``),
each raw and smoothed, named by their folder. Each
setting that needs a network that is not built is skipped and said so (``swaplab nets build
face-segmenter|face-restorer|learned-blender|glgan-smoother`` builds them).

    .venv/bin/python benchmarks/bench_video_parts.py --model demo-output/model [--clips 2] [--frames 100]
        [--only NAME ...] [--restorer FOLDER ...]

``--smoke``: the test-sized segmenter built in a temporary user cache (the installed restorer's and
the blender's settings are skipped), a test-sized restorer as ``--restorer``, a 2-step model, one
clip of 6 frames (the numbers mean nothing; it checks the script end to end).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, load_average, machine, use_threads  # noqa: E402

from swaplab.config import apply_overrides  # noqa: E402
from swaplab.evaluate.evaluator import evaluate  # noqa: E402
from swaplab.evaluate.results import EvalOptions  # noqa: E402
from swaplab.models.installed import find_weights  # noqa: E402
from swaplab.swap.pipeline import SwapConfig  # noqa: E402

#: (name, swap options, the built network it needs or "")
SETTINGS = (
    ("default (learned mask x landmark hull)", [], ""),
    ("mask=segment", ["mask=segment"], "face-segmenter"),
    ("mask=segment, smoothed", ["mask=segment", "mask_smoothing=one_euro"], "face-segmenter"),
    ("restore=on, one pass", ["restore=on", "restore_pass_scale=0"], "face-restorer"),
    ("restore=on", ["restore=on"], "face-restorer"),
    ("restore=on, smoothed", ["restore=on", "restore_smoothing=one_euro"], "face-restorer"),
    ("blend=learned", ["blend=learned"], "learned-blender"),
    ("blend=poisson", ["blend=poisson"], ""),
    ("face_smoothing=glgan", ["face_smoothing=glgan"], "glgan-smoother"),
    ("keep_mouth=true", ["keep_mouth=true"], ""),
    ("keep_mouth=true, smoothed", ["keep_mouth=true", "mask_smoothing=one_euro"], ""),
)


def smoke_setup(work: Path) -> tuple[Path, Path]:
    """A test-sized segmenter in a temporary user cache, a test-sized restorer in a folder of its
    own (as ``--restorer`` names one) and a 2-step model on a few frames: (model, restorer)."""
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.train.built_networks import build_network
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.per_pair import TrainConfig

    os.environ["SWAPLAB_CACHE"] = str(work / "cache")
    clip = data_root() / "videos/hdtf_sadtalker/WDA_KatieHill_000.mp4"
    faces = work / "faces"
    extract(clip, faces, ExtractConfig(size=128, max_frames=8), progress=False)
    build_network("face-segmenter", "test", [], progress=False)  # the others' settings are skipped, as without them
    build_network("face-restorer", "test", [f"data.facesets=[{faces}]"], progress=False, out=work / "restorer")
    words = ["model=liae-cpu", f"data.src={faces}", f"data.dst={faces}", "data.holdout=0", "trainer=test"]
    train(apply_overrides(TrainConfig(), [*words, "trainer.steps=2", f"run_dir={work / 'run'}"]))
    export_model(work / "run", work / "model")
    return work / "model", work / "restorer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", default=None, help="settings whose name starts with one of these")
    parser.add_argument("--restorer", type=Path, nargs="+", default=[], help="other restorer builds, scored beside")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    use_threads(args.threads)
    print(f"machine: {machine()}; load average at start: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.smoke:
            (args.model, restorer), args.clips, args.frames = smoke_setup(work), 1, 6
            args.restorer = [restorer]
        if args.model is None:
            parser.error("--model MODEL (an exported model), or --smoke")
        settings = list(SETTINGS)
        for folder in args.restorer:
            given = ["restore=on", f"restorer={folder}"]
            settings += [
                (f"restorer={folder.name}", given, ""),
                (f"restorer={folder.name}, smoothed", [*given, "restore_smoothing=one_euro"], ""),
            ]
        rows: list[tuple[str, dict[str, float], float]] = []
        for index, (name, words, network) in enumerate(settings):
            if args.only and not name.startswith(tuple(args.only)):
                continue
            if network and find_weights(network) is None:
                print(f"{name}: skipped, {network} is not built (swaplab nets build {network})")
                continue
            swap_config = apply_overrides(SwapConfig(precision="auto"), words)
            options = EvalOptions(limit=args.clips, frames=args.frames, detector_pairs=-1, swap_config=swap_config)
            result = evaluate(args.model, out_dir=work / f"eval-{index}", protocol="video_v1", options=options)
            values = {key: entry["mean"] for key, entry in result.metrics["metrics"].items() if "mean" in entry}
            fps = result.metrics["samples"]["frames"] / max(result.timing.get("swap (video pipeline)", 0.0), 1e-9)
            rows.append((name, values, fps))
            shown = ", ".join(f"{key} {value:.4f}" for key, value in values.items())
            print(f"{name}: {shown}, swap {fps:.1f} frames/s", flush=True)
        if rows:
            keys = list(rows[0][1])
            print(f"\n| setting | {' | '.join(keys)} | swap frames/s |")
            print(f"|---|{'---|' * len(keys)}---|")
            for name, values, fps in rows:
                cells = " | ".join(f"{values[key]:.4f}" if key in values else "-" for key in keys)
                print(f"| {name} | {cells} | {fps:.1f} |")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
