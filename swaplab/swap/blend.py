"""Paste-back blending: composite a face, already warped into frame coordinates, into the frame.

It works at the uint8 boundary: ``frame`` and ``face`` are RGB uint8 (H, W, 3) arrays of the same
size, ``mask`` is float32 (H, W) in [0, 1] in frame coordinates. Every blender changes only pixels
within ``feather_px`` (Chebyshev distance) of the mask's non-zero pixels; all others come back
bit-identical. It never warps, recolours or builds masks (the swap pipeline and ``colour.py`` do).

Modes: ``alpha`` (feathered alpha composite), ``poisson`` (``cv2.seamlessClone`` inside
``mask >= 0.5``, then composited under the feathered mask) and ``laplacian`` (multi-band blending,
Burt and Adelson, "A Multiresolution Spline With Application to Image Mosaics", 1983, also
composited under the feathered mask so that its low frequencies act inside the mask's edge
instead of leaking up to ``2**levels`` pixels outside it) and ``learned`` (a network trained to make
Poisson's correction, ``swaplab.models.learned_blend``, composited the same way) and ``glgan`` (GL-GAN's
blending U-Net, ``swaplab.models.glgan_blend``, re-making the seam band of the alpha composite).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from swaplab.registry import Registry

BLENDERS: Registry[Callable[..., np.ndarray]] = Registry("blender")

Box = tuple[slice, slice]


def blend(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, mode: str = "alpha", **options: object) -> np.ndarray:
    """Composite ``face`` into ``frame`` under ``mask`` with the registered blender ``mode``."""
    return BLENDERS.get(mode)(frame, face, mask, **options)


# ------------------------------------------------------------------ mask helpers


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Soften the mask's edge over +-``pixels``: a Gaussian blur (sigma ``pixels/2``) whose kernel is
    cut at radius ``pixels``, so the mask spreads by exactly ``pixels`` and no further.
    ``pixels <= 0`` returns a float32 copy."""
    mask = np.asarray(mask, dtype=np.float32)
    if pixels <= 0:
        return mask.copy()
    size = 2 * int(pixels) + 1
    soft = cv2.GaussianBlur(mask, (size, size), sigmaX=pixels / 2.0, borderType=cv2.BORDER_REFLECT)
    return np.clip(soft, 0.0, 1.0, out=soft)  # the kernel's float sum can land a hair above 1


def erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink the mask by ``pixels`` (an elliptical minimum filter); negative ``pixels`` grows it."""
    mask = np.asarray(mask, dtype=np.float32)
    if pixels == 0:
        return mask.copy()
    radius = abs(int(pixels))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # Outside the frame counts as "no change" for both: the mask neither erodes from nor grows into it.
    operation = cv2.erode if pixels > 0 else cv2.dilate
    return operation(mask, kernel, borderType=cv2.BORDER_REPLICATE)


def sharpen(face: np.ndarray, amount: float = 0.5, sigma: float = 1.0) -> np.ndarray:
    """Unsharp mask: ``face + amount * (face - blur(face, sigma))``, on RGB uint8, saturated."""
    if amount == 0:
        return face.copy()
    blurred = cv2.GaussianBlur(face, (0, 0), sigmaX=sigma)
    return cv2.addWeighted(face, 1.0 + amount, blurred, -amount, 0.0)


def _check(frame: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    if face.shape != frame.shape or face.dtype != np.uint8:
        raise ValueError(f"face must match the frame ({frame.shape} uint8), got {face.dtype} {face.shape}")
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"mask must be (H, W) = {frame.shape[:2]}, got {mask.shape}")
    return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)


def _box(nonzero: np.ndarray, margin: int) -> Box | None:
    """The bounding box of ``nonzero`` grown by ``margin`` and clipped to the array, or None if empty."""
    x, y, w, h = cv2.boundingRect(nonzero.astype(np.uint8))
    if w == 0 or h == 0:
        return None
    rows, cols = nonzero.shape
    return slice(max(y - margin, 0), min(y + h + margin, rows)), slice(max(x - margin, 0), min(x + w + margin, cols))


def _feathered(mask: np.ndarray, pixels: int) -> tuple[Box, np.ndarray] | None:
    """``feather(mask, pixels)`` computed on a crop only: (box, alpha in the box), None if empty.

    The crop keeps 2 * pixels + 2 of margin, so the blur never sees past the crop's inner edges
    and the result equals the whole-frame feather (frame edges are reflected either way).
    """
    box = _box(mask > 0, 2 * max(int(pixels), 0) + 2)
    if box is None:
        return None
    return box, feather(mask[box], pixels)


def _composite(frame: np.ndarray, layer: np.ndarray, alpha: np.ndarray, box: Box) -> np.ndarray:
    """``frame`` with ``layer`` (the box's content) laid over it inside ``box`` with ``alpha``."""
    out = frame.copy()
    base = frame[box].astype(np.float32)
    mixed = base + alpha[..., None] * (layer.astype(np.float32) - base)
    out[box] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------ blenders


@BLENDERS.register("alpha")
def alpha_blend(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, feather_px: int = 0) -> np.ndarray:
    """``frame + a * (face - frame)`` with ``a = feather(mask, feather_px)``."""
    mask = _check(frame, face, mask)
    found = _feathered(mask, feather_px)
    if found is None:
        return frame.copy()
    box, alpha = found
    return _composite(frame, face[box], alpha, box)


@BLENDERS.register("poisson")
def poisson_blend(
    frame: np.ndarray, face: np.ndarray, mask: np.ndarray, feather_px: int = 0, mixed: bool = False
) -> np.ndarray:
    """Gradient-domain cloning of the face into ``mask >= 0.5``, then an alpha composite under the
    feathered mask. ``mixed`` keeps the stronger of the face's and the frame's gradients.

    Falls back to ``alpha`` when no pixel reaches 0.5. OpenCV clears the mask's outermost pixel
    rows and centres the clone on ``p``; the clone runs on a reflect-padded crop with ``p`` at the
    crop's mask box centre, so a mask touching the frame's border neither crashes nor shifts.
    """
    mask = _check(frame, face, mask)
    found = _feathered(mask, feather_px)
    region = mask >= 0.5
    if found is None or not region.any():
        return alpha_blend(frame, face, mask, feather_px)
    box, alpha = found
    pad = 2
    frame_crop = cv2.copyMakeBorder(frame[box], pad, pad, pad, pad, cv2.BORDER_REFLECT)
    face_crop = cv2.copyMakeBorder(face[box], pad, pad, pad, pad, cv2.BORDER_REFLECT)
    region_crop = cv2.copyMakeBorder(region[box].astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT)
    x, y, w, h = cv2.boundingRect(region_crop)
    # seamlessClone puts the mask box's top-left at p - (w // 2, h // 2): this p keeps it in place.
    centre = (x + w // 2, y + h // 2)
    flags = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
    cloned = cv2.seamlessClone(face_crop, frame_crop, region_crop, centre, flags)
    return _composite(frame, cloned[pad:-pad, pad:-pad], alpha, box)


@BLENDERS.register("laplacian")
def laplacian_blend(
    frame: np.ndarray, face: np.ndarray, mask: np.ndarray, feather_px: int = 0, levels: int = 4
) -> np.ndarray:
    """Multi-band blending over ``levels`` pyramid levels: each band of the face and the frame is
    mixed with the matching level of the feathered mask's Gaussian pyramid, so low frequencies
    (colour, shading) mix over a wide band and details over a narrow one; the result is then
    composited under the feathered mask."""
    mask = _check(frame, face, mask)
    found = _feathered(mask, feather_px)
    if found is None:
        return frame.copy()
    box, alpha = found
    mixed = _pyramid_mix(frame[box].astype(np.float32), face[box].astype(np.float32), alpha, levels)
    return _composite(frame, mixed, alpha, box)


def _pyramid_mix(base: np.ndarray, layer: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    rows, cols = alpha.shape
    unit = 2**levels
    # Reflect-pad to a multiple of 2**levels so that every pyrDown/pyrUp pair is exact in size.
    pad_rows, pad_cols = -rows % unit, -cols % unit

    def padded(image: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(image, 0, pad_rows, 0, pad_cols, cv2.BORDER_REFLECT)

    weights, bands_base, bands_layer = [padded(alpha)], [], []
    current_base, current_layer = padded(base), padded(layer)
    for _ in range(levels):
        weights.append(cv2.pyrDown(weights[-1]))
        down_base, down_layer = cv2.pyrDown(current_base), cv2.pyrDown(current_layer)
        bands_base.append(current_base - cv2.pyrUp(down_base))
        bands_layer.append(current_layer - cv2.pyrUp(down_layer))
        current_base, current_layer = down_base, down_layer
    w = weights[levels][..., None]
    out = current_base + w * (current_layer - current_base)
    for level in reversed(range(levels)):
        w = weights[level][..., None]
        out = cv2.pyrUp(out) + bands_base[level] + w * (bands_layer[level] - bands_base[level])
    return out[:rows, :cols]


@BLENDERS.register("learned")
def learned_blend(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, feather_px: int = 0) -> np.ndarray:
    """The learned blender's correction (``swaplab nets build learned-blender``) added to the face, then an
    alpha composite under the feathered mask, as ``poisson`` does with its clone: a stand-in for
    ``cv2.seamlessClone`` trained to reproduce it. Pixels where the feathered mask is 0 stay the frame's."""
    from swaplab.models.learned_blend import load_learned_blender

    mask = _check(frame, face, mask)
    found = _feathered(mask, feather_px)
    if found is None:
        return frame.copy()
    box, alpha = found
    corrected = learned_correction(load_learned_blender(), frame[box], face[box], alpha)
    return _composite(frame, corrected, alpha, box)


def learned_correction(net: object, frame: np.ndarray, face: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``face`` (RGB uint8, a box of the frame) plus the net's correction, predicted at its resolution
    from the frame, the face and the alpha of the same box, and upsampled: float32 (H, W, 3) in 0..255."""
    import torch

    side = net.resolution  # type: ignore[attr-defined]
    rows, cols = alpha.shape

    def small(image: np.ndarray) -> torch.Tensor:
        resized = cv2.resize(image.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(resized.reshape(side, side, -1)).permute(2, 0, 1)[None].contiguous()

    with torch.inference_mode():
        delta = net(small(frame) / 255.0, small(face) / 255.0, small(alpha))[0]  # type: ignore[operator]
    delta = cv2.resize(delta.permute(1, 2, 0).numpy(), (cols, rows), interpolation=cv2.INTER_LINEAR)
    return face.astype(np.float32) + 255.0 * delta


@BLENDERS.register("glgan")
def glgan_blend(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, feather_px: int = 0) -> np.ndarray:
    """GL-GAN's blender (``swaplab nets build glgan-blender``) on the alpha composite: at its
    resolution it sees the composite and the pasted region (feathered mask >= 0.5) and re-makes the
    band either side of that region's edge; its change is upsampled and added where the feathered
    mask is non-zero, so every other pixel stays the frame's. An untrained blender is the alpha blend."""
    from swaplab.models.glgan_blend import load_glgan_blender

    mask = _check(frame, face, mask)
    found = _feathered(mask, feather_px)
    if found is None:
        return frame.copy()
    box, alpha = found
    base = frame[box].astype(np.float32)
    composite = base + alpha[..., None] * (face[box].astype(np.float32) - base)
    change = glgan_seam_change(load_glgan_blender(), composite, alpha)
    mixed = composite + (alpha > 0)[..., None] * change
    out = frame.copy()
    out[box] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def glgan_seam_change(net: object, composite: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """What GL-GAN's blender changes in ``composite`` (float32 (H, W, 3) in 0..255, a box of the frame)
    whose pasted region is ``alpha >= 0.5``: predicted at the net's resolution, upsampled, in 0..255."""
    import torch

    side = net.resolution  # type: ignore[attr-defined]
    rows, cols = alpha.shape
    small = cv2.resize(composite / 255.0, (side, side), interpolation=cv2.INTER_AREA)
    region = (cv2.resize(alpha, (side, side), interpolation=cv2.INTER_LINEAR) >= 0.5).astype(np.float32)
    image = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        blended = net(image, torch.from_numpy(region)[None, None])  # type: ignore[operator]
    change = (blended.float() - image)[0].permute(1, 2, 0).numpy()
    return 255.0 * cv2.resize(change, (cols, rows), interpolation=cv2.INTER_LINEAR)
