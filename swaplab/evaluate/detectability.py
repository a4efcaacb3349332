"""Detectability: train a small real-vs-swapped classifier on one set of swaps, report its ROC AUC on another.

The evaluator's measure of how easily a trained detector tells a model's swaps from real faces
(lower is better for the swap model; 0.5 is undetectable). The detector is the ``swap-detector``
training recipe run on the training crops (``measure_detectability`` writes them to a file and
runs the one training loop in a scratch folder, or in ``save_to``); the AUC is
``swaplab.metrics.roc_auc``. Pair-aware train/test splits keep a swap and its original together.
It finds no faces and makes no swaps: callers pass aligned crops.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from swaplab.config import config_group, to_dict
from swaplab.evaluate.faces import FaceCache, face_crop
from swaplab.evaluate.results import EvalOptions
from swaplab.evaluate.targets import MIN_DETECTOR_PAIRS, Job
from swaplab.io.images import read_image
from swaplab.metrics import direction
from swaplab.metrics.detection import roc_auc
from swaplab.models.swap_detector import Crops, SwapDetector, input_size

__all__ = [
    "DetectabilityResult",
    "detectability_metrics",
    "GroupSplit",
    "detector_config",
    "holdout_detectability",
    "measure_detectability",
    "split_groups",
    "train_detector",
]

Groups = Sequence[Hashable] | None


def detector_config(preset: Any = "default", **trainer: Any) -> Any:
    """A detector run config: a ``detector`` preset name (``default``, ``test``) or a config, with
    ``trainer`` fields replaced (``detector_config("test", seed=3)``)."""
    cfg = config_group("detector").create(preset) if isinstance(preset, str) else preset
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, **trainer)) if trainer else cfg


def _check_sizes(named: dict[str, Crops]) -> None:
    """All sets non-empty and of one input size.

    A detector trained on real crops of one size and swaps of another learns the resizing (its
    blur and aliasing), not the swap, and its AUC would measure the pipeline, not the model.
    """
    sizes = {}
    for name, crops in named.items():
        if len(crops) == 0:
            raise ValueError(f"{name} is empty: detectability needs real and swapped crops in both sets")
        sizes[name] = input_size(crops)
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{name} {h}x{w}" for name, (h, w) in sizes.items())
        raise ValueError(
            f"real and swapped crops must share one input size ({listing}): a detector could tell them "
            "apart by their resizing alone; align both at one size"
        )


def _as_groups(groups: Groups, count: int, name: str) -> list[Hashable] | None:
    if groups is None:
        return None
    groups = list(groups)
    if len(groups) != count:
        raise ValueError(f"{name}: {len(groups)} group labels for {count} crops")
    return groups


# ------------------------------------------------------------------------------------------ splits


class GroupSplit(NamedTuple):
    """Indices (int64, sorted) of a train/test split of real and swapped crops."""

    train_real: np.ndarray
    train_fake: np.ndarray
    test_real: np.ndarray
    test_fake: np.ndarray


def split_groups(
    n_real: int,
    n_fake: int,
    test_fraction: float = 0.3,
    seed: int = 0,
    real_groups: Groups = None,
    fake_groups: Groups = None,
) -> GroupSplit:
    """Split real and swapped crops into train and test so that no group straddles the two.

    A group is any hashable label: a target photo's id shared by the real crop and its swap (so a
    swap is never tested against a detector that saw its original), or a person's name (so no
    identity is seen in training and testing). Unlabelled crops are their own groups, drawn per
    class. About ``test_fraction`` of the groups go to test (at least one; at least one stays for
    training), chosen by ``seed``. Raises ValueError when a side ends up without one of the classes.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n_real < 1 or n_fake < 1:
        raise ValueError(f"need real and swapped crops, got {n_real} real and {n_fake} swapped")
    real_labels = _as_groups(real_groups, n_real, "real_groups")
    fake_labels = _as_groups(fake_groups, n_fake, "fake_groups")
    # Unlabelled crops get labels no caller can pass (a tuple tagged with a private object).
    untagged = object()
    real_labels = real_labels or [(untagged, "real", i) for i in range(n_real)]
    fake_labels = fake_labels or [(untagged, "fake", i) for i in range(n_fake)]
    # Ordered by first appearance, then shuffled: independent of hash seeds and label types.
    unique = list(dict.fromkeys([*real_labels, *fake_labels]))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = min(max(1, round(test_fraction * len(unique))), len(unique) - 1) if len(unique) > 1 else 0
    test_labels = {unique[i] for i in order[:n_test]}

    def pick(labels: list[Hashable], test: bool) -> np.ndarray:
        return np.array([i for i, label in enumerate(labels) if (label in test_labels) == test], np.int64)

    split = GroupSplit(
        pick(real_labels, False), pick(fake_labels, False), pick(real_labels, True), pick(fake_labels, True)
    )
    empty = [name for name, idx in split._asdict().items() if len(idx) == 0]
    if empty:
        raise ValueError(f"the split left {', '.join(empty)} empty: give more groups or another test_fraction")
    return split


def _take(crops: Crops, index: np.ndarray) -> Crops:
    if isinstance(crops, (torch.Tensor, np.ndarray)):
        return crops[torch.from_numpy(index) if isinstance(crops, torch.Tensor) else index]
    return [crops[i] for i in index]


# ------------------------------------------------------------------------------------------ training


def train_detector(
    real: Crops,
    fake: Crops,
    config: Any = "default",
    *,
    real_groups: Groups = None,
    fake_groups: Groups = None,
    run_dir: str | Path | None = None,
    target_domain: Crops | None = None,
) -> SwapDetector:
    """Train a ``SwapDetector`` on real and swapped face crops (the ``swap-detector`` recipe).

    ``real``, ``fake``: aligned crops in any format ``prepare_crops`` takes, all of one input size.
    ``real_groups``/``fake_groups`` (optional, one hashable label per crop) tell which real crop
    and swap belong together (e.g. a target photo's id); with ``data.paired_batches`` each batch
    then draws a real crop and a swap of the same group. ``config``: a ``detector`` preset name or
    a ``DetectorTrainConfig``. ``run_dir`` keeps the run (a scratch folder otherwise).
    ``target_domain``: unlabelled crops of another domain (another generator's swaps and real
    faces) to adapt to, with a config that adapts (preset ``dann``: domain-adversarial training).

    Deterministic for a given seed, data, device and thread count; the global RNG states are left
    as they were. Returns the detector in eval mode.
    """
    from swaplab.train.export import load_trained
    from swaplab.train.loop import train
    from swaplab.train.recipes.swap_detector import write_crops

    cfg = detector_config(config)
    _check_sizes({"real": real, "fake": fake})
    _as_groups(real_groups, len(real), "real_groups"), _as_groups(fake_groups, len(fake), "fake_groups")
    with tempfile.TemporaryDirectory(prefix="swaplab-detector-") as scratch:
        folder = Path(run_dir) if run_dir is not None else Path(scratch) / "run"
        crops = write_crops(
            Path(scratch) / "crops.safetensors", real, fake, cfg.model.resolution, real_groups, fake_groups
        )
        data = dataclasses.replace(cfg.data, crops=str(crops))
        if target_domain is not None:
            if cfg.adaptation.weight <= 0:
                raise ValueError(
                    "target_domain needs an adapting detector config (preset 'dann', adaptation.weight > 0)"
                )
            target = write_crops(
                Path(scratch) / "target.safetensors", target_domain, target_domain, cfg.model.resolution
            )
            data = dataclasses.replace(data, target_crops=str(target))
        cfg = dataclasses.replace(cfg, run_dir=str(folder), data=data)
        with torch.random.fork_rng(devices=[]):
            train(cfg)
            _, detector = load_trained(folder)
    return detector.eval()  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class DetectabilityResult:
    """The held-out AUC of a detector trained on one set of swaps and tested on another.

    ``auc``: ROC AUC on the test crops (0.5: the detector cannot tell the swaps from real faces;
    1: it always can; lower is better for a swap model). ``train_auc`` on the (unaugmented)
    training crops: far above ``auc`` means the detector memorised rather than learned.
    """

    auc: float
    train_auc: float
    n_train_real: int
    n_train_fake: int
    n_test_real: int
    n_test_fake: int
    steps: int
    seconds: float
    config: Any  # the DetectorTrainConfig it was trained with

    def summary(self) -> dict[str, float]:
        """The deterministic numbers for metrics.json (``value`` is the AUC; no timing)."""
        fields = ("train_auc", "n_train_real", "n_train_fake", "n_test_real", "n_test_fake", "steps")
        return {"value": self.auc, **{key: float(getattr(self, key)) for key in fields}}

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready: the numbers, the training seconds and the resolved config."""
        return {key: to_dict(value) for key, value in dataclasses.asdict(self).items()}


def _check_disjoint(train: Sequence[Groups], test: Sequence[Groups]) -> None:
    seen = {label for groups in train if groups is not None for label in groups}
    shared = {label for groups in test if groups is not None for label in groups} & seen
    if shared:
        raise ValueError(
            f"{len(shared)} group(s) appear in both training and test crops, e.g. {sorted(map(str, shared))[:3]}"
        )


def measure_detectability(
    train_real: Crops,
    train_fake: Crops,
    test_real: Crops,
    test_fake: Crops,
    config: Any = "default",
    *,
    train_real_groups: Groups = None,
    train_fake_groups: Groups = None,
    test_real_groups: Groups = None,
    test_fake_groups: Groups = None,
    save_to: str | Path | None = None,
) -> DetectabilityResult:
    """Train a detector on the training crops and report its ROC AUC on the test crops.

    All four sets: aligned crops of one input size (see ``prepare_crops``), none empty. Group
    labels are optional: training groups pair real crops with their swaps (``train_detector``),
    and when test groups are given too, a label in both sets is an error (a swap tested against
    a detector that saw its original, or the same person on both sides, inflates the AUC).
    ``save_to``: a folder to keep the detector's training run in (its checkpoint and curves).
    """
    cfg = detector_config(config)
    _check_sizes({"train_real": train_real, "train_fake": train_fake, "test_real": test_real, "test_fake": test_fake})
    _check_disjoint([train_real_groups, train_fake_groups], [test_real_groups, test_fake_groups])
    start = time.perf_counter()
    detector = train_detector(
        train_real, train_fake, cfg, real_groups=train_real_groups, fake_groups=train_fake_groups, run_dir=save_to
    )
    seconds = time.perf_counter() - start
    precision = cfg.trainer.precision

    def logits(crops: Crops) -> np.ndarray:
        return detector.logits(crops, precision)

    return DetectabilityResult(
        auc=roc_auc(logits(test_real), logits(test_fake)),
        train_auc=roc_auc(logits(train_real), logits(train_fake)),
        n_train_real=len(train_real),
        n_train_fake=len(train_fake),
        n_test_real=len(test_real),
        n_test_fake=len(test_fake),
        steps=cfg.trainer.steps,
        seconds=seconds,
        config=cfg,
    )


def holdout_detectability(
    real: Crops,
    fake: Crops,
    config: Any = "default",
    *,
    test_fraction: float = 0.3,
    paired: bool = False,
    real_groups: Groups = None,
    fake_groups: Groups = None,
) -> tuple[DetectabilityResult, GroupSplit]:
    """``measure_detectability`` on one set of crops split into train and test by ``split_groups``.

    ``paired=True`` says ``real[i]`` and ``fake[i]`` belong together (a target and its swap); it is
    shorthand for ``real_groups = fake_groups = range(n)``. The split is drawn with the detector's ``trainer.seed``.
    """
    config = detector_config(config)
    if paired:
        if real_groups is not None or fake_groups is not None:
            raise ValueError("give either paired=True or group labels, not both")
        if len(real) != len(fake):
            raise ValueError(f"paired crops must come in equal numbers, got {len(real)} real and {len(fake)} swapped")
        real_groups = fake_groups = range(len(real))
    split = split_groups(len(real), len(fake), test_fraction, config.trainer.seed, real_groups, fake_groups)

    real_groups, fake_groups = (None if g is None else list(g) for g in (real_groups, fake_groups))

    def labels(groups: list[Hashable] | None, index: np.ndarray) -> list[Hashable] | None:
        return None if groups is None else [groups[i] for i in index]

    result = measure_detectability(
        _take(real, split.train_real),
        _take(fake, split.train_fake),
        _take(real, split.test_real),
        _take(fake, split.test_fake),
        config,
        train_real_groups=labels(real_groups, split.train_real),
        train_fake_groups=labels(fake_groups, split.train_fake),
        test_real_groups=labels(real_groups, split.test_real),
        test_fake_groups=labels(fake_groups, split.test_fake),
    )
    return result, split


# ------------------------------------------------------------------------------------------ in an evaluation


def detectability_metrics(
    scored: Sequence[Any], detector_jobs: Sequence[Job], cache: FaceCache, opts: EvalOptions
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """AUC of a real-vs-swapped classifier trained on the detector pairs' (target, swap) crops and
    tested on the scored pairs' (``Scored`` items); each swap is cut where its target's face is, so
    the two crops of a pair differ only by the swap."""
    if opts.detector_pairs < 0:
        return {}, []
    if not detector_jobs:
        return {}, ["detectability not measured: the protocol has no detector-training pairs"]
    train_real, train_fake, groups = [], [], []
    for job in detector_jobs:
        face = cache.face(job.target)
        if face is None or job.swap is None:
            continue
        train_real.append(face_crop(read_image(job.target)[0], face))
        train_fake.append(face_crop(read_image(job.swap)[0], face))
        groups.append(job.pair.id)
    if len(groups) < MIN_DETECTOR_PAIRS:
        return {}, [
            f"detectability not measured: only {len(groups)} detector-training swaps "
            f"(swap the protocol's detector_train pairs too: <id>.png, ids dtrain-NNNN)"
        ]
    test_real = [face_crop(read_image(s.job.target)[0], s.target_face) for s in scored]
    test_fake = [face_crop(s.swap_image, s.target_face) for s in scored]
    test_groups = [s.job.pair.id for s in scored]
    result = measure_detectability(
        train_real,
        train_fake,
        test_real,
        test_fake,
        opts.detector,
        train_real_groups=groups,
        train_fake_groups=groups,
        test_real_groups=test_groups,
        test_fake_groups=test_groups,
    )
    entry = {
        **result.summary(),
        "better": direction("detectability_auc"),
        "detector": opts.detector,
        "seconds": round(result.seconds, 1),
    }
    return {"detectability_auc": entry}, []
