"""The face-restorer recipe: a residual U-Net learns to undo synthetic degradations of aligned faces.

Clean faces are LFW training-split crops at ``data.size`` px (about their native resolution);
each step degrades random patches of them (``degrade_face``: blur, downscale 2-4x, noise, JPEG,
then bicubic back to size, which is what an upscaled swap looks like) and takes the L1 distance of
the restored patch to the clean one. A share of inputs stays clean, so a sharp face is left
nearly as it is. ``swaplab nets build face-restorer`` trains it into the user cache, where the
swap stage's ``restore=on`` loads it.

L1 alone regresses to the mean of the sharp faces a soft input could have come from, which is
itself soft: it restores what is still there and invents no texture. ``loss`` adds image-gradient
(edge) and perceptual terms (the early stages of the frozen dlib ResNet port, never lfw-arcface,
which scores identity) and ``gan`` an adversarial term from a patch discriminator on clean against
restored patches, which pushes towards one plausible sharp face (GFPGAN's and ESRGAN's idea); the
``cpu-gan`` build preset, ``swaplab nets build face-restorer``'s default, turns them on (``cpu`` is
the plain L1 build).

On video the detail a sharpening restorer invents is drawn anew for every frame, which reads as
flicker. ``loss.temporal`` asks for the same detail on neighbouring frames: a faceset extracted from
a clip holds neighbouring frames, and the swap model's drawings of two neighbours differ as its
swaps of them will; the term asks the change between the two restorations to be the change between
the two clean faces (the temporal-difference loss of video restoration), so detail invented on one
frame is invented the same way on the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, config_group, group_field
from swaplab.losses import LOSSES
from swaplab.models.installed import weights_header
from swaplab.models.restoration import FaceRestorer, FaceRestorerConfig
from swaplab.train.checkpoint import write_tensors
from swaplab.train.config import TEST_SETTINGS, TrainerConfig, register_trainer
from swaplab.train.data import stream_seed
from swaplab.train.degradation import DegradationConfig, degrade_face, degraded_set
from swaplab.train.recipe import RECIPES, GanPair, GanTermConfig, Recipe, StepResult

Tensor = torch.Tensor

config_group("model").register("face-restorer")(FaceRestorerConfig)
config_group("model").register("face-restorer-test")(
    lambda: FaceRestorerConfig(name="face-restorer-test", widths=(8, 16, 32))
)


@dataclass
class RestorerDataConfig:
    name: str = "lfw-faces-restore"
    facesets: list[str] = field(default_factory=list)  # empty: LFW peopleDevTrain photos (see segmenter)
    lfw_people: int = 600
    size: int = 128  # clean faces are the crops resized to this
    patch: int = 64  # training patches cut from them
    clean_prob: float = 0.15  # inputs left undegraded (the target is then the input)
    val_faces: int = 32
    # A swap model whose own drawing of these faces (upscaled from its resolution) is the degraded
    # input for ``drawn_share`` of the rows: a per-pair model's reconstruction through its source
    # side, or a one-shot model's swap of each face with the person's own identity (the mean
    # embedding of these faces). The restorer then learns to undo that model's softness on that
    # person, not only synthetic blur.
    drawn_by: str = ""
    drawn_share: float = 0.5

    def __post_init__(self) -> None:
        if self.patch > self.size or self.patch % 4:
            raise ConfigError(f"data.patch={self.patch} must be a multiple of 4 no larger than data.size={self.size}")
        if not 0.0 <= self.drawn_share <= 1.0:
            raise ConfigError(f"data.drawn_share must be in [0, 1], got {self.drawn_share}")
        if self.drawn_by and not self.facesets:
            raise ConfigError("data.drawn_by needs the source person's faces it draws: data.facesets=[FACESET]")


config_group("data").register("lfw-faces-restore")(RestorerDataConfig)

register_trainer(
    "restorer",
    steps=600,
    batch_size=12,
    optimizer="adamw",
    lr=2e-3,
    betas=(0.9, 0.99),
    warmup_steps=50,
    schedule="cosine",
    final_lr_ratio=0.05,
    log_every=25,
    preview_every=0,
    checkpoint_every=500,
    keep_last=1,
)
register_trainer("restorer-test", like="restorer", steps=4, batch_size=4, checkpoint_every=2, **TEST_SETTINGS)


@dataclass
class RestorerLossConfig:
    """Weights of the terms comparing a restored patch with its clean one (0 turns a term off)."""

    l1: float = 1.0
    edge: float = 0.0  # L1 of the image gradients
    perceptual: float = 0.0  # L1 of the dlib ResNet port's early features
    perceptual_stages: int = 2
    # L1 between the change of the restorations of two neighbouring video frames' drawings (by
    # data.drawn_by) and the change of their clean faces: the same detail on consecutive frames.
    temporal: float = 0.0
    temporal_gap: int = 4  # frames of one track at most this far apart are neighbours

    def __post_init__(self) -> None:
        weights = {"l1": self.l1, "edge": self.edge, "perceptual": self.perceptual}
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ConfigError(f"restorer loss weights must be >= 0 and not all 0, got {weights}")
        if self.temporal < 0 or self.temporal_gap < 1:
            raise ConfigError(
                f"loss.temporal must be >= 0 and loss.temporal_gap >= 1, got {self.temporal}, {self.temporal_gap}"
            )


@dataclass
class RestorerTrainConfig:
    model: FaceRestorerConfig = group_field(FaceRestorerConfig, "model")
    data: RestorerDataConfig = group_field(RestorerDataConfig, "data")
    degrade: DegradationConfig = field(default_factory=DegradationConfig)
    loss: RestorerLossConfig = field(default_factory=RestorerLossConfig)
    # Off by default; the cpu-gan build preset: an lsgan patch discriminator at power 0.05.
    gan: GanTermConfig = field(default_factory=lambda: GanTermConfig(discriminator="patchgan"))
    trainer: TrainerConfig = group_field("restorer", "trainer")
    run_dir: str = "runs/face-restorer"
    # A restorer's weights to start from: a file, or "installed" (the one `nets build face-restorer`
    # installed); its shape replaces ``model``. The personal build fine-tunes one on a person's faces.
    init: str = ""


def load_faces(facesets: list[str | Path], size: int) -> np.ndarray:
    """Every crop of ``facesets`` resized down to ``size``: (N, size, size, 3) uint8."""
    from swaplab.facesets.format import Faceset

    faces = []
    for root in facesets:
        faceset = Faceset(root)
        if faceset.size < size:  # upscaled crops are soft: the restorer would learn to draw blur
            raise ConfigError(
                f"{root} holds {faceset.size} px crops, smaller than data.size={size}: "
                f"extract the faces at size={size} or more, or lower data.size"
            )
        faces.extend(
            cv2.resize(faceset.image(i), (size, size), interpolation=cv2.INTER_AREA) for i in range(len(faceset))
        )
    if not faces:
        raise ValueError(f"no faces in {', '.join(map(str, facesets))}")
    return np.stack(faces)


def frame_neighbours(facesets: list[str | Path], gap: int) -> np.ndarray:
    """For each face of ``facesets`` (in ``load_faces``' order), the index of the next face of the
    same video track at most ``gap`` frames later, or -1 (a still photo, a track's last frame)."""
    from swaplab.facesets.format import Faceset

    records = [record for root in facesets for record in Faceset(root)]
    latest: dict[tuple[str, int], tuple[int, int]] = {}  # (source, track) -> (frame, index)
    following = np.full(len(records), -1, np.int64)
    for index, record in sorted(enumerate(records), key=lambda item: (item[1].source, item[1].track_id, item[1].frame)):
        key = (record.source, record.track_id)
        if key in latest and 0 < record.frame - latest[key][0] <= gap:
            following[latest[key][1]] = index
        latest[key] = (record.frame, index)
    return following


def model_drawn_faces(
    model_path: str | Path,
    faces: np.ndarray,
    template: str,
    facesets: Sequence[str | Path] = (),
    batch: int = 32,
) -> np.ndarray:
    """``faces`` (N, S, S, 3) uint8, aligned with ``template``, as the swap model at ``model_path``
    draws them at its resolution, upscaled bicubically back to S: what the swap stage hands the
    restorer, for faces of the person it swaps in. A per-pair model draws them through its source
    side; a one-shot model swaps each with the person's identity, the mean embedding (by the network
    it conditions on) of every face of ``facesets``, as the swap stage's mean over source photos."""
    from swaplab.models.swapper import load_swapper

    swapper = load_swapper(model_path)
    one_shot = "self" in swapper.reconstruction_sides and swapper.conditions_on and facesets
    if "src" not in swapper.reconstruction_sides and not one_shot:
        raise ConfigError(
            f"data.drawn_by={model_path}: a per-pair model (it draws its source) or a one-shot model that "
            f"conditions on an identity embedding is needed, not a {swapper.card.get('arch')} model"
        )
    if swapper.template != template:
        raise ConfigError(
            f"data.drawn_by={model_path} aligns faces with template {swapper.template!r}, "
            f"the facesets with {template!r}"
        )
    side, identity = "src", None
    if "src" not in swapper.reconstruction_sides:  # refused above unless one-shot: embed only once checked
        from swaplab.train.recipes.diffusion import identity_embeddings

        side, identity = "self", identity_embeddings([str(f) for f in facesets], swapper.conditions_on).mean(0)
    size, resolution = faces.shape[1], swapper.resolution
    drawn = []
    with torch.inference_mode():
        for start in range(0, len(faces), batch):
            small = np.stack([cv2.resize(f, (resolution, resolution), interpolation=cv2.INTER_AREA)
                              for f in faces[start : start + batch]])  # fmt: skip
            out = swapper.reconstruct(_tensor(small, torch.device("cpu")), side, identity).rgb.float().clamp(0, 1)
            for face in out.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
                drawn.append(cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC))
    return np.stack(drawn)


def _tensor(images: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0).to(device)


@RECIPES.register("face-restorer")
class RestorerRecipe(Recipe):
    """Trains ``FaceRestorer`` with an L1 loss against the clean faces."""

    name = "face-restorer"
    config_type = RestorerTrainConfig

    def __init__(self, cfg: RestorerTrainConfig, session: Any, faces: np.ndarray | None = None) -> None:
        super().__init__(cfg, session)
        if faces is None:
            from swaplab.train.recipes.segmenter import lfw_faceset

            facesets = list(cfg.data.facesets) or [lfw_faceset(cfg.data.lfw_people, "train", session.trainer.progress)]
            faces = load_faces(facesets, cfg.data.size)
        val = min(cfg.data.val_faces, len(faces) // 4)
        self.train_faces = faces[: len(faces) - val]
        self.drawn_faces = None
        if cfg.data.drawn_by:
            from swaplab.facesets.format import Faceset, common_template

            template = common_template(Faceset(root) for root in cfg.data.facesets)
            self.drawn_faces = model_drawn_faces(cfg.data.drawn_by, self.train_faces, template, cfg.data.facesets)
        self.following = None
        if cfg.loss.temporal:
            if self.drawn_faces is None:
                raise ConfigError(
                    "loss.temporal compares the model's drawings of neighbouring frames: set data.drawn_by=MODEL"
                )
            following = frame_neighbours(cfg.data.facesets, cfg.loss.temporal_gap)[: len(self.train_faces)]
            following[following >= len(self.train_faces)] = -1  # the validation faces stay unseen
            if not (following >= 0).any():
                raise ConfigError(
                    "loss.temporal needs neighbouring video frames (faces of one track at most "
                    f"loss.temporal_gap={cfg.loss.temporal_gap} frames apart) in data.facesets; none were found"
                )
            self.following = following
        self.val_faces = faces[len(faces) - val :] if val else None
        self.val_inputs = degraded_set(self.val_faces, 4321, cfg.degrade) if val else None

    def build(self) -> nn.Module:
        restorer = FaceRestorer(self.cfg.model)
        if self.cfg.init and not self.session.resuming:  # a resumed run's checkpoint replaces it
            restorer = initial_restorer(self.cfg.init)
            if tuple(restorer.config.widths) != tuple(self.cfg.model.widths):
                raise ConfigError(
                    f"init={self.cfg.init} holds a restorer of widths {list(restorer.config.widths)}, "
                    f"model.widths is {list(self.cfg.model.widths)}: set model.widths to match"
                )
        if not self.cfg.gan.power:
            return restorer
        return GanPair(restorer, self.cfg.gan.build_discriminator(self.cfg.data.patch))

    def start(self) -> None:
        loss = self.cfg.loss
        self.edge = LOSSES.create("edge") if loss.edge else None
        self.perceptual = LOSSES.create("perceptual", loss.perceptual_stages) if loss.perceptual else None
        self.adversarial = LOSSES.create(self.cfg.gan.criterion) if self.cfg.gan.power else None
        if self.perceptual is not None:
            self.perceptual.to(self.session.device)

    @property
    def restorer(self) -> FaceRestorer:
        return self.module.generator if isinstance(self.module, GanPair) else self.module

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        if not isinstance(module, GanPair):
            return super().param_groups(module)
        return {
            "model": [{"params": list(module.generator.parameters())}],
            "discriminator": [{"params": list(module.discriminator.parameters()), "lr_scale": self.cfg.gan.lr_scale}],
        }

    def data_hashes(self) -> dict[str, Any]:
        hashes: dict[str, Any] = {
            "faces": {
                "train": len(self.train_faces),
                "validation": 0 if self.val_faces is None else len(self.val_faces),
            }
        }
        if self.cfg.data.drawn_by:
            from swaplab.models.card import read_card

            card, _ = read_card(self.cfg.data.drawn_by)
            hashes["drawn_by"] = {"path": self.cfg.data.drawn_by, "weights": card.get("weights", {}).get("sha256")}
        return hashes

    def train_step(self, step: int) -> StepResult:
        from swaplab.train.session import apply_gradients

        cfg, session = self.cfg, self.session
        tcfg = session.trainer
        rng = np.random.default_rng(stream_seed("restorer", tcfg.seed, step))
        patch, size = cfg.data.patch, cfg.data.size
        inputs, targets = [], []
        for row in rng.integers(0, len(self.train_faces), tcfg.batch_size):
            clean, flip = self.train_faces[row], rng.random() < 0.5
            if flip:
                clean = clean[:, ::-1]
            if rng.random() < cfg.data.clean_prob:
                degraded = clean
            elif self.drawn_faces is not None and rng.random() < cfg.data.drawn_share:
                degraded = self.drawn_faces[row][:, ::-1] if flip else self.drawn_faces[row]
            else:
                degraded = degrade_face(np.ascontiguousarray(clean), rng, cfg.degrade)
            y, x = rng.integers(0, size - patch + 1, 2)
            inputs.append(degraded[y : y + patch, x : x + patch])
            targets.append(clean[y : y + patch, x : x + patch])
        x_in = _tensor(np.stack(inputs), session.device).contiguous(memory_format=session.memory_format)
        target = _tensor(np.stack(targets), session.device)
        with session.autocast():
            restored = self.restorer(x_in).float()
        terms: dict[str, Tensor] = {}
        if self.following is not None:
            # Its own stream: turning the temporal term on leaves the batches as they were.
            pairs_rng = np.random.default_rng(stream_seed("restorer-temporal", tcfg.seed, step))
            terms["temporal"] = cfg.loss.temporal * self._temporal_term(pairs_rng, tcfg.batch_size // 2 or 1)
        if cfg.loss.l1:
            terms["l1"] = cfg.loss.l1 * (restored - target).abs().mean()
        if self.edge is not None:
            terms["edge"] = cfg.loss.edge * self.edge(restored, target)
        if self.perceptual is not None:
            terms["perceptual"] = cfg.loss.perceptual * self.perceptual(restored, target)
        discriminator = self.module.discriminator if self.adversarial is not None else None
        if discriminator is not None:
            discriminator.requires_grad_(False)  # the generator's step leaves D's gradients empty
            with session.autocast():
                fake_logits = discriminator(restored)
            terms["gan/generator"] = cfg.gan.power * self.adversarial.generator_loss(fake_logits)
            discriminator.requires_grad_(True)
        loss = torch.stack(list(terms.values())).sum()
        loss.backward()
        applied, grad_norm = apply_gradients(self.optimizers["model"], loss.detach(), tcfg.grad_clip)
        values = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        values.update(loss=float(loss.detach()), grad_norm=grad_norm)
        if discriminator is not None:
            with session.autocast():
                real_logits, fake_logits = discriminator(target), discriminator(restored.detach())
            d_loss = self.adversarial.discriminator_loss(real_logits, fake_logits)
            d_loss.backward()
            d_applied, _ = apply_gradients(self.optimizers["discriminator"], d_loss.detach(), tcfg.grad_clip)
            applied = applied and d_applied
            values["d_loss"] = float(d_loss.detach())
        return StepResult(applied, values)

    def _temporal_term(self, rng: np.random.Generator, pairs: int) -> Tensor:
        """Mean L1 between the change of the restorations of the drawings of ``pairs`` neighbouring
        frames (one patch each, the same place in both) and the change of their clean faces."""
        session, patch, size = self.session, self.cfg.data.patch, self.cfg.data.size
        first = rng.choice(np.flatnonzero(self.following >= 0), pairs)
        y, x = rng.integers(0, size - patch + 1, (2, pairs))

        def cut(faces: np.ndarray, rows: np.ndarray) -> Tensor:
            return _tensor(
                np.stack([faces[r][a : a + patch, b : b + patch] for r, a, b in zip(rows, y, x)]), session.device
            )

        second = self.following[first]
        drawn = torch.cat([cut(self.drawn_faces, first), cut(self.drawn_faces, second)])
        with session.autocast():
            restored = self.restorer(drawn.contiguous(memory_format=session.memory_format)).float()
        change = restored[pairs:] - restored[:pairs]
        clean_change = cut(self.train_faces, second) - cut(self.train_faces, first)
        return (change - clean_change).abs().mean()

    def validate(self, step: int) -> dict[str, float]:
        if self.val_faces is None:
            return {}
        from swaplab.metrics.reconstruction import masked_psnr

        device = self.session.device
        clean, degraded = _tensor(self.val_faces, device), _tensor(self.val_inputs, device)
        restorer = self.restorer
        restorer.eval()
        try:
            with torch.inference_mode():
                restored = restorer.restore(degraded).float()
                unchanged = restorer.restore(clean).float()
        finally:
            restorer.train()
        return {
            "val/psnr_degraded": masked_psnr(degraded, clean).mean,
            "val/psnr_restored": masked_psnr(restored, clean).mean,
            "val/psnr_clean_kept": masked_psnr(unchanged, clean).mean,
        }

    @classmethod
    def export(
        cls, cfg: RestorerTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        tensors = GanPair.generator_weights(tensors)  # trained beside a discriminator or not
        write_tensors(tensors, out_dir / "model.safetensors", weights_header("face-restorer", cfg.model))
        return {
            "swapper": None,
            "built_network": "face-restorer",
            "validation": {k: v for k, v in (state.get("metrics") or {}).items() if k.startswith("val/")},
            "split": {"trained_on": list(cfg.data.facesets) or "peopleDevTrain.txt"},
            "conventions": "faces N x 3 x H x W RGB in [0, 1] -> restored faces of the same shape",
        }


def initial_restorer(init: str) -> FaceRestorer:
    """A trainable copy of the restorer in ``init`` (a weights file, or "installed")."""
    import copy

    from swaplab.models.restoration import load_face_restorer

    restorer = copy.deepcopy(load_face_restorer(None if init == "installed" else init))
    return restorer.train().requires_grad_(True)


def restorer_config(preset: str = "cpu", overrides: list[str] | None = None) -> RestorerTrainConfig:
    from swaplab.config import apply_overrides, from_dict

    presets = {
        "cpu": [],
        # Sharper (docs/masks.md measures both): edge and perceptual terms, a patch discriminator, and
        # degradations as strong as a 64 px swap's blur on a face twice that size or more.
        "cpu-gan": [
            "loss.edge=1",
            "loss.perceptual=0.5",
            "gan.power=0.05",
            "degrade.downscale=[2,6]",
            "degrade.blur_sigma=[0,3]",
            "trainer.steps=4000",
        ],
        # A restorer personal to one person (the source of a swap): the default build fine-tuned on
        # that person's faces (data.facesets=[faces/src], crops of 192 px or more), so the detail it
        # draws is theirs; with data.drawn_by=MODEL on the model's own drawings of them too. Chosen
        # on per_pair_v1 (docs/masks.md): 192 px faces (about LFW's face scale) over 128, and twice
        # the default build's adversarial power, which sharpened without costing identity.
        "personal": [
            "init=installed",
            "data.size=192",
            "loss.edge=1",
            "loss.perceptual=0.5",
            "gan.power=0.1",
            "degrade.downscale=[2,6]",
            "degrade.blur_sigma=[0,3]",
            "trainer.steps=1500",
            "trainer.lr=0.0005",
            "trainer.warmup_steps=0",
            "data.val_faces=16",
        ],
        "test": ["model=face-restorer-test", "trainer=restorer-test", "data.lfw_people=16", "data.val_faces=4"],
    }
    if preset not in presets:
        raise KeyError(f"no face-restorer build preset {preset!r}; known: {', '.join(presets)}")
    cfg = apply_overrides(from_dict(RestorerTrainConfig, {}), [*presets[preset], *(overrides or [])])
    if preset == "personal" and not cfg.data.facesets:
        raise ConfigError("the personal face-restorer build needs the person's faces: data.facesets=[FACESET]")
    return cfg
