"""A new model family needs one recipe and nothing under swaplab/train: a tiny VAE registered here
trains two steps on real faces, resumes, exports and reloads through the shared loop and card."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from swaplab.config import group_field
from swaplab.models.card import load_model
from swaplab.models.factory import MODELS
from swaplab.train.config import TrainerConfig
from swaplab.train.data import PairData, to_float
from swaplab.train.entry import build_config
from swaplab.train.export import export_model
from swaplab.train.loop import train
from swaplab.train.recipe import RECIPES, Recipe, StepResult
from swaplab.train.session import apply_gradients


# ---------------------------------------------------------------- the family: about 60 lines
@dataclass
class ToyVAEConfig:
    name: str = "toy-vae"
    arch: Literal["toy-vae"] = "toy-vae"
    resolution: int = 32
    latent: int = 8


@MODELS.register("toy-vae")
class ToyVAE(nn.Module):
    config_type = ToyVAEConfig

    def __init__(self, config: ToyVAEConfig) -> None:
        super().__init__()
        self.config, pixels = config, 3 * config.resolution**2
        self.encoder = nn.Linear(pixels, 2 * config.latent)
        self.decoder = nn.Linear(config.latent, pixels)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x.flatten(1)).chunk(2, dim=1)
        z = mean + noise * torch.exp(0.5 * log_var)  # the reparameterisation trick
        return torch.sigmoid(self.decoder(z)).view_as(x), mean, log_var


@dataclass
class ToyData:
    name: str = "toy-data"
    faceset: str = ""


@dataclass
class ToyTrainConfig:
    model: ToyVAEConfig = group_field(ToyVAEConfig, "model")
    data: ToyData = field(default_factory=ToyData)
    trainer: TrainerConfig = group_field(TrainerConfig, "trainer")
    run_dir: str = "runs/toy"


@RECIPES.register("toy-vae")
class ToyVAERecipe(Recipe):
    name = "toy-vae"
    config_type = ToyTrainConfig

    def __init__(self, cfg: ToyTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        self.faces = PairData(cfg.data.faceset, cfg.data.faceset, cfg.model.resolution, holdout=0)

    def build(self) -> nn.Module:
        return ToyVAE(self.cfg.model)

    def train_step(self, step: int) -> StepResult:
        batch = self.faces.batch(step, batch_size=self.session.trainer.batch_size)
        x = to_float(batch, self.session.device, False)["src"]
        noise = torch.randn(len(x), self.cfg.model.latent, generator=torch.Generator().manual_seed(step))
        recon, mean, log_var = self.module(x, noise)
        likelihood = F.binary_cross_entropy(recon, x, reduction="sum") / len(x)
        kl = -0.5 * torch.sum(1 + log_var - mean**2 - log_var.exp()) / len(x)
        loss = likelihood + kl
        loss.backward()
        applied, norm = apply_gradients(self.optimizers["model"], loss.detach())
        values = {"loss": loss.detach(), "loss/likelihood": likelihood.detach(), "loss/kl": kl.detach()}
        return StepResult(applied, {k: float(v) for k, v in values.items()})


# ---------------------------------------------------------------- the checks


@pytest.fixture
def toy_preset():
    from swaplab.config import config_group

    presets = config_group("model")
    if "toy-vae" not in presets:
        presets.register("toy-vae")(ToyVAEConfig)


pytestmark = pytest.mark.usefixtures("one_thread", "toy_preset")


def test_a_recipe_registered_outside_the_package_trains_resumes_exports_and_reloads(pair_facesets, tmp_path: Path):
    run = tmp_path / "run"
    words = ["model=toy-vae", f"data.faceset={pair_facesets[0]}", f"run_dir={run}", "trainer=test"]
    cfg = build_config([*words, "trainer.steps=2"])
    assert isinstance(cfg, ToyTrainConfig)
    first = train(cfg)
    assert (first.recipe, first.step, first.stop_reason) == ("toy-vae", 2, "steps")
    resumed = train(build_config([f"run_dir={run}", "trainer.steps=3"]))  # the saved config, a longer budget
    assert (resumed.start_step, resumed.step) == (2, 3)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("loss/kl" in r for r in rows)

    card = json.loads(export_model(run, tmp_path / "model").read_text())
    assert (card["recipe"], card["arch"], card["step"]) == ("toy-vae", "toy-vae", 3)
    model = load_model(tmp_path / "model")
    assert isinstance(model, ToyVAE) and not model.training
    saved = load_file(run / "checkpoints" / "step-0000003" / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
