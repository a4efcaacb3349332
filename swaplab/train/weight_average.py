"""An exponential moving average of a module's weights, kept in the run's checkpoints.

Diffusion models sample noticeably better from averaged weights than from the last ones (Ho et al.
2020 average with decay 0.9999; diffusers' ``EMAModel`` does the same with a warm-up): the
noise-regression loss is noisy from step to step, and the average smooths what a constant learning
rate leaves. ``WeightAverage`` is a module of buffers only, so the optimiser never sees it and the
run's one state dict (under the name the recipe attaches it as) carries it through checkpoints and
exact resume. The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a
short run's average is not dominated by its first weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

Tensor = torch.Tensor


def _buffer_name(parameter: str) -> str:
    return parameter.replace(".", "__")  # buffer names cannot hold dots


def _parameter_name(buffer: str) -> str:
    return buffer.replace("__", ".")


class WeightAverage(nn.Module):
    """The average of the parameters of ``module`` whose names ``include`` accepts."""

    def __init__(self, module: nn.Module, decay: float, include: Callable[[str], bool] = lambda name: True) -> None:
        super().__init__()
        if not 0 < decay < 1:
            raise ValueError(f"an average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [name for name, _ in module.named_parameters() if include(name)]
        if any("__" in name for name in self.names):
            raise ValueError("parameter names with '__' cannot be averaged (the buffers' names use it for dots)")
        for name, parameter in module.named_parameters():
            if include(name):
                self.register_buffer(_buffer_name(name), parameter.detach().clone())
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def _pairs(self, module: nn.Module) -> Iterator[tuple[Tensor, Tensor]]:
        parameters = dict(module.named_parameters())
        for name in self.names:
            yield getattr(self, _buffer_name(name)), parameters[name]

    @torch.no_grad()
    def restart_from(self, module: nn.Module) -> None:
        """Set the average to ``module``'s weights and restart the warm-up."""
        for average, parameter in self._pairs(module):
            average.copy_(parameter)
        self.updates.zero_()

    @torch.no_grad()
    def update(self, module: nn.Module) -> float:
        """Move the average towards ``module``'s weights; returns the decay used."""
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for average, parameter in self._pairs(module):
            average.lerp_(parameter.detach().to(average.dtype), 1 - decay)
        self.updates += 1
        return decay

    @contextlib.contextmanager
    def swapped_into(self, module: nn.Module) -> Iterator[None]:
        """``module`` holds the averaged weights inside the block and its own again after it."""
        live = [parameter.detach().clone() for _, parameter in self._pairs(module)]
        with torch.no_grad():
            for average, parameter in self._pairs(module):
                parameter.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, parameter), kept in zip(self._pairs(module), live, strict=True):
                    parameter.copy_(kept)

    def buffer_key(self, prefix: str, parameter: str) -> str:
        """The state-dict key of ``parameter``'s average when this module sits at ``prefix``."""
        return f"{prefix}.{_buffer_name(parameter)}"


def averaged_tensors(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """A state dict with the average under ``prefix`` (a ``WeightAverage``'s buffers) put in place of
    the weights it averages, and the average's own entries dropped; unchanged when it holds none."""
    start = prefix + "."
    average = {key[len(start) :]: value for key, value in tensors.items() if key.startswith(start)}
    out = {key: value for key, value in tensors.items() if not key.startswith(start)}
    for buffer, value in average.items():
        name = _parameter_name(buffer)
        if buffer != "updates" and name in out:
            out[name] = value
    return out


def fill_missing_average(tensors: dict[str, Tensor], average: WeightAverage, prefix: str) -> dict[str, Tensor]:
    """A checkpoint written without the average (before it existed, or with it off) given one equal
    to its own weights with the warm-up restarted, so such runs resume with averaging on."""
    if any(key.startswith(prefix + ".") for key in tensors):
        return tensors
    out = dict(tensors)
    for name in average.names:
        out[average.buffer_key(prefix, name)] = tensors[name].clone()
    out[f"{prefix}.updates"] = torch.zeros((), dtype=torch.int64)
    return out
