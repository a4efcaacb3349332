"""What every recipe of the generative-model zoo shares: image data, pictures, held-out numbers, the card.

A zoo recipe subclasses ``GenerativeRecipe`` and writes ``build`` and ``train_step``; its run config
holds ``model`` (with ``channels``, ``resolution`` and, for conditional models, ``num_classes`` that
must fit the data), ``data`` (``ImageDataConfig``: ``data=digits``, ``data=mnist``, ``data=faces32``
...), ``trainer`` and ``run_dir``. Previews show held-out reconstructions, samples from fixed noise
and, for conditional models, a class per row. Validation measures the held-out reconstruction
error and the Fréchet distance of samples to held-out images in a pixel PCA space fitted on the
training images (the zoo study adds the identity network's features for faces).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, config_group
from swaplab.models.generative import GenerativeModel
from swaplab.train.config import TEST_SETTINGS, register_trainer
from swaplab.train.data import stream_seed
from swaplab.train.image_data import ImageData, ImageDataConfig
from swaplab.train.preview import compose_grid, save_preview, to_hwc
from swaplab.train.recipe import GanPair, Recipe
from swaplab.train.session import apply_gradients

Tensor = torch.Tensor

# -- presets every zoo model shares -------------------------------------------------------------
DATA_PRESETS = config_group("data")
DATA_PRESETS.register("digits")(functools.partial(ImageDataConfig, source="digits"))
DATA_PRESETS.register("mnist")(functools.partial(ImageDataConfig, name="mnist", source="mnist", holdout=256))
for _side in (32, 64):
    DATA_PRESETS.register(f"faces{_side}")(
        functools.partial(ImageDataConfig, name=f"faces{_side}", source="faceset", resolution=_side, channels=3)
    )
#: A few CPU-minutes per model on digits or 32 px faces.
register_trainer("zoo", steps=3000, batch_size=64, optimizer="adam", lr=1e-3, log_every=25, preview_every=500,
                 checkpoint_every=500, keep_last=2)  # fmt: skip
register_trainer("zoo-test", like="zoo", steps=6, batch_size=16, checkpoint_every=3, **TEST_SETTINGS)


#: Fixed seeds of the pictures: every preview of a run, and every run of a study, shows the same draws.
PREVIEW_SEED = 1234
PREVIEW_ROWS = 8
#: The seed of the validation's samples (as many as held-out images), so a study can draw them again.
VALIDATION_SEED = PREVIEW_SEED + 1
#: The validation's feature space: the top principal directions of the first training images' pixels.
PIXEL_PCA_IMAGES = 2048
PIXEL_PCA_DIMS = 32


def pixel_feature_space(data: ImageData) -> Callable[[Tensor], np.ndarray]:
    """``images -> (N, <= PIXEL_PCA_DIMS)`` features in which the zoo measures Frechet distances: the
    projection onto the top principal directions of ``data``'s first training images (fixed for a
    run, so its numbers compare across steps; the zoo study recomputes them in the same space)."""
    from swaplab.models.zoo.pca import fit_pca

    train = data.images[:PIXEL_PCA_IMAGES].float().div(255.0)
    dims = min(PIXEL_PCA_DIMS, len(train), int(np.prod(train.shape[1:])))
    mean, components = fit_pca(train.double(), dims)

    def features(images: Tensor) -> np.ndarray:
        return ((images.reshape(len(images), -1).double().cpu() - mean) @ components.T).numpy()

    return features


class GenerativeRecipe(Recipe):
    """Data, pictures, validation and export for a ``GenerativeModel``; subclasses write the step."""

    rate_key = "images_per_s"

    def __init__(self, cfg: Any, session: Any) -> None:
        super().__init__(cfg, session)
        model, data = cfg.model, cfg.data.resolved(cfg.model)
        if (model.channels, model.resolution) != (data.channels, data.resolution):
            raise ConfigError(
                f"data.channels={data.channels} and data.resolution={data.resolution} differ from the model's "
                f"{model.channels} and {model.resolution}: leave them at 0 (the model's), or change the model's"
            )
        self.data = ImageData(data)
        if getattr(model, "num_classes", 0) and model.num_classes < self.data.num_classes:
            raise ConfigError(f"model.num_classes={model.num_classes}, the data has {self.data.num_classes} classes")
        self._features: Callable[[Tensor], np.ndarray] | None = None

    @property
    def model(self) -> GenerativeModel:
        return self.module  # type: ignore[return-value]

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """This rank's images (N, C, R, R) in [0, 1] and labels for ``step``, on the device."""
        session = self.session
        images, labels = self.data.batch(step, session.trainer.batch_size, session.dist.rank, session.dist.world_size)
        images = images.to(session.device).contiguous(memory_format=session.memory_format)
        return images, labels.to(session.device)

    def apply_gradients(self, optimizer: str, loss: Tensor) -> tuple[bool, float]:
        """Step the optimizer named ``optimizer`` on gradients already computed from ``loss``:
        averaged across processes (the zoo's models are not wrapped in DistributedDataParallel),
        clipped, skipped when not finite. Returns (applied, gradient norm)."""
        session = self.session
        return apply_gradients(
            self.optimizers[optimizer],
            loss.detach(),
            session.trainer.grad_clip,
            session.dist.world_size,
            average=session.dist.active,
        )

    def data_hashes(self) -> dict[str, Any]:
        return {"images": self.data.content_hash()}

    # ------------------------------------------------------------ pictures

    @torch.no_grad()
    def pictures(self) -> dict[str, Tensor]:
        """The preview's rows by name: held-out originals and reconstructions, samples, per-class samples."""
        model, rows = self.model, PREVIEW_ROWS
        caps = set(model.capabilities)
        out: dict[str, Tensor] = {}
        device = self.session.device
        with self.session.autocast():
            if "reconstruct" in caps:
                held, _ = self.data.heldout(rows)
                out["held out"] = held
                out["reconstruction"] = model.reconstruct(held.to(device)).float().cpu()
            if "sample" in caps:
                generator = torch.Generator().manual_seed(PREVIEW_SEED)
                labels = torch.arange(rows) % max(1, model.num_classes) if "conditional" in caps else None
                out["samples"] = model.sample(rows, generator, labels).float().cpu()
        return {k: v.clamp(0, 1) for k, v in out.items()}

    def preview(self, step: int) -> Path | None:
        pictures = self.pictures()
        if not pictures:
            return None
        columns = [to_hwc(images) for images in pictures.values()]
        size = max(64, columns[0].shape[1])
        columns = [np.stack([_upscale(i, size) for i in c]) for c in columns]
        grid = compose_grid(columns, names=tuple(pictures), title=f"step {step}")
        return save_preview(grid, self.session.previews, step, model_id=f"swaplab-{self.name}-training")

    # ------------------------------------------------------------ held-out numbers

    def _pixel_features(self, images: Tensor) -> np.ndarray:
        if self._features is None:
            self._features = pixel_feature_space(self.data)
        return self._features(images)

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        model, caps = self.model, set(self.model.capabilities)
        held, labels = self.data.heldout()
        values: dict[str, float] = {}
        if "reconstruct" in caps:
            recon = torch.cat([model.reconstruct(held[i : i + 256].to(self.session.device)).float().cpu()
                               for i in range(0, len(held), 256)])  # fmt: skip
            values["val/reconstruction_mse"] = float(((recon.clamp(0, 1) - held) ** 2).mean())
        if "sample" in caps and len(held) >= 8:
            generator = torch.Generator().manual_seed(VALIDATION_SEED)
            given = labels if "conditional" in caps else None
            samples = model.sample(len(held), generator, given).float().cpu().clamp(0, 1)
            values.update(self.sample_distances(samples, held))
        return values

    def sample_distances(self, samples: Tensor, held: Tensor) -> dict[str, float]:
        """How far validation samples are from the held-out images: the Frechet distance in the
        data's pixel feature space (families add their own spaces)."""
        from swaplab.metrics import frechet_distance

        return {"val/fd_pixels": float(frechet_distance(self._pixel_features(samples), self._pixel_features(held)))}

    # ------------------------------------------------------------ export

    @classmethod
    def export(cls, cfg: Any, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
        from swaplab.models.card import build_model

        super().export(cfg, tensors, out_dir, state)
        from swaplab.config import to_dict

        model = build_model({"arch": cfg.model.arch, "model": to_dict(cfg.model)})
        return {
            "swapper": None,
            "generative": {
                "capabilities": list(model.capabilities),
                "image_shape": list(model.image_shape),
                "num_classes": model.num_classes,
                "data": cfg.data.resolved(cfg.model).source,
            },
            "conventions": "images (N, C, R, R) float in [0, 1]; see swaplab.models.generative",
        }


class TwoPlayerRecipe(GenerativeRecipe):
    """A ``GenerativeRecipe`` whose module is a ``GanPair``: the generative model (``generator.*``, the one
    exported) and its discriminator(s) (``discriminator.*``, trained here, left in the run). Subclasses write
    ``build_players`` and ``train_step``; ``update`` applies one player's loss (gradients averaged across
    processes, as the gradient penalty's double backward rules out DDP), ``frozen_discriminator`` keeps D's
    weights out of G's backward pass."""

    def build_players(self) -> tuple[GenerativeModel, nn.Module]:
        raise NotImplementedError

    def build(self) -> nn.Module:
        return GanPair(*self.build_players())  # type: ignore[arg-type]

    @property
    def model(self) -> GenerativeModel:
        return self.module.generator  # type: ignore[union-attr, return-value]

    @property
    def discriminator(self) -> nn.Module:
        return self.module.discriminator  # type: ignore[union-attr, return-value]

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        return {
            "generator": [{"params": list(module.generator.parameters())}],
            "discriminator": [{"params": list(module.discriminator.parameters())}],
        }

    def step_generator(self, name: str, step: int) -> torch.Generator:
        """A CPU generator seeded by (run seed, ``name``, step, rank): the step's draws, whatever came before."""
        session = self.session
        return torch.Generator().manual_seed(stream_seed(name, session.trainer.seed, step, session.dist.rank))

    def update(self, player: str, loss: Tensor) -> tuple[bool, float]:
        """Backpropagate ``loss`` and step the optimiser of ``player`` (``generator`` or ``discriminator``)."""
        loss.backward()
        return self.apply_gradients(player, loss)

    @contextlib.contextmanager
    def frozen_discriminator(self) -> Iterator[None]:
        self.discriminator.requires_grad_(False)
        try:
            yield
        finally:
            self.discriminator.requires_grad_(True)

    @classmethod
    def export(cls, cfg: Any, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
        generator = GanPair.generator_weights(tensors)
        return super().export(cfg, generator, out_dir, state)


def _upscale(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.shape[0] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
