"""Temporal stability on video: swap clips with a model (or read another tool's), track faces in the
original and the swap, and score landmark jitter, flicker and identity drift per clip.

Uses the whole swap pipeline (tracking, smoothing, encoding, marking) for a model's clips; the
numbers are the registered video metrics of ``swaplab.metrics.video``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.evaluate.encoders import identity_loss_warnings, load_encoders
from swaplab.evaluate.faces import EVAL_CROP, FaceCache
from swaplab.evaluate.protocol import Protocol
from swaplab.evaluate.results import EvalOptions, EvalResult, Measured, Timer
from swaplab.evaluate.writing import write_result
from swaplab.identity.embed import embed_faces
from swaplab.metrics import compute, direction, per_item, summarize
from swaplab.models.card import read_card

__all__ = ["clip_metrics", "evaluate_video", "track_pair"]


def evaluate_video(
    spec: Protocol,
    root: Path,
    out: Path,
    opts: EvalOptions,
    cache: FaceCache,
    *,
    model_dir: Path | None = None,
    swaps_dir: Path | None = None,
    name: str,
) -> EvalResult:
    """Temporal stability of swapped clips: landmark jitter and flicker (raw and with the target's
    motion taken out) against the original, identity drift.

    With a model, each clip's first frames are swapped by ``swaplab.swap`` (the whole pipeline:
    tracking, smoothing, encoding, marking) into ``out/videos/<clip id>.mp4``; with ``swaps_dir``
    that file comes from another tool. Faces are tracked on both videos (largest face per frame);
    frames where either has no face are dropped and counted.
    """
    from swaplab.swap.pipeline import SwapConfig, swap

    timer = Timer()
    warnings: list[str] = []
    with timer("identity networks (load)"):
        encoders, encoder_warnings = load_encoders(opts.encoders)
    warnings += encoder_warnings
    clips = spec.clips[: opts.limit] if opts.limit else spec.clips
    target_info: dict[str, Any] = {"kind": "model" if model_dir else "swaps", "path": str(model_dir or swaps_dir)}
    card = None
    per_clip: list[dict[str, Any]] = []
    one_shot = model_dir is not None and takes_a_source(model_dir)
    for index, clip in enumerate(clips):
        frames = opts.frames or clip.frames
        original = root / clip.path
        if model_dir is not None:
            with timer("swap (video pipeline)"):
                base = opts.swap_config or SwapConfig(precision="fp32")
                config = dataclasses.replace(base, max_frames=frames, overwrite=True, which="largest")
                if one_shot:
                    config = dataclasses.replace(config, source=clip_sources(root, index))
                    target_info["sources"] = "oneshot_v1 pair i's source photos for clip i"
                swapped = out / "videos" / f"{clip.id}.mp4"
                swapped.parent.mkdir(parents=True, exist_ok=True)
                swap(model_dir, original, swapped, config, progress=False, device=opts.device)
        else:
            swapped = swaps_dir / f"{clip.id}.mp4"  # type: ignore[operator]
            if not swapped.is_file():
                warnings.append(f"clip {clip.id}: no swap file {swapped.name}; skipped")
                continue
        with timer("faces (track, landmarks)"):
            tracks = track_pair(cache, original, swapped, frames)
        per_clip.append(clip_metrics(clip.id, tracks, encoders, timer))
    if model_dir is not None:
        card = read_card(model_dir)[0]
        target_info.update(arch=card.get("arch"), step=card.get("step"), resolution=card.get("resolution"))
        warnings += identity_loss_warnings(card, list(encoders))
    metrics: dict[str, dict[str, Any]] = {}
    usable = [c for c in per_clip if c.get("frames_scored", 0) >= 3]
    if not usable:
        raise ValueError("no clip had 3 or more frames with a face in both the original and the swap")
    for key in [k for k in usable[0] if k not in ("id", "frames", "frames_scored")]:
        values = np.array([c[key] for c in usable], dtype=np.float64)
        metrics[key] = {**summarize(per_item(values)), "n": len(usable), "better": direction(key)}
    samples = {
        "clips": len(clips),
        "clips_scored": len(usable),
        "frames": sum(c["frames"] for c in per_clip),
        "frames_scored": sum(c["frames_scored"] for c in per_clip),
    }
    measured = Measured(target_info, list(encoders), samples, metrics, per_clip, [], warnings)
    return write_result(name, out, spec, measured, timer, opts)


def takes_a_source(model_dir: Path) -> bool:
    """Whether the model swaps in any person (one-shot families), so a clip needs a source person."""
    from swaplab.models.card import read_card
    from swaplab.models.swapper import card_takes_a_source

    return card_takes_a_source(read_card(model_dir)[0])


def clip_sources(root: Path, index: int) -> list[Path]:
    """The source photos a one-shot model swaps into clip ``index``: those of pair ``index`` of the
    pinned ``oneshot_v1`` (``peopleDevTest`` people), so every one-shot family puts the same person
    into the same clip and the clips' protocol stays as pinned."""
    from swaplab.evaluate.protocol import load_protocol

    pairs = load_protocol("oneshot_v1").pairs
    return [root / path for path in pairs[index % len(pairs)].source_images]


def track_pair(cache: FaceCache, original: Path, swapped: Path, frames: int) -> dict[str, list]:
    """Per frame with a face in both videos: target landmarks, swap landmarks, crops and masks."""
    from swaplab.faces.align import transform_points, warp_face
    from swaplab.faces.masks import landmark_mask
    from swaplab.io.video import VideoReader

    analyzer = cache.analyzer
    sessions = (analyzer.tracker(), analyzer.tracker())
    out: dict[str, list] = defaultdict(list)
    out["frames"] = [0]
    for a, b in zip(VideoReader(original, stop=frames), VideoReader(swapped, stop=frames)):
        out["frames"][0] += 1
        found = []
        for session, frame in zip(sessions, (a.image, b.image)):
            faces = session.update(frame, embed=False)
            found.append(max(faces, key=lambda f: f.box.area) if faces else None)
        target, swap_face = found
        if target is None or swap_face is None:
            continue
        out["target68"].append(target.landmarks_source)
        out["swap68"].append(swap_face.landmarks_source)
        out["swap_image"].append(b.image)
        out["swap5"].append(swap_face.landmarks5_source)
        out["target_image"].append(a.image)
        out["target5"].append(target.landmarks5_source)
        out["swap_crop"].append(warp_face(b.image, target.matrix, EVAL_CROP))
        out["target_crop"].append(warp_face(a.image, target.matrix, EVAL_CROP))
        out["mask"].append(landmark_mask(transform_points(target.landmarks_source, target.matrix), EVAL_CROP))
    return out


def clip_metrics(clip_id: str, tracks: dict[str, list], encoders: dict[str, nn.Module], timer: Timer) -> dict:
    scored = len(tracks["target68"])
    row: dict[str, Any] = {"id": clip_id, "frames": tracks["frames"][0], "frames_scored": scored}
    if scored < 3:
        return row
    with timer("video metrics"):
        row["landmark_jitter"] = compute(
            "landmark_jitter", landmarks_over_time=np.stack(tracks["swap68"]), reference=np.stack(tracks["target68"])
        )
        batch = lambda crops: torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()  # noqa: E731
        swap_crops, target_crops = batch(tracks["swap_crop"]), batch(tracks["target_crop"])
        masks = torch.from_numpy(np.stack(tracks["mask"]))[:, None].contiguous()
        row["flicker"] = compute("flicker", frames=swap_crops, masks=masks, reference_frames=target_crops)
        # Raw frame differences grow with the face's detail; this one takes the target's motion out.
        row["warped_flicker"] = compute("warped_flicker", frames=swap_crops, reference_frames=target_crops, masks=masks)
    with timer("identity (chips, embeddings, retrieval)"):
        for enc_name, encoder in encoders.items():
            swap_drift = compute(
                "identity_drift", embeddings=embed_faces(tracks["swap_image"], tracks["swap5"], encoder)
            )
            target_drift = compute(
                "identity_drift", embeddings=embed_faces(tracks["target_image"], tracks["target5"], encoder)
            )
            row[f"identity_drift/{enc_name}"] = swap_drift.mean_distance
            row[f"identity_drift_target/{enc_name}"] = target_drift.mean_distance
    return row
