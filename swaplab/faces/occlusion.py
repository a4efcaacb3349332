"""Synthetic occluders pasted over aligned faces with exactly known masks, for face segmentation.

Each occluder kind (``OCCLUDERS``) draws one shape on an S x S canvas: a layer (RGB uint8) and a
hard boolean mask, so the pasted pixels and the label agree to the pixel. Textures come from
``donor`` images (other faces of the batch: real skin, hair and background), so an occluder is
not told apart by its colour alone. ``occlude`` pastes a few over an image and marks them in its
label map. Pure numpy/cv2; it does not train, segment or blend.

Kinds used for training: object, hand, bars (glasses), microphone, strands (hair). Kinds kept
for evaluation only (``HELD_OUT_KINDS``): scarf and cup, so a benchmark can measure occluders
that the network never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from swaplab.registry import Registry

__all__ = [
    "BACKGROUND_LABEL",
    "FACE_LABEL",
    "HELD_OUT_KINDS",
    "OCCLUDER_LABEL",
    "OCCLUDERS",
    "TRAIN_KINDS",
    "occlude",
    "occluder",
]

#: kind -> ``fn(size, rng, donor) -> (layer (S, S, 3) uint8, mask (S, S) bool)``.
OCCLUDERS: Registry[Callable[[int, np.random.Generator, np.ndarray], tuple[np.ndarray, np.ndarray]]] = Registry(
    "occluder"
)
TRAIN_KINDS: tuple[str, ...] = ("object", "hand", "bars", "microphone", "strands")
HELD_OUT_KINDS: tuple[str, ...] = ("scarf", "cup")
#: The label values of a segmentation map.
BACKGROUND_LABEL, FACE_LABEL, OCCLUDER_LABEL = 0, 1, 2


def occluder(kind: str, size: int, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One occluder of ``kind`` on an S x S canvas: (layer RGB uint8, mask bool); ``donor`` is an RGB
    uint8 image (any size) its texture may come from."""
    layer, mask = OCCLUDERS.get(kind)(size, rng, donor)
    return np.ascontiguousarray(layer, dtype=np.uint8), mask.astype(bool)


def occlude(
    image: np.ndarray,
    labels: np.ndarray,
    donors: Sequence[np.ndarray],
    rng: np.random.Generator,
    kinds: Sequence[str] = TRAIN_KINDS,
    count: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste ``count`` occluders of random ``kinds`` over ``image`` (S x S x 3 uint8).

    Returns the new image, ``labels`` (S x S integers) with ``OCCLUDER_LABEL`` where an occluder
    lies, and the union of the occluders' masks (S x S bool). Outside that union the image and
    labels are unchanged; inside it, each pixel is the top occluder's layer.
    """
    size = image.shape[0]
    if image.shape[:2] != (size, size) or labels.shape != (size, size):
        raise ValueError(f"expected a square image and labels of one size, got {image.shape} and {labels.shape}")
    out, out_labels = image.copy(), labels.copy()
    union = np.zeros((size, size), bool)
    for _ in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        donor = donors[int(rng.integers(len(donors)))] if len(donors) else image
        layer, mask = occluder(kind, size, rng, donor)
        out[mask] = layer[mask]
        out_labels[mask] = OCCLUDER_LABEL
        union |= mask
    return out, out_labels, union


# ---------------------------------------------------------------------------------- helpers


def _texture(
    donor: np.ndarray, size: int, rng: np.random.Generator, zoom: tuple[float, float] = (1.0, 2.5)
) -> np.ndarray:
    """A random window of ``donor``, zoomed and mirrored, as an S x S RGB texture."""
    height, width = donor.shape[:2]
    scale = float(rng.uniform(*zoom))
    side = max(4, int(min(height, width) / scale))
    y = int(rng.integers(0, height - side + 1))
    x = int(rng.integers(0, width - side + 1))
    window = donor[y : y + side, x : x + side]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    return cv2.resize(np.ascontiguousarray(window), (size, size), interpolation=cv2.INTER_LINEAR)


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))  # type: ignore[return-value]


def _shade(layer: np.ndarray, rng: np.random.Generator, amount: float = 0.35) -> np.ndarray:
    """A linear light ramp in a random direction, so flat shapes are not flat colours."""
    size = layer.shape[0]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ramp = 1.0 + amount * (np.cos(angle) * xx + np.sin(angle) * yy) * 2
    return np.clip(layer.astype(np.float32) * ramp[..., None], 0, 255).astype(np.uint8)


def _point(rng: np.random.Generator, size: int, low: float, high: float) -> np.ndarray:
    return rng.uniform(low * size, high * size, 2)


def _thickness(size: int, rng: np.random.Generator, low: float, high: float) -> int:
    return max(1, round(rng.uniform(low, high) * size))


def _fill(mask: np.ndarray, points: np.ndarray) -> None:
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)


# ---------------------------------------------------------------------------------- kinds


@OCCLUDERS.register("object")
def object_occluder(size: int, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A blob (random star-shaped polygon or ellipse) cut from the donor image."""
    mask = np.zeros((size, size), np.uint8)
    centre = _point(rng, size, 0.1, 0.9)
    radius = rng.uniform(0.1, 0.3) * size
    if rng.random() < 0.5:
        corners = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = radius * rng.uniform(0.5, 1.0, corners)
        _fill(mask, centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None])
    else:
        axes = (max(2, round(radius)), max(2, round(radius * rng.uniform(0.4, 1.0))))
        cv2.ellipse(mask, tuple(np.round(centre).astype(int)), axes, rng.uniform(0, 180), 0, 360, 255, -1)
    return _texture(donor, size, rng), mask > 0


@OCCLUDERS.register("hand")
def hand_occluder(size: int, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A palm with four fingers and a thumb, coming in from below or a side, textured with the skin
    at the donor face's centre (so skin colour alone cannot tell a hand from the face)."""
    mask = np.zeros((size, size), np.uint8)
    scale = rng.uniform(0.7, 1.2)
    palm_w, palm_h = 0.22 * size * scale, 0.26 * size * scale
    # Up the hand's axis (fingers point along it); it comes in from below, left or right.
    angle = rng.uniform(-np.pi / 2 - 1.0, -np.pi / 2 + 1.0) + (0 if rng.random() < 0.6 else rng.choice([-1, 1]) * 0.9)
    axis = np.array([np.cos(angle), np.sin(angle)])
    across = np.array([-axis[1], axis[0]])
    palm = _point(rng, size, 0.3, 0.7) - axis * rng.uniform(0.0, 0.15) * size
    cv2.ellipse(
        mask,
        tuple(np.round(palm).astype(int)),
        (round(palm_w / 2), round(palm_h / 2)),
        np.degrees(angle) + 90,
        0,
        360,
        255,
        -1,
    )
    # The wrist runs out of the canvas, opposite the fingers.
    wrist_end = palm - axis * size
    cv2.line(mask, tuple(np.round(palm).astype(int)), tuple(np.round(wrist_end).astype(int)), 255, round(palm_w * 0.8))
    finger_w = max(2, round(palm_w / 4.6))
    bend = rng.uniform(-0.25, 0.25)
    for index, offset in enumerate((-0.36, -0.12, 0.12, 0.36)):
        base = palm + axis * palm_h * 0.4 + across * offset * palm_w
        length = palm_h * (0.7, 0.85, 0.8, 0.6)[index] * rng.uniform(0.7, 1.1)
        direction = axis * np.cos(bend) + across * np.sin(bend)
        tip = base + direction * length
        cv2.line(mask, tuple(np.round(base).astype(int)), tuple(np.round(tip).astype(int)), 255, finger_w)
        cv2.circle(mask, tuple(np.round(tip).astype(int)), finger_w // 2, 255, -1)
    side = rng.choice([-1.0, 1.0])
    thumb_base = palm + across * side * palm_w * 0.45
    thumb_tip = thumb_base + (axis * 0.5 + across * side * 0.8) * palm_h * 0.55
    cv2.line(mask, tuple(np.round(thumb_base).astype(int)), tuple(np.round(thumb_tip).astype(int)), 255, finger_w + 1)
    height, width = donor.shape[:2]
    skin = donor[int(height * 0.45) : int(height * 0.6), int(width * 0.38) : int(width * 0.62)]
    layer = _shade(_texture(skin, size, rng, zoom=(1.0, 1.5)), rng, 0.25)
    return layer, mask > 0


@OCCLUDERS.register("bars")
def bars_occluder(size: int, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Glasses: two rims (or dark lenses) at eye height joined by a bridge, with temples to the sides."""
    mask = np.zeros((size, size), np.uint8)
    eye_y = rng.uniform(0.36, 0.5) * size
    centre_x = rng.uniform(0.42, 0.58) * size
    half_gap = rng.uniform(0.13, 0.18) * size
    axes = (round(rng.uniform(0.08, 0.12) * size), round(rng.uniform(0.05, 0.08) * size))
    rim = _thickness(size, rng, 0.012, 0.035)
    filled = rng.random() < 0.35
    for sign in (-1, 1):
        centre = (round(centre_x + sign * half_gap), round(eye_y))
        cv2.ellipse(mask, centre, axes, rng.uniform(-8, 8), 0, 360, 255, -1 if filled else rim)
        outer = (round(centre_x + sign * (half_gap + axes[0])), round(eye_y))
        cv2.line(mask, outer, (round(centre_x + sign * size), round(eye_y + rng.uniform(-0.03, 0.05) * size)), 255, rim)
    cv2.line(
        mask,
        (round(centre_x - half_gap + axes[0]), round(eye_y)),
        (round(centre_x + half_gap - axes[0]), round(eye_y)),
        255,
        rim,
    )
    layer = np.empty((size, size, 3), np.uint8)
    layer[:] = _colour(rng, 0, 90 if rng.random() < 0.7 else 256)
    return _shade(layer, rng, 0.2), mask > 0


@OCCLUDERS.register("microphone")
def microphone_occluder(size: int, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A round mesh head on a handle that runs out of the canvas below."""
    mask = np.zeros((size, size), np.uint8)
    head = _point(rng, size, 0.3, 0.7) + np.array([0, 0.15 * size])
    radius = round(rng.uniform(0.07, 0.12) * size)
    tail = head + np.array([rng.uniform(-0.4, 0.4), 1.0]) * size
    cv2.line(mask, tuple(np.round(head).astype(int)), tuple(np.round(tail).astype(int)), 255, round(radius * 0.9))
    cv2.circle(mask, tuple(np.round(head).astype(int)), radius, 255, -1)
    layer = np.empty((size, size, 3), np.uint8)
    layer[:] = _colour(rng, 10, 80)
    mesh = np.zeros((size, size), np.uint8)
    step = max(2, radius // 3)
    for offset in range(-size, size, step):  # the grille's crossed lines
        cv2.line(mesh, (offset, 0), (offset + size, size), 255, 1)
        cv2.line(mesh, (offset + size, 0), (offset, size), 255, 1)
    head_only = np.zeros_like(mesh)
    cv2.circle(head_only, tuple(np.round(head).astype(int)), radius, 255, -1)
    layer[(mesh > 0) & (head_only > 0)] = _colour(rng, 120, 220)
    return _shade(layer, rng, 0.3), mask > 0


@OCCLUDERS.register("strands")
def strands_occluder(size: int, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A few curved hair strands of one hair colour falling over the upper face."""
    mask = np.zeros((size, size), np.uint8)
    start = _point(rng, size, 0.1, 0.9) * np.array([1.0, 0.3])
    for _ in range(int(rng.integers(3, 10))):
        p0 = start + rng.normal(0, 0.04 * size, 2)
        p1 = p0 + np.array([rng.uniform(-0.25, 0.25), rng.uniform(0.15, 0.35)]) * size
        p2 = p1 + np.array([rng.uniform(-0.25, 0.25), rng.uniform(0.1, 0.35)]) * size
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        cv2.polylines(mask, [np.round(curve).astype(np.int32)], False, 255, _thickness(size, rng, 0.01, 0.03))
    hair = [(30, 20, 15), (80, 50, 25), (200, 170, 110), (15, 15, 15), (120, 60, 30)][int(rng.integers(5))]
    layer = np.clip(np.array(hair) + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    return layer, mask > 0


@OCCLUDERS.register("scarf")
def scarf_occluder(size: int, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held out of training: a striped cloth over the lower face with a wavy upper edge."""
    top = rng.uniform(0.6, 0.78) * size
    xs = np.arange(size, dtype=np.float64)
    wave = top + rng.uniform(0.01, 0.04) * size * np.sin(xs / size * rng.uniform(3, 9) + rng.uniform(0, 6))
    mask = np.arange(size)[:, None] >= wave[None, :]
    layer = np.empty((size, size, 3), np.uint8)
    first, second = _colour(rng), _colour(rng)
    period = max(2, round(rng.uniform(0.03, 0.08) * size))
    stripes = ((np.arange(size)[:, None] + np.arange(size)[None, :] // 3) // period) % 2 == 0
    layer[stripes], layer[~stripes] = first, second
    return _shade(layer, rng, 0.3), mask


@OCCLUDERS.register("cup")
def cup_occluder(size: int, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held out of training: a mug (a tapered body with a handle ring) raised to the mouth."""
    mask = np.zeros((size, size), np.uint8)
    centre = np.array([rng.uniform(0.35, 0.65), rng.uniform(0.65, 0.85)]) * size
    top_w, bottom_w, height = (v * size for v in (rng.uniform(0.12, 0.18), rng.uniform(0.09, 0.14), 0.35))
    body = np.array(
        [
            centre + (-top_w, -height / 2),
            centre + (top_w, -height / 2),
            centre + (bottom_w, height / 2),
            centre + (-bottom_w, height / 2),
        ]
    )
    _fill(mask, body)
    side = rng.choice([-1.0, 1.0])
    handle = centre + np.array([side * (top_w + 0.03 * size), 0.0])
    cv2.ellipse(
        mask,
        tuple(np.round(handle).astype(int)),
        (round(0.05 * size), round(0.08 * size)),
        0,
        0,
        360,
        255,
        _thickness(size, rng, 0.02, 0.03),
    )
    layer = np.empty((size, size, 3), np.uint8)
    layer[:] = _colour(rng, 60, 256)
    return _shade(layer, rng, 0.45), mask > 0
