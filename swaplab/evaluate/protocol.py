"""The pinned evaluation protocols: which images are swapped, compared and searched, by name.

``build_protocol(data_root)`` derives the protocol files from the sample data deterministically
(sorted file names and a fixed seed; no face detection) and ``write_protocol_files`` commits them
under ``swaplab/protocol/``; ``load_protocol("per_pair_v1")`` reads one back. Every path in a
protocol is relative to the data root, so anyone with the data scores the same images. This module
reads file listings only; it never opens an image, runs a network or computes a metric.

Regenerate (the committed files must not change unless the rules below change, with a new version)::

    python -m swaplab.evaluate.protocol [DATA_ROOT]
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from swaplab.data.lfw import SPLIT_FILES

__all__ = [
    "LFW_IMAGES",
    "LFW_TEST_PEOPLE",
    "PROTOCOL_DIR",
    "PROTOCOL_NAMES",
    "Clip",
    "Protocol",
    "SwapPair",
    "build_protocol",
    "load_protocol",
    "lfw_test_people",
    "protocol_path",
    "write_protocol_files",
]

#: Where the committed protocol files live (package data of swaplab).
PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "protocol"
PROTOCOL_NAMES = ("per_pair_v1", "oneshot_v1", "video_v1", "oneshot_occluded_v1", "per_pair_occluded_v1")

LFW_IMAGES = "lfw/lfw-deepfunneled"
# Relative to the data root; the split's rules are swaplab.data.lfw's.
LFW_TEST_PEOPLE = f"lfw/{SPLIT_FILES['eval']}"
LFW_TRAIN_PEOPLE = f"lfw/{SPLIT_FILES['train']}"
CREATED_WITH = "swaplab.evaluate.protocol.build_protocol (python -m swaplab.evaluate.protocol DATA_ROOT)"

# --- the rules of version 1 (changing any of them means a new protocol version) -------------
SEED = 0
PER_PAIR = {"src": "George_W_Bush", "dst": "Colin_Powell"}
HELDOUT_PER_SIDE = 24  # the last 24 images of each person by sorted file name
REFERENCE_FACES = 96  # real faces of the source for FD / KID: the last 96 of the source's images
DST_GALLERY_IMAGES = 8  # the destination's first 8 images (never a held-out one) in the gallery
DISTRACTORS = 48  # peopleDevTest identities with >= 4 images added to the per-pair gallery
DISTRACTOR_IMAGES = 4
ONESHOT_PAIRS = 200
ONESHOT_GALLERY_IMAGES = 4  # per source identity: its first 4 images other than the source image
VIDEO_GLOB = "videos/hdtf_sadtalker/*.mp4"
VIDEO_FRAMES = 100
#: Training pairs of the detectability classifier (one-shot protocol).
DETECTOR_PAIRS = 200
#: The occluded-target set: pairs of its own draw, each target with a synthetic occluder pasted
#: (``swaplab.train.occlusion.paste_occluders``, seeded per pair) over the photo's central square,
#: where LFW's deep-funneled faces lie. HEAR-Net's question: does the occluder survive the swap?
OCCLUDED_PAIRS = 50
OCCLUSION = {
    "region_share": 0.5,  # the central square of half the shorter side (about the face on LFW)
    "kinds": ["cutout", "hand", "texture"],
    "min_size": 0.25,  # occluder sizes as a share of that square's side
    "max_size": 0.45,
}


@dataclass(frozen=True)
class SwapPair:
    """One swap to make and score: put ``source_identity`` (shown by ``source_images``) onto ``target``.

    ``source_images`` are the real photos whose mean identity embedding the swap is compared
    with: the source person's held-out photos for a per-pair model, the single source photo for a
    one-shot swap. Paths are relative to the data root.
    """

    id: str
    source_identity: str
    source_images: tuple[str, ...]
    target: str
    target_identity: str
    occluder_seed: int | None = None  # occluded-target protocols: the seed of the target's occluder


@dataclass(frozen=True)
class Clip:
    """A talking-head clip of the video protocol: its path (relative) and how many frames to use."""

    id: str
    path: str
    frames: int


@dataclass(frozen=True)
class Protocol:
    """A loaded protocol file; ``raw`` is the JSON as written (hashed into every result)."""

    name: str
    version: int
    kind: Literal["per_pair", "oneshot", "video"]
    seed: int
    pairs: tuple[SwapPair, ...] = ()
    gallery: dict[str, tuple[str, ...]] = field(default_factory=dict)  # identity -> photos
    reference: tuple[str, ...] = ()  # real faces of the source identities (FD / KID)
    heldout: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per-pair side -> photos
    identities: dict[str, str] = field(default_factory=dict)  # per-pair: side -> person
    clips: tuple[Clip, ...] = ()
    # One-shot: pairs of peopleDevTrain people whose swaps train the detectability classifier.
    detector_pairs: tuple[SwapPair, ...] = ()
    # Occluded-target protocols: how occluders are pasted onto the targets (region_share, kinds, sizes).
    occlusion: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(_canonical(self.raw).encode()).hexdigest()


# ------------------------------------------------------------------ loading


def protocol_path(name: str | Path) -> Path:
    """The file of a protocol given by name (``per_pair_v1``) or by path."""
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return path
    pinned = PROTOCOL_DIR / f"{name}.json"
    if not pinned.is_file():
        known = ", ".join(sorted(p.stem for p in PROTOCOL_DIR.glob("*.json")))
        raise KeyError(f"unknown protocol {str(name)!r}. Known: {known} (or pass a protocol .json file)")
    return pinned


def load_protocol(name: str | Path) -> Protocol:
    """Read a pinned protocol (``"per_pair_v1"``, ``"oneshot_v1"``, ``"video_v1"``) or a protocol file."""
    raw = json.loads(protocol_path(name).read_text(encoding="utf-8"))
    for key in ("protocol", "version", "seed", "kind"):
        if key not in raw:
            raise ValueError(f"{protocol_path(name)} is not a swaplab protocol file (no {key!r})")
    sources = raw.get("sources", {})

    def swap_pairs(entries: list[dict[str, Any]]) -> tuple[SwapPair, ...]:
        return tuple(
            SwapPair(
                p["id"],
                p["source_identity"],
                tuple(p["source_images"] if "source_images" in p else sources[p["source_identity"]]),
                p["target"],
                p["target_identity"],
                p.get("occluder_seed"),
            )
            for p in entries
        )

    pairs = swap_pairs(raw.get("pairs", []))
    clips = tuple(Clip(c["id"], c["path"], int(c["frames"])) for c in raw.get("clips", []))
    return Protocol(
        name=raw["protocol"],
        version=int(raw["version"]),
        kind=raw["kind"],
        seed=int(raw["seed"]),
        pairs=pairs,
        gallery={name: tuple(paths) for name, paths in raw.get("gallery", {}).get("identities", {}).items()},
        reference=tuple(raw.get("reference", {}).get("images", [])),
        heldout={side: tuple(entry["images"]) for side, entry in raw.get("heldout", {}).items()},
        identities={side: entry["identity"] for side, entry in raw.get("heldout", {}).items()},
        clips=clips,
        detector_pairs=swap_pairs(raw.get("detector_train", {}).get("pairs", [])),
        occlusion=dict(raw.get("occlusion", {})),
        raw=raw,
    )


# ------------------------------------------------------------------ building


def lfw_test_people(data_root: str | Path) -> list[str]:
    """The identities of LFW's ``peopleDevTest.txt`` (the evaluation split), in file order."""
    lines = (Path(data_root) / LFW_TEST_PEOPLE).read_text(encoding="utf-8").split("\n")
    # The first line is the count; every other non-empty line is "Name<TAB>number of images".
    return [line.split("\t")[0] for line in lines[1:] if line.strip()]


def _photos(data_root: Path, person: str) -> list[str]:
    """A person's LFW photos, sorted by file name, as paths relative to the data root."""
    folder = data_root / LFW_IMAGES / person
    names = sorted(p.name for p in folder.glob("*.jpg"))
    if not names:
        raise FileNotFoundError(f"no photos of {person} under {folder}")
    return [f"{LFW_IMAGES}/{person}/{name}" for name in names]


def _header(name: str, kind: str, description: str) -> dict[str, Any]:
    return {
        "protocol": name,
        "version": 1,
        "kind": kind,
        "seed": SEED,
        "created_with": CREATED_WITH,
        "paths": "relative to the data root (swaplab data path)",
        "description": description,
    }


def _per_pair(data_root: Path, people: Sequence[str]) -> dict[str, Any]:
    src, dst = PER_PAIR["src"], PER_PAIR["dst"]
    src_photos, dst_photos = _photos(data_root, src), _photos(data_root, dst)
    heldout = {"src": src_photos[-HELDOUT_PER_SIDE:], "dst": dst_photos[-HELDOUT_PER_SIDE:]}
    rng = np.random.default_rng(SEED)
    candidates = [p for p in people if p not in PER_PAIR.values()]
    candidates = [p for p in candidates if len(list((data_root / LFW_IMAGES / p).glob("*.jpg"))) >= DISTRACTOR_IMAGES]
    chosen = sorted(rng.choice(candidates, size=DISTRACTORS, replace=False).tolist())
    gallery = {src: heldout["src"], dst: dst_photos[:DST_GALLERY_IMAGES]}
    gallery.update({person: _photos(data_root, person)[:DISTRACTOR_IMAGES] for person in chosen})
    out = _header(
        "per_pair_v1",
        "per_pair",
        f"The reference pair {src} (src) -> {dst} (dst) from LFW deep-funneled. Held out: the last "
        f"{HELDOUT_PER_SIDE} photos of each person by sorted file name (train per-pair models without "
        f"them). Each held-out dst photo is swapped with the src identity; identity similarity is "
        f"measured against the mean embedding of the src held-out photos; retrieval searches a gallery "
        f"of {src} (its held-out photos), {dst} (its first {DST_GALLERY_IMAGES} photos) and "
        f"{DISTRACTORS} peopleDevTest identities (seeded choice among those with >= {DISTRACTOR_IMAGES} "
        f"photos, their first {DISTRACTOR_IMAGES} photos each); FD/KID compare the swaps with the last "
        f"{REFERENCE_FACES} photos of {src}; reconstruction uses the held-out photos of both sides.",
    )
    out["heldout"] = {
        "src": {"identity": src, "rule": f"last {HELDOUT_PER_SIDE} by sorted file name", "images": heldout["src"]},
        "dst": {"identity": dst, "rule": f"last {HELDOUT_PER_SIDE} by sorted file name", "images": heldout["dst"]},
    }
    out["pairs"] = [
        {"id": Path(target).stem, "source_identity": src, "target": target, "target_identity": dst}
        for target in heldout["dst"]
    ]
    # Pairs without their own "source_images" take their source identity's photos from here.
    out["sources"] = {src: heldout["src"]}
    out["reference"] = {
        "identity": src,
        "rule": f"last {REFERENCE_FACES} by sorted file name",
        "images": src_photos[-REFERENCE_FACES:],
    }
    out["gallery"] = {"rule": "mean embedding per identity", "identities": gallery}
    out["detector_train"] = _detector_train(data_root)
    return out


def _oneshot_pairs(
    photos: dict[str, list[str]], people: Sequence[str], rng: np.random.Generator, count: int
) -> tuple[list[dict[str, Any]], dict[str, list[str]], list[str]]:
    """``count`` (source photo, target photo) pairs of different people, the sources' gallery and the
    reference faces: distinct sources with >= 2 photos, each target a photo of another person."""
    with_two = [p for p in people if len(photos[p]) >= 2]
    sources = rng.choice(with_two, size=count, replace=False).tolist()
    pairs, gallery, reference = [], {}, []
    for index, source in enumerate(sources):
        source_image = photos[source][int(rng.integers(len(photos[source])))]
        others = [p for p in people if p != source]
        target_person = others[int(rng.integers(len(others)))]
        target = photos[target_person][int(rng.integers(len(photos[target_person])))]
        rest = [p for p in photos[source] if p != source_image][:ONESHOT_GALLERY_IMAGES]
        gallery[source] = rest
        reference.extend(rest)
        pairs.append(
            {
                "id": f"{index:04d}",
                "source_identity": source,
                "source_images": [source_image],
                "target": target,
                "target_identity": target_person,
            }
        )
    return pairs, gallery, reference


def _oneshot(data_root: Path, people: Sequence[str]) -> dict[str, Any]:
    photos = {person: _photos(data_root, person) for person in people}
    pairs, gallery, reference = _oneshot_pairs(photos, people, np.random.default_rng(SEED), ONESHOT_PAIRS)
    out = _header(
        "oneshot_v1",
        "oneshot",
        f"{ONESHOT_PAIRS} (source photo, target photo) pairs of different people, all from LFW's "
        f"peopleDevTest.txt (never train one-shot models or identity networks on them): {ONESHOT_PAIRS} "
        f"distinct source identities drawn (seeded) among test people with >= 2 photos, each with one "
        f"source photo; each target a photo of another test person. Retrieval searches the source "
        f"identities, each represented by up to {ONESHOT_GALLERY_IMAGES} of its other photos; FD/KID "
        f"compare the swaps with those gallery photos. Swap files of another tool: <pair id>.png.",
    )
    out["pairs"] = pairs
    out["reference"] = {"rule": "the gallery photos of the source identities", "images": reference}
    out["gallery"] = {"rule": "mean embedding per identity", "identities": gallery}
    out["detector_train"] = _detector_train(data_root)
    return out


def _oneshot_occluded(data_root: Path, people: Sequence[str]) -> dict[str, Any]:
    photos = {person: _photos(data_root, person) for person in people}
    rng = np.random.default_rng(SEED + 2)  # its own stream: not oneshot_v1's pairs
    pairs, gallery, reference = _oneshot_pairs(photos, people, rng, OCCLUDED_PAIRS)
    for pair, seed in zip(pairs, rng.integers(0, 2**31 - 1, size=len(pairs)).tolist(), strict=True):
        pair["occluder_seed"] = int(seed)
    out = _header(
        "oneshot_occluded_v1",
        "oneshot",
        f"{OCCLUDED_PAIRS} (source photo, target photo) pairs of different peopleDevTest.txt people, drawn "
        f"as oneshot_v1's are but from their own seeded stream, each target with a synthetic occluder "
        f"pasted before the swap: swaplab.train.occlusion.paste_occluders with the pair's occluder_seed "
        f"(probability 1, the kinds and sizes under 'occlusion') on the photo's central square of "
        f"{OCCLUSION['region_share']} of its shorter side, pasted back. The swap is of the occluded target; "
        f"besides every one-shot metric (against the occluded target), occluder_error is the mean absolute "
        f"difference of the swap from the occluded target inside the occluder's mask, over that of the "
        f"unoccluded photo (0: the occluder survives exactly; about 1: the face was painted over it). "
        f"Swap files of another tool: <pair id>.png of the occluded targets that "
        f"swaplab.evaluate.occluded.occlude_targets writes.",
    )
    out["occlusion"] = {**OCCLUSION, "probability": 1.0}
    out["pairs"] = pairs
    out["reference"] = {"rule": "the gallery photos of the source identities", "images": reference}
    out["gallery"] = {"rule": "mean embedding per identity", "identities": gallery}
    out["detector_train"] = _detector_train(data_root)
    return out


def _per_pair_occluded(data_root: Path, people: Sequence[str]) -> dict[str, Any]:
    out = _per_pair(data_root, people)
    rng = np.random.default_rng(SEED + 3)  # its own stream: the one-shot occluders do not move
    for pair, seed in zip(out["pairs"], rng.integers(0, 2**31 - 1, size=len(out["pairs"])).tolist(), strict=True):
        pair["occluder_seed"] = int(seed)
    out.update(
        _header(
            "per_pair_occluded_v1",
            "per_pair",
            f"per_pair_v1's {HELDOUT_PER_SIDE} swaps ({PER_PAIR['src']} onto the held-out photos of "
            f"{PER_PAIR['dst']}; the same held-out photos, gallery and reference faces) with each target "
            f"occluded before the swap as in oneshot_occluded_v1: paste_occluders with the pair's "
            f"occluder_seed on the photo's central square of {OCCLUSION['region_share']} of its shorter "
            f"side. It asks of a per-pair model's swap (its mask= and blend=) what oneshot_occluded_v1 asks "
            f"of a one-shot model: does the occluder survive? occluder_error as there. Swap files of "
            f"another tool: <pair id>.png of the occluded targets that "
            f"swaplab.evaluate.occluded.occlude_targets writes.",
        )
    )
    out["occlusion"] = {**OCCLUSION, "probability": 1.0}
    return out


def _detector_train(data_root: Path) -> dict[str, Any]:
    """Different-person pairs of training-split people for the detectability classifier."""
    from swaplab.data.lfw import read_people_list

    people = list(read_people_list(data_root / LFW_TRAIN_PEOPLE))
    rng = np.random.default_rng(SEED + 1)  # its own stream: the scored pairs do not move
    pairs = []
    for index in range(DETECTOR_PAIRS):
        source, target = rng.choice(len(people), size=2, replace=False).tolist()
        source_photos, target_photos = _photos(data_root, people[source]), _photos(data_root, people[target])
        pairs.append(
            {
                "id": f"dtrain-{index:04d}",
                "source_identity": people[source],
                "source_images": [source_photos[int(rng.integers(len(source_photos)))]],
                "target": target_photos[int(rng.integers(len(target_photos)))],
                "target_identity": people[target],
            }
        )
    rule = (
        f"{DETECTOR_PAIRS} (source photo, target photo) pairs of different peopleDevTrain.txt people "
        "(seeded): the model's swaps of these and their real targets train the detectability "
        "classifier, whose AUC is then measured on the swaps of the pairs above. Swap files of "
        "another tool: <id>.png."
    )
    return {"rule": rule, "pairs": pairs}


def _video(data_root: Path) -> dict[str, Any]:
    clips = sorted(data_root.glob(VIDEO_GLOB))
    if not clips:
        raise FileNotFoundError(f"no clips match {data_root / VIDEO_GLOB}")
    out = _header(
        "video_v1",
        "video",
        f"Temporal stability on talking-head clips ({VIDEO_GLOB}): the first {VIDEO_FRAMES} frames of "
        "each are swapped (largest face) and scored for landmark jitter and flicker relative to the "
        "original clip, and for identity drift. Swap files of another tool: <clip id>.mp4.",
    )
    out["clips"] = [
        {"id": clip.stem, "path": clip.relative_to(data_root).as_posix(), "frames": VIDEO_FRAMES} for clip in clips
    ]
    return out


def build_protocol(data_root: str | Path) -> dict[str, dict[str, Any]]:
    """Derive every protocol from the data under ``data_root``: ``{name: protocol JSON}``.

    Deterministic: sorted listings, ``numpy.random.default_rng(0)``, no timestamps, so the same
    data gives byte-identical files. One-shot pairs and per-pair distractors come from LFW's
    ``peopleDevTest.txt`` only.
    """
    root = Path(data_root)
    people = lfw_test_people(root)
    return {
        "per_pair_v1": _per_pair(root, people),
        "oneshot_v1": _oneshot(root, people),
        "video_v1": _video(root),
        "oneshot_occluded_v1": _oneshot_occluded(root, people),
        "per_pair_occluded_v1": _per_pair_occluded(root, people),
    }


def write_protocol_files(data_root: str | Path, folder: str | Path = PROTOCOL_DIR) -> list[Path]:
    """Build the protocols and write ``folder/<name>.json`` (what is committed under swaplab/protocol)."""
    from swaplab.io.atomic import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in build_protocol(data_root).items():
        path = folder / f"{name}.json"
        atomic_write_text(path, json.dumps(content, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def _canonical(raw: dict[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


if __name__ == "__main__":
    from swaplab.data.fetch import data_root as default_root

    for written in write_protocol_files(sys.argv[1] if len(sys.argv) > 1 else default_root()):
        print(written)
