"""Training data of identity networks: dlib-geometry face chips of LFW's training people, cached.

``build_chip_set(data, chip_size, chip_padding)`` cuts the chips exactly as the evaluator cuts them
(``swaplab.identity.chips``) from every selected ``peopleDevTrain.txt`` photo (landmarks from given
facesets, else found with ``FaceAnalyzer``) and caches them as safetensors in the user cache;
``split_validation`` holds people out to calibrate the same-person threshold; ``batch_indices``
walks seeded epoch permutations. It refuses ``peopleDevTest.txt`` people and never trains.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swaplab.config import ConfigError, config_hash, to_dict
from swaplab.data.lfw import check_split
from swaplab.progress import progress_bar
from swaplab.system import user_cache_dir

log = logging.getLogger(__name__)

CHIPS_FORMAT = "swaplab-identity-chips"
CHIPS_VERSION = 1
#: Held-out (calibration) people are drawn among those with at most this many photos.
VAL_MAX_PHOTOS = 20


@dataclass
class IdentityDataConfig:
    """Which LFW people and photos to train on, and where their landmarks come from."""

    name: str = "lfw-identity"
    lfw_dir: str = ""  # folder holding the image folder and the lists; "" = <data root>/lfw
    images: str = "lfw-deepfunneled"  # image folder: <images>/<Name>/<Name>_NNNN.jpg
    people: str = "peopleDevTrain.txt"  # the people to train on
    # Refuse people of LFW's evaluation split (off only for a folder that is not LFW).
    check_split: bool = True
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


def check_training_people(people: Sequence[str], root: Path, data: IdentityDataConfig) -> None:
    """Raise ``SplitError`` if any of ``people`` belongs to LFW's evaluation split."""
    if data.check_split:
        check_split(people, "train", root, what="the identity network's training data", strict=False)


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
    from swaplab.identity.chips import chip_from_landmarks

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
    from swaplab.data.lfw import read_people_list
    from swaplab.io.images import is_image_path

    listed = read_people_list(root / data.people)
    check_training_people(list(listed), root, data)
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
    data: IdentityDataConfig, chip_size: int, chip_padding: float, *, progress: bool = True, cache: bool = True
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
    cached = user_cache_dir() / "identity" / "chips" / f"{_chips_key(data, chip_size, chip_padding)}.safetensors"
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
        check_training_people(chipset.people, root, data)
        return chipset

    finder = LandmarkFinder(data.facesets)
    label_of: dict[str, int] = {}
    chips, labels, files, landmarks, skipped = [], [], [], [], []
    for name, path in progress_bar(photos, progress, desc="identity chips", unit="photo"):
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
        chips.append(cut_chip(image, points, chip_size, chip_padding))
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
