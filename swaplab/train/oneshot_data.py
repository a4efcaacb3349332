"""One-shot swap training data: (target, source) pairs from aligned LFW facesets, split-checked.

A face's identity is the LFW folder name of its record's source path (``.../<Name>/<Name>_0001.jpg``).
Training draws only people of the official ``peopleDevTrain.txt`` list, evaluation only people
of ``peopleDevTest.txt``: a faceset holding anyone else for the role asked is refused, never
silently filtered. Which pair a sample gets is a pure function of (seed, sample position), as in
``swaplab.train.data`` (targets walk per-epoch permutations; the source and the same-identity
draw are seeded per position), so resumed and multi-process runs see what one uninterrupted
process sees. This module samples; it does not augment, train or compute embeddings (the source
embedding is the dlib descriptor the extraction stored in each record).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np
import torch

from swaplab.data.lfw import SPLIT_FILES, Role, check_split, person_of
from swaplab.facesets.format import Faceset, common_template
from swaplab.train.data import EpochStream, stream_seed

log = logging.getLogger(__name__)

Tensor = torch.Tensor
Schedule = Literal["per_sample", "alternate"]

#: SimSwap's released train.py gives every other step a same-identity source (a second image of
#: the target's person) for the whole batch: half of all pairs.
SIMSWAP_SAME_IDENTITY_RATIO = 0.5


def decode_crop(faceset: Faceset, index: int, resolution: int) -> np.ndarray:
    """One aligned crop as uint8 RGB (resolution x resolution x 3): area-shrunk or cubic-grown."""
    crop = faceset.image(index)
    if crop.shape[:2] != (resolution, resolution):
        shrinking = crop.shape[0] > resolution
        crop = cv2.resize(
            crop, (resolution, resolution), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
        )
    return crop


class OneShotBatch(NamedTuple):
    """One micro-batch of pairs. Images (B, 3, R, R) float32 RGB in [0, 1]; identities (B, 128)
    float32, the stored dlib descriptors (not renormalised); ``same_identity`` (B,) bool: the
    source is the target's person (the pairs ``L_Recon`` covers); ids are face ids."""

    target: Tensor
    source: Tensor
    source_identity: Tensor
    target_identity: Tensor
    same_identity: Tensor
    target_ids: list[str]
    source_ids: list[str]


class OneShotPairs:
    """(target, source) pairs from one or more aligned facesets of LFW people, sampled by step.

    - ``role="train"``: every face must belong to a ``peopleDevTrain.txt`` person; ``"eval"``:
      to a ``peopleDevTest.txt`` person. Anything else raises ``SplitError`` naming the people.
    - ``same_identity_ratio``: the share of pairs whose source is the target's person (another
      image of them when there is one, else the same image). Default: SimSwap's 0.5 for
      training, 0 (only real swaps) for evaluation. Different-identity sources pick another
      person uniformly, then one of their faces uniformly (identity-balanced, not image-weighted).
    - ``schedule``: ``per_sample`` draws the flag per sample with probability
      ``same_identity_ratio``; ``alternate`` is SimSwap's released schedule (the whole batch is
      same-identity on even steps, different on odd ones) and ignores the ratio.
    - ``lists_dir``: the folder with the LFW people lists (default: ``<data root>/lfw``).
    - ``cache``: decode every crop once (uint8 in memory); False decodes per batch.

    All facesets must share one alignment template (``template``), which the identity loss'
    chip transform depends on.
    """

    def __init__(
        self,
        facesets: str | Path | Faceset | Sequence[str | Path | Faceset],
        resolution: int,
        *,
        role: Role = "train",
        same_identity_ratio: float | None = None,
        schedule: Schedule = "per_sample",
        seed: int = 0,
        lists_dir: str | Path | None = None,
        cache: bool = True,
    ) -> None:
        if role not in SPLIT_FILES:
            raise ValueError(f"role must be 'train' or 'eval', got {role!r}")
        if schedule not in ("per_sample", "alternate"):
            raise ValueError(f"schedule must be 'per_sample' or 'alternate', got {schedule!r}")
        if same_identity_ratio is None:
            same_identity_ratio = SIMSWAP_SAME_IDENTITY_RATIO if role == "train" else 0.0
        if not 0.0 <= same_identity_ratio <= 1.0:
            raise ValueError(f"same_identity_ratio must be in [0, 1], got {same_identity_ratio}")
        self.role, self.schedule, self.seed = role, schedule, seed
        self.same_identity_ratio = same_identity_ratio
        self.resolution, self.cache = resolution, cache
        if isinstance(facesets, (str, Path, Faceset)):
            facesets = [facesets]
        self.facesets = [fs if isinstance(fs, Faceset) else Faceset(fs) for fs in facesets]
        if not self.facesets:
            raise ValueError("no faceset given")
        self.template = common_template(self.facesets)

        self.faces: list[tuple[int, int]] = [(f, i) for f, fs in enumerate(self.facesets) for i in range(len(fs))]
        if not self.faces:
            raise ValueError(f"the facesets {[str(fs.root) for fs in self.facesets]} hold no faces")
        records = [self.facesets[f].records[i] for f, i in self.faces]
        roots = ", ".join(str(fs.root) for fs in self.facesets)
        check_split([person_of(r.source) for r in records], role, lists_dir, what=f"one-shot {role} data ({roots})")
        missing = [r.id for r in records if len(r.identity) == 0]
        if missing:
            raise ValueError(
                f"{len(missing)} faces have no stored identity embedding (e.g. {missing[:3]}): re-extract them"
            )
        names = [person_of(r.source) for r in records]
        self.people: list[str] = sorted(set(names))
        person_index = {name: k for k, name in enumerate(self.people)}
        self.person_of = np.array([person_index[name] for name in names], dtype=np.int64)
        self.faces_of: list[np.ndarray] = [np.flatnonzero(self.person_of == k) for k in range(len(self.people))]
        if len(self.people) < 2 and (same_identity_ratio < 1.0 or schedule == "alternate"):
            raise ValueError(f"different-identity pairs need at least 2 people; the facesets hold {self.people}")
        self.ids = [r.id for r in records]
        self.identities = torch.from_numpy(np.stack([r.identity_array for r in records]).astype(np.float32))
        self.images: Tensor | None = self._decode(range(len(self.faces))) if cache else None
        self.targets = EpochStream(len(self.faces), seed, f"oneshot-{role}-target")
        log.info(
            "one-shot %s data: %d faces of %d people at %d px", role, len(self.faces), len(self.people), resolution
        )

    def __len__(self) -> int:
        return len(self.faces)

    def _decode(self, rows: Sequence[int]) -> Tensor:
        crops = np.empty((len(rows), self.resolution, self.resolution, 3), np.uint8)
        for out, row in enumerate(rows):
            f, i = self.faces[row]
            crops[out] = decode_crop(self.facesets[f], i, self.resolution)
        return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()

    def _images(self, rows: Sequence[int]) -> Tensor:
        uint8 = self.images[list(rows)] if self.images is not None else self._decode(rows)
        return uint8.float() / 255.0

    def content_hashes(self) -> list[dict[str, object]]:
        """Per faceset: its path, content hash and face count (for run manifests)."""
        return [{"path": str(fs.root), "content_hash": fs.content_hash(), "faces": len(fs)} for fs in self.facesets]

    def source_for(self, target: int, position: int, same: bool) -> int:
        """The source face of the sample at global ``position`` whose target is face ``target``."""
        rng = np.random.default_rng(stream_seed("oneshot-source", self.seed, self.role, position))
        person = int(self.person_of[target])
        if same:
            others = self.faces_of[person][self.faces_of[person] != target]
            return int(rng.choice(others)) if len(others) else target
        other_person = int(rng.integers(len(self.people) - 1))
        other_person += other_person >= person  # skip the target's own person
        return int(rng.choice(self.faces_of[other_person]))

    def is_same_identity(self, position: int, step: int) -> bool:
        """Whether the sample at global ``position`` (in ``step``) gets a same-identity source."""
        if self.schedule == "alternate":
            return step % 2 == 0
        rng = np.random.default_rng(stream_seed("oneshot-same", self.seed, self.role, position))
        return bool(rng.random() < self.same_identity_ratio)

    def batch(
        self,
        step: int,
        *,
        batch_size: int,
        micro: int = 0,
        accumulate: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> OneShotBatch:
        """This rank's micro-batch of ``step`` (on the CPU).

        Rank r of ``world_size`` takes the r-th slice of the global micro-batch, so N processes
        see exactly what one process with an N-times larger batch sees.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        start = ((step * accumulate + micro) * world_size + rank) * batch_size
        targets = self.targets.positions(start, batch_size).tolist()
        same = [self.is_same_identity(start + k, step) for k in range(batch_size)]
        sources = [self.source_for(t, start + k, s) for k, (t, s) in enumerate(zip(targets, same))]
        return OneShotBatch(
            target=self._images(targets),
            source=self._images(sources),
            source_identity=self.identities[sources],
            target_identity=self.identities[targets],
            same_identity=torch.tensor(same, dtype=torch.bool),
            target_ids=[self.ids[t] for t in targets],
            source_ids=[self.ids[s] for s in sources],
        )


FacesetsArg = str | Path | Faceset | Sequence[str | Path | Faceset]


def train_pairs(facesets: FacesetsArg, resolution: int, **options: Any) -> OneShotPairs:
    """``OneShotPairs`` for training: peopleDevTrain.txt people only, SimSwap's 0.5 same-identity ratio."""
    return OneShotPairs(facesets, resolution, role="train", **options)


def eval_pairs(facesets: FacesetsArg, resolution: int, **options: Any) -> OneShotPairs:
    """``OneShotPairs`` for evaluation: peopleDevTest.txt people only, real swaps only by default.

    ``eval_pairs(...).batch(0, batch_size=n)`` is a fixed set of n pairs for a given seed.
    """
    return OneShotPairs(facesets, resolution, role="eval", **options)
