"""The per-pair training data: two facesets as uint8 tensors in memory, and an exactly resumable sampler.

Both facesets' crops are resized to the model resolution once, with a face mask and an
eyes+mouth mask per face (for the masked and priority losses). The face mask is the landmark hull,
or (``data.mask``) the built face segmenter's face class, with user polygons where a faceset has them.
Which faces a step sees is a pure function of (seed, step, micro-step, rank): every side walks an
infinite stream of per-epoch permutations, so a resumed run (or a run on N processes) draws
exactly the samples an uninterrupted single-process run would. This module loads and samples; it does not augment.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from swaplab.faces.masks import landmark_mask
from swaplab.facesets.format import FaceRecord, Faceset

log = logging.getLogger(__name__)

Tensor = torch.Tensor

SIDES = ("src", "dst")

#: ``data.mask``: where the masked losses' face mask comes from. ``hull``: the 68 landmarks' hull (a
#: hand or microphone in front of the face counts as face, so the model learns to draw it);
#: ``segment``: the built face segmenter's face class, occluders and hair left out (DeepFaceLab's
#: XSeg-masked training); ``segment+hull``: inside both. With either segment mode, faces a user
#: corrected in the faceset's ``mask_polygons.json`` take their polygons instead.
TRAINING_MASKS = ("hull", "segment", "segment+hull")


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of values (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def scale_points(points: np.ndarray, scale: float) -> np.ndarray:
    """Rescale pixel coordinates whose pixel centres sit at integers (so 0 maps to (0.5*s - 0.5))."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * scale - 0.5


def face_masks(record: FaceRecord, crop_size: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(face hull, eyes+mouth) masks of one face as uint8 in [0, 255], ``resolution`` square.

    Both are drawn from the record's 68 landmarks by ``swaplab.faces.masks.landmark_mask`` (the
    hull reaches up to the forehead; eyes and mouth grow by a margin covering lids and lips), so
    the training masks match the ones the swap stage draws.
    """
    landmarks = scale_points(record.landmarks_array, resolution / crop_size)
    hull = landmark_mask(landmarks, resolution, region="face")
    features = landmark_mask(landmarks, resolution, region="eyes_mouth")
    return (hull * 255.0 + 0.5).astype(np.uint8), (features * 255.0 + 0.5).astype(np.uint8)


@dataclass
class FaceTensors:
    """One identity's faces at the model resolution: uint8 tensors, NCHW, RGB; masks 0..255."""

    images: Tensor  # (N, 3, R, R) uint8
    masks: Tensor  # (N, 1, R, R) uint8 0..255, face hull
    feature_masks: Tensor  # (N, 1, R, R) uint8 0..255, eyes + mouth
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: Tensor | Sequence[int]) -> FaceTensors:
        index = torch.as_tensor(indices, dtype=torch.long)
        return FaceTensors(
            self.images[index],
            self.masks[index],
            self.feature_masks[index],
            [self.ids[i] for i in index.tolist()],
        )


def load_faces(
    faceset: Faceset | str | Path, resolution: int, indices: Sequence[int] | None = None, mask: str = "hull"
) -> FaceTensors:
    """Decode a faceset's crops (all, or ``indices``), resized to ``resolution``, with their masks
    (the face mask from ``mask``, one of ``TRAINING_MASKS``)."""
    if mask not in TRAINING_MASKS:
        raise ValueError(f"data.mask={mask!r}: choose from {', '.join(TRAINING_MASKS)}")
    faceset = faceset if isinstance(faceset, Faceset) else Faceset(faceset)
    if len(faceset) == 0:
        raise ValueError(f"faceset {faceset.root} has no faces")
    chosen = range(len(faceset)) if indices is None else indices
    n = len(chosen)
    images = np.empty((n, resolution, resolution, 3), np.uint8)
    masks = np.empty((n, resolution, resolution), np.uint8)
    features = np.empty((n, resolution, resolution), np.uint8)
    for row, i in enumerate(chosen):
        crop = faceset.image(i)
        if crop.shape[0] != resolution or crop.shape[1] != resolution:
            shrinking = crop.shape[0] > resolution
            crop = cv2.resize(
                crop, (resolution, resolution), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
            )
        images[row] = crop
        masks[row], features[row] = face_masks(faceset.records[i], crop_size=faceset.size, resolution=resolution)
    if mask != "hull":
        masks = segmented_masks(faceset, [faceset.records[i].id for i in chosen], images, masks, mask)
    return FaceTensors(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        masks=torch.from_numpy(masks)[:, None].contiguous(),
        feature_masks=torch.from_numpy(features)[:, None].contiguous(),
        ids=[faceset.records[i].id for i in chosen],
    )


def segmented_masks(
    faceset: Faceset, ids: list[str], images: np.ndarray, hulls: np.ndarray, mode: str, batch: int = 64
) -> np.ndarray:
    """Face masks (N, R, R) uint8 of ``images`` (N, R, R, 3) by the built face segmenter (``mode``
    ``segment``, or ``segment+hull``: within ``hulls`` too); faces with user polygons take those."""
    from swaplab.faces.occlusion import FACE_LABEL
    from swaplab.facesets.mask_polygons import POLYGONS_FILE, polygon_labels, read_mask_polygons
    from swaplab.models.segmentation import FACE, load_face_segmenter, segment_faces

    segmenter = load_face_segmenter()  # NetworkMissing names the build command
    face = np.concatenate(
        [segment_faces(images[i : i + batch], segmenter)[:, FACE] for i in range(0, len(images), batch)]
    )
    if mode == "segment+hull":
        face = np.minimum(face, hulls.astype(np.float32) / 255.0)
    masks = (np.clip(face, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    polygons_file = faceset.root / POLYGONS_FILE
    if polygons_file.is_file():
        corrected = read_mask_polygons(polygons_file)
        size = images.shape[1]
        for row, face_id in enumerate(ids):
            if face_id in corrected:
                labels = polygon_labels(corrected[face_id], size, scale=size / faceset.size)
                masks[row] = np.where(labels == FACE_LABEL, 255, 0).astype(np.uint8)
    return masks


def holdout_count(n: int, holdout: float) -> int:
    """``holdout`` >= 1 is a count, 0 < holdout < 1 a fraction (at least one face); 0 = none."""
    if holdout < 0:
        raise ValueError(f"data.holdout must be >= 0, got {holdout}")
    count = int(holdout) if holdout >= 1 else (max(1, round(holdout * n)) if holdout > 0 else 0)
    if count >= n:
        raise ValueError(f"data.holdout={holdout} leaves no training faces out of {n}")
    return count


def split_holdout(n: int, holdout: float, seed: int, side: str) -> tuple[list[int], list[int]]:
    """Deterministic (train, held-out) index lists, both sorted."""
    count = holdout_count(n, holdout)
    generator = torch.Generator().manual_seed(stream_seed("holdout", seed, side))
    order = torch.randperm(n, generator=generator).tolist()
    return sorted(order[count:]), sorted(order[:count])


class EpochStream:
    """An infinite stream of indices 0..n-1: epoch e is a permutation seeded by (seed, stream, e).

    ``positions(start, count)`` returns the indices at stream positions start..start+count-1, so
    any step's batch can be computed without replaying the ones before it.
    """

    def __init__(self, n: int, seed: int, stream: str) -> None:
        self.n = n
        self.seed = seed
        self.stream = stream
        self._cache: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.pop(min(self._cache))
            generator = torch.Generator().manual_seed(stream_seed("epoch", self.seed, self.stream, epoch))
            self._cache[epoch] = torch.randperm(self.n, generator=generator)
        return self._cache[epoch]

    def positions(self, start: int, count: int) -> Tensor:
        out = torch.empty(count, dtype=torch.long)
        filled = 0
        while filled < count:
            epoch, offset = divmod(start + filled, self.n)
            chunk = self.permutation(epoch)[offset : offset + count - filled]
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return out


class PairData:
    """src and dst faces for one per-pair model, split into train and held-out, sampled by step.

    ``batch_size`` is per process; under DDP the global micro-batch is ``batch_size * world_size``
    and rank r takes its r-th slice, so N processes see exactly what one process with an N-times
    larger batch sees.
    """

    def __init__(
        self,
        src: str | Path,
        dst: str | Path,
        resolution: int,
        *,
        holdout: float = 4,
        seed: int = 0,
        cache: bool = True,
        allow_damaged: bool = False,
        mask: str = "hull",
        dst_prior: str | Path = "",
        dst_prior_share: float = 0.0,
    ) -> None:
        if mask not in TRAINING_MASKS:
            raise ValueError(f"data.mask={mask!r}: choose from {', '.join(TRAINING_MASKS)}")
        self.resolution = resolution
        self.mask = mask
        self.seed = seed
        self.cache = cache
        self.roots = {"src": Path(src), "dst": Path(dst)}
        self.facesets = {side: Faceset(root, allow_damaged=allow_damaged) for side, root in self.roots.items()}
        for side, faceset in self.facesets.items():
            if faceset.damaged:
                log.warning(
                    "data.%s: training on the %d intact faces of %s; %d damaged shard(s) left out (data.allow_damaged)",
                    side,
                    len(faceset),
                    faceset.root,
                    len(faceset.damaged),
                )
        if self.roots["src"].resolve() == self.roots["dst"].resolve():
            log.warning("data.src and data.dst are the same faceset (%s): the model learns one face", src)
        self.train_index: dict[str, list[int]] = {}
        self.holdout_index: dict[str, list[int]] = {}
        self.faces: dict[str, FaceTensors] = {}
        self.holdout: dict[str, FaceTensors] = {}
        self.streams: dict[str, EpochStream] = {}
        for side in SIDES:
            n = len(self.facesets[side])
            if n == 0:
                raise ValueError(f"data.{side}: faceset {self.roots[side]} has no faces")
            if holdout_count(n, 0) == 0 and holdout >= n:
                raise ValueError(
                    f"data.{side}: faceset {self.roots[side]} has {n} face(s) and data.holdout={holdout:g} keeps "
                    f"that many out of training: lower data.holdout (data.holdout=0 keeps none)"
                )
            train, held = split_holdout(n, holdout, seed, side)
            self.train_index[side], self.holdout_index[side] = train, held
            if cache:
                everything = load_faces(self.facesets[side], resolution, mask=mask)
                self.faces[side] = everything.take(train)
                self.holdout[side] = everything.take(held)
            else:
                self.holdout[side] = (
                    load_faces(self.facesets[side], resolution, held, mask) if held else _empty(resolution)
                )
            self.streams[side] = EpochStream(len(train), seed, side)
        # Other people's faces in the dst side's batches (all of them train; none is held out: the
        # held-out faces are the pair's).
        self.dst_prior_share = dst_prior_share if dst_prior else 0.0
        self.dst_prior: FaceTensors | None = None
        if self.dst_prior_share:
            self.roots["dst_prior"] = Path(dst_prior)
            self.facesets["dst_prior"] = Faceset(dst_prior, allow_damaged=allow_damaged)
            self.dst_prior = load_faces(self.facesets["dst_prior"], resolution, mask=mask)
            self.streams["dst_prior"] = EpochStream(len(self.dst_prior), seed, "dst_prior")
        log.info(
            "data: %d/%d src and %d/%d dst faces for training/held out at %d px",
            len(self.train_index["src"]),
            len(self.holdout_index["src"]),
            len(self.train_index["dst"]),
            len(self.holdout_index["dst"]),
            resolution,
        )

    def content_hashes(self) -> dict[str, dict[str, object]]:
        """Per side (and ``dst_prior`` when set): the faceset's path, content hash and face counts
        (for manifests and model cards)."""
        return {
            side: {
                "path": str(self.roots[side]),
                "content_hash": faceset.content_hash(),
                "faces": len(faceset),
                "train": self.num_train(side),
                "holdout": len(self.holdout_index.get(side, [])),
            }
            for side, faceset in self.facesets.items()
        }

    def num_train(self, side: str) -> int:
        if side == "dst_prior":
            return len(self.dst_prior) if self.dst_prior is not None else 0
        return len(self.train_index[side])

    def dst_prior_count(self, batch_size: int) -> int:
        """How many of a dst batch of ``batch_size`` are other people's faces (the same every step)."""
        return round(self.dst_prior_share * batch_size)

    def _gather(self, side: str, rows: Tensor) -> FaceTensors:
        if self.cache:
            return self.faces[side].take(rows)
        faceset_rows = [self.train_index[side][r] for r in rows.tolist()]
        return load_faces(self.facesets[side], self.resolution, faceset_rows, self.mask)

    def position(self, step: int, micro: int, accumulate: int, batch_size: int, rank: int, world_size: int) -> int:
        """Global stream position of a rank's first sample in a (step, micro-step)."""
        return ((step * accumulate + micro) * world_size + rank) * batch_size

    def batch(
        self,
        step: int,
        *,
        batch_size: int,
        micro: int = 0,
        accumulate: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> dict[str, Tensor]:
        """This rank's micro-batch of a step as uint8 tensors (keys below), on the CPU.

        ``src``/``dst``: (B, 3, R, R); ``src_mask``/``dst_mask`` (face hull) and
        ``src_features``/``dst_features`` (eyes + mouth): (B, 1, R, R); all uint8 0..255. With a
        ``dst_prior``, the last :meth:`dst_prior_count` dst rows are its faces, drawn from a stream of
        their own, so the pair's faces keep their epochs.
        """
        others = self.dst_prior_count(batch_size)
        out: dict[str, Tensor] = {}
        for side in SIDES:
            count = batch_size - others if side == "dst" else batch_size
            start = self.position(step, micro, accumulate, count, rank, world_size)
            faces = self._gather(side, self.streams[side].positions(start, count))
            if side == "dst" and others:
                assert self.dst_prior is not None
                start = self.position(step, micro, accumulate, others, rank, world_size)
                prior = self.dst_prior.take(self.streams["dst_prior"].positions(start, others))
                faces = FaceTensors(
                    torch.cat([faces.images, prior.images]),
                    torch.cat([faces.masks, prior.masks]),
                    torch.cat([faces.feature_masks, prior.feature_masks]),
                    faces.ids + prior.ids,
                )
            out[side] = faces.images
            out[f"{side}_mask"] = faces.masks
            out[f"{side}_features"] = faces.feature_masks
        return out

    def epochs(self, samples: int) -> dict[str, float]:
        """How many passes over each side's training faces ``samples`` global samples make (the dst
        side's own faces are ``1 - dst_prior_share`` of its samples)."""
        own = {"src": 1.0, "dst": 1.0 - self.dst_prior_share}
        return {side: samples * own[side] / self.num_train(side) for side in SIDES}

    def preview_faces(self, count: int) -> dict[str, Tensor]:
        """Fixed faces for previews: held-out ones when there are any, else the first training ones."""
        out = {}
        for side in SIDES:
            pool = (
                self.holdout[side]
                if len(self.holdout[side])
                else self._gather(side, torch.arange(self.num_train(side)))
            )
            out[side] = pool.images[:count]
        rows = min(len(out["src"]), len(out["dst"]))
        return {side: images[:rows] for side, images in out.items()}


def _empty(resolution: int) -> FaceTensors:
    return FaceTensors(
        torch.empty(0, 3, resolution, resolution, dtype=torch.uint8),
        torch.empty(0, 1, resolution, resolution, dtype=torch.uint8),
        torch.empty(0, 1, resolution, resolution, dtype=torch.uint8),
        [],
    )


def to_float(
    batch: dict[str, Tensor], device: torch.device | str = "cpu", channels_last: bool = False
) -> dict[str, Tensor]:
    """uint8 images and masks -> float [0, 1] on ``device`` (channels_last if asked)."""
    memory = torch.channels_last if channels_last else torch.contiguous_format
    return {
        key: (value.to(device, non_blocking=True).float() / 255.0).contiguous(memory_format=memory)
        for key, value in batch.items()
    }
