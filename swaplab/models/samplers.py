"""Diffusion samplers by name (``SAMPLERS``), independent of the network that predicts the noise.

A sampler turns an epsilon-prediction function ``eps_fn(x_t, t) -> eps`` (x_t float (N, ...), t an
int timestep of the training schedule) into draws from the model: ``ddpm`` (ancestral, Ho et al.
2020, "Denoising Diffusion Probabilistic Models"), ``ddim`` (Song et al. 2021, "Denoising Diffusion
Implicit Models"; ``eta`` 0 is deterministic, 1 ancestral-like), ``dpm-solver++`` (Lu et al. 2022,
"DPM-Solver++", the second-order multistep form) and ``langevin`` (annealed Langevin dynamics,
Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the Data Distribution", over the
variance-preserving levels). The first three are diffusers' schedulers (``DDPMScheduler``,
``DDIMScheduler``, ``DPMSolverMultistepScheduler``) driven step by step; diffusers has no
annealed-Langevin scheduler for variance-preserving models, so that one is written here.

``Sampler.run`` also starts part-way (SDEdit: ``strength`` of the schedule, diffusers' img2img
convention: ``steps`` spans the whole schedule, ``round(steps * strength)`` of them run) and calls
``after_step(x, t_next)`` after every step (the swap's masking re-injects the target there; t_next
is -1 after the last step). Nothing here knows a network or trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from swaplab.config import ConfigError, choice_field
from swaplab.registry import Registry

__all__ = [
    "SAMPLERS",
    "NoiseSchedule",
    "Sampler",
    "SamplerConfig",
    "langevin_steps",
    "make_sampler",
]

Tensor = torch.Tensor
EpsFn = Callable[[Tensor, int], Tensor]
AfterStep = Callable[[Tensor, int], Tensor]

SAMPLERS: Registry[type[Sampler]] = Registry("sampler")


@dataclass
class NoiseSchedule:
    """The forward process of training: ``beta_t`` for t = 0 .. T-1 (diffusers' names and values).

    ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` with ``abar_t = prod_{s<=t} (1 - beta_s)``;
    the posterior ``q(x_{t-1} | x_t, x_0)`` has mean ``posterior_mean`` and variance
    ``(1 - abar_{t-1}) / (1 - abar_t) * beta_t``. ``clip`` bounds predicted x_0 to [-1, 1] in the
    samplers that offer it (images; off for unbounded data).
    """

    train_timesteps: int = 1000
    beta_schedule: str = "linear"  # linear, scaled_linear, squaredcos_cap_v2 (diffusers' names)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    clip: bool = True

    def __post_init__(self) -> None:
        if self.train_timesteps < 2 or not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError("the noise schedule needs train_timesteps >= 2 and 0 < beta_start < beta_end < 1")

    def diffusers_kwargs(self) -> dict[str, Any]:
        return dict(
            num_train_timesteps=self.train_timesteps,
            beta_schedule=self.beta_schedule,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
        )

    @property
    def betas(self) -> Tensor:
        """(T,) float64, read from diffusers' DDPM scheduler so every sampler shares one schedule."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.diffusers_kwargs()).betas.double()

    @property
    def alphas_cumprod(self) -> Tensor:
        return torch.cumprod(1.0 - self.betas, 0)

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise; ``t`` per sample (N,) or one int."""
        abar = self._per_sample(self.alphas_cumprod, t, x0)
        return (abar.sqrt() * x0 + (1 - abar).sqrt() * noise).to(x0.dtype)

    def predict_x0(self, xt: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """x_0 from x_t and the noise: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        abar = self._per_sample(self.alphas_cumprod, t, xt)
        return ((xt - (1 - abar).sqrt() * eps) / abar.sqrt()).to(xt.dtype)

    def posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, float]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) for t >= 1."""
        if not 1 <= t < self.train_timesteps:
            raise ValueError(f"the posterior is defined for 1 <= t < {self.train_timesteps}, got {t}")
        betas, abar = self.betas, self.alphas_cumprod
        beta, a_t, a_prev = float(betas[t]), float(abar[t]), float(abar[t - 1])
        coef_x0 = math.sqrt(a_prev) * beta / (1 - a_t)
        coef_xt = math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)
        return coef_x0 * x0 + coef_xt * xt, (1 - a_prev) / (1 - a_t) * beta

    @staticmethod
    def _per_sample(values: Tensor, t: Tensor | int, like: Tensor) -> Tensor:
        picked = values[torch.as_tensor(t, dtype=torch.long).cpu()].to(like.device, torch.float32)
        return picked.reshape(-1, *([1] * (like.ndim - 1))) if picked.ndim else picked


@dataclass
class SamplerConfig:
    """Which sampler and how (``sampler=ddim sampler.steps=25`` on ``swaplab sample``)."""

    name: str = choice_field("ddim", SAMPLERS)
    steps: int = 50  # steps over the whole schedule (SDEdit runs strength * steps of them)
    eta: float = 0.0  # ddim: 0 deterministic, 1 as much noise as ancestral sampling
    langevin_steps: int = 2  # langevin: corrector steps per noise level
    snr: float = 0.1  # langevin: step size from the signal-to-noise rule of Song et al. 2021

    def __post_init__(self) -> None:
        if self.steps < 1 or self.langevin_steps < 1:
            raise ConfigError(f"sampler.steps and sampler.langevin_steps must be >= 1, got {self.steps}")
        if not 0 <= self.eta <= 1 or self.snr <= 0:
            raise ConfigError(f"sampler.eta must be in [0, 1] and sampler.snr > 0 (got {self.eta}, {self.snr})")


class Sampler:
    """Base: ``run`` draws x_0 from x at the first of ``timesteps(strength)``."""

    def __init__(self, schedule: NoiseSchedule, config: SamplerConfig) -> None:
        self.schedule = schedule
        self.config = config

    def timesteps(self, strength: float = 1.0) -> list[int]:
        """The descending timesteps a run with ``strength`` (in (0, 1]) visits."""
        raise NotImplementedError

    def run(
        self,
        eps_fn: EpsFn,
        x: Tensor,
        generator: torch.Generator | None = None,
        strength: float = 1.0,
        after_step: AfterStep | None = None,
    ) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _check_strength(strength: float) -> None:
        if not 0 < strength <= 1:
            raise ConfigError(f"the start t0 (swap.strength) must be in (0, 1], got {strength}")


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is not None and generator.device.type != x.device.type:
        return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)


class DiffusersSampler(Sampler):
    """A diffusers scheduler stepped by hand; subclasses say which and with what settings."""

    def scheduler(self) -> Any:
        raise NotImplementedError

    def step_kwargs(self) -> dict[str, Any]:
        return {}

    def _truncated(self, scheduler: Any, strength: float) -> tuple[list[int], int]:
        self._check_strength(strength)
        scheduler.set_timesteps(self.config.steps)
        steps = [int(t) for t in scheduler.timesteps]
        start = len(steps) - max(1, round(len(steps) * strength))
        return steps[start:], start

    def timesteps(self, strength: float = 1.0) -> list[int]:
        return self._truncated(self.scheduler(), strength)[0]

    def run(self, eps_fn, x, generator=None, strength=1.0, after_step=None):
        scheduler = self.scheduler()
        steps, start = self._truncated(scheduler, strength)
        if start and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        x = x.float()
        for index, t in enumerate(steps):
            eps = eps_fn(x, t).float()
            x = scheduler.step(eps, t, x, generator=generator, **self.step_kwargs()).prev_sample.float()
            if after_step is not None:
                x = after_step(x, steps[index + 1] if index + 1 < len(steps) else -1)
        return x


@SAMPLERS.register("ddpm")
class AncestralSampler(DiffusersSampler):
    """Ancestral sampling: x_{t-1} ~ N(posterior mean at the predicted x_0, posterior variance)."""

    def scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.schedule.diffusers_kwargs(), clip_sample=self.schedule.clip)


@SAMPLERS.register("ddim")
class DDIMSampler(DiffusersSampler):
    """DDIM; with eta 0 a deterministic map whose inverse ``invert`` runs the same ODE upwards."""

    def scheduler(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler(**self.schedule.diffusers_kwargs(), clip_sample=self.schedule.clip)

    def step_kwargs(self):
        return {"eta": self.config.eta}

    @torch.no_grad()
    def invert(self, eps_fn: EpsFn, x0: Tensor) -> Tensor:
        """x_T whose eta-0 DDIM decoding is ``x0`` (diffusers' DDIMInverseScheduler: the ODE run upwards)."""
        from diffusers import DDIMInverseScheduler

        scheduler = DDIMInverseScheduler(**self.schedule.diffusers_kwargs(), clip_sample=False)
        scheduler.set_timesteps(self.config.steps)
        x = x0.float()
        for t in scheduler.timesteps:
            x = scheduler.step(eps_fn(x, int(t)).float(), int(t), x).prev_sample.float()
        return x


@SAMPLERS.register("dpm-solver++")
class DPMSolverSampler(DiffusersSampler):
    """DPM-Solver++(2M): a second-order multistep solver of the probability-flow ODE in x_0 form."""

    def scheduler(self):
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler(
            **self.schedule.diffusers_kwargs(), algorithm_type="dpmsolver++", solver_order=2
        )


def langevin_steps(
    x: Tensor,
    score_fn: Callable[[Tensor], Tensor],
    count: int,
    generator: torch.Generator | None,
    *,
    step_size: float | None = None,
    snr: float = 0.1,
) -> Tensor:
    """``count`` unadjusted Langevin steps x <- x + a/2 score(x) + sqrt(a) z towards the density whose
    score is ``score_fn``. ``step_size`` fixes a; else a = 2 (snr |z| / |score|)^2 with the batch's mean norms (the
    predictor-corrector rule of Song et al. 2021, "Score-Based Generative Modeling through SDEs")."""
    for _ in range(count):
        score = score_fn(x).float()
        z = _noise_like(x, generator)
        if step_size is None:
            # Norms averaged over the batch, as Song et al.'s code does: per-sample ratios of
            # low-dimensional draws swing wildly (a near-zero score gives a huge step).
            ratio = z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            a = 2 * (snr * ratio) ** 2
        else:
            a = torch.as_tensor(step_size, device=x.device)
        x = x + 0.5 * a * score + a.sqrt() * z
    return x


@SAMPLERS.register("langevin")
class AnnealedLangevinSampler(Sampler):
    """Annealed Langevin dynamics over ``steps`` noise levels of the variance-preserving schedule.

    At each level t the score of p_t is -eps(x, t) / sqrt(1 - abar_t); ``langevin_steps`` Langevin
    steps sample p_t, then one deterministic DDIM step carries x to the next, less noisy level (the
    levels' data scales differ in the VP process, unlike NCSN's, so the draw must be transported, not
    just kept). The last level's draw is denoised once by its x_0 prediction (Tweedie's formula), as
    NCSN's later versions do. Network evaluations: steps * (langevin_steps + 1).
    """

    def timesteps(self, strength: float = 1.0) -> list[int]:
        self._check_strength(strength)
        top = self.schedule.train_timesteps - 1
        levels = torch.linspace(top, 0, self.config.steps).round().long().unique_consecutive().tolist()
        return [t for t in levels if t <= round(top * strength)] or [0]

    def run(self, eps_fn, x, generator=None, strength=1.0, after_step=None):
        abar = self.schedule.alphas_cumprod
        levels = self.timesteps(strength)
        x = x.float()
        for index, t in enumerate(levels):
            sigma = float((1 - abar[t]).sqrt())
            x = langevin_steps(
                x, lambda v, t=t, s=sigma: -eps_fn(v, t).float() / s, self.config.langevin_steps, generator,
                snr=self.config.snr,
            )  # fmt: skip
            if index + 1 < len(levels):
                # Carry the draw to the next level along the probability-flow ODE (one DDIM step):
                # rescaling x by sqrt(abar_t' / abar_t) alone would blow the noise part up ~150x over
                # the schedule, more than a few Langevin steps per level can pull back.
                eps = eps_fn(x, t).float()
                a_next = float(abar[levels[index + 1]])
                x = math.sqrt(a_next) * self.schedule.predict_x0(x, t, eps) + math.sqrt(1 - a_next) * eps
                if after_step is not None:
                    x = after_step(x, levels[index + 1])
        x = self.schedule.predict_x0(x, levels[-1], eps_fn(x, levels[-1]).float())
        if self.schedule.clip:
            x = x.clamp(-1, 1)
        return after_step(x, -1) if after_step is not None else x


def make_sampler(schedule: NoiseSchedule, config: SamplerConfig) -> Sampler:
    """The sampler ``config.name`` over ``schedule`` (a one-line error listing the names when unknown)."""
    if config.name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {config.name!r}: one of {', '.join(SAMPLERS.names())}")
    return SAMPLERS.get(config.name)(schedule, config)
