"""Training data, training loop and LFW View-1 verification of swaplab's own identity network.

``train_and_export(cfg)`` cuts dlib-geometry chips of the people in LFW's ``peopleDevTrain.txt``
(landmarks from given facesets, else found with ``FaceAnalyzer``), trains ``CompactFaceNet`` with a
margin head (checkpoints, exact resume, metrics.jsonl, curves.png in a run folder) and writes the
weights to the user cache; ``lfw_view1`` scores any identity encoders on LFW's View-1 pairs through
the evaluator's own chip path. It refuses to train on ``peopleDevTest.txt`` people, and never
tunes anything on the test pairs. Command line::

    python -m swaplab.faces.lfw_identity_train train [--faceset DIR ...] [--verify] [key=value ...]
    python -m swaplab.faces.lfw_identity_train verify [--encoders lfw-arcface dlib-resnet] [--faceset DIR ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.config import (
    ConfigError,
    apply_overrides,
    config_group,
    config_hash,
    load_config,
    to_dict,
)
from swaplab.faces.lfw_identity import (
    ENCODER_NAME,
    CompactFaceNet,
    IdentityNetConfig,
    MarginConfig,
    MarginHead,
    margin_logits,
    metadata_path,
    save_identity_weights,
    user_cache_dir,
)
from swaplab.io.atomic import atomic_write_json

__all__ = [
    "ChipAugmentConfig",
    "ChipSet",
    "IdentityDataConfig",
    "IdentityTrainConfig",
    "IdentityTrainResult",
    "IdentityTrainerConfig",
    "LandmarkFinder",
    "VerificationResult",
    "augment_chips",
    "batch_indices",
    "best_threshold",
    "build_chip_set",
    "cache_key",
    "check_training_people",
    "cut_chip",
    "lfw_dir",
    "lfw_view1",
    "pair_scores",
    "preset_config",
    "read_pairs",
    "roc_auc",
    "split_validation",
    "train_and_export",
    "train_identity_net",
    "verification_accuracy",
    "weights_path",
]

log = logging.getLogger(__name__)

CHIPS_FORMAT = "swaplab-identity-chips"
CHIPS_VERSION = 1
#: Held-out (calibration) people are drawn among those with at most this many photos.
VAL_MAX_PHOTOS = 20


# ================================================================== configuration
@dataclass
class IdentityDataConfig:
    """Which LFW people and photos to train on, and where their landmarks come from."""

    lfw_dir: str = ""  # folder holding the image folder and the lists; "" = <data root>/lfw
    images: str = "lfw-deepfunneled"  # image folder: <images>/<Name>/<Name>_NNNN.jpg
    people: str = "peopleDevTrain.txt"  # the people to train on
    exclude_people: str = "peopleDevTest.txt"  # never train on these ("" = no such list)
    facesets: tuple[str, ...] = ()  # facesets of these photos: their 5-point landmarks skip detection
    # People with fewer photos are left out. One photo teaches no within-person variation: with
    # the 2,854 single-photo people left out, held-out pair accuracy rose from 86.4 to 92.4 %
    # at equal steps (docs/evaluation.md).
    min_images: int = 2
    max_people: int = 0  # the first N eligible people by name (0 = all)
    max_images_per_person: int = 0  # each person's first N photos by name (0 = all)
    # People held out of training (a seeded choice among those with 2 to 20 photos): their pairs
    # calibrate the same-person cosine threshold. A threshold chosen on photos the network trained
    # on is too strict for new people (pairsDevTrain: 99.1 % there, 76.6 % on pairsDevTest).
    val_people: int = 200
    val_pairs: int = 500  # same-person and different-person held-out pairs, each
    seed: int = 0  # the validation split and pairs


@dataclass
class ChipAugmentConfig:
    """Random changes to each training chip (0 switches one off); geometry stays near dlib's chip."""

    flip_prob: float = 0.5
    rotation_deg: float = 6.0
    scale: float = 0.05  # relative zoom in and out
    shift: float = 0.03  # fraction of the chip side
    brightness: float = 0.2  # relative
    contrast: float = 0.2  # relative
    grayscale_prob: float = 0.1


@dataclass
class IdentityTrainerConfig:
    """The optimisation loop: SGD with momentum, linear warm-up and a cosine schedule."""

    steps: int = 1600
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 100
    schedule: Literal["constant", "cosine"] = "cosine"
    final_lr_ratio: float = 0.01
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast where the CPU has bf16
    channels_last: bool = True
    threads: int = 0  # torch threads (0 = leave torch's choice, e.g. from OMP_NUM_THREADS)
    log_every: int = 25
    checkpoint_every: int = 200  # 0 = only at the end
    keep_last: int = 2
    seed: int = 0  # initialisation, sample order and augmentation
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"trainer.{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.checkpoint_every < 0:
            raise ConfigError("trainer.lr must be positive; warmup_steps and checkpoint_every non-negative")


@dataclass
class IdentityTrainConfig:
    """Everything the identity network's weights depend on; saved as the run's config.yaml."""

    name: str = "default"
    net: IdentityNetConfig = field(default_factory=IdentityNetConfig)
    head: MarginConfig = field(default_factory=lambda: MarginConfig(warmup_steps=400))
    data: IdentityDataConfig = field(default_factory=IdentityDataConfig)
    augment: ChipAugmentConfig = field(default_factory=ChipAugmentConfig)
    trainer: IdentityTrainerConfig = field(default_factory=IdentityTrainerConfig)
    run_dir: str = ""  # "" = <user cache>/identity/lfw-arcface-<key>/run


PRESETS = config_group("identity-net")


def _test_preset() -> IdentityTrainConfig:
    """Seconds: 12 people x 4 photos, a 2-stage net on 32 px chips, fp32 (bit-stable), no bar."""
    return IdentityTrainConfig(
        name="test",
        net=IdentityNetConfig(chip_size=32, widths=(8, 16), blocks=(1, 1), embedding_dim=16),
        head=MarginConfig(margin=0.3, scale=16.0, warmup_steps=2),
        data=IdentityDataConfig(min_images=3, max_people=12, max_images_per_person=4, val_people=3, val_pairs=5),
        trainer=IdentityTrainerConfig(
            steps=6,
            batch_size=8,
            lr=0.05,
            warmup_steps=1,
            precision="fp32",
            channels_last=False,
            log_every=1,
            checkpoint_every=3,
            keep_last=0,
            progress=False,
        ),
    )


#: Settings that change where data is found or how a run reports, never the weights: left out of
#: the cache key, so weights trained from a faceset's landmarks or another data folder are found.
WEIGHT_NEUTRAL_KEYS = (
    "name",
    "run_dir",
    "data.lfw_dir",
    "data.facesets",
    "trainer.threads",
    "trainer.progress",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.keep_last",
)


# ``python -m swaplab.faces.lfw_identity_train`` runs a second copy of this file as __main__, which
# hands over to the imported module (at the end): only that one registers, so names stay unique.
if __name__ != "__main__":
    #: The real run: 20 CPU-minutes on one thread of the project's 2-vCPU EPYC (bf16 autocast).
    PRESETS.register("default")(IdentityTrainConfig)
    PRESETS.register("test")(_test_preset)


def preset_config(name: str) -> IdentityTrainConfig:
    """The registered training preset ``name`` (``default`` or ``test``)."""
    return PRESETS.create(name)


def cache_key(cfg: IdentityTrainConfig) -> str:
    """16 hex digits of the config's hash, without the :data:`WEIGHT_NEUTRAL_KEYS`."""
    tree = to_dict(cfg)
    for dotted in WEIGHT_NEUTRAL_KEYS:
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return config_hash(tree)


def weights_path(cfg: IdentityTrainConfig) -> Path:
    """``<user cache>/identity/lfw-arcface-<key>/model.safetensors`` (``model.json`` beside it)."""
    return user_cache_dir() / "identity" / f"{ENCODER_NAME}-{cache_key(cfg)}" / "model.safetensors"


def _check_resumable(run: Any, cfg: IdentityTrainConfig) -> None:
    """Refuse to resume a run folder whose config differs in anything but steps and weight-neutral keys."""
    from swaplab.train.run import RunConfigMismatch, config_differences

    saved = load_config(IdentityTrainConfig, run.config_path)
    allowed = (*WEIGHT_NEUTRAL_KEYS, "trainer.steps")
    diffs = {k: v for k, v in config_differences(saved, cfg).items() if not k.startswith(allowed)}
    if diffs:
        lines = "\n".join(f"  {k}: saved {a!r}, now {b!r}" for k, (a, b) in diffs.items())
        raise RunConfigMismatch(f"{run.root} holds a run of another config; differences:\n{lines}")


def _run_dir(cfg: IdentityTrainConfig) -> Path:
    return Path(cfg.run_dir).expanduser() if cfg.run_dir else weights_path(cfg).parent / "run"


# ================================================================== LFW files
def lfw_dir(data: IdentityDataConfig) -> Path:
    """The LFW folder of ``data``, checked: ``FileNotFoundError`` naming ``swaplab data fetch lfw``."""
    from swaplab.data.fetch import data_root

    root = Path(data.lfw_dir).expanduser() if data.lfw_dir else data_root() / "lfw"
    missing = [p for p in (root / data.images, root / data.people) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"LFW data not found: {', '.join(map(str, missing))} missing. Fetch it with "
            "`swaplab data fetch lfw` (or set $SWAPLAB_DATA, or data.lfw_dir=FOLDER)"
        )
    return root


def check_training_people(people: Iterable[str], root: Path, exclude_list: str) -> None:
    """Raise ``SplitError`` if any of ``people`` is on the ``exclude_list`` (LFW's evaluation split)."""
    from swaplab.train.oneshot_data import SplitError, read_people_list

    if not exclude_list:
        return
    path = root / exclude_list
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the list of people never to train on is missing; "
            "set data.exclude_people='' for a folder that has no evaluation split"
        )
    overlap = sorted(set(people) & set(read_people_list(path)))
    if overlap:
        shown = ", ".join(overlap[:5]) + (" ..." if len(overlap) > 5 else "")
        raise SplitError(
            f"refusing to train the identity network on {len(overlap)} people of {exclude_list} "
            f"(the evaluation split): {shown}"
        )


def read_pairs(path: str | Path) -> list[tuple[str, int, str, int]]:
    """An LFW pairs file as (name1, index1, name2, index2) rows; same-person rows repeat the name.

    Lines of 3 fields (``Name i j``) are same-person pairs, of 4 (``Name1 i Name2 j``) different
    people; all-number lines (the counts header) are skipped. Works for View 1's
    ``pairsDevTrain.txt``/``pairsDevTest.txt`` and View 2's ``pairs.txt``.
    """
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or all(f.isdigit() for f in fields):
            continue
        if len(fields) == 3:
            pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
        elif len(fields) == 4:
            pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
        else:
            raise ValueError(f"{path}, line {number}: expected 'Name i j' or 'Name1 i Name2 j', got {line!r}")
    return pairs


def lfw_image(images: Path, name: str, index: int) -> Path:
    return images / name / f"{name}_{index:04d}.jpg"


# ================================================================== landmarks and chips
class LandmarkFinder:
    """dlib 5-point landmarks of LFW photos: looked up in facesets, else found with ``FaceAnalyzer``.

    Facesets are matched by the photo's folder and file name (``Name/Name_0001.jpg``), so a
    faceset extracted elsewhere still matches. Detection uses the settings such facesets are
    extracted with (HOG without upsampling, largest face), then retries upsampled once; a photo
    where neither finds a face gets None.
    """

    def __init__(self, facesets: Sequence[str | Path] = ()) -> None:
        from swaplab.facesets.format import Faceset

        self.known: dict[tuple[str, str], tuple[np.ndarray, tuple[int, int]]] = {}
        for root in facesets:
            for record in Faceset(root):
                source = Path(record.source)
                key = (source.parent.name, source.name)
                if record.landmarks5_source and (key not in self.known or record.face_index == 0):
                    size = (int(record.source_size[0]), int(record.source_size[1]))
                    self.known[key] = (np.asarray(record.landmarks5_source, np.float32), size)
        self._analyzers: dict[int, Any] = {}
        self.detected = 0
        self.looked_up = 0

    def _analyzer(self, upsample: int):
        if upsample not in self._analyzers:
            from swaplab.faces.analyze import FaceAnalyzer, FaceAnalyzerConfig

            config = FaceAnalyzerConfig(upsample=upsample, max_faces=1, embed=False)
            self._analyzers[upsample] = FaceAnalyzer(config, template="whole_face", size=64)
        return self._analyzers[upsample]

    def find(self, path: Path, image: np.ndarray) -> np.ndarray | None:
        """(5, 2) float32 landmarks of the main face of ``image`` (RGB uint8, read from ``path``)."""
        hit = self.known.get((path.parent.name, path.name))
        if hit is not None:
            points, (width, height) = hit
            self.looked_up += 1
            scale = np.array([image.shape[1] / width, image.shape[0] / height], np.float32)
            return points * scale  # a faceset of a downscaled read: bring the points to this size
        for upsample in (0, 1):
            faces = self._analyzer(upsample).analyze(image, embed=False)
            if faces:
                self.detected += 1
                return faces[0].landmarks5_source.astype(np.float32)
        return None


def cut_chip(image: np.ndarray, landmarks5: np.ndarray, size: int, padding: float) -> np.ndarray:
    """The evaluator's chip (``chip_from_landmarks``, as in ``embed_faces``) as uint8 size x size x 3."""
    from swaplab.faces.identity import chip_from_landmarks

    tensor = torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1)[None].float().div(255.0)
    chip = chip_from_landmarks(
        tensor.contiguous(), torch.as_tensor(landmarks5, dtype=torch.float64)[None], size, padding
    )
    return chip[0].permute(1, 2, 0).mul(255.0).round().clamp(0, 255).to(torch.uint8).contiguous().numpy()


@dataclass
class ChipSet:
    """Face chips of labelled people: ``chips`` (N, S, S, 3) uint8 RGB, ``labels`` (N,) into ``people``."""

    chips: np.ndarray
    labels: np.ndarray
    people: list[str]
    files: list[str]  # "Name/Name_0001.jpg"
    landmarks: np.ndarray  # (N, 5, 2) float32, in the source photos
    skipped: list[str] = field(default_factory=list)  # photos without a face found

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> ChipSet:
        """The given rows, relabelled 0..k-1 in order of first appearance of each person."""
        rows = np.asarray(rows, np.int64)
        kept = sorted(set(self.labels[rows].tolist()))
        relabel = {old: new for new, old in enumerate(kept)}
        return ChipSet(
            chips=self.chips[rows],
            labels=np.asarray([relabel[v] for v in self.labels[rows]], np.int64),
            people=[self.people[v] for v in kept],
            files=[self.files[r] for r in rows],
            landmarks=self.landmarks[rows],
        )

    def summary(self) -> dict[str, Any]:
        import hashlib

        digest = hashlib.sha256(self.chips.tobytes())
        digest.update(self.labels.tobytes())
        return {
            "people": len(self.people),
            "images": len(self),
            "skipped": len(self.skipped),
            "chip_size": int(self.chips.shape[1]) if len(self) else 0,
            "sha256": digest.hexdigest()[:16],
        }


def _select_photos(data: IdentityDataConfig, root: Path) -> list[tuple[str, Path]]:
    from swaplab.io.images import is_image_path
    from swaplab.train.oneshot_data import read_people_list

    listed = read_people_list(root / data.people)
    check_training_people(listed, root, data.exclude_people)
    photos: list[tuple[str, Path]] = []
    people = 0
    for name in sorted(listed):
        folder = root / data.images / name
        files = sorted(p for p in folder.iterdir() if is_image_path(p)) if folder.is_dir() else []
        if len(files) < max(1, data.min_images):
            continue
        if data.max_images_per_person:
            files = files[: data.max_images_per_person]
        photos += [(name, p) for p in files]
        people += 1
        if data.max_people and people >= data.max_people:
            break
    if not photos:
        raise FileNotFoundError(f"no photos of the people in {root / data.people} under {root / data.images}")
    return photos


def _chips_key(data: IdentityDataConfig, size: int, padding: float) -> str:
    keep = {k: v for k, v in to_dict(data).items() if k not in ("lfw_dir", "facesets", "val_people", "val_pairs")}
    return config_hash({"data": keep, "size": size, "padding": padding, "version": CHIPS_VERSION})


def build_chip_set(
    data: IdentityDataConfig, net: IdentityNetConfig, *, progress: bool = True, cache: bool = True
) -> ChipSet:
    """Chips of every selected photo, cut exactly as the evaluator cuts them for ``net``.

    The result is cached in ``<user cache>/identity/chips/<key>.safetensors`` (uint8 chips, labels,
    landmarks; names in its header), so a resumed or repeated training finds faces only once.
    Photos where no face is found are skipped and listed in ``skipped``.
    """
    from safetensors.torch import load_file, save_file

    from swaplab.io.atomic import atomic_path
    from swaplab.io.images import MediaError, read_image

    root = lfw_dir(data)
    photos = _select_photos(data, root)
    cached = (
        user_cache_dir() / "identity" / "chips" / f"{_chips_key(data, net.chip_size, net.chip_padding)}.safetensors"
    )
    if cache and cached.is_file():
        from safetensors import safe_open

        with safe_open(str(cached), framework="pt") as handle:
            names = json.loads((handle.metadata() or {})["names"])
        tensors = load_file(str(cached))
        chipset = ChipSet(
            chips=tensors["chips"].numpy(),
            labels=tensors["labels"].numpy(),
            people=names["people"],
            files=names["files"],
            landmarks=tensors["landmarks"].numpy(),
            skipped=names["skipped"],
        )
        check_training_people(chipset.people, root, data.exclude_people)
        return chipset

    finder = LandmarkFinder(data.facesets)
    label_of: dict[str, int] = {}
    chips, labels, files, landmarks, skipped = [], [], [], [], []
    for name, path in _progress(photos, progress, desc="identity chips", unit="photo"):
        relative = f"{name}/{path.name}"
        try:
            image, _ = read_image(path)
        except MediaError as err:
            log.warning("skipping %s: %s", relative, err)
            skipped.append(relative)
            continue
        points = finder.find(path, image)
        if points is None:
            skipped.append(relative)
            continue
        chips.append(cut_chip(image, points, net.chip_size, net.chip_padding))
        labels.append(label_of.setdefault(name, len(label_of)))
        files.append(relative)
        landmarks.append(points)
    log.info(
        "identity chips: %d photos of %d people (%d landmarks from facesets, %d detected, %d without a face)",
        len(chips),
        len(label_of),
        finder.looked_up,
        finder.detected,
        len(skipped),
    )
    chipset = ChipSet(
        chips=np.stack(chips),
        labels=np.asarray(labels, np.int64),
        people=list(label_of),
        files=files,
        landmarks=np.stack(landmarks).astype(np.float32),
        skipped=skipped,
    )
    if cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        names = {"people": chipset.people, "files": chipset.files, "skipped": chipset.skipped}
        tensors = {
            "chips": torch.from_numpy(np.ascontiguousarray(chipset.chips)),
            "labels": torch.from_numpy(np.ascontiguousarray(chipset.labels)),
            "landmarks": torch.from_numpy(np.ascontiguousarray(chipset.landmarks)),
        }
        with atomic_path(cached) as tmp:
            save_file(tensors, str(tmp), metadata={"format": CHIPS_FORMAT, "names": json.dumps(names)})
            tmp.chmod(0o644)  # safetensors writes owner-only files; a cache is for reading
    return chipset


def split_validation(chipset: ChipSet, data: IdentityDataConfig) -> tuple[ChipSet, ChipSet | None, np.ndarray]:
    """(training chips, held-out chips, held-out pairs) with ``data.val_people`` people held out.

    The held-out people are a seeded choice among people with 2 to ``VAL_MAX_PHOTOS`` photos (the
    few people with many photos stay in training, where they teach within-person variation most);
    the pairs are
    rows (i, j, same) into the held-out chips, ``data.val_pairs`` of each kind (fewer when too few
    exist), drawn without repeats.
    """
    if not data.val_people:
        return chipset, None, np.zeros((0, 3), np.int64)
    rng = np.random.default_rng([data.seed, 1])
    counts = np.bincount(chipset.labels, minlength=len(chipset.people))
    eligible = np.flatnonzero((counts >= 2) & (counts <= VAL_MAX_PHOTOS))
    if len(eligible) < max(2, data.val_people) or data.val_people >= len(chipset.people):
        raise ConfigError(
            f"data.val_people={data.val_people}: only {len(eligible)} people have 2 to {VAL_MAX_PHOTOS} photos"
        )
    held = set(rng.choice(eligible, size=min(data.val_people, len(eligible)), replace=False).tolist())
    is_held = np.isin(chipset.labels, list(held))
    train, val = chipset.subset(np.flatnonzero(~is_held)), chipset.subset(np.flatnonzero(is_held))
    by_person = [np.flatnonzero(val.labels == p) for p in range(len(val.people))]
    same = [(a, b) for rows in by_person for i, a in enumerate(rows) for b in rows[i + 1 :]]
    same_rows = rng.permutation(len(same))[: data.val_pairs]
    pairs = [(same[k][0], same[k][1], 1) for k in same_rows]
    seen: set[tuple[int, int]] = set()
    tries = 0
    while len(seen) < min(data.val_pairs, len(pairs) or data.val_pairs) and tries < 100 * data.val_pairs:
        tries += 1
        a, b = rng.integers(len(val), size=2)
        if val.labels[a] != val.labels[b] and (min(a, b), max(a, b)) not in seen:
            seen.add((int(min(a, b)), int(max(a, b))))
    pairs += [(a, b, 0) for a, b in sorted(seen)]
    return train, val, np.asarray(pairs, np.int64).reshape(-1, 3)


# ================================================================== augmentation and batches
def batch_indices(count: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Rows of step ``step``: a pure function of (seed, step), walking seeded epoch permutations."""
    epoch, offset = divmod(step * batch_size, count)
    rows: list[np.ndarray] = []
    needed = batch_size
    while needed:
        order = np.random.default_rng([seed, epoch]).permutation(count)
        take = order[offset : offset + needed]
        rows.append(take)
        needed -= len(take)
        epoch, offset = epoch + 1, 0
    return np.concatenate(rows)


def augment_chips(chips: torch.Tensor, cfg: ChipAugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random mirror, rotation, zoom, shift, brightness, contrast and greyscale of N x 3 x S x S chips in [0, 1].

    Geometry is one ``grid_sample`` with reflected borders; with every range 0 the chips come back
    unchanged. Randomness comes from ``generator`` alone (so a step's batch can be redrawn exactly).
    """
    n = chips.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * 2.0 - 1.0

    out = chips
    flip = torch.rand(n, generator=generator) < cfg.flip_prob
    angle = uniform(n) * math.radians(cfg.rotation_deg)
    zoom = 1.0 + uniform(n) * cfg.scale
    shift = uniform(n, 2) * (2.0 * cfg.shift)  # affine_grid's coordinates span 2 per side
    if cfg.rotation_deg or cfg.scale or cfg.shift:
        mirror = torch.where(flip, -1.0, 1.0)
        cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
        theta = torch.stack(
            [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta.to(chips.dtype), list(chips.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    elif cfg.flip_prob:
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
    brightness = 1.0 + uniform(n).view(-1, 1, 1, 1) * cfg.brightness
    contrast = 1.0 + uniform(n).view(-1, 1, 1, 1) * cfg.contrast
    grey = (torch.rand(n, generator=generator) < cfg.grayscale_prob).view(-1, 1, 1, 1)
    if cfg.brightness or cfg.contrast:
        mean = out.mean((1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean) * brightness
    if cfg.grayscale_prob:
        luma = (out * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        out = torch.where(grey, luma.expand_as(out), out)
    return out.clamp(0.0, 1.0)


def _progress(iterable: Any, enabled: bool, **options: Any) -> Any:
    """A tqdm bar; one written to a log file (not a terminal) refreshes every 30 s, not 10 times a second."""
    from tqdm import tqdm

    interval = 0.5 if sys.stderr.isatty() else 30.0
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, mininterval=interval, **options)


def _to_float(chips: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float32 N x 3 x S x S in [0, 1], contiguous."""
    return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float().div(255.0).contiguous()


# ================================================================== training
class _Trainee(nn.Module):
    """The network and its margin head, checkpointed together."""

    def __init__(self, net: CompactFaceNet, head: MarginHead) -> None:
        super().__init__()
        self.net = net
        self.head = head


@dataclass
class IdentityTrainResult:
    """What one training session did; ``net`` is the trained network (CPU, eval mode)."""

    run_dir: Path
    net: CompactFaceNet
    start_step: int
    step: int
    stop_reason: str  # "steps" | "signal" | "nothing to do"
    data: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)  # the last logged row
    validation: dict[str, float] = field(default_factory=dict)
    cpu_s: float = 0.0  # CPU seconds of the training loop, summed over every session of the run
    data_cpu_s: float = 0.0  # CPU seconds this session spent building or loading the chips
    wall_s: float = 0.0  # wall seconds of this session's loop
    warnings: list[str] = field(default_factory=list)


@torch.inference_mode()
def _embed_chipset(net: CompactFaceNet, chips: np.ndarray, batch_size: int = 256) -> np.ndarray:
    was_training = net.training
    net.eval()
    out = [net(_to_float(chips[i : i + batch_size])).float() for i in range(0, len(chips), batch_size)]
    net.train(was_training)
    return torch.cat(out).numpy()


def _validate(net: CompactFaceNet, val: ChipSet, pairs: np.ndarray) -> dict[str, float]:
    embeddings = _embed_chipset(net, val.chips)
    scores = pair_scores(embeddings[pairs[:, 0]], embeddings[pairs[:, 1]])
    same = pairs[:, 2].astype(bool)
    threshold, accuracy = best_threshold(scores, same)
    return {"val/accuracy": accuracy, "val/auc": roc_auc(scores, same), "val/threshold": threshold}


def train_identity_net(
    cfg: IdentityTrainConfig, *, chips: ChipSet | None = None, progress: bool | None = None
) -> IdentityTrainResult:
    """Train (or resume, from the run folder's newest good checkpoint) the identity network.

    ``chips`` skips building the training chips (tests pass a prepared set); they are checked
    against ``data.exclude_people`` all the same. SIGINT/SIGTERM stop after the current step with
    a checkpoint (``stop_reason="signal"``); running again resumes exactly where it stopped.
    """
    from swaplab.system import autocast_dtype
    from swaplab.train.checkpoint import load_latest_good, remove_partial, restore_rng, save_checkpoint
    from swaplab.train.run import RunFolder
    from swaplab.train.trainer import learning_rate, seed_everything, stop_on_signals

    tcfg = cfg.trainer
    show = tcfg.progress if progress is None else progress and tcfg.progress
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    cpu_start = time.process_time()
    if chips is None:
        chips = build_chip_set(cfg.data, cfg.net, progress=show)
    else:
        check_training_people(chips.people, lfw_dir(cfg.data), cfg.data.exclude_people)
    train_set, val_set, val_pairs = split_validation(chips, cfg.data)
    data_cpu_s = time.process_time() - cpu_start
    data_summary = {**train_set.summary(), "validation_people": len(val_set.people) if val_set else 0}
    run = RunFolder(_run_dir(cfg))
    log_handler = _log_to(run.root / "train.log")
    try:
        seed_everything(tcfg.seed)
        device = torch.device("cpu")
        dtype = autocast_dtype(tcfg.precision, device)
        memory = torch.channels_last if tcfg.channels_last else torch.contiguous_format
        net = CompactFaceNet(cfg.net)
        model = _Trainee(net, MarginHead(cfg.net.embedding_dim, len(train_set.people), cfg.head)).to(
            memory_format=memory
        )
        names = [name for name, _ in model.named_parameters()]
        optimizer = torch.optim.SGD(
            model.parameters(), lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay
        )

        start_step, spent_cpu, warnings = 0, 0.0, []
        if run.exists():
            _check_resumable(run, cfg)
            remove_partial(run.checkpoints)
            checkpoint, warnings = load_latest_good(run.checkpoints)
            if checkpoint is not None:
                model.load_state_dict(checkpoint.model)
                optimizer.load_state_dict(checkpoint.optimizer)
                restore_rng(checkpoint.state["rng"], checkpoint.rng)
                start_step = checkpoint.step
                spent_cpu = float(checkpoint.state.get("train_cpu_s", 0.0))
                log.info("resuming %s from step %d", run.root, start_step)
            run.truncate_metrics(start_step)
        else:
            run.create()
            run.save_config(cfg)
        run.start_session(cfg, seed=tcfg.seed, facesets={"lfw": data_summary}, world_size=1, start_step=start_step)

        def checkpoint_now(at: int, cpu: float) -> None:
            save_checkpoint(
                run.checkpoints,
                at,
                model=model,
                optimizer=optimizer,
                param_names=names,
                state={"train_cpu_s": cpu, "data": data_summary},
                keep_last=tcfg.keep_last,
            )

        step, flags, bad_steps = start_step, {}, 0
        validation: dict[str, float] = {}
        last: dict[str, Any] = {}
        loop_cpu, loop_wall = time.process_time(), time.perf_counter()
        window = {"loss": 0.0, "accuracy": 0.0, "n": 0, "t": time.perf_counter()}
        bar = _progress(None, show, total=tcfg.steps, initial=start_step, desc=ENCODER_NAME, unit="step")
        model.train()
        with stop_on_signals(flags):
            while step < tcfg.steps and not flags.get("signal"):
                lr = learning_rate(step, tcfg)  # type: ignore[arg-type] - same schedule fields as TrainerConfig
                for group in optimizer.param_groups:
                    group["lr"] = lr
                rows = batch_indices(len(train_set), tcfg.batch_size, step, tcfg.seed)
                generator = torch.Generator().manual_seed(tcfg.seed * 1_000_003 + step)
                x = augment_chips(_to_float(train_set.chips[rows]), cfg.augment, generator)
                x = x.contiguous(memory_format=memory)
                labels = torch.from_numpy(train_set.labels[rows])
                margin = (
                    cfg.head.margin * min(1.0, (step + 1) / cfg.head.warmup_steps) if cfg.head.warmup_steps else None
                )
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    embeddings = model.net.embedding(x)
                cosine = model.head.cosine(embeddings)
                used_margin = cfg.head.margin if margin is None else margin
                logits = margin_logits(cosine, labels, used_margin, cfg.head.scale, cfg.head.kind)
                loss = F.cross_entropy(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    bad_steps += 1
                    if bad_steps >= 3:
                        raise FloatingPointError(
                            f"identity training diverged at step {step} (non-finite loss 3 times): lower trainer.lr"
                        )
                    step += 1
                    continue
                bad_steps = 0
                loss.backward()
                optimizer.step()
                step += 1
                bar.update(1)
                window["loss"] += float(loss.detach())
                window["accuracy"] += float((cosine.argmax(1) == labels).float().mean())
                window["n"] += 1
                if step % tcfg.log_every == 0 or step == tcfg.steps:
                    seconds = time.perf_counter() - window["t"]
                    last = {
                        "step": step,
                        "loss": window["loss"] / window["n"],
                        "train_accuracy": window["accuracy"] / window["n"],
                        "lr": lr,
                        "margin": used_margin,
                        "images_per_s": window["n"] * tcfg.batch_size / max(seconds, 1e-9),
                        "cpu_s": spent_cpu + time.process_time() - loop_cpu,
                    }
                    run.append_metrics(last)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['train_accuracy']:.2f}")
                    window = {"loss": 0.0, "accuracy": 0.0, "n": 0, "t": time.perf_counter()}
                if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step < tcfg.steps:
                    checkpoint_now(step, spent_cpu + time.process_time() - loop_cpu)
        bar.close()
        cpu_total = spent_cpu + time.process_time() - loop_cpu
        wall = time.perf_counter() - loop_wall
        if step > start_step or not list(run.checkpoints.glob("step-*")):
            checkpoint_now(step, cpu_total)
        if val_set is not None and step >= tcfg.steps:
            validation = _validate(model.net, val_set, val_pairs)
            run.append_metrics({"step": step, **validation})
            log.info("step %d: validation %s", step, validation)
        reason = "signal" if flags.get("signal") else "steps" if step > start_step else "nothing to do"
        run.plot_curves()
        run.end_session(end_step=step, reason=reason)
        trained = CompactFaceNet(cfg.net)
        trained.load_state_dict({k: v.contiguous() for k, v in model.net.state_dict().items()})
        trained.cosine_threshold = validation.get("val/threshold")
        return IdentityTrainResult(
            run_dir=run.root,
            net=trained.eval(),
            start_step=start_step,
            step=step,
            stop_reason=reason,
            data=data_summary,
            metrics=last,
            validation=validation,
            cpu_s=cpu_total,
            data_cpu_s=data_cpu_s,
            wall_s=wall,
            warnings=warnings,
        )
    finally:
        logging.getLogger("swaplab").removeHandler(log_handler)
        log_handler.close()


def _log_to(path: Path) -> logging.Handler:
    """Copy swaplab's log records (INFO and up) into ``path`` for the duration of a training."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("swaplab")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def train_and_export(cfg: IdentityTrainConfig, *, chips: ChipSet | None = None, progress: bool | None = None) -> Path:
    """Train ``cfg`` to its last step (resuming if its run folder exists) and cache the weights.

    Returns :func:`weights_path` ``(cfg)``; ``model.json`` beside it records the config, the cache
    key, the data, the training's CPU time and the machine. A session stopped by a signal raises
    ``KeyboardInterrupt`` after its checkpoint (run again to resume); nothing is exported then.
    """
    from swaplab.system import machine_description
    from swaplab.train.run import code_revision

    result = train_identity_net(cfg, chips=chips, progress=progress)
    if result.stop_reason == "signal":
        raise KeyboardInterrupt(f"{ENCODER_NAME} training stopped at step {result.step}; run again to resume")
    metadata = {
        "cache_key": cache_key(cfg),
        "config": to_dict(cfg),
        "data": result.data,
        "training": {
            "steps": result.step,
            "cpu_s": round(result.cpu_s, 1),
            "threads": torch.get_num_threads(),
            "final": result.metrics,
            "validation": result.validation,
            "run_dir": str(result.run_dir),
        },
        "machine": machine_description(),
        "code": code_revision(),
    }
    path = save_identity_weights(result.net, weights_path(cfg), metadata)
    log.info("%s weights written to %s", ENCODER_NAME, path)
    return path


# ================================================================== verification
def pair_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` (N, D) with the same row of ``b``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def verification_accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs judged right when "same person" means ``score > threshold``."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    return float(((scores > threshold) == same).mean())


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy): the cosine threshold that classifies these pairs best.

    Candidates are the midpoints between consecutive distinct scores, plus one below the lowest
    and the highest (everything "same" / nothing "same"); among equally good ones the middle one
    is taken, so a wide gap between the classes gives a threshold in its middle.
    """
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    if scores.shape != same.shape or scores.ndim != 1 or not len(scores):
        raise ValueError(f"scores {scores.shape} and labels {same.shape} must be equally long vectors")
    values = np.unique(scores)
    candidates = np.concatenate([[np.nextafter(values[0], -np.inf)], (values[:-1] + values[1:]) / 2, [values[-1]]])
    positives, negatives = np.sort(scores[same]), np.sort(scores[~same])
    true_same = len(positives) - np.searchsorted(positives, candidates, side="right")
    true_different = np.searchsorted(negatives, candidates, side="right")
    accuracy = (true_same + true_different) / len(scores)
    best = np.flatnonzero(accuracy == accuracy.max())
    choice = best[(len(best) - 1) // 2]
    return float(candidates[choice]), float(accuracy[choice])


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a same-person pair outscores a different one (ties 1/2)."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if not n_pos or not n_neg:
        raise ValueError("roc_auc needs both same-person and different-person pairs")
    return float((ranks[same].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class VerificationResult:
    """One encoder on LFW View 1: threshold from ``pairsDevTrain.txt``, accuracy on ``pairsDevTest.txt``."""

    encoder: str
    threshold: float  # cosine; "same person" when above
    train_accuracy: float  # on the development-training pairs, at the threshold
    test_accuracy: float  # on the development-test pairs, at the same threshold: the protocol's number
    test_auc: float  # threshold-free
    test_best_accuracy: float  # at the threshold best for the test pairs themselves: optimistic, diagnosis only
    train_pairs: int
    test_pairs: int
    photos_without_face: int  # embedded at the mean landmarks of the other photos
    seconds: float
    own_threshold: float | None = None  # the encoder's ``cosine_threshold`` (calibrated on held-out people)
    test_accuracy_own_threshold: float | None = None  # on the test pairs, at ``own_threshold``

    def line(self) -> str:
        own = (
            f"; at its own threshold {self.own_threshold:.4f}: {100 * self.test_accuracy_own_threshold:.2f} %"
            if self.own_threshold is not None and self.test_accuracy_own_threshold is not None
            else ""
        )
        return (
            f"{self.encoder:14s} test accuracy {100 * self.test_accuracy:6.2f} % at threshold {self.threshold:.4f} "
            f"(train pairs {100 * self.train_accuracy:.2f} %, test AUC {self.test_auc:.4f}, "
            f"best-on-test {100 * self.test_best_accuracy:.2f} %{own})"
        )


def lfw_view1(
    encoders: Mapping[str, nn.Module] | Sequence[str],
    *,
    lfw: str | Path | None = None,
    facesets: Sequence[str | Path] = (),
    train_pairs: str = "pairsDevTrain.txt",
    test_pairs: str = "pairsDevTest.txt",
    images: str = "lfw-deepfunneled",
    chunk: int = 256,
    progress: bool = True,
) -> list[VerificationResult]:
    """LFW's View-1 verification for each encoder, through the evaluator's chip path (``embed_faces``).

    Every photo of both pair lists gets its dlib 5-point landmarks (from ``facesets`` or
    ``LandmarkFinder``'s detection), then each encoder embeds dlib-geometry chips of its own
    ``chip_size``/``chip_padding``; a pair's score is the cosine of its two embeddings. The
    threshold maximising accuracy on the training pairs is applied to the test pairs (View 1's
    protocol). ``encoders`` are modules by name, or names of ``IDENTITY_ENCODERS``.
    """
    from swaplab.evaluate.evaluator import embed_faces
    from swaplab.faces.identity import IDENTITY_ENCODERS
    from swaplab.io.images import read_image

    root = Path(lfw).expanduser() if lfw else lfw_dir(IdentityDataConfig(images=images, people=train_pairs))
    image_dir = root / images
    if isinstance(encoders, Mapping):
        modules = dict(encoders)
    else:
        modules = {name: IDENTITY_ENCODERS.create(name).eval() for name in encoders}
    lists = {kind: read_pairs(root / name) for kind, name in (("train", train_pairs), ("test", test_pairs))}
    photos = sorted(
        {lfw_image(image_dir, n, i) for rows in lists.values() for a, i, b, j in rows for n, i in ((a, i), (b, j))}
    )
    index = {path: k for k, path in enumerate(photos)}

    start = time.perf_counter()
    finder = LandmarkFinder(facesets)
    landmarks: list[np.ndarray | None] = []
    for path in _progress(photos, progress, desc="landmarks", unit="photo"):
        landmarks.append(finder.find(path, read_image(path)[0]))
    found = [p for p in landmarks if p is not None]
    if not found:
        raise RuntimeError(f"no face found in any of the {len(photos)} photos of the pair lists")
    fallback = np.mean(found, axis=0).astype(np.float32)  # LFW's photos are centred: the mean face is a fair guess
    missing = sum(p is None for p in landmarks)
    points = [p if p is not None else fallback for p in landmarks]
    landmark_seconds = time.perf_counter() - start

    embeddings: dict[str, list[np.ndarray]] = {name: [] for name in modules}
    seconds = dict.fromkeys(modules, landmark_seconds)
    for begin in _progress(range(0, len(photos), chunk), progress, desc="embed", unit="chunk"):
        batch = [read_image(p)[0] for p in photos[begin : begin + chunk]]
        for name, module in modules.items():
            tick = time.perf_counter()
            embeddings[name].append(embed_faces(batch, points[begin : begin + chunk], module))
            seconds[name] += time.perf_counter() - tick

    results = []
    for name in modules:
        table = np.concatenate(embeddings[name])
        scored = {}
        for kind, rows in lists.items():
            first = [index[lfw_image(image_dir, a, i)] for a, i, _, _ in rows]
            second = [index[lfw_image(image_dir, b, j)] for _, _, b, j in rows]
            same = np.asarray([a == b for a, _, b, _ in rows])
            scored[kind] = (pair_scores(table[first], table[second]), same)
        threshold, train_accuracy = best_threshold(*scored["train"])
        own = getattr(modules[name], "cosine_threshold", None)
        results.append(
            VerificationResult(
                encoder=name,
                threshold=threshold,
                train_accuracy=train_accuracy,
                test_accuracy=verification_accuracy(*scored["test"], threshold),
                test_auc=roc_auc(*scored["test"]),
                test_best_accuracy=best_threshold(*scored["test"])[1],
                train_pairs=len(lists["train"]),
                test_pairs=len(lists["test"]),
                photos_without_face=missing,
                seconds=round(seconds[name], 2),
                own_threshold=own,
                test_accuracy_own_threshold=None if own is None else verification_accuracy(*scored["test"], own),
            )
        )
    return results


# ================================================================== command line
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m swaplab.faces.lfw_identity_train",
        description=f"Train swaplab's {ENCODER_NAME} identity network on LFW, or measure encoders on LFW View 1.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train (or resume) and cache the weights")
    train.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. trainer.steps=800)")
    train.add_argument("--preset", default="default", help="training preset: default or test")
    train.add_argument("--faceset", action="append", default=[], help="faceset of LFW photos (landmarks); repeatable")
    train.add_argument("--verify", action="store_true", help="then run LFW View 1 and record it in model.json")
    train.add_argument(
        "--verify-faceset", action="append", default=[], help="more landmark facesets for --verify; repeatable"
    )
    verify = sub.add_parser("verify", help="LFW View-1 verification accuracy of identity encoders")
    verify.add_argument("--encoders", nargs="+", default=[ENCODER_NAME, "dlib-resnet"])
    verify.add_argument("--weights", help=f"a {ENCODER_NAME} weights file (default: the cached one)")
    verify.add_argument("--preset", default=None, help=f"the cached {ENCODER_NAME} weights of this preset")
    verify.add_argument("--faceset", action="append", default=[], help="faceset of LFW photos (landmarks); repeatable")
    verify.add_argument("--lfw", help="LFW folder (default: <data root>/lfw)")
    verify.add_argument("--out", help="write the results as JSON here")
    verify.add_argument("--record", action="store_true", help=f"add the results to the {ENCODER_NAME} model.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _verify(args: argparse.Namespace, progress: bool) -> tuple[list[VerificationResult], Path | None]:
    """Run View 1 on ``args.encoders``; also return the lfw-arcface weights file measured, if any."""
    from swaplab.faces.identity import IDENTITY_ENCODERS

    modules: dict[str, nn.Module] = {}
    weights = None
    for name in args.encoders:
        if name == ENCODER_NAME:
            from swaplab.faces.lfw_identity import WEIGHTS_ENV, load_lfw_identity

            given = args.weights or os.environ.get(WEIGHTS_ENV)
            weights = Path(given) if given else weights_path(preset_config(args.preset or "default"))
            modules[name] = load_lfw_identity(weights)
        else:
            modules[name] = IDENTITY_ENCODERS.create(name).eval()
    return lfw_view1(modules, lfw=args.lfw, facesets=args.faceset, progress=progress), weights


def _record(weights: Path, results: list[VerificationResult]) -> None:
    """Add the View-1 results to the weights' model.json."""
    document = json.loads(metadata_path(weights).read_text(encoding="utf-8"))
    document["verification"] = {
        "protocol": "LFW View 1: threshold on pairsDevTrain.txt, accuracy on pairsDevTest.txt",
        "results": [dataclasses.asdict(r) for r in results],
    }
    atomic_write_json(metadata_path(weights), document)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    progress = not args.quiet
    cpu_start = time.process_time()
    results: list[VerificationResult] = []
    if args.command == "train":
        overrides = list(args.overrides)
        if args.faceset:
            overrides.append(f"data.facesets=[{','.join(json.dumps(f) for f in args.faceset)}]")
        cfg = apply_overrides(preset_config(args.preset), overrides)
        path = train_and_export(cfg, progress=progress)
        print(f"weights: {path}")
        if args.verify:
            args.encoders, args.weights, args.preset = [ENCODER_NAME, "dlib-resnet"], str(path), None
            args.faceset = [*args.faceset, *args.verify_faceset]
            args.lfw = cfg.data.lfw_dir or None
            results, _ = _verify(args, progress)
            _record(path, results)
    else:
        results, weights = _verify(args, progress)
        if args.record and weights is not None:
            _record(weights, results)
        if args.out:
            atomic_write_json(Path(args.out), [dataclasses.asdict(r) for r in results])
    for result in results:
        print(result.line())
    print(
        f"CPU time of this command: {time.process_time() - cpu_start:.1f} s ({torch.get_num_threads()} torch threads)"
    )
    return 0


if __name__ == "__main__":
    from swaplab.faces.lfw_identity_train import main as imported_main

    sys.exit(imported_main())
