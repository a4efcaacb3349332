"""GL-GAN's parts (global and local perception GAN): the U-Net global generator, the local
generators for eyes and mouth, the fusion network, the crop geometry and a single PatchGAN.

The global generator is a U-Net over the whole aligned face (conv + norm + ReLU levels with max
pooling, transposed-convolution upsampling with skip connections), with the source identity
injected at its bottom (SimSwap's identity-injection blocks, ``BOTTLENECKS["id-injection"]``) and
by AdaIN after every decoder level (the skips carry the target's appearance; the identity has
to be able to override it). Local generators work on fixed-size crops around landmark positions
(eyes, mouth, optionally the nose): a convolution, one downsampling, residual blocks with 3x3,
5x5 and 7x7 kernels (also identity-modulated), and back. The fusion network merges the locals,
pasted at their boxes, into the global output (APDrawingGAN's and TP-GAN's global + local
pathways); ``paste_regions`` alone is the ablation without it.

Crops are integer boxes (``RegionBox``): slicing is exact and differentiable, and pasting back
writes nothing outside the boxes. Boxes come from an alignment template (every crop of a faceset
aligned to it has its landmarks near the template's points) or from per-sample landmarks.
Parts read no config objects. Images are (N, 3, S, S) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from swaplab.faces.align import DLIB_MEAN_FACE_68, TEMPLATES, AlignmentTemplate, umeyama
from swaplab.models.parts.discriminators import DiscriminatorOutput, PatchDiscriminator
from swaplab.models.parts.registries import BOTTLENECKS, DISCRIMINATORS
from swaplab.models.parts.simswap import IdentityAdaIN, make_norm

Tensor = torch.Tensor
Norm = Literal["batch", "instance", "none"]

#: The 68-point landmarks of each region (dlib's layout): the box is centred on their mean.
REGION_LANDMARKS: dict[str, tuple[int, ...]] = {
    "left_eye": tuple(range(36, 42)),  # the eye on the image's left (the person's right eye)
    "right_eye": tuple(range(42, 48)),
    "nose": tuple(range(27, 36)),
    "mouth": tuple(range(48, 68)),
}


class RegionBox(NamedTuple):
    """A square crop: rows ``top:top+size``, columns ``left:left+size`` of the aligned face."""

    name: str
    top: int
    left: int
    size: int


def template_landmarks(template: str | AlignmentTemplate, resolution: int) -> np.ndarray:
    """Where the template puts dlib's 68-point mean face in a ``resolution`` px crop ((68, 2) x, y).

    The template's own fit points are mapped exactly (a similarity from the mean face's points to
    their crop positions); the other points (lips, eyes) follow the same similarity. Jaw points
    are NaN (dlib gives no mean for them).
    """
    resolved = TEMPLATES.get(template) if isinstance(template, str) else template
    indices, targets = resolved.crop_positions(68, resolution)
    source = DLIB_MEAN_FACE_68[list(indices)] if indices is not None else DLIB_MEAN_FACE_68
    matrix = umeyama(source, np.asarray(targets))[:2]
    return DLIB_MEAN_FACE_68 @ matrix[:, :2].T + matrix[:, 2]


def box_at(name: str, centre: Sequence[float], size: int, resolution: int) -> RegionBox:
    """The ``size`` px box centred (to the nearest pixel) on ``centre`` (x, y), moved inside the image."""
    if not 0 < size <= resolution:
        raise ValueError(f"a {name} crop of {size} px does not fit a {resolution} px face")
    x, y = float(centre[0]), float(centre[1])
    # Pixel centres are integers: a box of even size centred on c spans c - size/2 + 0.5 .. c + size/2 - 0.5.
    left = int(np.clip(round(x - (size - 1) / 2), 0, resolution - size))
    top = int(np.clip(round(y - (size - 1) / 2), 0, resolution - size))
    return RegionBox(name, top, left, size)


def region_boxes(landmarks: np.ndarray, sizes: dict[str, int], resolution: int) -> list[RegionBox]:
    """Boxes of ``sizes`` (region name -> side in px) around the regions' landmarks ((68, 2) x, y)."""
    boxes = []
    for name, size in sizes.items():
        if name not in REGION_LANDMARKS:
            raise ValueError(f"unknown face region {name!r}; regions: {', '.join(REGION_LANDMARKS)}")
        points = np.asarray(landmarks, dtype=np.float64)[list(REGION_LANDMARKS[name])]
        boxes.append(box_at(name, points.mean(axis=0), size, resolution))
    return boxes


def crop_regions(images: Tensor, boxes: Sequence[RegionBox]) -> dict[str, Tensor]:
    """The (N, C, size, size) crops of (N, C, R, R) ``images`` at ``boxes`` (views; gradients flow)."""
    return {b.name: images[:, :, b.top : b.top + b.size, b.left : b.left + b.size] for b in boxes}


def paste_regions(base: Tensor, patches: dict[str, Tensor], boxes: Sequence[RegionBox]) -> Tensor:
    """``base`` (N, C, R, R) with each box replaced by its patch; every other pixel is ``base``'s.

    Out of place (``base`` is untouched); later boxes win where boxes overlap.
    """
    out = base.clone()
    for b in boxes:
        out[:, :, b.top : b.top + b.size, b.left : b.left + b.size] = patches[b.name].to(out.dtype)
    return out


def region_mask(boxes: Sequence[RegionBox], resolution: int, device: torch.device | None = None) -> Tensor:
    """(1, 1, R, R): 1 inside any box, 0 elsewhere."""
    mask = torch.zeros(1, 1, resolution, resolution, device=device)
    for b in boxes:
        mask[:, :, b.top : b.top + b.size, b.left : b.left + b.size] = 1.0
    return mask


def face_hull_mask(template: str | AlignmentTemplate, resolution: int) -> np.ndarray:
    """(R, R) float32: 1 inside the convex hull of the template's defined landmarks (brows to mouth)."""
    import cv2

    points = template_landmarks(template, resolution)
    points = points[~np.isnan(points).any(axis=1)]
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    mask = np.zeros((resolution, resolution), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0)
    return mask


def seam_band(mask: np.ndarray, width: int) -> np.ndarray:
    """(R, R) float32 in [0, 1]: the band ``width`` px either side of ``mask``'s edge, feathered."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    band = cv2.dilate(mask, kernel) - cv2.erode(mask, kernel)
    band = np.clip(cv2.GaussianBlur(band, (0, 0), max(width / 2.0, 0.5)) * 1.5, 0.0, 1.0)
    return np.where(band < 0.02, 0.0, band).astype(np.float32)  # no blur tails: far pixels stay exactly


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        make_norm(norm, out_channels),
        nn.ReLU(),
    )


def unet_widths(dims: int, depth: int, max_dims: int) -> list[int]:
    """Widths of the U-Net's levels: dims * 2^i up to ``max_dims`` (the article's 64/128/256)."""
    if depth < 1 or dims < 1:
        raise ValueError(f"depth and dims must be positive, got {depth}, {dims}")
    return [min(dims * 2**i, max_dims) for i in range(depth)]


class UpLevel(nn.Module):
    """Transposed 2x upsampling, the skip concatenated, conv + identity AdaIN + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, identity_dim: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels, 4, stride=2, padding=1)
        self.conv = nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1)
        self.adain = IdentityAdaIN(out_channels, identity_dim)

    def forward(self, x: Tensor, skip: Tensor, identity: Tensor) -> Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        return F.relu(self.adain(self.conv(x), identity))


class UNetGlobalGenerator(nn.Module):
    """``forward(face, identity) -> rgb``: the whole aligned face through an identity-conditioned U-Net.

    ``face`` has ``in_channels`` channels (3: an RGB face; more when a use adds masks).
    ``identity=None`` (blending, smoothing) drives every AdaIN with a zero vector, so each applies
    its learned constant scale and shift.

    Encoder: a conv + norm + ReLU level at each of ``depth`` widths, max pooling between levels and
    once more below the last; the bottom (R / 2^depth) runs ``n_blocks`` identity-injection blocks;
    the decoder climbs back with ``UpLevel``s (skips from each encoder level) to a 3x3 RGB head
    (sigmoid). ``identity`` (N, identity_dim) is L2-normalised before use.
    """

    def __init__(
        self,
        *,
        resolution: int,
        in_channels: int = 3,
        dims: int = 64,
        depth: int = 3,
        max_dims: int = 256,
        n_blocks: int = 4,
        identity_dim: int = 128,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        if resolution % 2**depth:
            raise ValueError(f"resolution {resolution} must be divisible by 2^depth = {2**depth}")
        widths = unet_widths(dims, depth, max_dims)
        self.identity_dim = identity_dim
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(_conv_norm_relu(channels, width, norm))
            channels = width
        self.bottom = BOTTLENECKS.create(
            "id-injection",
            in_channels=channels,
            in_size=resolution // 2**depth,
            identity_dim=identity_dim,
            n_blocks=n_blocks,
        )
        self.up = nn.ModuleList()
        for width, target in zip(reversed(widths), [*reversed(widths[:-1]), widths[0]]):
            self.up.append(UpLevel(channels, width, target, identity_dim))
            channels = target
        self.head = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, face: Tensor, identity: Tensor | None = None) -> Tensor:
        if identity is None:  # unconditioned uses (blending): the AdaINs apply their learned constant style
            identity = face.new_zeros(len(face), self.identity_dim, dtype=torch.float32)
        identity = F.normalize(identity.float(), dim=1)
        skips, x = [], face
        for level in self.down:
            x = level(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x, identity)
        for level, skip in zip(self.up, reversed(skips)):
            x = level(x, skip, identity)
        return torch.sigmoid(self.head(x))


class MultiKernelResidual(nn.Module):
    """x + AdaIN(conv_k(ReLU(AdaIN(conv_k(x), id))), id) with a k x k kernel (3, 5 or 7)."""

    def __init__(self, channels: int, kernel_size: int, identity_dim: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=pad, padding_mode="reflect")
        self.adain1 = IdentityAdaIN(channels, identity_dim)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad, padding_mode="reflect")
        self.adain2 = IdentityAdaIN(channels, identity_dim)

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        y = F.relu(self.adain1(self.conv1(x), identity))
        return x + self.adain2(self.conv2(y), identity)


#: Kernel sizes of the local generators' residual blocks, in turn.
LOCAL_KERNELS = (3, 5, 7)


class LocalGenerator(nn.Module):
    """``forward(crop, identity) -> rgb crop``: one facial region (an eye, the mouth) at its crop size.

    A 3x3 conv + norm + ReLU stem, one stride-2 conv to twice the width, ``n_blocks`` identity-
    modulated residual blocks with kernels 3, 5, 7, 3 ... (small details and their context), bilinear
    2x upsampling with a conv back to the stem's width, and a 3x3 RGB head (sigmoid). Crop sides must
    be even.
    """

    def __init__(self, *, dims: int = 32, n_blocks: int = 3, identity_dim: int = 128, norm: Norm = "batch") -> None:
        super().__init__()
        self.stem = _conv_norm_relu(3, dims, norm)
        self.down = nn.Sequential(
            nn.Conv2d(dims, 2 * dims, 3, stride=2, padding=1), make_norm(norm, 2 * dims), nn.ReLU()
        )
        self.blocks = nn.ModuleList(
            MultiKernelResidual(2 * dims, LOCAL_KERNELS[i % len(LOCAL_KERNELS)], identity_dim) for i in range(n_blocks)
        )
        self.up = _conv_norm_relu(2 * dims, dims, norm)
        self.head = nn.Conv2d(2 * dims, 3, 3, padding=1)

    def forward(self, crop: Tensor, identity: Tensor) -> Tensor:
        if crop.shape[-1] % 2 or crop.shape[-2] % 2:
            raise ValueError(f"local generator crops need even sides, got {tuple(crop.shape[-2:])}")
        identity = F.normalize(identity.float(), dim=1)
        stem = self.stem(crop)
        x = self.down(stem)
        for block in self.blocks:
            x = block(x, identity)
        x = self.up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return torch.sigmoid(self.head(torch.cat([x, stem], dim=1)))


def logit(x: Tensor, eps: float = 1e-4) -> Tensor:
    """The inverse of the sigmoid, in float32, for images in [0, 1] (clamped away from 0 and 1)."""
    x = x.float().clamp(eps, 1.0 - eps)
    return torch.log(x) - torch.log1p(-x)


class FusionNetwork(nn.Module):
    """Merges the locals (pasted at their boxes) into the global output: a small U-Net on
    [global, pasted, box mask] (7 channels) that predicts a correction of the pasted image's logits.

    The last conv starts at zero, so an untrained fusion network is the plain paste; it then learns
    the seams and the colour agreement between the pathways. Output (N, 3, R, R) in [0, 1].
    """

    def __init__(self, *, dims: int = 32, norm: Norm = "batch") -> None:
        super().__init__()
        self.inner = _conv_norm_relu(7, dims, norm)
        self.down = nn.Sequential(
            nn.Conv2d(dims, 2 * dims, 3, stride=2, padding=1), make_norm(norm, 2 * dims), nn.ReLU()
        )
        self.middle = _conv_norm_relu(2 * dims, 2 * dims, norm)
        self.up = nn.ConvTranspose2d(2 * dims, dims, 4, stride=2, padding=1)
        self.out = _conv_norm_relu(2 * dims, dims, norm)
        self.head = nn.Conv2d(dims, 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, global_rgb: Tensor, pasted: Tensor, mask: Tensor) -> Tensor:
        mask = mask.to(pasted.dtype).expand(len(pasted), 1, *pasted.shape[-2:])
        x = self.inner(torch.cat([global_rgb.to(pasted.dtype), pasted, mask], dim=1))
        y = self.up(self.middle(self.down(x)))
        correction = self.head(self.out(torch.cat([y, x], dim=1)))
        return torch.sigmoid(logit(pasted) + correction.float()).to(pasted.dtype)


@DISCRIMINATORS.register("patchgan")
class SinglePatchDiscriminator(nn.Module):
    """One PatchGAN head (pix2pixHD's N-layer discriminator) on the image as given: for small crops.

    Same keywords as the other discriminators; ``scales`` is ignored (one head). A crop must
    survive ``n_layers`` stride-2 layers with more than one pixel left (12 px crops: 2 layers).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        resolution: int,
        dims: int = 64,
        n_layers: int = 3,
        norm: Literal["instance", "batch", "none"] = "instance",
        **_: object,
    ) -> None:
        super().__init__()
        side = resolution
        for _layer in range(n_layers):
            side = side // 2 + 1
        if side < 2:
            raise ValueError(f"a {resolution} px input is too small for a {n_layers}-layer PatchGAN")
        self.head = PatchDiscriminator(in_channels, dims, n_layers, norm)

    def forward(self, images: Tensor) -> DiscriminatorOutput:
        features, logits = self.head(images)
        return DiscriminatorOutput([features], [logits])
