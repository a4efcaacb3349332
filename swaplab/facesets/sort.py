"""Sorting and filtering facesets: by identity distance, sharpness or head pose.

The result is a new faceset (crops copied: a hard link would let an edit of one change both)
whose single shard lists the faces in the chosen order; the input is never modified, and an
existing output is replaced only when asked.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from swaplab.facesets.format import Faceset, FacesetWriter

SortKey = Literal["identity", "blur", "yaw", "pitch", "source"]


def sort_faceset(
    source: str | Path,
    output: str | Path,
    by: SortKey = "identity",
    reference: list[str | Path] | None = None,
    keep: int | None = None,
    max_distance: float | None = None,
    min_blur: float | None = None,
    max_yaw: float | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a sorted, filtered copy of ``source`` to ``output``.

    ``identity`` sorts by distance to ``reference`` photos (or, without them, to the faceset's
    own median identity: the majority person first, strangers last); ``blur`` sharpest first;
    ``yaw``/``pitch`` most frontal first. An existing ``output`` is refused unless ``overwrite``
    (which replaces it whole: two facesets are never merged).
    """
    fs = Faceset(source)
    output = Path(output)
    if output.resolve() == fs.root.resolve():
        raise ValueError("output must differ from the input faceset")
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{output} exists and is not empty; pass --overwrite to replace it")
        if not (output / "faceset.json").is_file():
            raise FileExistsError(f"{output} is not a faceset: refusing to replace it; choose another output")
        shutil.rmtree(output)
    distances = identity_distances(fs, reference)
    keys = {
        "identity": distances,
        "blur": np.array([-r.blur for r in fs]),
        "yaw": np.array([abs(r.pose[0]) if r.pose else 0.0 for r in fs]),
        "pitch": np.array([abs(r.pose[1]) if r.pose else 0.0 for r in fs]),
        "source": np.arange(len(fs), dtype=np.float64),
    }
    order = np.argsort(keys[by], kind="stable")
    kept = []
    for i in order:
        rec = fs.records[int(i)]
        if max_distance is not None and not distances[i] <= max_distance:
            continue
        if min_blur is not None and rec.blur < min_blur:
            continue
        if max_yaw is not None and rec.pose and abs(rec.pose[0]) > max_yaw:
            continue
        kept.append(rec)
    if keep is not None:
        kept = kept[:keep]
    writer = FacesetWriter(output, replace(fs.header))
    for rec in kept:
        (output / rec.file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fs.root / rec.file, output / rec.file)
    writer.write_shard("sorted", kept, {"sorted_by": by, "from": str(fs.root)})
    return {"total": len(fs), "kept": len(kept)}


def identity_distances(fs: Faceset, reference: list[str | Path] | None = None) -> np.ndarray:
    """Euclidean distance of each face's descriptor to the reference (inf when it has none)."""
    ids = fs.identities()
    if reference:
        from swaplab.faces.analyze import FaceAnalyzer
        from swaplab.io.images import read_image

        analyzer = FaceAnalyzer()
        refs = []
        for path in reference:
            faces = analyzer.analyze(read_image(path)[0])
            if not faces:
                raise ValueError(f"{path}: no face found in the reference photo")
            refs.append(max(faces, key=lambda f: f.box.area).identity)
        anchors = np.stack(refs)
    else:
        anchors = np.nanmedian(ids, axis=0, keepdims=True)
    dist = np.linalg.norm(ids[:, None, :] - anchors[None], axis=2).min(axis=1)
    return np.where(np.isnan(dist), np.inf, dist)
