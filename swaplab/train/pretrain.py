"""Pretraining faces for per-pair models: many identities in one faceset, from LFW's training split.

DeepFaceLab's pretrain mode trains a preset's encoder, inter blocks and both decoders on faces
of many people, so that a new pair starts from a network that already draws faces. In swaplab
that is an ordinary per-pair run whose ``data.src`` and ``data.dst`` are both a many-identity
faceset (each side then sees random identities), and ``init=RUN`` starts a pair from it; this
module only builds that faceset. Only ``peopleDevTrain.txt`` people are used (LFW's split), and
the people of a pair to be scored are left out (``exclude``), so pretraining never sees them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from swaplab.data.lfw import LFW_TRAIN_PEOPLE, check_split, default_lists_dir, read_people_list


def lfw_pretraining_photos(
    images: str | Path,
    *,
    per_person: int = 2,
    max_people: int = 0,
    exclude: Iterable[str] = (),
    lists_dir: str | Path | None = None,
) -> list[Path]:
    """Up to ``per_person`` photos (the first by file name) of each ``peopleDevTrain`` person,
    the people in list order, at most ``max_people`` of them (0 = all), without ``exclude``."""
    if per_person < 1:
        raise ValueError(f"per_person must be >= 1, got {per_person}")
    lists = Path(lists_dir) if lists_dir is not None else default_lists_dir()
    skipped = set(exclude)
    people = [name for name in read_people_list(lists / LFW_TRAIN_PEOPLE) if name not in skipped]
    if max_people:
        people = people[:max_people]
    check_split(people, "train", lists, what="the pretraining faces")
    photos: list[Path] = []
    for person in people:
        photos += sorted((Path(images) / person).glob("*.jpg"))[:per_person]
    if not photos:
        raise FileNotFoundError(f"no LFW photos of peopleDevTrain people under {images}")
    return photos


def build_pretraining_faceset(
    output: str | Path,
    lfw_images: str | Path,
    *,
    per_person: int = 2,
    max_people: int = 0,
    exclude: Sequence[str] = (),
    videos: Sequence[str | Path] = (),
    video_every: int = 10,
    size: int = 128,
    progress: bool = True,
):
    """Extract the pretraining faces (LFW training people, plus every ``video_every``-th frame of
    ``videos``) into the faceset ``output``; resumable like every extraction. Returns its summary."""
    from swaplab.facesets.extract import ExtractConfig, extract

    photos = lfw_pretraining_photos(lfw_images, per_person=per_person, max_people=max_people, exclude=exclude)
    cfg = ExtractConfig(size=size, every=video_every)
    cfg.faces.max_faces = 1  # LFW photos sometimes show a second person at the edge
    return extract([*photos, *map(Path, videos)], output, cfg, progress=progress)
