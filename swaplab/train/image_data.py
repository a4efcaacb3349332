"""Images for the generative-model zoo: digits, MNIST or aligned faces, with labels, sampled by step.

``ImageData(cfg)`` holds every image once in memory as uint8 (N, C, R, R) with an integer label
per image (the digit; for faces, the person of an LFW photo), split into training and held-out
images by a seeded choice. Which images a step sees is a pure function of (seed, step, rank), as
in the per-pair data, so resumed and multi-process runs see what one uninterrupted process sees.
Faces of people who learn-from-many models must not see are refused (LFW's ``peopleDevTest``).
It loads and samples; it does not augment or train.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from swaplab.config import ConfigError
from swaplab.train.data import EpochStream

log = logging.getLogger(__name__)

Tensor = torch.Tensor


@dataclass
class ImageDataConfig:
    """Where the images come from and how they are shaped (0 and ``auto``: as the model needs)."""

    name: str = "digits"
    # auto: the facesets of ``train`` when it names any, else the bundled digits
    source: Literal["auto", "digits", "mnist", "faceset"] = "auto"
    train: list[str] = field(default_factory=list)  # faceset folders to learn from (peopleDevTrain people)
    mnist_dir: str = ""  # with source=mnist: the folder of the four idx files ("" = <data root>/mnist)
    resolution: int = 0  # images are resized to this side (area when shrinking, cubic when growing); 0: the model's
    channels: Literal[0, 1, 3] = 0  # 1: grey (faces are converted), 3: RGB (digits are repeated); 0: the model's
    limit: int = 0  # use only the first N images (0 = all)
    holdout: int = 64  # images kept out of training, for validation and pictures
    seed: int = 0

    def __post_init__(self) -> None:
        if 0 < self.resolution < 4 or self.holdout < 0 or self.limit < 0:
            raise ConfigError("data.resolution must be >= 4 (or 0: the model's); data.holdout and data.limit >= 0")
        # "source=faceset needs data.train" is checked when the images are read, not here: the
        # faces presets (data=faces32) leave the folders for a later data.train=[...] override.

    def resolved(self, model: Any) -> ImageDataConfig:
        """This config with ``auto`` and 0 settled: the source from ``train``, the shape from ``model``
        (any config with ``channels`` and ``resolution``)."""
        source = self.source if self.source != "auto" else ("faceset" if self.train else "digits")
        return dataclasses.replace(
            self,
            source=source,
            resolution=self.resolution or model.resolution,
            channels=self.channels or model.channels,
        )


def _resize(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, R, R, C)."""
    if images.shape[1] == resolution and images.shape[2] == resolution:
        return images
    shrinking = images.shape[1] > resolution
    mode = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    out = [cv2.resize(image, (resolution, resolution), interpolation=mode) for image in images]
    return np.stack([o if o.ndim == 3 else o[..., None] for o in out])


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)[..., None]  # (1797, 8, 8, 1)
    return images, digits.target.astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    dims = data[3]
    if len(data) < 4 + 4 * dims:
        raise ValueError(f"{path}: truncated idx header ({len(data)} bytes for {dims} dimensions)")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: holds {body.size} values, its header says {shape}")
    return body.reshape(shape)


def _mnist(folder: str) -> tuple[np.ndarray, np.ndarray]:
    from swaplab.data.fetch import data_root

    root = Path(folder) if folder else data_root() / "mnist"
    found = {}
    for kind, stem in (("images", "train-images-idx3-ubyte"), ("labels", "train-labels-idx1-ubyte")):
        candidates = [root / f"{stem}.gz", root / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"MNIST not found in {root}: fetch it with `swaplab data fetch mnist`")
        found[kind] = read_idx(path)
    return found["images"][..., None], found["labels"].astype(np.int64)


def _faces(facesets: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from swaplab.data.lfw import check_split, person_of
    from swaplab.facesets.format import Faceset

    images, people = [], []
    for root in facesets:
        faceset = Faceset(root)
        for index, record in enumerate(faceset.records):
            images.append(faceset.image(index))
            people.append(person_of(record.source))
    if not images:
        raise ValueError(f"the facesets {facesets} hold no faces")
    # Models that learn from many faces never train on LFW's evaluation people (people outside
    # LFW, such as a user's own faceset, are allowed).
    check_split(people, "train", what=f"the zoo's training faces ({', '.join(facesets)})", strict=False)
    names = sorted(set(people))
    labels = np.array([names.index(p) for p in people], np.int64)
    return np.stack(images), labels, names


class ImageData:
    """Images (N, C, R, R) uint8 and labels, split into training and held-out, sampled by step."""

    def __init__(self, cfg: ImageDataConfig) -> None:
        if cfg.source == "auto" or not cfg.resolution or not cfg.channels:
            raise ValueError("ImageData needs a resolved config: ImageDataConfig.resolved(model_config)")
        self.cfg = cfg
        self.class_names: list[str] = []
        if cfg.source == "digits":
            images, labels = _digits()
            self.class_names = [str(d) for d in range(10)]
        elif cfg.source == "mnist":
            images, labels = _mnist(cfg.mnist_dir)
            self.class_names = [str(d) for d in range(10)]
        else:
            if not cfg.train:
                raise ConfigError(f"data.source=faceset needs data.train=[FACESET, ...] (data={cfg.name})")
            images, labels, self.class_names = _faces(cfg.train)
        if cfg.limit:
            images, labels = images[: cfg.limit], labels[: cfg.limit]
        images = _resize(images, cfg.resolution)
        if cfg.channels == 1 and images.shape[-1] == 3:
            images = np.stack([cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in images])[..., None]
        elif cfg.channels == 3 and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        if cfg.holdout >= len(images):
            raise ConfigError(f"data.holdout={cfg.holdout} leaves no training images out of {len(images)}")
        order = np.random.default_rng([cfg.seed, 7]).permutation(len(images))
        held, train = np.sort(order[: cfg.holdout]), np.sort(order[cfg.holdout :])
        all_images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        all_labels = torch.from_numpy(labels)
        self.images, self.labels = all_images[train], all_labels[train]
        # Which source image (in reading order) each training and held-out image is, for recipes that
        # compute per-image values from the originals (the DDPM's identity embeddings).
        self.train_index, self.heldout_index = torch.from_numpy(train), torch.from_numpy(held)
        self.heldout_images, self.heldout_labels = all_images[held], all_labels[held]
        self.stream = EpochStream(len(self.images), cfg.seed, "zoo")
        log.info(
            "zoo data: %d training and %d held-out %s images at %d px",
            len(train),
            len(held),
            cfg.source,
            cfg.resolution,
        )

    @classmethod
    def for_run(cls, cfg: Any) -> ImageData:
        """The images of a run config (its ``data``, shaped for its ``model``)."""
        return cls(cfg.data.resolved(cfg.model))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> tuple[Tensor, Tensor]:
        """This rank's images (float in [0, 1]) and labels of optimiser step ``step``."""
        positions = self.stream.positions((step * world_size + rank) * batch_size, batch_size)
        return self.images[positions].float().div(255.0), self.labels[positions]

    def heldout(self, count: int = 0) -> tuple[Tensor, Tensor]:
        """The first ``count`` held-out images (all with 0) as floats in [0, 1], and their labels."""
        stop = count or None
        return self.heldout_images[:stop].float().div(255.0), self.heldout_labels[:stop]

    def content_hash(self) -> dict[str, object]:
        import hashlib

        digest = hashlib.sha256(self.images.numpy().tobytes())
        digest.update(self.heldout_images.numpy().tobytes())
        return {
            "source": self.cfg.source,
            "images": len(self) + len(self.heldout_images),
            "sha256": digest.hexdigest()[:16],
        }
