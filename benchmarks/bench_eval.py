"""Evaluator throughput: swaps scored per second and the cost of each metric family, for a per-pair model.

A ``df-cpu`` model (the weights do not matter for speed, so it trains for a few steps on the
reference pair's first 48 photos, none of them held out by the protocol) is scored on
``per_pair_v1`` (24 pairs, 48 held-out reconstructions). Three passes share one face cache:

1. fixed costs: faces and embeddings of the gallery and of the real reference faces (they scale
   with the protocol's gallery, not with the number of pairs);
2. a cold pass: targets analysed, swapped, swaps analysed and scored;
3. a warm pass, as for every further model of a comparison: the targets' faces come from the cache.

The per-pair cost of the cold pass (reconstruction, report and network loading left out) is then
extrapolated to a 1000-pair protocol.

    .venv/bin/python benchmarks/bench_eval.py [--steps 10] [--limit 0] [--threads 1] [--smoke]

``--smoke``: the model trains for 1 step on the first 8 photos of each person, then 1 pair is
scored against a gallery of 2 identities x 2 photos and 4 reference photos, KID over 2 subsets and
no detectability classifier (``detector_pairs=-1``): checks the script end to end in seconds (the
numbers mean nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_root, machine, pair_model  # noqa: E402

from swaplab.evaluate.evaluator import evaluate, prepare_cache  # noqa: E402
from swaplab.evaluate.faces import FaceCache  # noqa: E402
from swaplab.evaluate.results import EvalOptions  # noqa: E402

#: Families that are not per-pair work: excluded from the swaps/s figure and extrapolated separately.
NOT_PER_PAIR = ("reconstruction", "report", "identity networks (load)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps of the timing model")
    parser.add_argument("--limit", type=int, default=0, help="pairs of per_pair_v1 to score (0 = all 24)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--smoke", action="store_true", help="1 step, 1 pair, small gallery: checks the script only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    root = data_root()
    options = EvalOptions(limit=args.limit)
    photos = 48
    if args.smoke:
        args.steps, args.limit, photos = 1, 1, 8
        options = EvalOptions(
            limit=1,
            gallery_limit=1,
            gallery_images=2,
            reference_limit=4,
            kid_subsets=2,
            grid=1,
            worst=1,
            detector_pairs=-1,
        )
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        model = pair_model(work, args.steps, photos)
        print(f"timing model: df-cpu, {args.steps} steps ({time.perf_counter() - started:.0f} s to extract and train)")

        cache = FaceCache()
        started = time.perf_counter()
        prepared = prepare_cache(cache, "per_pair_v1", root, options)
        fixed = time.perf_counter() - started
        photos = prepared["gallery_images"] + prepared["reference_images"]
        print(
            f"fixed: {prepared['gallery_images']} gallery + {prepared['reference_images']} reference photos "
            f"analysed and embedded in {fixed:.1f} s ({1000 * fixed / photos:.0f} ms per photo)"
        )

        passes = {}
        for label in ("cold", "warm"):
            started = time.perf_counter()
            result = evaluate(model, out_dir=work / f"eval-{label}", options=options, cache=cache)
            passes[label] = (time.perf_counter() - started, result)
        pairs = passes["cold"][1].metrics["samples"]["pairs_scored"]
        recon = sum(passes["cold"][1].metrics["samples"]["reconstruction_faces"].values())

    families = sorted({k for _, r in passes.values() for k in r.timing})
    print(f"\nper_pair_v1: {pairs} pairs scored, {recon} held-out faces reconstructed")
    print(f"{'family':<42}{'cold s':>9}{'ms/pair':>9}{'warm s':>9}{'warm/cold':>11}")
    per_pair = {}
    for family in families:
        cold = passes["cold"][1].timing.get(family, 0.0)
        warm = passes["warm"][1].timing.get(family, 0.0)
        per_pair[family] = cold / pairs
        ratio = f"{warm / cold:.2f}" if cold > 0 else "-"
        print(f"{family:<42}{cold:>9.2f}{1000 * cold / pairs:>9.1f}{warm:>9.2f}{ratio:>11}")
    for label, (seconds, _) in passes.items():
        print(f"{label + ' pass total':<42}{seconds:>9.2f}")
    scoring = sum(v for k, v in per_pair.items() if k not in NOT_PER_PAIR)
    warm_scoring = sum(v for k, v in passes["warm"][1].timing.items() if k not in NOT_PER_PAIR) / pairs
    print(
        f"\nswaps scored per second (swap + faces + every metric): cold {1 / scoring:.1f}, "
        f"warm (targets cached) {1 / warm_scoring:.1f}"
    )
    print(
        f"extrapolated to a 1000-pair protocol: {1000 * scoring / 60:.1f} min cold "
        f"+ {fixed:.0f} s for this gallery and reference; each further model {1000 * warm_scoring / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
