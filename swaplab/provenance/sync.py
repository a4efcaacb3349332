"""A geometric synchronisation template beside the payload watermark: survives crops, mirrors, rotations.

The payload watermark (``watermark.py``) reads its bits from a fixed grid over the whole image, so
a shift of half a percent of the image side (a crop), a mirror or a rotation of half a degree moves
every coefficient off its lattice (measured: 24-36 % raw bit errors after a 0.5 % shift). This
template is a second, payload-free mark that such edits only move, never erase, and that tells
how they moved it:

* **What is added.** ``PEAKS`` faint sinusoids in luma (amplitude ``AMPLITUDE`` grey levels each),
  at key-derived frequencies of 26-38 cycles per *shorter* image side and angles spread over the
  half-plane: points in the Fourier magnitude, far from the payload's band (8-16 cycles per side).
* **Why it survives.** A Fourier magnitude does not change when the image is shifted (a crop is a
  shift plus a smaller frame); frequencies are counted per shorter side, so resizing does not move
  them; a crop of 10 % scales them by 0.9 at most; a rotation rotates them and a mirror reflects
  them. The reader looks at the central square of the luma (normalised to 256 px on the shorter
  side), takes its windowed FFT, whitens it per radius, and searches ``SCALES`` x ``ANGLES`` x
  {plain, mirrored} (338 candidates) for the transform under which the peaks stand highest.
* **Deciding.** The score is the mean whitened height of the peaks (z-units) under the best
  transform; ``SCORE_MIN`` is set far above what unmarked real photos and frames score under
  the same search (see benchmarks/bench_watermark.py, which measures both).

The template carries no payload: it says "a swaplab mark was here" and, through the transform
it finds, lets ``read_payload`` (used by ``provenance.verify``) undo a mirror or a rotation and
read the payload again; for a crop it gives the size kept, and a search over the crop's place in
the original frame rebuilds the payload's grid (``_read_cropped``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from swaplab.provenance.watermark import CANONICAL, WatermarkReading, canonical_soft_bits, decide, extract

PEAKS = 8
AMPLITUDE = 1.0  # grey levels per sinusoid: MSE 4 on its own, PSNR about 42 dB
WINDOW = 512  # the reader's square (pixels of the shorter side after normalisation)
SCALES = np.round(np.arange(0.88, 1.0001, 0.01), 4)  # kept share of the shorter side: crops up to 12 %
ANGLES = np.round(np.arange(-3.0, 3.0001, 0.5), 4)  # degrees
SCORE_MIN = 2.0
NEIGHBOURHOOD = 15  # bins, for the local background of a peak
RADII = (60.0, 90.0)  # cycles per shorter side
_KEY = 0x5A4C_5359


@dataclass(frozen=True)
class TemplateReading:
    """What ``detect`` found: the score, whether it clears ``SCORE_MIN``, and the transform that fits best."""

    present: bool
    score: float
    scale: float  # shorter side kept, as a share of the marked image's
    angle: float  # degrees, counter-clockwise as cv2.getRotationMatrix2D counts
    mirrored: bool


@functools.cache
def _frequencies() -> tuple[np.ndarray, np.ndarray]:
    """(PEAKS, 2) frequencies (u, v) in cycles per shorter side, and their phases."""
    rng = np.random.default_rng(_KEY)
    angles = (np.arange(PEAKS) + rng.uniform(0.2, 0.8, PEAKS)) * (np.pi / PEAKS)
    radii = rng.uniform(RADII[0], RADII[1], PEAKS)
    phases = rng.uniform(0.0, 2 * np.pi, PEAKS)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1), phases


@functools.lru_cache(maxsize=4)
def _pattern(height: int, width: int) -> np.ndarray:
    """The template for one image size (rounded, int16, three equal channels), cached: video frames
    share a size, so marking a frame costs one saturating add."""
    side = min(height, width)
    freqs, phases = _frequencies()
    y = (np.arange(height, dtype=np.float64) / side)[:, None]
    x = (np.arange(width, dtype=np.float64) / side)[None, :]
    pattern = np.zeros((height, width), np.float64)
    for (u, v), phase in zip(freqs, phases, strict=True):
        # cos(a + b) = cos a cos b - sin a sin b: two outer products instead of a 2-D cos per pixel.
        ax, by = 2 * np.pi * u * x, 2 * np.pi * v * y + phase
        pattern += np.cos(by) * np.cos(ax) - np.sin(by) * np.sin(ax)
    plane = np.rint(AMPLITUDE * pattern).astype(np.int16)
    return cv2.merge([plane, plane, plane])


def add_template(image: np.ndarray) -> np.ndarray:
    """``image`` (RGB uint8) with the template added to R, G and B alike (so to luma only)."""
    height, width = image.shape[:2]
    return cv2.add(image, _pattern(height, width), dtype=cv2.CV_8U)


def _whitened_spectrum(image: np.ndarray) -> np.ndarray:
    """The central square's log-magnitude spectrum, each radius to zero mean and unit spread (fftshifted)."""
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    height, width = luma.shape
    factor = WINDOW / min(height, width)
    size = (max(WINDOW, round(width * factor)), max(WINDOW, round(height * factor)))
    luma = cv2.resize(luma, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    top, left = (luma.shape[0] - WINDOW) // 2, (luma.shape[1] - WINDOW) // 2
    square = luma[top : top + WINDOW, left : left + WINDOW]
    hann = np.hanning(WINDOW).astype(np.float32)
    square = (square - square.mean()) * hann[:, None] * hann[None, :]
    spectrum = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(square)))).astype(np.float32)
    # Whitened against its neighbourhood: natural spectra vary by direction (edges, axes) as much as
    # by radius, and a peak only has to stand above the bins around it.
    mean = cv2.blur(spectrum, (NEIGHBOURHOOD, NEIGHBOURHOOD))
    spread = np.sqrt(np.maximum(cv2.blur(spectrum**2, (NEIGHBOURHOOD, NEIGHBOURHOOD)) - mean**2, 1e-6))
    return (spectrum - mean) / spread


def _candidates() -> tuple[np.ndarray, np.ndarray]:
    """Predicted peak positions for every (scale, angle, mirror): (C, PEAKS, 2), and the (C, 3) parameters."""
    freqs, _ = _frequencies()
    positions, params = [], []
    for mirrored in (False, True):
        base = freqs * np.array([-1.0, 1.0]) if mirrored else freqs
        for angle in ANGLES:
            # Image rows grow downwards, so a counter-clockwise turn on screen is clockwise in (u, v).
            theta = np.deg2rad(-angle)
            rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
            turned = base @ rotation.T
            for scale in SCALES:
                positions.append(turned * scale)
                params.append((scale, angle, float(mirrored)))
    return np.asarray(positions), np.asarray(params)


_CANDIDATES = functools.cache(_candidates)


def detect(image: np.ndarray) -> TemplateReading:
    """Search the template in ``image`` (RGB uint8, any size >= 64 px a side)."""
    if min(image.shape[:2]) < 64:
        return TemplateReading(False, 0.0, 1.0, 0.0, False)
    z = _whitened_spectrum(image)
    positions, params = _CANDIDATES()
    centre = WINDOW // 2
    # Each peak's height: the best of the 3 x 3 bins around its predicted place (the search steps
    # leave up to half a bin between a candidate and the truth).
    best = np.full(positions.shape[:2], -np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cols = np.clip(np.rint(positions[..., 0]).astype(np.intp) + centre + dx, 0, WINDOW - 1)
            rows = np.clip(np.rint(positions[..., 1]).astype(np.intp) + centre + dy, 0, WINDOW - 1)
            best = np.maximum(best, z[rows, cols])
    scores = best.mean(axis=1)
    # The 3 x 3 tolerance makes neighbouring candidates tie; among near-ties take the smallest edit.
    near = np.flatnonzero(scores >= scores.max() - 0.02 * abs(scores.max()))
    index = int(min(near, key=lambda i: (abs(params[i, 1]), -params[i, 0], params[i, 2])))
    scale, angle, mirrored = params[index]
    score = float(scores[index])
    return TemplateReading(score >= SCORE_MIN, score, float(scale), float(angle), bool(mirrored))


def undo(image: np.ndarray, reading: TemplateReading, angle: float | None = None) -> np.ndarray:
    """``image`` with the mirror and the rotation the template found undone (``angle`` overrides it)."""
    out = image[:, ::-1] if reading.mirrored else image
    turn = reading.angle if angle is None else angle
    if turn:
        height, width = out.shape[:2]
        # A mirror reverses the turn's sense: undo the mirror first, then turn back the other way.
        sense = -1.0 if reading.mirrored else 1.0
        matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), -sense * turn, 1.0)
        out = cv2.warpAffine(np.ascontiguousarray(out), matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(out)


#: Turns tried around the template's estimate when re-reading the payload (its search steps are
#: 0.5 degree, and the payload needs about a quarter of a degree).
REFINE = np.round(np.arange(-1.5, 1.5001, 0.25), 4)


def read_payload(image: np.ndarray) -> tuple[WatermarkReading, TemplateReading | None, str, np.ndarray]:
    """The payload watermark of ``image``, undoing a mirror or a rotation the template reveals.

    Returns (payload reading, template reading or None when the payload read directly, how, the image
    the reading came from): ``how`` is "" for a direct read, else what was undone or where the crop
    was placed.
    """
    direct = extract(image)
    if direct.present:
        return direct, None, "", image
    template = detect(image)
    best, how, source = direct, "", image
    if not template.present:
        return best, template, how, source
    for offset in REFINE:
        angle = float(template.angle + offset)
        undone = undo(image, template, angle=angle)
        reading = extract(undone)
        if reading.present and reading.confidence > best.confidence:
            best, source = reading, undone
            parts = (["a mirror"] if template.mirrored else []) + ([f"a turn of {angle:+.2f} degrees"] if angle else [])
            how = "after undoing " + " and ".join(parts) if parts else "re-read"
    if not best.present:
        reading, where = _read_cropped(undo(image, template), template.scale)
        if reading.present:
            best, how = reading, f"after placing the crop ({where})"
    return best, template, how, source


def crop_hypotheses(scale: float) -> list[tuple[float, float]]:
    """(kept width, kept height) shares to try for a crop whose template gave ``scale``.

    The template measures the kept share of the marked image's *shorter* side. A crop that kept the
    aspect ratio cut that share from both sides; a crop of one side only (a caption or a border cut
    away) cut it from one side and left the other whole. When the shorter side was not cut at all
    (``scale`` about 1), a cut of the longer side is invisible to the template, so its share is
    searched over the template's range.
    """
    if scale < 0.995:
        near = np.arange(scale - 0.015, min(scale + 0.015, 1.0) + 1e-9, 0.005)
        return [(k, k) for k in near] + [(k, 1.0) for k in near] + [(1.0, k) for k in near]
    free = np.arange(SCALES.min(), 0.99 + 1e-9, 0.005)
    return [(k, 1.0) for k in free] + [(1.0, k) for k in free]


def _read_cropped(image: np.ndarray, scale: float) -> tuple[WatermarkReading, str]:
    """Read the payload of a crop whose template gave ``scale``: rebuild the marked image's canonical
    grid with the crop at each trial size (``crop_hypotheses``) and place, coarse (0.5 % steps, by
    vote margin) then fine (0.1 % steps, through the CRC and the margin).

    About 3,000-5,000 cheap grid rebuilds (1-2 s); this runs only where the template was already
    found and the payload did not read directly.
    """
    grid = 2 * CANONICAL  # the crop is area-averaged once to twice the grid, then placed by warps
    luma = cv2.resize(
        cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA
    )

    def canonical(kept_x: float, kept_y: float, left: float, top: float) -> np.ndarray:
        # Canonical pixel u's centre, (u + 0.5) / CANONICAL of the marked image's width, lies at
        # ((u + 0.5) * 2 - grid * left) / kept_x - 0.5 in the crop's grid (pixel centres at integers).
        matrix = np.float32(
            [
                [2 / kept_x, 0, (1 - grid * left) / kept_x - 0.5],
                [0, 2 / kept_y, (1 - grid * top) / kept_y - 0.5],
            ]
        )
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        return cv2.warpAffine(luma, matrix, (CANONICAL, CANONICAL), flags=flags, borderMode=cv2.BORDER_REPLICATE)

    def offsets(kept: float) -> np.ndarray:
        return np.arange(0.0, max(1.0 - kept, 0.0) + 1e-9, 0.005)

    best_margin, best_place = -1.0, (1.0, 1.0, 0.0, 0.0)
    for kept_x, kept_y in crop_hypotheses(scale):
        for left in offsets(kept_x):
            for top in offsets(kept_y):
                margin = float(np.mean(np.abs(canonical_soft_bits(canonical(kept_x, kept_y, left, top)))))
                if margin > best_margin:
                    best_margin, best_place = margin, (kept_x, kept_y, left, top)
    kept_x, kept_y, left, top = best_place
    # Refine only what was cut: a side kept whole stays whole, at offset 0.
    fine = np.arange(-0.004, 0.0041, 0.002)
    fine_offset = np.arange(-0.004, 0.0041, 0.001)
    symmetric = kept_x == kept_y
    fallback = WatermarkReading(False, None, 0.0)
    for d_x in fine if kept_x < 1.0 else (0.0,):
        for d_y in ((d_x,) if symmetric else fine) if kept_y < 1.0 else (0.0,):
            for d_left in fine_offset if kept_x < 1.0 else (0.0,):
                for d_top in fine_offset if kept_y < 1.0 else (0.0,):
                    place = (kept_x + d_x, kept_y + d_y, max(left + d_left, 0.0), max(top + d_top, 0.0))
                    reading = decide(canonical_soft_bits(canonical(*place)))
                    if reading.present:
                        return reading, _where(*place)
                    if reading.confidence > fallback.confidence:
                        fallback = reading
    return fallback, ""


def _where(kept_x: float, kept_y: float, left: float, top: float) -> str:
    if abs(kept_x - kept_y) < 1e-6:
        return f"{kept_x:.1%} of each side kept, from {left:.1%}, {top:.1%}"
    return f"{kept_x:.1%} of the width and {kept_y:.1%} of the height kept, from {left:.1%}, {top:.1%}"
