"""``swaplab sample``: pictures from a generative model (an exported model folder or a run folder).

Kinds: ``samples`` (new images from fixed noise), ``classes`` (conditional models: a row per class
or identity), ``reconstructions`` and ``interpolations`` (models with a code: of held-out images of
a run, or of images in a folder given with ``images=``). What a model can do is read from its card,
never guessed. The picture is written atomically and marked as synthetic like every output.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from swaplab.io.images import is_image_path, read_image

__all__ = ["SAMPLE_KINDS", "sample"]

Kind = Literal["samples", "classes", "reconstructions", "interpolations"]
SAMPLE_KINDS: dict[str, str] = {
    "samples": "sample",
    "classes": "conditional",
    "reconstructions": "reconstruct",
    "interpolations": "interpolate",
}


def sample(
    target: str | Path,
    output: str | Path,
    *,
    kind: Kind = "samples",
    n: int = 64,
    seed: int = 0,
    images: str | Path | None = None,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a grid of ``kind`` pictures made by the model at ``target`` to ``output`` (PNG)."""
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"write the grid as .png, not {output.name}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(SAMPLE_KINDS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="swaplab-sample-") as scratch:
        model, card, run_cfg = _load(target, Path(scratch))
    capabilities = (card.get("generative") or {}).get("capabilities")
    if capabilities is None:
        raise ValueError(f"{target} is a {card.get('arch')} model, not a generative one: it makes no samples")
    if SAMPLE_KINDS[kind] not in capabilities:
        raise ValueError(f"{target} cannot make {kind}: it can {', '.join(capabilities) or 'nothing of that kind'}")
    model.configure(**(options or {}))
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        if kind == "samples":
            tiles = model.sample(n, generator)
            columns = math.ceil(math.sqrt(n))
        elif kind == "classes":
            per_class = max(1, n // max(1, model.num_classes))
            labels = torch.arange(model.num_classes).repeat_interleave(per_class)
            tiles, columns = model.sample(len(labels), generator, labels), per_class
        else:
            originals = _inputs(
                images, run_cfg, model.image_shape, n if kind == "reconstructions" else 2 * max(1, n // 8)
            )
            if kind == "reconstructions":
                tiles = torch.stack([originals, model.reconstruct(originals)], 1).flatten(0, 1)
                columns = 2 * min(8, len(originals))
            else:
                rows = [model.interpolate(originals[i], originals[i + 1], 8) for i in range(0, len(originals) - 1, 2)]
                tiles, columns = torch.cat(rows), 8
    grid = _mosaic(tiles.float().clamp(0, 1), columns)
    from swaplab.provenance import Provenance, write_marked_image

    weights = (card.get("weights") or {}).get("sha256", "")
    provenance = Provenance.create(f"{card.get('arch')}-{weights[:12]}", content=f"{kind} seed {seed}")
    return write_marked_image(output, grid, provenance)


def _load(target: Path, scratch: Path) -> tuple[Any, dict[str, Any], Any]:
    """(model in eval mode, its card, the run config when ``target`` is a run folder)."""
    from swaplab.models.card import load_model, read_card

    run_cfg = None
    if target.is_dir() and (target / "config.yaml").is_file() and not (target / "model.json").is_file():
        from swaplab.train.export import export_model
        from swaplab.train.run import read_run_config

        _, run_cfg = read_run_config(target)
        export_model(target, scratch / "model")
        target = scratch / "model"
    card, _ = read_card(target)
    return load_model(target), card, run_cfg


def _inputs(images: str | Path | None, run_cfg: Any, shape: tuple[int, int, int], count: int) -> torch.Tensor:
    """Images to reconstruct or interpolate: a folder's (resized to the model), else a run's held-out ones."""
    channels, size, _ = shape
    if images is not None:
        import cv2

        files = sorted(p for p in Path(images).rglob("*") if p.is_file() and is_image_path(p))[:count]
        if not files:
            raise ValueError(f"{images}: no images to {'reconstruct'}")
        loaded = []
        for path in files:
            image = cv2.resize(read_image(path)[0], (size, size), interpolation=cv2.INTER_AREA)
            if channels == 1:
                image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
            loaded.append(image)
        return torch.from_numpy(np.stack(loaded)).permute(0, 3, 1, 2).float().div(255.0)
    if run_cfg is None or not hasattr(run_cfg, "data"):
        raise ValueError("reconstructions and interpolations need images: give images=FOLDER, or a run folder")
    from swaplab.train.image_data import ImageData

    return ImageData.for_run(run_cfg).heldout(count)[0]


def _mosaic(tiles: torch.Tensor, columns: int) -> np.ndarray:
    """(N, C, R, R) -> one RGB uint8 image of ``columns`` tiles per row, each at least 64 px."""
    import cv2

    from swaplab.train.preview import to_hwc

    images = to_hwc(tiles)
    size = max(64, images.shape[1])
    if images.shape[1] != size:
        images = np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_NEAREST) for i in images])
    rows = math.ceil(len(images) / columns)
    canvas = np.zeros((rows * size, columns * size, 3), np.uint8)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        canvas[r * size : (r + 1) * size, c * size : (c + 1) * size] = image
    return canvas
