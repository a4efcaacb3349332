"""A model's part of an evaluation: make its swaps of the protocol's pairs and its reconstructions.

The model is driven through the swapper contract alone (``FaceSwapper`` over
``swaplab.models.swapper``): a model that conditions on a source person gets each pair's source
photos embedded by the network it names; reconstructions are the faces the model gives back
through its own path (per-pair models each side's held-out photos, identity-conditioned models each
target swapped with its own identity). Swaps are written, marked, beside the results; scoring is
``swaplab.evaluate.scoring``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from swaplab.evaluate.encoders import encoder
from swaplab.evaluate.faces import FaceCache
from swaplab.evaluate.occluded import occlude_targets
from swaplab.evaluate.protocol import Protocol
from swaplab.evaluate.results import EvalOptions, EvalResult, Timer
from swaplab.evaluate.scoring import ScoringContext, masked_scores, score
from swaplab.evaluate.targets import (
    Job,
    TargetKind,
    detector_jobs,
    jobs_from_protocol,
    per_pair_source_photos,
    protocol_gallery,
    reference_photos,
)
from swaplab.io.images import MediaError, read_image

__all__ = ["evaluate_model", "source_embedding", "swap_jobs"]


def evaluate_model(
    model_dir: Path,
    kind: TargetKind,
    given: Path,
    spec: Protocol,
    root: Path,
    out: Path,
    opts: EvalOptions,
    cache: FaceCache,
    name: str | None,
) -> EvalResult:
    """Swap the protocol's pairs (and detector pairs) with the model, reconstruct, and score."""
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    timer = Timer()
    config = opts.swap_config or SwapConfig(precision="fp32")
    swapper = FaceSwapper(model_dir, config, device=opts.device)
    if spec.kind == "oneshot" and not swapper.needs_source:
        raise ValueError(
            f"protocol {spec.name} swaps a source photo of each pair in; {given} swaps in the one identity it "
            "was trained on. Score it on per_pair_v1, or swap the protocol's pairs with another tool and score "
            "them with --swaps DIR (swaps= in Python)."
        )
    jobs = jobs_from_protocol(spec, root, opts.limit)
    sources: list[Path] = []
    if spec.kind == "per_pair" and swapper.needs_source:
        # A model that takes a source photo (one-shot, or conditioned and tuned on the source person)
        # is given the source person's photos that the protocol scores nothing against.
        sources = per_pair_source_photos(spec, root)
        for job in jobs:
            job.sources = list(sources)
    occlude_targets(spec, jobs, out / "occluded-targets")  # occluded-target protocols only
    swap_jobs(swapper, jobs, out / "swaps", spec, cache, timer)
    detector = detector_jobs(spec, root, opts)
    swap_jobs(swapper, detector, out / "detector-swaps", spec, cache, timer)
    info = {
        "kind": kind,
        "path": str(given),
        "model_id": swapper.model_id,
        "arch": swapper.card.get("arch"),
        "recipe": swapper.card.get("recipe"),
        "step": swapper.card.get("step"),
        "resolution": swapper.resolution,
        "template": swapper.template,
        "conditions_on": swapper.model.conditions_on,
        "source_photos": [str(path.relative_to(root)) for path in sources],
        "swap_config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else str(config),
        "swap_networks": swapper.networks(),  # the built networks those options swap with, by hash
    }
    sets = {side: [root / p for p in files[: opts.limit or None]] for side, files in spec.heldout.items()}
    if not sets:  # one-shot protocols: each target, swapped with its own identity
        sets = {"self": [job.target for job in jobs]}
    reconstruction = reconstruct(swapper, sets, cache, timer)
    context = ScoringContext(
        name=name or given.name,
        out=out,
        spec=spec,
        opts=opts,
        cache=cache,
        jobs=jobs,
        gallery=protocol_gallery(spec, root, [j.pair.source_identity for j in jobs], opts),
        reference=reference_photos(spec, root, opts),
        target_info=info,
        card=swapper.card,
        reconstruction=reconstruction,
        detector_jobs=detector,
        timer=timer,
    )
    return score(context)


def source_embedding(cache: FaceCache, photos: Sequence[Path], network: str) -> np.ndarray | None:
    """The mean embedding by ``network`` of the central faces of a person's photos (None: no face)."""
    rows = cache.embeddings(list(photos), network, encoder(network), "embedding")
    rows = rows[np.isfinite(rows).all(axis=1)]
    return rows.mean(axis=0) if len(rows) else None


def swap_jobs(swapper, jobs: Sequence[Job], folder: Path, spec: Protocol, cache: FaceCache, timer: Timer) -> None:
    """Swap each job's target (with its source photos' identity, for models that take one); marked PNGs."""
    from swaplab.provenance import write_marked_image

    for job in jobs:
        with timer("faces (detect, landmarks)"):
            face = cache.face(job.target)
        if face is None:
            continue  # counted as a target without a face when scoring
        if getattr(swapper.model, "takes_source_face", False):  # FSGAN: reenacts the first source photo's face
            with timer("source identity"):
                try:
                    swapper.set_source_photos(job.sources[:1])
                except MediaError:
                    continue  # no face in the source photo: the pair has no swap, reported as missing
        elif swapper.needs_source:
            with timer("source identity"):
                identity = source_embedding(cache, job.sources, swapper.model.conditions_on)
            if identity is None:
                continue  # no face in any source photo: the pair has no swap, reported as missing
            swapper.set_source_identity(identity)
        with timer("swap (model, mask, blend)"):
            image = read_image(job.target)[0]
            aligned = swapper.analyzer.from_landmarks(image, [face.landmarks68], embed=False)
            swapped, _ = swapper.swap_frame(image, aligned)
        with timer("write marked swaps"):
            job.swap = write_marked_image(
                folder / f"{job.pair.id}.png", swapped, swapper.provenance(f"{spec.name}:{job.pair.id}")
            )


def reconstruct(swapper, sets: dict[str, list[Path]], cache: FaceCache, timer: Timer) -> tuple[dict, list]:
    """Masked SSIM / PSNR / L1 of the faces each set's side gives back through the model.

    Each photo is aligned as the swap stage aligns faces (the model's template and resolution,
    from the dlib landmarks found here), reconstructed in fp32 (with its own identity by the network
    the model conditions on, if it takes one), and compared inside the landmark face-hull mask. A side
    the model cannot reconstruct is left out.
    """
    from swaplab.faces.masks import landmark_mask

    model, size = swapper.model, swapper.resolution
    metrics: dict[str, dict] = {}
    items: list[dict] = []
    for side, files in sets.items():
        if side not in model.reconstruction_sides:
            continue
        with timer("faces (detect, landmarks)"):
            found = [(f, cache.face(f)) for f in files]
        crops, masks, identities, kept = [], [], [], []
        with timer("reconstruction"):
            for path, face in found:
                identity = None
                if face is not None and model.conditions_on is not None:
                    identity = source_embedding(cache, [path], model.conditions_on)
                if face is None or (model.conditions_on is not None and identity is None):
                    continue
                aligned = swapper.analyzer.from_landmarks(read_image(path)[0], [face.landmarks68], embed=False)[0]
                crops.append(aligned.crop)
                masks.append(landmark_mask(aligned.landmarks, size, region="face"))
                identities.append(identity)
                kept.append(path)
            if not crops:
                continue
            real = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()
            mask = torch.from_numpy(np.stack(masks))[:, None].contiguous()
            ids = torch.from_numpy(np.stack(identities).astype(np.float32)) if model.conditions_on else None
            with torch.inference_mode():
                rgb = torch.cat(
                    [
                        model.reconstruct(
                            real[i : i + 16].to(swapper.device), side, None if ids is None else ids[i : i + 16]
                        )
                        .rgb.float()
                        .cpu()
                        for i in range(0, len(real), 16)
                    ]
                )
            side_metrics, per_face = masked_scores(rgb.clamp(0, 1).contiguous(), real, mask, side, len(kept))
            metrics.update(side_metrics)
        items += [
            {"side": side, "image": str(p), **{k: float(v[i]) for k, v in per_face.items()}} for i, p in enumerate(kept)
        ]
    return metrics, items
