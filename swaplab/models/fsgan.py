"""FSGAN, subject-agnostic swapping: landmark heatmaps, the reenactment and inpainting generators,
their classical stand-ins, the model and its swapper kind (``SWAPPERS["fsgan"]``).

The swap of one aligned target face, all at the model's resolution R:

1. **reenact** (``Reenactor``): the source face turned to the target's pose and expression from
   the target's 68 landmarks, drawn as heatmaps; it also draws the reenacted face's mask.
   ``iterations`` > 1 walks there in small steps along landmarks interpolated from the source's
   to the target's (FSGAN's iterative reenactment for large pose differences). Classical stand-in:
   ``warp``, a thin-plate-spline warp of the source crop from its landmarks onto the target's.
2. **segment**: the target's face region, by the masks issue's face segmenter
   (``swaplab nets build face-segmenter``); classical stand-in: ``hull``, the landmark hull.
3. **inpaint** (``Inpainter``): the part of the target's face region the reenacted face does not
   cover (hair, what the source's pose hid) is completed; stand-in: ``none`` (left as reenacted).
4. **blend**: the completed face merged into the target crop inside that region by the masks
   issue's learned blender (its colour correction); stand-ins ``poisson`` (seamless cloning) and
   ``alpha`` (none: the swap stage's paste alone). The swapper returns the region as its mask, so
   the swap stage pastes the blended crop back into the frame under it.

Images are (N, 3, R, R) float RGB in [0, 1]; landmarks (N, 68, 2) in crop pixels (x, y). No
training here (``swaplab.train.recipes.fsgan``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.config import ConfigError, register_preset
from swaplab.models.factory import MODELS
from swaplab.models.simswap import DiscriminatorConfig
from swaplab.models.swapper import SWAPPERS, SwapOutput, Swapper
from swaplab.models.unet import UNet

Tensor = torch.Tensor

LANDMARKS = 68
MASK_START_LOGIT = 2.0  # the untrained reenactor's mask, sigmoid(2) = 0.88

__all__ = [
    "FSGAN",
    "FSGANConfig",
    "FSGANSwapper",
    "Inpainter",
    "blur_fill",
    "Reenactor",
    "hull_masks",
    "interpolated_landmarks",
    "landmark_heatmaps",
    "tps_warp",
]


# ---------------------------------------------------------------- heatmaps and classical stages


def landmark_heatmaps(points: Tensor, size: int, sigma: float) -> Tensor:
    """(N, K, size, size) Gaussian heatmaps in [0, 1] of landmarks (N, K, 2) in pixel coordinates
    (x, y; pixel centres at integers): channel k peaks (value 1) at point k, ``sigma`` in pixels.
    Points off the crop give tails or nothing, never an error."""
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"landmarks must be (N, K, 2), got {tuple(points.shape)}")
    axis = torch.arange(size, device=points.device, dtype=torch.float32)
    dx = (axis[None, None, :] - points[..., 0:1].float()) ** 2  # (N, K, W)
    dy = (axis[None, None, :] - points[..., 1:2].float()) ** 2  # (N, K, H)
    scale = -0.5 / (sigma * sigma)
    return torch.exp(scale * (dy[..., :, None] + dx[..., None, :]))


def interpolated_landmarks(source: Tensor, target: Tensor, steps: int) -> list[Tensor]:
    """The landmarks of iterative reenactment: ``steps`` points evenly spaced from ``source``
    (exclusive) to ``target`` (inclusive), so the last is the target itself."""
    return [source + (target - source) * (k / steps) for k in range(1, steps + 1)]


def hull_masks(landmarks: Tensor, size: int) -> Tensor:
    """(N, 1, size, size) landmark face hulls (up to the forehead) of (N, 68, 2) crop landmarks."""
    from swaplab.faces.masks import landmark_mask

    masks = [landmark_mask(points, size, "face") for points in landmarks.detach().float().cpu().numpy()]
    return torch.from_numpy(np.stack(masks))[:, None].to(landmarks.device)


def _tps_kernel(distance_sq: np.ndarray) -> np.ndarray:
    return np.where(distance_sq > 0, 0.5 * distance_sq * np.log(np.maximum(distance_sq, 1e-12)), 0.0)


def tps_warp(image: np.ndarray, source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) warped so that its ``source_points`` land on ``target_points`` (K, 2):
    a thin-plate spline (lightly regularised) fitted from target to source coordinates, sampled
    with ``cv2.remap`` (the classical landmark warp that stands in for the reenactment generator)."""
    import cv2

    height, width = image.shape[:2]
    dst = np.asarray(target_points, np.float64)
    src = np.asarray(source_points, np.float64)
    count = len(dst)
    kernel = _tps_kernel(((dst[:, None] - dst[None]) ** 2).sum(-1)) + np.eye(count) * 1e-3 * width
    affine = np.concatenate([np.ones((count, 1)), dst], axis=1)
    system = np.zeros((count + 3, count + 3))
    system[:count, :count], system[:count, count:], system[count:, :count] = kernel, affine, affine.T
    rhs = np.zeros((count + 3, 2))
    rhs[:count] = src
    coefficients = np.linalg.lstsq(system, rhs, rcond=None)[0]
    ys, xs = np.mgrid[0:height, 0:width]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    mapped = _tps_kernel(((grid[:, None] - dst[None]) ** 2).sum(-1)) @ coefficients[:count]
    mapped += np.concatenate([np.ones((len(grid), 1)), grid], axis=1) @ coefficients[count:]
    map_x = mapped[:, 0].reshape(height, width).astype(np.float32)
    map_y = mapped[:, 1].reshape(height, width).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def blur_fill(image: Tensor, hole: Tensor, sigma: float) -> Tensor:
    """``image`` with ``hole`` filled by a smooth average of the known pixels around it (the plain
    baseline the inpainter must beat and starts from): area means over ``sigma``-pixel cells of the
    known pixels only, upsampled bilinearly; pixels outside the hole are kept."""
    image, hole = image.float().contiguous(), hole.float().contiguous()
    side = max(1, round(image.shape[-1] / max(1.0, sigma)))
    known = 1 - hole
    sums = F.adaptive_avg_pool2d(image * known, side)
    weights = F.adaptive_avg_pool2d(known, side)
    # Cells with no known pixel take the image's mean known colour.
    mean = (image * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1.0)
    cells = torch.where(weights > 1e-3, sums / weights.clamp_min(1e-3), mean)
    filled = F.interpolate(cells, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return image * known + filled.clamp(0, 1) * hole


def _poisson(face: Tensor, target: Tensor, region: Tensor) -> Tensor:
    """``face`` cloned into ``target`` by ``cv2.seamlessClone`` inside ``region >= 0.5`` (one crop,
    (3, R, R) in [0, 1]); an empty region gives ``face`` back. Reflect padding keeps a region that
    touches the border from being cut by OpenCV's border rule."""
    import cv2

    inside = (region[0] >= 0.5).cpu().numpy().astype(np.uint8) * 255
    if not inside.any():
        return face
    pad = 4

    def to_uint8(t: Tensor) -> np.ndarray:
        image = (t.permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
        return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)

    mask = cv2.copyMakeBorder(inside, pad, pad, pad, pad, cv2.BORDER_CONSTANT)
    x, y, w, h = cv2.boundingRect(mask)
    cloned = cv2.seamlessClone(to_uint8(face), to_uint8(target), mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    out = torch.from_numpy(cloned[pad:-pad, pad:-pad].astype(np.float32) / 255.0).permute(2, 0, 1)
    return out.to(face.device)


# ---------------------------------------------------------------- the generators


class Reenactor(nn.Module):
    """``forward(source, source_heatmaps, target_heatmaps) -> (reenacted RGB, mask)``: a U-Net (the
    shared one) from the source face and both faces' landmark heatmaps to the face in the target's
    pose, and a mask of where that face is. The RGB is predicted as a correction of the source.

    FSGAN feeds the target's heatmaps alone; the source's as well spare a small CPU-sized network
    from finding the source's landmarks itself (the displacement is then explicit)."""

    def __init__(self, widths: tuple[int, ...], landmarks: int = LANDMARKS) -> None:
        super().__init__()
        self.unet = UNet(3 + 2 * landmarks, 4, widths)
        # Start as a copy of the source whose mask covers the whole crop (0.88): an untrained mask
        # must not open an inpainting hole over the face; training lowers it outside the face.
        nn.init.zeros_(self.unet.head.weight)
        nn.init.zeros_(self.unet.head.bias)
        with torch.no_grad():
            self.unet.head.bias[3] = MASK_START_LOGIT

    def forward(self, source: Tensor, source_heatmaps: Tensor, target_heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        heatmaps = torch.cat([source_heatmaps, target_heatmaps], dim=1).to(source.dtype)
        out = self.unet(torch.cat([(source - 0.5) * 2.0, heatmaps], dim=1))
        rgb = torch.sigmoid(out[:, :3] + torch.logit(source.clamp(0.01, 0.99)))
        return rgb, torch.sigmoid(out[:, 3:4])


class Inpainter(nn.Module):
    """``forward(image, hole) -> completed image``: fills ``hole`` (N, 1, R, R, 1 = missing) coarse
    to fine: a blur fill of the known pixels (``blur_fill``), refined by a U-Net (the shared one)
    that starts as no change. The result is ``image`` where the hole is 0, exactly."""

    def __init__(self, widths: tuple[int, ...], blur_sigma: float) -> None:
        super().__init__()
        self.blur_sigma = blur_sigma
        self.unet = UNet(4, 3, widths)
        nn.init.zeros_(self.unet.head.weight)
        nn.init.zeros_(self.unet.head.bias)

    def forward(self, image: Tensor, hole: Tensor) -> Tensor:
        hole = hole.to(image.dtype)
        coarse = blur_fill(image.float(), hole.float(), self.blur_sigma).to(image.dtype)
        refined = coarse + self.unet(torch.cat([(coarse - 0.5) * 2.0, hole], dim=1)).to(image.dtype)
        return image * (1 - hole) + refined.clamp(0, 1) * hole


@dataclass
class FSGANStagesConfig:
    """Which implementation each swap stage uses: the network, or its classical counterpart
    (``warp``: thin-plate landmark warp; ``hull``: landmark hull; ``none``: no inpainting;
    ``poisson``: cv2 seamless cloning, ``alpha``: a plain paste). The exported card carries them
    as the swapper's defaults, so a study can ablate a stage per run; ``options=`` overrides them."""

    reenact: Literal["net", "warp"] = "net"
    segment: Literal["net", "hull"] = "net"
    inpaint: Literal["net", "none"] = "net"
    blend: Literal["learned", "poisson", "alpha"] = "learned"


@dataclass
class FSGANConfig:
    """FSGAN's sizes and switches.

    - ``reenactor_widths`` / ``inpainter_widths``: the U-Nets' channels per level (the paper's
      generators are pix2pixHD-sized; these are the shared U-Net's).
    - ``heatmap_sigma``: landmark heatmap spread in pixels at ``resolution``.
    - ``iterations``: reenactment steps along interpolated landmarks (1 = one jump);
      ``iterative`` switches the walk on (training and swapping; the ablation turns it off).
    - ``discriminator``: the multi-scale patch discriminator of the reenactment training.
    """

    name: str = "fsgan-256"
    arch: Literal["fsgan"] = "fsgan"
    resolution: int = 256
    reenactor_widths: tuple[int, ...] = (64, 128, 256, 512, 512, 512)
    inpainter_widths: tuple[int, ...] = (64, 128, 256, 512, 512, 512)
    heatmap_sigma: float = 4.0
    iterative: bool = True
    iterations: int = 3
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DiscriminatorConfig(n_layers=3, scales=3))
    discriminator_part: str = "multiscale"
    stages: FSGANStagesConfig = field(default_factory=FSGANStagesConfig)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"model.iterations must be >= 1, got {self.iterations}")
        if self.heatmap_sigma <= 0:
            raise ConfigError(f"model.heatmap_sigma must be positive, got {self.heatmap_sigma}")
        for key in ("reenactor_widths", "inpainter_widths"):
            widths = tuple(getattr(self, key))
            if len(widths) < 2 or self.resolution % 2 ** (len(widths) - 1):
                raise ConfigError(
                    f"model.{key}: {len(widths)} levels need a resolution divisible by 2^{len(widths) - 1}"
                )

    @property
    def steps(self) -> int:
        """Reenactment steps actually taken."""
        return self.iterations if self.iterative else 1


#: The paper's size (256 px) with six-level U-Nets and a 3-scale discriminator: for GPUs.
register_preset("model", "fsgan-256", FSGANConfig)
#: For this CPU: 64 px, narrow four-level U-Nets, a 2-scale discriminator, two reenactment steps.
register_preset(
    "model",
    "fsgan-tiny",
    FSGANConfig,
    resolution=64,
    reenactor_widths=(16, 32, 64, 64),
    inpainter_widths=(16, 32, 48, 48),
    heatmap_sigma=1.5,
    iterations=2,
    discriminator=dict(dims=16, n_layers=3, scales=2),
)


@MODELS.register("fsgan")
class FSGAN(nn.Module):
    """The two trained generators: ``reenactor`` and ``inpainter`` (segmentation and blending are the
    masks issue's built networks, loaded by the swapper)."""

    config_type = FSGANConfig

    def __init__(self, config: FSGANConfig) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.reenactor = Reenactor(tuple(config.reenactor_widths))
        self.inpainter = Inpainter(tuple(config.inpainter_widths), blur_sigma=config.resolution / 16)

    def heatmaps(self, landmarks: Tensor) -> Tensor:
        return landmark_heatmaps(landmarks, self.resolution, self.config.heatmap_sigma)

    def reenact_steps(
        self, source: Tensor, source_landmarks: Tensor, target_landmarks: Tensor, steps: int | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Every step's (face, mask), the last in the target's pose; each step reenacts the previous
        step's face to the next interpolated landmarks."""
        steps = self.config.steps if steps is None else steps
        face, out, previous = source, [], self.heatmaps(source_landmarks)
        for points in interpolated_landmarks(source_landmarks, target_landmarks, steps):
            heatmaps = self.heatmaps(points)
            face, mask = self.reenactor(face, previous, heatmaps)
            out.append((face, mask))
            previous = heatmaps
        return out

    def reenact(
        self, source: Tensor, source_landmarks: Tensor, target_landmarks: Tensor, steps: int | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.reenact_steps(source, source_landmarks, target_landmarks, steps)[-1]

    def forward(self, source: Tensor, source_landmarks: Tensor, target_landmarks: Tensor) -> tuple[Tensor, Tensor]:
        return self.reenact(source, source_landmarks, target_landmarks)


# ---------------------------------------------------------------- the swapper

#: Each stage's choices: the network first, its classical stand-in second.
STAGE_CHOICES: dict[str, tuple[str, ...]] = {
    "reenact": ("net", "warp"),
    "segment": ("net", "hull"),
    "inpaint": ("net", "none"),
    "blend": ("learned", "poisson", "alpha"),
    "iterative": ("on", "off"),
}


@SWAPPERS.register("fsgan")
class FSGANSwapper(Swapper):
    """An exported FSGAN. Its source is a face, not an embedding: ``source_code(crop, landmarks)``
    packs the aligned source crop and its landmarks into one row, which ``swap`` takes as
    ``source``; ``swap`` needs each target's landmarks (``landmarks=``, crop pixels).

    Options (``configure``; defaults from the card's ``model.stages``): ``reenact=net|warp``,
    ``segment=net|hull``, ``inpaint=net|none``, ``blend=learned|poisson|alpha``, ``iterative=on|off``. Targets
    whose landmarks are missing or not finite come back unchanged with an empty mask, counted in
    ``faces_without_landmarks``.
    """

    reconstruction_sides: tuple[str, ...] = ()  # its source is a photo, never an embedding
    takes_source_face = True
    uses_landmarks = True

    def __init__(self, model: nn.Module, card: dict[str, Any]) -> None:
        super().__init__(model, card)
        stages = model.config.stages
        self.stages = {k: getattr(stages, k) for k in ("reenact", "segment", "inpaint", "blend")}
        self.iterative = bool(model.config.iterative)
        self.faces_without_landmarks = 0
        self.last_hole_share = 0.0  # share of the crop the inpainter filled in the last batch
        self._built: dict[str, nn.Module] = {}  # segmenter, blender: loaded on first use, kept out of the module tree

    @classmethod
    def from_card(cls, card: dict[str, Any], weights: dict[str, Tensor]) -> Swapper:
        if card.get("arch") != "fsgan":
            from swaplab.models.card import CardError

            raise CardError(f"the card names the fsgan swapper but holds a {card.get('arch')} model, not an FSGAN one")
        return super().from_card(card, weights)

    def configure(self, **options: Any) -> None:
        for key, value in options.items():
            if key not in STAGE_CHOICES:
                valid = ", ".join(f"{k} ({'|'.join(v)})" for k, v in STAGE_CHOICES.items())
                raise ValueError(f"an FSGAN model takes the options {valid}, got {key}")
            text = str(value).strip().lower()
            if text not in STAGE_CHOICES[key]:
                raise ValueError(f"{key} must be one of {', '.join(STAGE_CHOICES[key])}, got {value!r}")
            if key == "iterative":
                self.iterative = text == "on"
            else:
                self.stages[key] = text

    # ------------------------------------------------------------ the source

    def source_code(self, crop: np.ndarray, landmarks: np.ndarray) -> Tensor:
        """(1, 3*R*R + 136): the aligned source crop (uint8 RGB R x R x 3) and its 68 landmarks."""
        size = self.resolution
        if crop.shape != (size, size, 3):
            raise ValueError(f"the source crop must be {size}x{size}x3, got {crop.shape}")
        points = np.asarray(landmarks, np.float32)
        if points.shape != (LANDMARKS, 2) or not np.isfinite(points).all():
            raise ValueError("the source face needs 68 finite landmarks")
        image = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div(255.0)
        return torch.cat([image.reshape(-1), torch.from_numpy(points).reshape(-1)])[None]

    def _unpack(self, source: Tensor | None, count: int) -> tuple[Tensor, Tensor]:
        size = self.resolution
        if source is None:
            raise ValueError("an FSGAN model swaps in any person: give a photo of the source person (source=PHOTO)")
        if source.ndim != 2 or source.shape[1] != 3 * size * size + 2 * LANDMARKS:
            raise ValueError(f"an FSGAN source is a packed face (see source_code), got {tuple(source.shape)}")
        if len(source) == 1:
            source = source.expand(count, -1)
        image = source[:, : 3 * size * size].reshape(-1, 3, size, size)
        return image, source[:, 3 * size * size :].reshape(-1, LANDMARKS, 2)

    # ------------------------------------------------------------ the stages

    def reenact(self, source: Tensor, source_landmarks: Tensor, target_landmarks: Tensor) -> tuple[Tensor, Tensor]:
        if self.stages["reenact"] == "warp":
            warped = [
                tps_warp(s.permute(1, 2, 0).float().cpu().numpy(), sl.cpu().numpy(), tl.cpu().numpy())
                for s, sl, tl in zip(source, source_landmarks, target_landmarks)
            ]
            faces = torch.from_numpy(np.stack(warped)).permute(0, 3, 1, 2).to(source)
            return faces, hull_masks(target_landmarks, self.resolution).to(source)
        steps = self.model.config.iterations if self.iterative else 1
        return self.model.reenact(source, source_landmarks, target_landmarks, steps)

    def segment(self, targets: Tensor, target_landmarks: Tensor) -> Tensor:
        """(N, 1, R, R) the target's face region (where the swapped face goes)."""
        if self.stages["segment"] == "hull":
            return hull_masks(target_landmarks, self.resolution).to(targets)
        from swaplab.models.segmentation import FACE, load_face_segmenter

        if "segmenter" not in self._built:
            self._built["segmenter"] = load_face_segmenter()
        net = self._built["segmenter"].to(targets.device)
        return net.segment(targets.float())[:, FACE : FACE + 1].to(targets)

    def inpaint(self, face: Tensor, face_mask: Tensor, region: Tensor) -> Tensor:
        """``face`` completed where the target's region is but the reenacted face is not."""
        if self.stages["inpaint"] == "none":
            return face
        hole = ((region > 0.5) & (face_mask < 0.5)).to(face.dtype)
        self.last_hole_share = float(hole.mean())
        return self.model.inpainter(face, hole)

    def blend(self, targets: Tensor, faces: Tensor, region: Tensor) -> Tensor:
        """The completed faces merged into the target crops inside ``region``: the learned blender's
        colour correction (the masks issue's network), Poisson cloning, or none (``alpha``: the swap
        stage's paste does the rest)."""
        mode = self.stages["blend"]
        if mode == "alpha":
            return faces
        if mode == "poisson":
            return torch.stack(
                [_poisson(f, t, r) for f, t, r in zip(faces.float(), targets.float(), region.float())]
            ).to(faces)
        from swaplab.models.learned_blend import load_learned_blender

        if "blender" not in self._built:
            self._built["blender"] = load_learned_blender()
        net = self._built["blender"].to(targets.device)
        side = net.resolution
        small = [F.interpolate(x.float(), size=(side, side), mode="area") for x in (targets, faces, region)]
        delta = F.interpolate(net(*small), size=faces.shape[-2:], mode="bilinear", align_corners=False)
        return (faces.float() + delta).clamp(0, 1).to(faces)

    def swap(
        self,
        targets: Tensor,
        source: Tensor | None = None,
        generator: torch.Generator | None = None,
        landmarks: Tensor | None = None,
    ) -> SwapOutput:
        count = len(targets)
        if landmarks is None:
            raise ValueError("an FSGAN swap needs each target's 68 landmarks (landmarks=, crop pixels)")
        landmarks = landmarks.reshape(count, LANDMARKS, 2).to(targets.device, torch.float32)
        image, source_landmarks = self._unpack(source.to(targets.device) if source is not None else None, count)
        image = image.to(targets.dtype)
        usable = torch.isfinite(landmarks).all(dim=2).all(dim=1)
        rgb, mask = targets.clone(), torch.zeros_like(targets[:, :1])
        self.faces_without_landmarks += int((~usable).sum())
        if usable.any():
            keep = usable.nonzero()[:, 0]
            face, face_mask = self.reenact(image[keep], source_landmarks[keep], landmarks[keep])
            region = self.segment(targets[keep], landmarks[keep])
            face = self.inpaint(face.to(targets.dtype), face_mask.to(targets.dtype), region)
            face = self.blend(targets[keep], face, region)
            rgb[keep] = face.to(rgb.dtype)
            mask[keep] = region.to(mask.dtype)
        return SwapOutput(rgb, mask)

    def reconstruct(self, faces: Tensor, side: str, identity: Tensor | None = None) -> SwapOutput:
        raise ValueError("an FSGAN model reconstructs a face from another photo of its person, not from an embedding")
