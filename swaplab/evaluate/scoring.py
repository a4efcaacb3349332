"""Scoring swapped images: identity, attributes, sharpness, distribution and detectability of a set
of (source, target, swap) jobs, from one ``ScoringContext``; then the result files.

Faces come from the shared ``FaceCache`` (targets and sources once per protocol, swaps afresh for
each model); the numbers from the registered metric functions (``swaplab.metrics``), with the
directions they declare. It makes no swaps: ``swaplab.evaluate.model_swaps`` makes a model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.evaluate.detectability import detectability_metrics
from swaplab.evaluate.encoders import identity_loss_warnings, load_encoders
from swaplab.evaluate.faces import EVAL_CROP, FaceCache, FaceInfo, matching_face
from swaplab.evaluate.protocol import Protocol
from swaplab.evaluate.results import (
    METRIC_NETWORK,
    EvalOptions,
    EvalResult,
    Measured,
    Timer,
    finite_or_none,
)
from swaplab.evaluate.targets import Job
from swaplab.evaluate.writing import write_result
from swaplab.identity.embed import embed_faces
from swaplab.io.images import MediaError, read_image
from swaplab.metrics import compute, direction, per_item, summarize

__all__ = ["Scored", "ScoringContext", "masked_scores", "read_swaps", "score"]


@dataclass
class Scored:
    """A job whose target has a face and whose swap was read: the inputs of every image metric."""

    job: Job
    target_face: FaceInfo
    swap_face: FaceInfo | None  # None: no face found in the swap where the target's face is
    swap_image: np.ndarray

    @property
    def swap_landmarks5(self) -> np.ndarray:
        """Where the swap's identity chip is cut: its own face, else the target's face position."""
        return (self.swap_face or self.target_face).landmarks5


@dataclass
class ScoringContext:
    """Everything one scoring pass reads: the jobs with their swaps, where identity is looked up, the
    protocol and options, the shared face cache, and what is known of the model."""

    name: str
    out: Path
    spec: Protocol
    opts: EvalOptions
    cache: FaceCache
    jobs: list[Job]
    gallery: dict[str, list[Path]]  # identity -> photos, for retrieval
    reference: list[Path]  # real faces of the sources, for FD / KID
    target_info: dict[str, Any]
    card: dict[str, Any] | None = None  # the model's card, when a model made the swaps
    reconstruction: tuple[dict, list] = field(default_factory=lambda: ({}, []))  # (metrics, items)
    detector_jobs: Sequence[Job] = ()
    timer: Timer = field(default_factory=Timer)

    def recon_sides(self) -> list[str]:
        """The sides the reconstruction scores cover, in the order first seen."""
        return list(dict.fromkeys(item["side"] for item in self.reconstruction[1]))


def score(ctx: ScoringContext) -> EvalResult:
    """Every image metric of the context's (source, target, swap) jobs; writes the result files."""
    jobs, gallery, cache, opts, timer = ctx.jobs, ctx.gallery, ctx.cache, ctx.opts, ctx.timer
    detector_jobs = ctx.detector_jobs
    warnings: list[str] = []
    with timer("identity networks (load)"):
        encoders, encoder_warnings = load_encoders(opts.encoders)
    warnings += encoder_warnings + identity_loss_warnings(ctx.card, list(encoders))
    with timer("faces (detect, landmarks)"):
        scored, no_target_face, missing_swaps = read_swaps(jobs, cache)
    if no_target_face:
        warnings.append(f"{len(no_target_face)} target(s) without a detectable face were skipped: {no_target_face[:5]}")
    if missing_swaps:
        warnings.append(f"{len(missing_swaps)} pair(s) have no swap file and were skipped: {missing_swaps[:5]}")
    if not scored:
        raise ValueError(f"nothing to score: {len(jobs)} pairs, none with both a target face and a swap")

    n, found = len(scored), sum(s.swap_face is not None for s in scored)
    metrics: dict[str, dict[str, Any]] = {
        "no_face_in_swap": {
            "value": float(n - found),
            "share": (n - found) / n,
            "n": n,
            "better": direction("no_face_in_swap"),
        }
    }
    with timer("identity (chips, embeddings, retrieval)"):
        identity, per_item_identity, identity_warnings = _identity_metrics(scored, encoders, gallery, cache)
    with timer("pose and expression"):
        attributes, pose, expression, pose_change = _attribute_metrics(scored)
    with timer("sharpness"):
        sharpness, sharp = _sharpness_metrics(scored)
    with timer("distribution (FD, KID)"):
        distribution, distribution_warnings = _distribution_metrics(
            scored, ctx.reference, encoders, cache, ctx.spec, opts
        )
    with timer("detectability (train and test the detector)"):
        detectability, detectability_warnings = detectability_metrics(scored, detector_jobs, cache, opts)
    metrics.update({**identity, **attributes, **sharpness, **distribution, **detectability})
    warnings += identity_warnings + distribution_warnings + detectability_warnings
    recon_metrics, recon_items = ctx.reconstruction
    metrics.update(recon_metrics)
    occluder: dict[str, float | None] = {}
    if ctx.spec.occlusion:
        from swaplab.evaluate.occluded import occlusion_scores

        with timer("occluders (error inside their masks)"):
            occlusion_metrics, occluder = occlusion_scores([s.job for s in scored])
        metrics.update(occlusion_metrics)

    items = []
    for i, s in enumerate(scored):
        source_face = cache.face(s.job.sources[0]) if s.job.sources else None
        items.append(
            {
                "id": s.job.pair.id,
                "source_identity": s.job.pair.source_identity,
                "source_image": str(s.job.sources[0]) if s.job.sources else None,
                "source_box": list(source_face.box) if source_face else None,
                "target": str(s.job.target),
                "target_box": list(s.target_face.box),
                "swap": str(s.job.swap),
                "swap_face_found": s.swap_face is not None,
                "identity_similarity": {k: float(v["similarity"][i]) for k, v in per_item_identity.items()},
                "target_identity_similarity": {
                    k: float(v["target_similarity"][i]) for k, v in per_item_identity.items()
                },
                "pose_error": finite_or_none(pose[i]),
                "pose_change": None if np.isnan(pose[i]) else [round(float(v), 3) for v in pose_change[i]],
                "expression_error": finite_or_none(expression[i]),
                "sharpness_ratio": finite_or_none(sharp[i]),
            }
        )
        if s.job.original is not None:  # occluded-target protocols: the photo before its occluder
            items[-1].update(original=str(s.job.original), occluder_error=occluder.get(s.job.pair.id))
    samples = {
        "pairs": len(jobs),
        "pairs_scored": n,
        "targets_without_face": len(no_target_face),
        "missing_swaps": len(missing_swaps),
        "swaps_without_face": n - found,
        "gallery_identities": len(gallery),
        "gallery_images": sum(len(v) for v in gallery.values()),
        "reference_faces": int(metrics.get("frechet_distance", {}).get("n_reference", 0)),
        # each side the model gives back through its own path (src, dst; or self: a target swapped with itself)
        "reconstruction_faces": {side: sum(1 for r in recon_items if r["side"] == side) for side in ctx.recon_sides()},
        "detector_training_swaps": sum(1 for j in detector_jobs if j.swap is not None),
    }
    measured = Measured(ctx.target_info, list(encoders), samples, metrics, items, recon_items, warnings)
    return write_result(ctx.name, ctx.out, ctx.spec, measured, timer, opts)


def read_swaps(jobs: Sequence[Job], cache: FaceCache) -> tuple[list[Scored], list[str], list[str]]:
    """Targets' faces (cached across models) and swaps' faces (found afresh on every swap)."""
    scored, no_target_face, missing_swaps = [], [], []
    for job in jobs:
        target_face = cache.face(job.target)
        if target_face is None:
            no_target_face.append(job.pair.id)
            continue
        if job.swap is None:
            missing_swaps.append(job.pair.id)
            continue
        swap_image = read_image(job.swap)[0]
        target_shape = cache.faces(job.target)[0]
        if swap_image.shape != target_shape:
            raise MediaError(job.swap, f"is {swap_image.shape[:2]}, its target {target_shape[:2]}: sizes must match")
        swap_face = matching_face(cache.find_faces(swap_image), target_face.box)
        scored.append(Scored(job, target_face, swap_face, swap_image))
    return scored, no_target_face, missing_swaps


def _identity_metrics(
    scored: Sequence[Scored], encoders: dict[str, nn.Module], gallery: dict[str, list[Path]], cache: FaceCache
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]], list[str]]:
    """Per encoder: similarity of each swap (and, as a reference, its target) to its source, and retrieval."""
    metrics: dict[str, dict[str, Any]] = {}
    per_item_values: dict[str, dict[str, np.ndarray]] = {}
    warnings: list[str] = []
    n = len(scored)
    for enc_name, encoder in encoders.items():
        swap_emb = embed_faces([s.swap_image for s in scored], [s.swap_landmarks5 for s in scored], encoder)
        source_mean = np.stack([_mean_embedding(cache, s.job.sources, enc_name, encoder) for s in scored])
        target_emb = cache.embeddings([s.job.target for s in scored], enc_name, encoder, "embedding")
        similarity = compute("identity_similarity", swap_emb=swap_emb, source_emb=source_mean)
        baseline = compute("identity_similarity", swap_emb=target_emb, source_emb=source_mean)
        metrics[f"identity_similarity/{enc_name}"] = {
            **summarize(similarity),
            "n": n,
            "better": direction("identity_similarity"),
        }
        metrics[f"target_identity_similarity/{enc_name}"] = {
            **summarize(baseline),
            "n": n,
            "better": direction("target_identity_similarity"),
        }
        per_item_values[enc_name] = {"similarity": similarity.values, "target_similarity": baseline.values}
        labels = [s.job.pair.source_identity for s in scored]
        retrieval = _retrieval(cache, gallery, enc_name, encoder, swap_emb, labels)
        if retrieval is not None:
            metrics[f"identity_retrieval/{enc_name}"] = retrieval
        else:
            warnings.append(f"identity retrieval by {enc_name} skipped: a source identity has no gallery face")
    return metrics, per_item_values, warnings


def _attribute_metrics(
    scored: Sequence[Scored],
) -> tuple[dict[str, dict[str, Any]], np.ndarray, np.ndarray, np.ndarray]:
    """Pose and expression error of the swap's landmarks against the target's, in the same frame.

    Also each swap's signed pose change (swap minus target: yaw, pitch, roll in degrees) and, in the
    pose entry, the mean absolute change per angle: which angle the error is in (soft 64 px swaps
    err mostly in yaw, on faces that look as frontal as their targets: landmarks drift on a blurred
    nose, and PnP reads a nose tip off the eyes' midline as a turned head).
    """
    from swaplab.faces.pose import head_poses

    pose = np.full(len(scored), np.nan)
    expression = np.full(len(scored), np.nan)
    change = np.full((len(scored), 3), np.nan)
    for i, s in enumerate(scored):
        if s.swap_face is None:
            continue
        target68, swap68 = s.target_face.landmarks68, s.swap_face.landmarks68
        size = tuple(s.swap_image.shape[:2])
        pose[i] = compute("pose_error", target_landmarks68=target68, swap_landmarks68=swap68, image_size=size).mean
        change[i] = (head_poses(swap68[None], size) - head_poses(target68[None], size))[0]
        expression[i] = compute("expression_error", target_landmarks68=target68, swap_landmarks68=swap68).mean
    metrics = {}
    for key, values in (("pose_error", pose), ("expression_error", expression)):
        kept = values[~np.isnan(values)]
        if len(kept):
            metrics[key] = {**summarize(per_item(kept)), "n": len(kept), "better": direction(key)}
    if "pose_error" in metrics:
        mean_abs = np.nanmean(np.abs(change), axis=0)
        metrics["pose_error"].update({f"{angle}_abs": float(v) for angle, v in zip(("yaw", "pitch", "roll"), mean_abs)})
    return metrics, pose, expression, change


def _sharpness_metrics(scored: Sequence[Scored]) -> tuple[dict[str, dict[str, Any]], np.ndarray]:
    """Laplacian variance ratio, swap over target, in the same aligned crop (the target's) inside its face hull.

    A swap that carries swaplab's mark is compared with its target marked the same way: the
    invisible watermark is faint high-frequency texture, and on its own it raised an unchanged LFW
    photo's ratio to 1.26 (mean of ``per_pair_v1``'s 24 targets), detail no face has.
    """
    from swaplab.faces.align import transform_points, warp_face
    from swaplab.faces.masks import landmark_mask

    def batch(crops: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()

    swaps, targets, masks = [], [], []
    for s in scored:
        matrix = s.target_face.matrix
        swaps.append(warp_face(s.swap_image, matrix, EVAL_CROP))
        targets.append(warp_face(_reference_target(s), matrix, EVAL_CROP))
        masks.append(landmark_mask(transform_points(s.target_face.landmarks68, matrix), EVAL_CROP, region="face"))
    mask = torch.from_numpy(np.stack(masks))[:, None].contiguous()
    ratio = compute("sharpness_ratio", swap=batch(swaps), target=batch(targets), mask=mask)
    entry = {
        **summarize(ratio),
        "median": float(np.median(ratio.values)),
        "n": len(scored),
        "better": direction("sharpness_ratio"),
    }
    return {"sharpness_ratio": entry}, ratio.values


def _reference_target(s: Scored) -> np.ndarray:
    """The target photo as the swap's sharpness is compared with: marked like the swap when it is marked."""
    from swaplab.provenance import Provenance, mark_image, read_metadata

    target = read_image(s.job.target)[0]
    if s.job.swap is None or read_metadata(s.job.swap) is None or min(target.shape[:2]) < 64:
        return target
    return mark_image(np.ascontiguousarray(target[..., :3]), Provenance.create("evaluation-reference"))


def _distribution_metrics(
    scored: Sequence[Scored],
    reference: Sequence[Path],
    encoders: dict[str, nn.Module],
    cache: FaceCache,
    spec: Protocol,
    opts: EvalOptions,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """FD and KID between the swaps' and real source faces' 256-d dlib features (sample sizes stated)."""
    encoder = encoders[METRIC_NETWORK]
    swap_feats = embed_faces([s.swap_image for s in scored], [s.swap_landmarks5 for s in scored], encoder, "features")
    real_feats = cache.embeddings(list(reference), METRIC_NETWORK, encoder, "features")
    real_feats = real_feats[~np.isnan(real_feats).any(1)] if len(real_feats) else real_feats
    sizes = {"n_swaps": len(swap_feats), "n_reference": len(real_feats)}
    if min(sizes.values()) < 2:
        return {}, [f"FD/KID skipped: need >= 2 swaps and >= 2 real faces, have {sizes}"]
    fd = compute("frechet_distance", feats_a=swap_feats, feats_b=real_feats)
    kid = compute(
        "kernel_distance",
        feats_a=swap_feats,
        feats_b=real_feats,
        subsets=opts.kid_subsets,
        subset_size=opts.kid_subset_size,
        seed=spec.seed,
    )
    return {
        "frechet_distance": {**summarize(fd), **sizes, "better": direction("frechet_distance")},
        "kernel_distance": {**summarize(kid), **sizes, "better": direction("kernel_distance")},
    }, []


def _mean_embedding(cache: FaceCache, sources: Sequence[Path], enc_name: str, encoder: nn.Module) -> np.ndarray:
    """The unit-length mean of the unit embeddings of a source's photos (photos without a face are left out)."""
    rows = cache.embeddings(list(sources), enc_name, encoder, "embedding")
    rows = rows[~np.isnan(rows).any(1)]
    if not len(rows):
        raise ValueError(f"no face found in any source photo: {[str(s) for s in sources][:3]}")
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    mean = unit.mean(0)
    return mean / np.linalg.norm(mean)


def _retrieval(cache, gallery, enc_name, encoder, swap_emb, labels) -> dict[str, Any] | None:
    files = [f for name in gallery for f in gallery[name]]
    names = [name for name in gallery for _ in gallery[name]]
    emb = cache.embeddings(files, enc_name, encoder, "embedding")
    keep = ~np.isnan(emb).any(1)
    emb, names = emb[keep], [nm for nm, k in zip(names, keep) if k]
    identities = len(set(names))
    if not set(labels) <= set(names):
        return None
    k = tuple(kk for kk in (1, 5) if kk <= identities)
    result = compute(
        "identity_retrieval", swap_emb=swap_emb, gallery_emb=emb, gallery_labels=names, true_labels=labels, k=k
    )
    return {
        **summarize(result),
        "n": len(labels),
        "gallery_identities": identities,
        "gallery_images": len(names),
        "better": direction("identity_retrieval"),
    }


def masked_scores(rgb: torch.Tensor, real: torch.Tensor, mask: torch.Tensor, suffix: str, n: int):
    metrics, per_face = {}, {}
    for metric in ("masked_ssim", "masked_psnr", "masked_l1"):
        result = compute(metric, pred=rgb, target=real, mask=mask)
        metrics[f"{metric}/{suffix}"] = {**summarize(result), "n": n, "better": direction(metric)}
        per_face[metric] = result.values
    return metrics, per_face
