"""LFW's View-1 verification of identity networks, through the evaluator's own chip path.

``lfw_view1`` finds each photo's 5 landmarks (from facesets, else by detection), embeds dlib-geometry
chips with every network (``swaplab.identity.embed.embed_faces``), chooses the cosine threshold on
``pairsDevTrain.txt`` and reports accuracy on ``pairsDevTest.txt`` (View 1's protocol; nothing is
tuned on the test pairs). ``record_verification`` adds the results to an installed network's card.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from swaplab.data.lfw import lfw_image, read_pairs
from swaplab.identity.embed import embed_faces
from swaplab.io.atomic import atomic_write_json
from swaplab.metrics.detection import roc_auc
from swaplab.metrics.verification import best_threshold, pair_scores, verification_accuracy
from swaplab.progress import progress_bar

__all__ = ["VerificationResult", "lfw_view1", "record_verification"]


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
    from swaplab.identity.registry import IDENTITY_ENCODERS
    from swaplab.io.images import read_image
    from swaplab.train.identity_chips import IdentityDataConfig, LandmarkFinder, lfw_dir

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
    for path in progress_bar(photos, progress, desc="landmarks", unit="photo"):
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
    for begin in progress_bar(range(0, len(photos), chunk), progress, desc="embed", unit="chunk"):
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
                test_auc=roc_auc(scored["test"][0][~scored["test"][1]], scored["test"][0][scored["test"][1]]),
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


def record_verification(card_path: str | Path, results: Sequence[VerificationResult]) -> None:
    """Add View-1 results to a network's ``model.json``."""
    import dataclasses

    card_path = Path(card_path)
    document = json.loads(card_path.read_text(encoding="utf-8"))
    document["verification"] = {
        "protocol": "LFW View 1: threshold on pairsDevTrain.txt, accuracy on pairsDevTest.txt",
        "results": [dataclasses.asdict(r) for r in results],
    }
    atomic_write_json(card_path, document)
