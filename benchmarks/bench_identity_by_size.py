"""How much of a person an R px face carries once pasted onto a full-size photo, on ``per_pair_v1``.

This benchmark swaps the protocol's targets (Colin Powell) with a "model" whose output is a real
photo of the source person (George W. Bush): for the i-th target, the aligned face of the i-th of his
photos that neither the protocol's gallery, its held-out set nor its FD reference holds, aligned at
R px like the target. The usual hull mask, colour transfer, feather and paste put it on the target,
and ``swaplab eval`` scores the swaps like any model's. The identity retrieval these swaps reach says
what an R px output can carry of a person through this pipeline and scorer: a reference for every
model of that size, not a bound (a model may draw a more typical face of the person than any one
photo, and a real photo's pose and expression are its own, so those columns say nothing of a model).
The last row scores the donor photos themselves, unswapped: what the identity networks make of the
whole photo of the source, context included.

    .venv/bin/python benchmarks/bench_identity_by_size.py --model models/ab --sizes 32 64 128 256

``--model``: an exported per-pair model whose alignment template to use (its weights never run);
without it, a one-step ``df-cpu`` is trained and exported for its card (the ``whole_face`` template).
``--sizes`` with no size scores only the donor photos. ``--smoke``: 2 pairs at 64 px (the numbers
mean nothing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_root, load_average, machine, pair_model, use_threads  # noqa: E402

NETWORKS = ("lfw-arcface", "dlib-resnet")  # lfw-arcface trained nothing here; dlib-resnet guides some losses


def donor_swapper(model: Path, size: int):
    """A ``FaceSwapper`` at ``size`` px whose model gives back ``self.donor`` (an aligned crop) for every face."""
    from swaplab.faces.analyze import FaceAnalyzer
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    class Donor(FaceSwapper):
        donor: np.ndarray

        def render(self, faces, batch_size: int = 16):
            crops = np.stack([self.donor] * len(faces))
            return crops, np.ones(crops.shape[:3], np.float32)

    swapper = Donor(model, SwapConfig(mask="hull"))
    swapper.resolution = size
    swapper.analyzer = FaceAnalyzer(swapper.config.faces, template=swapper.template, size=size)
    return swapper


def swap_with_donors(swapper, jobs, donors: list[Path], folder: Path) -> int:
    """Each job's target swapped with its donor's face, written as ``<pair id>.png``; how many had both faces."""
    from swaplab.io.images import read_image
    from swaplab.provenance import write_marked_image

    folder.mkdir(parents=True, exist_ok=True)
    swapped = 0
    for job, donor in zip(jobs, donors, strict=True):
        faces = swapper.analyzer.analyze(read_image(donor)[0], embed=False)
        if not faces:
            continue  # counted as a missing swap by the evaluator
        swapper.donor = faces[0].crop  # the largest face
        frame, _ = read_image(job.target)
        image, count = swapper.swap_frame(frame, swapper.analyzer.analyze(frame))
        swapped += count > 0
        write_marked_image(folder / f"{job.pair.id}.png", image, swapper.provenance(job.pair.id))
    return swapped


def copy_donors(swapper, jobs, donors: list[Path], folder: Path) -> int:
    """The donor photos themselves as the pairs' "swaps" (marked like a swap, so they are scored alike)."""
    from swaplab.io.images import read_image
    from swaplab.provenance import write_marked_image

    folder.mkdir(parents=True, exist_ok=True)
    for job, donor in zip(jobs, donors, strict=True):
        write_marked_image(folder / f"{job.pair.id}.png", read_image(donor)[0], swapper.provenance(job.pair.id))
    return len(jobs)


def row(name: str, faces: int, metrics: dict) -> dict:
    out = {"output": name, "faces": faces}
    for network in NETWORKS:
        retrieval = metrics.get(f"identity_retrieval/{network}", {})
        similarity = metrics.get(f"identity_similarity/{network}", {})
        out[network] = {
            "top1": retrieval.get("top1", float("nan")),
            "top5": retrieval.get("top5", float("nan")),
            "similarity": similarity.get("mean", float("nan")),
        }
    out["sharpness_ratio"] = metrics.get("sharpness_ratio", {}).get("median", float("nan"))
    return out


def measure(model: Path, sizes: list[int], limit: int, out: Path, with_photos: bool) -> list[dict]:
    from swaplab.evaluate.evaluator import evaluate
    from swaplab.evaluate.protocol import load_protocol
    from swaplab.evaluate.targets import jobs_from_protocol, per_pair_source_photos

    protocol = load_protocol("per_pair_v1")
    root = data_root()
    jobs = jobs_from_protocol(protocol, root, limit)
    donors = per_pair_source_photos(protocol, root, len(jobs))  # what a model taking a source photo is given
    print(f"\nidentity of the source's real face pasted at each size on per_pair_v1, {len(jobs)} targets")
    print(f"donors: {donors[0].name} .. {donors[-1].name}")
    print(
        f"{'output':>14}  {'faces':>5}  " + "  ".join(f"{n + ' top-1/top-5/sim':>34}" for n in NETWORKS) + "  sharpness"
    )
    rows = []
    cases = [(f"{size}px", size) for size in sizes] + ([("donor photos", 0)] if with_photos else [])
    for name, size in cases:
        folder = out / name.replace(" ", "-")
        if folder.exists():
            shutil.rmtree(folder)
        if size:
            faces = swap_with_donors(donor_swapper(model, size), jobs, donors, folder / "swaps")
        else:
            faces = copy_donors(donor_swapper(model, 64), jobs, donors, folder / "swaps")
        result = evaluate(None, out_dir=folder / "eval", swaps=folder / "swaps", detector_pairs=-1, report=False)
        rows.append(row(name, faces, result.metrics["metrics"]))
        cells = "  ".join(
            f"{rows[-1][n]['top1']:>14.2f} / {rows[-1][n]['top5']:.2f} / {rows[-1][n]['similarity']:6.3f}"
            for n in NETWORKS
        )
        print(f"{name:>14}  {faces:>5}  {cells}  {rows[-1]['sharpness_ratio']:9.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="an exported per-pair model (its template)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--limit", type=int, default=0, help="first N pairs of the protocol (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep swaps and reports here (default: temporary)")
    parser.add_argument("--smoke", action="store_true", help="2 pairs at 64 px: checks the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.limit, args.out = [64], 2, None
    use_threads(args.threads)
    print(f"machine: {machine()}")
    print(f"load before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="swaplab-identity-by-size-") as scratch:
        model = args.model or pair_model(Path(scratch) / "stand-in", steps=1, photos=8)
        rows = measure(model, args.sizes, args.limit, args.out or Path(scratch), with_photos=not args.smoke)
    print(f"load after: {load_average()}")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
