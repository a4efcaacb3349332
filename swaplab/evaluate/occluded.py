"""The occluded-target set: occluders pasted onto a protocol's target photos before the swap, and how
much of each survives it.

A protocol with an ``occlusion`` section (``oneshot_occluded_v1``) names a seed per pair. Each target
photo gets ``swaplab.train.occlusion.paste_occluders`` (the occluders HEAR-Net trains against) on its
central square, pasted back into the photo; the occluded photo and the occluder's mask are written
beside the results and become the job's target, so every metric of the set is against what the model
was given. ``occlusion_scores`` then measures ``occluder_error`` inside the mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swaplab.evaluate.protocol import Protocol
from swaplab.evaluate.targets import Job
from swaplab.io.images import read_image, write_image
from swaplab.metrics import compute, direction, per_item, summarize
from swaplab.train.occlusion import OcclusionConfig, paste_occluders

__all__ = ["occlude_image", "occlude_targets", "occlusion_scores"]


def _config(occlusion: dict[str, Any]) -> OcclusionConfig:
    return OcclusionConfig(
        probability=float(occlusion.get("probability", 1.0)),
        kinds=list(occlusion["kinds"]),
        min_size=float(occlusion["min_size"]),
        max_size=float(occlusion["max_size"]),
    )


def occlude_image(image: np.ndarray, seed: int, occlusion: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(occluded RGB uint8 image, bool mask H x W): ``paste_occluders`` on the image's central square
    of ``occlusion["region_share"]`` of its shorter side, with the protocol's kinds and sizes. The rest
    of the image is unchanged; a cut-out occluder comes from the same square, shifted."""
    height, width = image.shape[:2]
    side = max(8, int(round(min(height, width) * float(occlusion["region_share"]))))
    top, left = (height - side) // 2, (width - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(image[top : top + side, left : left + side]))
    square = square.permute(2, 0, 1)[None].float().div(255.0)
    occluded, masks = paste_occluders(square, int(seed), _config(occlusion))
    patch = (occluded[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    out, mask = image.copy(), np.zeros((height, width), bool)
    out[top : top + side, left : left + side] = patch
    mask[top : top + side, left : left + side] = masks[0, 0].numpy() > 0.5
    return out, mask


def occlude_targets(spec: Protocol, jobs: Sequence[Job], folder: Path) -> None:
    """For a protocol with an ``occlusion`` section: write each job's occluded target (``<id>.png``)
    and its occluder mask (``<id>.mask.png``) to ``folder`` and make the occluded copy the job's
    target (the photo is kept as ``job.original``). Other protocols: nothing."""
    if not spec.occlusion:
        return
    for job in jobs:
        if job.pair.occluder_seed is None:
            raise ValueError(f"protocol {spec.name} pastes occluders, but pair {job.pair.id} has no occluder_seed")
        image = read_image(job.target)[0]
        occluded, mask = occlude_image(image, job.pair.occluder_seed, spec.occlusion)
        job.original = job.target
        job.target = write_image(folder / f"{job.pair.id}.png", occluded)
        job.occluder_mask = write_image(
            folder / f"{job.pair.id}.mask.png", np.repeat(mask[..., None], 3, 2).astype(np.uint8) * 255
        )


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255.0)


def occlusion_scores(jobs: Sequence[Job]) -> tuple[dict[str, dict[str, Any]], dict[str, float | None]]:
    """``occluder_error`` over the jobs that have a swap and an occluder (metrics.json's entry), and
    each pair's value by pair id (None where the occluder has no contrast with the face under it)."""
    values: dict[str, float | None] = {}
    for job in jobs:
        if job.swap is None or job.original is None or job.occluder_mask is None:
            continue
        mask = read_image(job.occluder_mask)[0][..., 0] > 127
        if not mask.any():
            continue
        swap, occluded, original = (_tensor(read_image(p)[0]) for p in (job.swap, job.target, job.original))
        result = compute(
            "occluder_error", swap=swap, occluded=occluded, original=original, mask=torch.from_numpy(mask)[None, None]
        )
        value = float(result.values[0])
        values[job.pair.id] = value if np.isfinite(value) else None
    finite = np.array([v for v in values.values() if v is not None], np.float64)
    if not len(finite):
        return {}, values
    entry = {**summarize(per_item(finite)), "median": float(np.median(finite)), "n": int(len(finite))}
    return {"occluder_error": {**entry, "better": direction("occluder_error")}}, values
