"""What an evaluation scores: model, run and sweep folders, and the pairs (jobs) of a protocol or of
another tool's swaps, with their galleries and reference photos. Paths only: nothing is read or
swapped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swaplab.evaluate.protocol import Protocol, SwapPair
from swaplab.evaluate.results import EvalOptions
from swaplab.io.images import IMAGE_SUFFIXES, MediaError, is_image_path

__all__ = [
    "MIN_DETECTOR_PAIRS",
    "Job",
    "TargetKind",
    "custom_gallery",
    "custom_jobs",
    "detector_jobs",
    "expand_targets",
    "find_swap",
    "is_model",
    "is_run",
    "jobs_from_protocol",
    "protocol_gallery",
    "reference_photos",
    "source_files",
    "unique_names",
]

TargetKind = Literal["model", "run", "swaps"]


def is_model(path: Path) -> bool:
    return (path / "model.json").is_file() if path.is_dir() else path.name == "model.json"


def is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


def expand_targets(paths: Sequence[str | Path]) -> list[Path]:
    """Model folders and run folders as given; a folder of such folders (a sweep) becomes its members."""
    out: list[Path] = []
    for given in map(Path, paths):
        if is_model(given) or is_run(given):
            out.append(given.parent if given.name == "model.json" else given)
            continue
        if not given.is_dir():
            raise FileNotFoundError(f"{given}: not a model folder (model.json), a run folder or a sweep folder")
        members = sorted(p for p in given.iterdir() if is_model(p) or is_run(p))
        if not members:
            raise FileNotFoundError(f"{given} holds no model folders (model.json) or run folders (config.yaml)")
        out.extend(members)
    return out


def unique_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}-{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


@dataclass
class Job:
    """One pair to score, with absolute paths."""

    pair: SwapPair
    sources: list[Path]
    target: Path
    swap: Path | None = None
    # Occluded-target protocols: the photo before its occluder was pasted (``target`` is the occluded
    # copy the model swaps) and the occluder's mask (white where it covers the photo).
    original: Path | None = None
    occluder_mask: Path | None = None


def jobs_from_protocol(protocol: Protocol, root: Path, limit: int) -> list[Job]:
    pairs = protocol.pairs[:limit] if limit else protocol.pairs
    return [Job(p, [root / s for s in p.source_images], root / p.target) for p in pairs]


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))


def per_pair_source_photos(protocol: Protocol, root: Path, count: int = 24) -> list[Path]:
    """The photos a model that takes a source photo gets on a per-pair protocol: the source person's
    first ``count`` photos by file name that the protocol holds nowhere (held out, gallery, FD
    reference), so that no photo it is scored against is also its input."""
    person = protocol.identities["src"]
    used = {*protocol.heldout.get("src", ()), *protocol.reference, *protocol.gallery.get(person, ())}
    folder = root / Path(protocol.heldout["src"][0]).parent
    free = [
        path
        for path in sorted(folder.iterdir())
        if is_image_path(path) and path.relative_to(root).as_posix() not in used
    ]
    if not free:
        raise MediaError(folder, f"no photo of {person} outside {protocol.name}'s held-out, gallery and reference sets")
    return free[:count]


def custom_jobs(sources: Sequence[Path], targets: Path, limit: int) -> list[Job]:
    files = image_files(targets) if targets.is_dir() else [targets]
    if not files:
        raise MediaError(targets, "no target images here")
    files = files[:limit] if limit else files
    base = targets if targets.is_dir() else targets.parent
    jobs = []
    for target in files:
        pair_id = target.relative_to(base).with_suffix("").as_posix()
        pair = SwapPair(pair_id, "source", tuple(map(str, sources)), str(target), "target")
        jobs.append(Job(pair, list(sources), target))
    return jobs


def source_files(sources: str | Path | Sequence[str | Path]) -> list[Path]:
    given = [sources] if isinstance(sources, (str, Path)) else list(sources)
    files: list[Path] = []
    for item in map(Path, given):
        files.extend(image_files(item) if item.is_dir() else [item])
    if not files:
        raise MediaError(Path(str(given[0]) if given else "."), "no source images")
    return files


def find_swap(swaps: Path, pair_id: str) -> Path | None:
    """The swap file of a pair: ``<swaps>/<pair id>.<any image suffix>`` (first by suffix order), or None."""
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (swaps / f"{pair_id}{suffix}", swaps / f"{pair_id}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def protocol_gallery(spec: Protocol, root: Path, sources: Sequence[str], opts: EvalOptions) -> dict[str, list[Path]]:
    """The protocol's gallery: every source identity scored, plus up to ``gallery_limit`` others."""
    needed = set(sources)
    others = [name for name in spec.gallery if name not in needed]
    others = others[: opts.gallery_limit] if opts.gallery_limit else others
    keep = [name for name in spec.gallery if name in needed] + others
    cap = opts.gallery_images or None
    return {name: [root / p for p in spec.gallery[name][:cap]] for name in keep}


def custom_gallery(
    sources: Sequence[Path], jobs: Sequence[Job], spec: Protocol, root: Path, opts: EvalOptions
) -> tuple[dict[str, list[Path]], list[Path]]:
    """Custom pairs: the sources ("source"), the targets ("target") and the protocol's other identities."""
    cap = opts.gallery_images or None
    gallery = {"source": list(sources)[:cap], "target": [job.target for job in jobs][:cap]}
    pinned = [name for name in spec.gallery if name not in spec.identities.values()]
    pinned = pinned[: opts.gallery_limit] if opts.gallery_limit else pinned
    for name in pinned:
        files = [root / p for p in spec.gallery[name][:cap]]
        if all(f.is_file() for f in files):
            gallery[name] = files
    return gallery, list(sources)[: opts.reference_limit or None]


def reference_photos(spec: Protocol, root: Path, opts: EvalOptions) -> list[Path]:
    return [root / p for p in spec.reference[: opts.reference_limit or None]]


MIN_DETECTOR_PAIRS = 20


def detector_jobs(spec: Protocol, root: Path, opts: EvalOptions) -> list[Job]:
    """The detector-training pairs to swap: ``detector_pairs`` of them; by default all, or, when
    ``limit`` shortens a run, as many as it scores (at least ``MIN_DETECTOR_PAIRS``)."""
    if opts.detector_pairs < 0 or not spec.detector_pairs:
        return []
    count = opts.detector_pairs or (max(opts.limit, MIN_DETECTOR_PAIRS) if opts.limit else 0)
    pairs = spec.detector_pairs[: count or None]
    return [Job(p, [root / s for s in p.source_images], root / p.target) for p in pairs]
