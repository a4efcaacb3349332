"""The ``diffusion`` swapper kind: a DDPM swaps a face by denoising the aligned target, steered to the source.

Each swap mode is a switch of ``DiffusionSwapSettings`` (``options={swap.strength: 0.6, ...}`` on
``swaplab swap``), so a study can ablate it:

- SDEdit start (Meng et al. 2022, "SDEdit"): the target is noised to ``t0 = swap.strength`` of the
  schedule and denoised by the configured sampler, keeping its pose, expression and lighting;
- masking (DiffFace's, Kim et al. 2022, "DiffFace: Diffusion-based Face Swapping with Facial
  Guidance"): after every step the target, noised to the next step's level, replaces the sample
  outside the template's face mask, so the background and hair stay the target's;
- identity guidance: while t / T lies in [``guidance_to``, ``guidance_from``], eps is moved by
  ``guidance * sqrt(1 - abar_t) * grad_x (1 - cos(id(x0_hat), id_source))`` (classifier guidance with
  the identity network as the classifier; ``id`` is the model's named identity network, differentiated
  through the U-Net and the network);
- structure guidance (DiffFace's facial guidance, with swaplab's face segmenter as the parser):
  in the same window, eps is also moved by ``structure * sqrt(1 - abar_t) * grad_x
  sum_c ||P_c(x0_hat) - P_c(target)||^2 / pixels``, where ``P`` is the built face segmenter's class
  probabilities (background, face, occluder, ...), so the swap keeps the target's face shape,
  hairline and occluders while identity guidance pulls towards the source;
- identity conditioning (conditioned models): the source embedding is the condition, with
  classifier-free scale ``cfg_scale``.

It must not detect, align or blend: the swap pipeline does that around it, as for every model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from swaplab.config import ConfigError, apply_overrides, from_dict
from swaplab.models.diffusion import DDPM
from swaplab.models.samplers import SamplerConfig
from swaplab.models.swapper import SWAPPERS, SwapOutput, Swapper

__all__ = ["DiffusionSwapSettings", "DiffusionSwapper", "structure_distance", "template_face_mask"]

Tensor = torch.Tensor


@dataclass
class DiffusionSwapSettings:
    strength: float = 0.6  # t0: the share of the schedule the target is noised to, in (0, 1]
    masking: bool = True  # re-inject the target outside the face mask after every step
    guidance: float = 0.0  # identity-guidance weight (0: off)
    structure: float = 0.0  # structure-guidance weight, through the built face segmenter (0: off)
    guidance_from: float = 1.0  # both guidances act while guidance_to <= t / T <= guidance_from
    guidance_to: float = 0.0
    cfg_scale: float = 1.0  # conditioned models: classifier-free scale (1: conditional, 0: unconditional)
    mask_blur: float = 0.06  # feather of the face mask, as a share of the crop side
    # Seeds the draws of a swap called without a generator: the same faces give the same swap, so an
    # evaluation repeats (unseeded, 20 pairs' pose error moved by 4 degrees between two runs) and a
    # video's batches share their noise.
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.strength <= 1:
            raise ConfigError(f"swap.strength (t0) must be in (0, 1], got {self.strength}")
        if self.guidance < 0 or self.structure < 0 or not 0 <= self.guidance_to <= self.guidance_from <= 1:
            raise ConfigError(
                "swap.guidance and swap.structure must be >= 0 and 0 <= swap.guidance_to <= swap.guidance_from <= 1"
            )


def template_face_mask(template: str, size: int, blur: float = 0.06) -> np.ndarray:
    """(size, size) float32 in [0, 1]: an ellipse over the mean face's brows, eyes, nose, mouth and chin
    in a crop aligned with ``template``, feathered by ``blur`` * size."""
    from swaplab.faces.align import DLIB_MEAN_FACE_68, TEMPLATES

    spec = TEMPLATES.get(template)
    unit = DLIB_MEAN_FACE_68[17:]
    points = ((unit - 0.5 - np.asarray(spec.shift)) / (1.0 + 2.0 * spec.padding) + 0.5) * size - 0.5
    left, right = points[:, 0].min(), points[:, 0].max()
    top, bottom = points[:, 1].min(), points[:, 1].max()
    height = bottom - top
    centre = ((left + right) / 2, top - 0.15 * height + (1.45 * height) / 2)  # brows - 15% to chin (+30%)
    axes = (max(1, round(0.58 * (right - left))), max(1, round(1.45 * height / 2)))
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (round(centre[0]), round(centre[1])), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    sigma = blur * size
    if sigma > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma)
    return np.clip(mask, 0, 1)


def structure_distance(parsed: Tensor, target: Tensor) -> Tensor:
    """(N,) mean over pixels of the squared difference of two class-probability maps (N, C, H, W)."""
    return (parsed - target).square().sum(dim=1).flatten(1).mean(dim=1)


@SWAPPERS.register("diffusion")
class DiffusionSwapper(Swapper):
    """A ``DDPM`` behind the swapper contract (see the module docstring)."""

    reconstruction_sides = ("self",)

    def __init__(self, model: DDPM, card: dict[str, Any]) -> None:
        super().__init__(model, card)
        defaults = card.get("diffusion") or {}
        self.settings = from_dict(DiffusionSwapSettings, defaults.get("swap") or {})
        if defaults.get("sampler"):
            model.sampler_config = from_dict(SamplerConfig, defaults["sampler"])
        self._identity: Any = None
        self._segmenter: Any = None
        self._mask_cache: dict[float, Tensor] = {}

    @property
    def ddpm(self) -> DDPM:
        return self.model  # type: ignore[return-value]

    def configure(self, **options: Any) -> None:
        """``sampler``, ``sampler.KEY`` (the model's) and ``swap.KEY`` (``DiffusionSwapSettings``) options."""
        sampler = {k: v for k, v in options.items() if k == "sampler" or k.startswith("sampler.")}
        swap = {k: v for k, v in options.items() if k not in sampler}
        words = []
        for key, value in swap.items():
            if not key.startswith("swap."):
                raise ConfigError(f"unknown option {key!r}: a diffusion model takes sampler, sampler.KEY and swap.KEY")
            words.append(f"{key.removeprefix('swap.')}={value}")
        self.settings = apply_overrides(self.settings, words)
        self.ddpm.configure(**sampler)

    def face_mask(self, device: torch.device) -> Tensor:
        blur = self.settings.mask_blur
        if blur not in self._mask_cache:
            mask = template_face_mask(self.template, self.resolution, blur)
            self._mask_cache[blur] = torch.from_numpy(mask)[None, None]
        return self._mask_cache[blur].to(device)

    def identity_network(self) -> Any:
        """The named identity network on aligned crops (differentiable), loaded on first use."""
        if self._identity is None:
            from swaplab.models.simswap import TemplateChipIdentity

            self._identity = TemplateChipIdentity(self.template, self.resolution, self.conditions_on or "dlib-resnet")
        return self._identity.to(next(self.model.parameters()).device)

    def structure_network(self) -> Any:
        """The built face segmenter (``swaplab nets build face-segmenter``), frozen, loaded on first use."""
        if self._segmenter is None:
            from swaplab.models.segmentation import load_face_segmenter

            self._segmenter = load_face_segmenter()
        return self._segmenter.to(next(self.model.parameters()).device)

    def swap(
        self, targets: Tensor, source: Tensor | None = None, generator: torch.Generator | None = None
    ) -> SwapOutput:
        settings, model = self.settings, self.ddpm
        if source is None and (model.conditioned or settings.guidance > 0):
            raise ValueError(
                f"this diffusion model swaps in any person: give the source's {self.conditions_on} embedding "
                "(swap: source=PHOTO)"
            )
        # The swap pipeline runs models under inference mode; guidance needs gradients, so leave it here.
        with torch.inference_mode(False), torch.enable_grad():
            target = targets.detach().clone().float().contiguous()
            identity = None
            if source is not None:
                # One source for every target, or one per target (the evaluator's self-reconstruction
                # conditions each target on its own identity): rows are identities, never flattened.
                identity = source.detach().clone().float()
                identity = identity.reshape(1, -1) if identity.ndim == 1 else identity.flatten(1)
                if len(identity) not in (1, len(target)):
                    raise ValueError(f"{len(identity)} source identities for {len(target)} targets: give 1 or one each")
            if identity is not None and not torch.isfinite(identity).all():
                raise ValueError("the source identity holds non-finite numbers")
            if generator is None:
                generator = torch.Generator().manual_seed(settings.seed)
            return self._swap(target, identity, generator)

    def _swap(self, target: Tensor, identity: Tensor | None, generator: torch.Generator | None) -> SwapOutput:
        settings, model = self.settings, self.ddpm
        schedule = model.schedule
        sampler = model.sampler()
        steps = sampler.timesteps(settings.strength)
        abar = schedule.alphas_cumprod
        pixel_mask = self.face_mask(target.device).expand(len(target), 1, -1, -1)
        with torch.no_grad():
            start = model.to_diffusion(target)  # pixels in [-1, 1], or a latent model's code
        # The mask in the diffused space (a latent model's code is smaller than the image).
        mask = torch.nn.functional.interpolate(pixel_mask, size=start.shape[-2:], mode="area")

        def noise() -> Tensor:
            return model.noise(tuple(start.shape), generator)

        condition = identity if model.conditioned else None
        base_eps = model.guided_eps(condition, settings.cfg_scale)
        top = schedule.train_timesteps - 1

        target_structure = None
        if settings.structure > 0:
            with torch.no_grad():
                target_structure = self.structure_network().segment(target)

        def eps_fn(x: Tensor, t: int) -> Tensor:
            in_window = settings.guidance_to <= t / top <= settings.guidance_from
            if not in_window or (settings.guidance <= 0 and target_structure is None):
                with torch.no_grad():
                    return base_eps(x, t).float()
            x = x.detach().requires_grad_(True)
            eps = base_eps(x, t).float()
            x0 = model.from_diffusion(schedule.predict_x0(x, t, eps)).clamp(0, 1)
            loss = x0.new_zeros(())
            if settings.guidance > 0:
                embedding = self.identity_network()(x0)
                distance = 1 - torch.nn.functional.cosine_similarity(embedding, identity.expand_as(embedding), dim=-1)
                loss = loss + settings.guidance * distance.sum()
            if target_structure is not None:
                parsed = self.structure_network().segment(x0)
                loss = loss + settings.structure * structure_distance(parsed, target_structure).sum()
            (grad,) = torch.autograd.grad(loss, x)
            return (eps + math.sqrt(1 - float(abar[t])) * grad).detach()

        def reinject(x: Tensor, t_next: int) -> Tensor:
            known = start if t_next < 0 else schedule.q_sample(start, t_next, noise())
            return mask * x + (1 - mask) * known

        x = schedule.q_sample(start, steps[0], noise())
        x = sampler.run(eps_fn, x, generator, settings.strength, reinject if settings.masking else None)
        with torch.no_grad():
            rgb = model.from_diffusion(x.detach()).clamp(0, 1)
        if settings.masking and tuple(start.shape[-2:]) != tuple(target.shape[-2:]):
            # A latent model re-injects codes, which its decoder does not give back exactly: the
            # target's own pixels are put back outside the mask.
            rgb = pixel_mask * rgb + (1 - pixel_mask) * target
        return SwapOutput(rgb, pixel_mask if settings.masking else torch.ones_like(pixel_mask))

    def reconstruct(self, faces: Tensor, side: str, identity: Tensor | None = None) -> SwapOutput:
        self._check_side(side)
        return self.swap(faces, identity)
