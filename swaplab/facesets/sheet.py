"""Contact sheets: one image showing a faceset's aligned crops, for a person to look at.

Each thumbnail carries its face id's tail and sharpness so that odd faces can be found on disk.
Crops of real people are not synthetic, so sheets are not watermarked.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from swaplab.facesets.format import Faceset
from swaplab.io.images import write_image


def contact_sheet(
    faceset: str | Path | Faceset,
    output: str | Path,
    max_faces: int = 64,
    thumb: int = 96,
    columns: int | None = None,
    landmarks: bool = True,
) -> Path:
    """Write a grid of up to ``max_faces`` crops (evenly sampled) with landmarks drawn."""
    fs = faceset if isinstance(faceset, Faceset) else Faceset(faceset)
    if len(fs) == 0:
        raise ValueError(f"{fs.root} has no faces to show")
    picks = np.unique(np.linspace(0, len(fs) - 1, min(max_faces, len(fs))).round().astype(int))
    columns = columns or max(1, math.ceil(math.sqrt(len(picks) * 1.6)))
    rows = math.ceil(len(picks) / columns)
    label_h = 14
    sheet = np.full((rows * (thumb + label_h), columns * thumb, 3), 24, np.uint8)
    scale = thumb / fs.size
    for slot, index in enumerate(picks):
        crop = cv2.resize(fs.image(int(index)), (thumb, thumb), interpolation=cv2.INTER_AREA)
        record = fs.records[int(index)]
        if landmarks and record.landmarks:
            for x, y in record.landmarks_array * scale:
                cv2.circle(crop, (int(round(x)), int(round(y))), 1, (0, 255, 0), -1, cv2.LINE_AA)
        r, c = divmod(slot, columns)
        y0, x0 = r * (thumb + label_h), c * thumb
        sheet[y0 : y0 + thumb, x0 : x0 + thumb] = crop
        label = f"f{record.frame} s{record.blur:.0f}" if record.frame else f"{Path(record.source).stem[-8:]}"
        cv2.putText(
            sheet,
            label,
            (x0 + 2, y0 + thumb + 11),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.33,
            (220, 220, 220),
            1,
            cv2.LINE_AA,
        )
    return write_image(output, sheet, quality=90)
