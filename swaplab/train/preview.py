"""Preview grids in the spirit of DeepFaceLab's training window.

One row per fixed face pair (held-out faces, the same for the whole run); columns: src, its
reconstruction, dst, its reconstruction, the swap (dst rendered with the src identity), then the
predicted masks of the three. A header row names the columns and the step. Returns and writes
RGB uint8 arrays; it runs the model in eval mode under no_grad and never trains.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

COLUMNS = ("src", "src recon", "dst", "dst recon", "swap", "src mask", "dst mask", "swap mask")
HEADER_HEIGHT = 28


def to_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float [0, 1] -> (N, H, W, 3) uint8 (one channel is repeated)."""
    images = images.detach().float().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images.permute(0, 2, 3, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def render_columns(model: torch.nn.Module, src: torch.Tensor, dst: torch.Tensor) -> list[np.ndarray]:
    """The eight columns for faces ``src``, ``dst`` (N, 3, R, R) float [0, 1]: each (N, R, R, 3) uint8."""
    was_training = model.training
    model.eval()
    try:
        src_rgb, src_mask = model.reconstruct_src(src)
        dst_rgb, dst_mask = model.reconstruct_dst(dst)
        swap_rgb, swap_mask = model.swap(dst)
    finally:
        model.train(was_training)
    return [to_hwc(t) for t in (src, src_rgb, dst, dst_rgb, swap_rgb, src_mask, dst_mask, swap_mask)]


def compose_grid(columns: list[np.ndarray], names: tuple[str, ...] = COLUMNS, title: str = "") -> np.ndarray:
    """Tile columns of equal-sized faces under a header row naming them (and ``title`` at the left).

    Result: (HEADER_HEIGHT + N*R, len(columns)*R, 3) uint8.
    """
    if len(columns) != len(names):
        raise ValueError(f"{len(columns)} columns but {len(names)} names")
    rows, size = columns[0].shape[0], columns[0].shape[1]
    body = np.concatenate([np.concatenate(list(col), axis=0) for col in columns], axis=1) if rows else None
    width = size * len(columns)
    header = np.full((HEADER_HEIGHT, width, 3), 32, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    # One font scale for all names, shrunk until the longest fits its column (64 px: about 8 characters).
    widest = max(cv2.getTextSize(name, font, 0.5, 1)[0][0] for name in names)
    scale = max(0.25, min(0.5, 0.5 * (size - 6) / max(widest, 1)))
    for i, name in enumerate(names):
        cv2.putText(header, name, (i * size + 3, HEADER_HEIGHT - 6), font, scale, (235, 235, 235), 1, cv2.LINE_AA)
    if title:
        cv2.putText(header, title, (3, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 210, 90), 1, cv2.LINE_AA)
    return header if body is None else np.concatenate([header, body], axis=0)


def preview_grid(model: torch.nn.Module, src: torch.Tensor, dst: torch.Tensor, step: int) -> np.ndarray:
    """The full preview of ``model`` on fixed faces at ``step`` as an RGB uint8 image."""
    return compose_grid(render_columns(model, src, dst), title=f"step {step}")


def save_preview(grid: np.ndarray, folder: str | Path, step: int, model_id: str = "swaplab-training") -> Path:
    """Write ``folder/step-NNNNNNN.png`` and ``folder/latest.png`` (atomically), marked as synthetic.

    Previews show generated faces, so they carry the watermark and metadata like every output.
    """
    from swaplab.provenance import Provenance, write_marked_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.png"
    provenance = Provenance.create(model_id, content=f"preview step {step}")
    for target in (path, folder / "latest.png"):
        write_marked_image(target, grid, provenance)
    return path
