"""The sharpness ratio a perfect model could reach at each output size, on ``per_pair_v1``.

A perfect per-pair model would give the aligned target back unchanged. This benchmark swaps the
protocol's target photos with exactly that: the pipeline aligns each face at R px, the "model"
returns the crop it was given, and the usual hull mask, colour transfer, feather and paste put it
back; ``swaplab eval`` then scores those swaps like any model's. The sharpness ratio (swap over
target inside the face, in the evaluator's 128 px crop) that such a swap reaches is the ceiling
for every model with an R px output: whatever it lacks below 1 is detail that R px cannot carry,
not a model's fault. With ``--restore`` the same swaps also go through the face restorer
(``restore=on``, ``swaplab nets build face-restorer``).

With ``--model-rows`` the given model's own swaps and its reconstructions of the same targets (each
face through the model's dst path, masked, recoloured and pasted like a swap) are scored beside
them: the pose and expression errors of a reconstruction are what the model loses without changing
the identity, the rest of its swaps' errors comes with the identity change (the pose estimator reads
a pose off another person's landmarks), and the perfect model's rows are the estimator's own noise.

    .venv/bin/python benchmarks/bench_sharpness_ceiling.py --model models/ab --sizes 64 96 128 256

``--model``: an exported per-pair model whose alignment template to use (its weights never run);
without it, a one-step ``df-cpu`` is trained and exported for its card (the ``whole_face``
template). ``--smoke``: 2 pairs at 64 px and the stand-in's own rows, no restoration (the numbers
mean nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    data_root,
    load_average,
    machine,
    pair_model,
    pass_through_swapper,
    reconstructing_swapper,
    swap_targets,
    use_threads,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="an exported per-pair model (its template)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--restore", action="store_true", help="also each size with restore=on")
    parser.add_argument(
        "--model-rows", action="store_true", help="also the model's own swaps and dst reconstructions (needs --model)"
    )
    parser.add_argument("--limit", type=int, default=0, help="first N pairs of the protocol (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep swaps and reports here (default: temporary)")
    parser.add_argument("--smoke", action="store_true", help="2 pairs at 64 px: checks the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.restore, args.limit, args.out, args.model_rows = [64], False, 2, None, True
    if args.model_rows and args.model is None and not args.smoke:
        parser.error("--model-rows scores a trained model's swaps: give it with --model")
    use_threads(args.threads)
    print(f"machine: {machine()}")
    print(f"load before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="swaplab-ceiling-") as scratch:
        model = args.model or pair_model(Path(scratch) / "stand-in", steps=1, photos=8)
        rows = measure(model, args.sizes, args.restore, args.limit, args.out or Path(scratch), args.model_rows)
    print(f"load after: {load_average()}")
    print(json.dumps(rows, indent=1))


def measure(
    model: Path, sizes: list[int], restore_too: bool, limit: int, out: Path, model_rows: bool = False
) -> list[dict]:
    """The pass-through swaps at each size (and restored), and with ``model_rows`` the model's swaps
    and dst reconstructions, scored on ``per_pair_v1``; one row each."""
    from swaplab.evaluate.evaluator import evaluate
    from swaplab.evaluate.protocol import load_protocol
    from swaplab.evaluate.targets import jobs_from_protocol
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    jobs = jobs_from_protocol(load_protocol("per_pair_v1"), data_root(), limit)
    swappers = {
        f"{size}px" + (" restored" if restore else ""): lambda size=size, restore=restore: pass_through_swapper(
            model, size, restore
        )
        for size in sizes
        for restore in ((False, True) if restore_too else (False,))
    }
    if model_rows:
        swappers["model swap"] = lambda: FaceSwapper(model, SwapConfig(precision="fp32"))
        swappers["model recon."] = lambda: reconstructing_swapper(model, "dst")
    print(f"\nsharpness ratio of a perfect model (the aligned target given back) on per_pair_v1, {len(jobs)} targets")
    print(f"{'output':>14}  {'mean':>6}  {'median':>6}  {'pose err':>8}  {'yaw':>6}  {'expr err':>8}  faces")
    rows = []
    for name, make in swappers.items():
        folder = out / name.replace(" ", "-").replace(".", "")
        swapped = swap_targets(make(), jobs, folder / "swaps")
        result = evaluate(None, out_dir=folder / "eval", swaps=folder / "swaps", detector_pairs=-1, report=False)
        scores = result.metrics["metrics"]
        sharpness = scores["sharpness_ratio"]
        pose = scores.get("pose_error", {})
        errors = {
            "pose_error": pose.get("mean", float("nan")),
            "yaw_abs": pose.get("yaw_abs", float("nan")),
            "expression_error": scores.get("expression_error", {}).get("mean", float("nan")),
        }
        rows.append({"output": name, "faces": swapped, **errors, **sharpness})
        print(
            f"{name:>14}  {sharpness['mean']:6.3f}  {sharpness['median']:6.3f}  {errors['pose_error']:8.2f}  "
            f"{errors['yaw_abs']:6.2f}  {errors['expression_error']:8.4f}  {swapped}"
        )
    return rows


if __name__ == "__main__":
    main()
