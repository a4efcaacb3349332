"""FSGAN's training on the one loop (``model=fsgan-*``): the reenactment and inpainting generators,
self-supervised on frames of the same person.

Data (``SamePersonFrames``): faces grouped by person, a video's track being one person and an
LFW photo's folder another; pairs (frame i, frame j) of one group, a pure function of (seed,
sample position). LFW people must be ``peopleDevTrain`` ones for training (``peopleDevTest`` for
``data.eval``); video clips are in neither list and are allowed for both roles.

Each step:
1. the discriminator (multi-scale PatchGAN, hinge) on frame j (real) and the detached reenactment;
2. the reenactor: frame i re-posed to frame j's landmarks must be frame j: pixel L1, perceptual
   (the frozen dlib network's early stages, ``LOSSES["perceptual"]``), adversarial, and its mask
   against frame j's landmark hull; with iterative reenactment on, every intermediate step must
   also reach frame j in one more step (the stepwise-consistency term);
3. the inpainter: random ellipses cut from frame j's face (centred on its landmarks) must be
   filled back (L1 and perceptual on the hole).
``validate`` measures, on fixed held-out pairs, the reenactment's L1 next to the untouched
source's and the inpainting's L1 in the holes next to a blur fill's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.config import ConfigError, group_field, to_dict
from swaplab.data.lfw import Role, check_split, person_of
from swaplab.facesets.format import Faceset
from swaplab.io.images import is_video_path
from swaplab.losses.adversarial import AdversarialLoss
from swaplab.losses.registry import LOSSES
from swaplab.models.fsgan import FSGAN, FSGANConfig, blur_fill, hull_masks, interpolated_landmarks
from swaplab.train.config import TEST_SETTINGS, TrainerConfig, register_trainer
from swaplab.train.data import stream_seed
from swaplab.train.oneshot_data import decode_crop
from swaplab.train.preview import compose_grid, save_preview, to_hwc
from swaplab.train.recipe import RECIPES, GanPair, Recipe, StepResult
from swaplab.train.recipes.per_pair import alignment_of
from swaplab.train.session import apply_gradients

log = logging.getLogger(__name__)

Tensor = torch.Tensor

# pix2pixHD's optimiser, which FSGAN's generators use: Adam, lr 2e-4, betas (0.5, 0.999).
register_trainer("fsgan", lr=2e-4, betas=(0.5, 0.999), warmup_steps=0, keep_last=2)
register_trainer("fsgan-256", like="fsgan", steps=300_000, batch_size=8, preview_every=1000, checkpoint_every=5000)
#: CPU runs with model=fsgan-tiny (docs/fsgan.md states the step time).
register_trainer(
    "fsgan-tiny", like="fsgan", steps=600, batch_size=8, log_every=10, preview_every=100, checkpoint_every=100
)
register_trainer("fsgan-test", like="fsgan", steps=4, batch_size=4, checkpoint_every=2, **TEST_SETTINGS)


@dataclass
class FSGANLossConfig:
    """Weights of FSGAN's terms (0 switches a term off; ``perceptual`` 0 loads no feature network)."""

    pixel: float = 1.0
    perceptual: float = 0.5
    perceptual_stages: int = 2
    adversarial: float = 0.05
    adversarial_kind: str = "hinge"
    mask: float = 0.1
    stepwise: float = 0.5
    inpaint_pixel: float = 1.0
    inpaint_perceptual: float = 0.25

    def __post_init__(self) -> None:
        for key in ("pixel", "perceptual", "adversarial", "mask", "stepwise", "inpaint_pixel", "inpaint_perceptual"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key} must be >= 0, got {getattr(self, key)}")


@dataclass
class FSGANDataConfig:
    """Facesets of people seen in several frames or photos (video facesets, LFW facesets)."""

    train: list[str] = field(default_factory=list)
    eval: str = ""  # held-out faces: frames or photos of people (or clips) not trained on
    eval_pairs: int = 6
    hole_min: float = 0.12  # inpainting holes: ellipse radii as a share of the crop side
    hole_max: float = 0.3
    lists_dir: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.hole_min <= self.hole_max < 1:
            raise ConfigError(f"need 0 < data.hole_min <= data.hole_max < 1, got {self.hole_min}, {self.hole_max}")


@dataclass
class FSGANTrainConfig:
    model: FSGANConfig = group_field("fsgan-tiny", "model")
    data: FSGANDataConfig = field(default_factory=FSGANDataConfig)
    loss: FSGANLossConfig = field(default_factory=FSGANLossConfig)
    trainer: TrainerConfig = group_field("fsgan-tiny", "trainer")
    run_dir: str = "runs/fsgan"


class FramePairs(NamedTuple):
    """Pairs of one person: sources and targets (B, 3, R, R) in [0, 1], their landmarks (B, 68, 2)."""

    source: Tensor
    source_landmarks: Tensor
    target: Tensor
    target_landmarks: Tensor


def _group_of(source: str, track_id: int) -> tuple[str, str]:
    """(group key, the LFW person name to check, or "" for a video)."""
    if is_video_path(source):
        return f"{source}#{track_id}", ""
    return person_of(source), person_of(source)


class SamePersonFrames:
    """Pairs of faces of one person from aligned facesets, sampled by position (see the module docstring)."""

    def __init__(
        self, facesets: str | Sequence[str], resolution: int, *, role: Role, seed: int = 0, lists_dir: str = ""
    ) -> None:
        if isinstance(facesets, (str, Path)):
            facesets = [str(facesets)]
        if not facesets:
            raise ConfigError("data.train must name faceset folder(s) of people seen in several frames or photos")
        self.facesets = [Faceset(path) for path in facesets]
        self.resolution, self.seed, self.role = resolution, seed, role
        groups: dict[str, list[tuple[int, int]]] = {}
        people = set()
        for f, faceset in enumerate(self.facesets):
            for i, record in enumerate(faceset.records):
                key, person = _group_of(record.source, record.track_id)
                groups.setdefault(key, []).append((f, i))
                if person:
                    people.add(person)
        roots = ", ".join(str(fs.root) for fs in self.facesets)
        check_split(people, role, lists_dir or None, what=f"FSGAN {role} data ({roots})", strict=False)
        self.groups = [faces for _, faces in sorted(groups.items()) if len(faces) >= 2]
        if not self.groups:
            raise ConfigError(f"{roots}: no person appears in two frames or photos; FSGAN trains on such pairs")
        self.faces = [face for group in self.groups for face in group]
        self.row = {face: k for k, face in enumerate(self.faces)}
        self.images = self._decode()
        self.landmarks = torch.from_numpy(np.stack([self._landmarks(f, i) for f, i in self.faces]))
        log.info("FSGAN %s data: %d faces of %d people or clips", role, len(self.faces), len(self.groups))

    def _decode(self) -> Tensor:
        crops = np.stack([decode_crop(self.facesets[f], i, self.resolution) for f, i in self.faces])
        return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()

    def _landmarks(self, f: int, i: int) -> np.ndarray:
        faceset = self.facesets[f]
        scale = self.resolution / faceset.header.size
        # Pixel centres sit at integers: rescale about the pixel edge, not the centre.
        return ((faceset.landmarks(i).astype(np.float64) + 0.5) * scale - 0.5).astype(np.float32)

    @property
    def template(self) -> str:
        return self.facesets[0].header.template

    def pair_rows(self, position: int) -> tuple[int, int]:
        rng = np.random.default_rng(stream_seed("fsgan-pair", self.seed, self.role, position))
        group = self.groups[int(rng.integers(len(self.groups)))]
        i, j = rng.choice(len(group), size=2, replace=False)
        return self.row[group[int(i)]], self.row[group[int(j)]]

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> FramePairs:
        start = (step * world_size + rank) * batch_size
        rows = [self.pair_rows(start + k) for k in range(batch_size)]
        sources, targets = [r[0] for r in rows], [r[1] for r in rows]
        return FramePairs(
            self.images[sources].float() / 255.0,
            self.landmarks[sources],
            self.images[targets].float() / 255.0,
            self.landmarks[targets],
        )

    def content_hashes(self) -> list[dict[str, object]]:
        return [{"path": str(fs.root), "content_hash": fs.content_hash(), "faces": len(fs)} for fs in self.facesets]


def random_holes(landmarks: Tensor, size: int, seed: int, smallest: float, largest: float) -> Tensor:
    """(N, 1, size, size) binary holes: one or two ellipses per face, centred on random landmarks,
    radii ``smallest``..``largest`` of the side (what the inpainter learns to fill)."""
    rng = np.random.default_rng(seed)
    axis = torch.arange(size, dtype=torch.float32)
    holes = torch.zeros(len(landmarks), 1, size, size)
    for n, points in enumerate(landmarks.float().cpu()):
        for _ in range(int(rng.integers(1, 3))):
            cx, cy = points[int(rng.integers(len(points)))].tolist()
            rx, ry = (rng.uniform(smallest, largest, size=2) * size).tolist()
            inside = ((axis[None, :] - cx) / rx) ** 2 + ((axis[:, None] - cy) / ry) ** 2 <= 1
            holes[n, 0] = torch.maximum(holes[n, 0], inside.float())
    return holes.to(landmarks.device)


def _masked_l1(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    return ((pred - target).abs() * mask).sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


@RECIPES.register("fsgan")
class FSGANRecipe(Recipe):
    """Trains FSGAN's reenactor and inpainter (one generator optimiser) and its discriminator."""

    name = "fsgan"
    config_type = FSGANTrainConfig

    def __init__(self, cfg: FSGANTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        if cfg.trainer.accumulate != 1:
            raise ConfigError("trainer.accumulate must be 1 for FSGAN's GAN training")
        size = cfg.model.resolution
        data = cfg.data
        self.data = SamePersonFrames(data.train, size, role="train", seed=data.seed, lists_dir=data.lists_dir)
        self.eval_data = (
            SamePersonFrames(data.eval, size, role="eval", seed=data.seed, lists_dir=data.lists_dir)
            if data.eval
            else self.data
        )
        self.eval_batch = self.eval_data.batch(10**6, data.eval_pairs)  # far from the training stream
        self.eval_holes = random_holes(
            self.eval_batch.target_landmarks,
            size,
            stream_seed("fsgan-eval-holes", data.seed),
            data.hole_min,
            data.hole_max,
        )
        self.adversarial = AdversarialLoss(cfg.loss.adversarial_kind)
        self.perceptual: nn.Module | None = None
        if cfg.loss.perceptual or cfg.loss.inpaint_perceptual:
            self.perceptual = LOSSES.create("perceptual", stages=cfg.loss.perceptual_stages).to(session.device)

    def build(self) -> nn.Module:
        model = self.cfg.model
        return GanPair(FSGAN(model), model.discriminator.build(model.discriminator_part, model.resolution))

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        return {
            "generator": [{"params": list(module.generator.parameters())}],
            "discriminator": [{"params": list(module.discriminator.parameters())}],
        }

    @property
    def generator(self) -> FSGAN:
        return self.module.generator  # type: ignore[union-attr]

    @property
    def discriminator(self) -> nn.Module:
        return self.module.discriminator  # type: ignore[union-attr]

    def _perceptual(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        assert self.perceptual is not None
        return self.perceptual(pred, target, weight)

    def train_step(self, step: int) -> StepResult:
        session, cfg = self.session, self.cfg
        loss_cfg, world, clip = cfg.loss, session.dist.world_size, session.trainer.grad_clip
        batch = self.data.batch(step, session.trainer.batch_size, session.dist.rank, world)
        device, fmt = session.device, session.memory_format
        source = batch.source.to(device).contiguous(memory_format=fmt)
        target = batch.target.to(device).contiguous(memory_format=fmt)
        source_points, target_points = batch.source_landmarks.to(device), batch.target_landmarks.to(device)
        model = self.generator
        with session.autocast():
            steps = model.reenact_steps(source, source_points, target_points)
        fake, fake_mask = steps[-1]

        # 1. the discriminator on frame j and the detached reenactment
        with session.autocast():
            d_loss = self.adversarial.discriminator_loss(self.discriminator(target), self.discriminator(fake.detach()))
        d_loss.backward()
        d_ok, d_norm = apply_gradients(self.optimizers["discriminator"], d_loss.detach(), clip, world, True)

        # 2. the reenactor (and 3. the inpainter) through the updated, frozen discriminator
        terms: dict[str, Tensor] = {}
        fake32 = fake.float()
        terms["pixel"] = loss_cfg.pixel * (fake32 - target).abs().mean()
        if loss_cfg.perceptual:
            terms["perceptual"] = loss_cfg.perceptual * self._perceptual(fake32, target)
        if loss_cfg.adversarial:
            self.discriminator.requires_grad_(False)
            try:
                with session.autocast():
                    terms["adversarial"] = loss_cfg.adversarial * self.adversarial.generator_loss(
                        self.discriminator(fake)
                    )
            finally:
                self.discriminator.requires_grad_(True)
        if loss_cfg.mask:
            hull = hull_masks(target_points, cfg.model.resolution)
            terms["mask"] = loss_cfg.mask * F.binary_cross_entropy(fake_mask.float().clamp(1e-4, 1 - 1e-4), hull)
        if loss_cfg.stepwise and len(steps) > 1:
            # Every intermediate face, reenacted once more to frame j's landmarks, must be frame j too.
            heatmaps = model.heatmaps(target_points)
            walk = interpolated_landmarks(source_points, target_points, len(steps))
            with session.autocast():
                jumps = [
                    model.reenactor(face, model.heatmaps(points), heatmaps)[0].float()
                    for (face, _), points in zip(steps[:-1], walk[:-1])
                ]
            terms["stepwise"] = loss_cfg.stepwise * torch.stack([(j - target).abs().mean() for j in jumps]).mean()
        if loss_cfg.inpaint_pixel or loss_cfg.inpaint_perceptual:
            seed = stream_seed("fsgan-holes", session.trainer.seed, step, session.dist.rank)
            holes = random_holes(target_points, cfg.model.resolution, seed, cfg.data.hole_min, cfg.data.hole_max)
            with session.autocast():
                filled = model.inpainter(target, holes).float()
            terms["inpaint_pixel"] = loss_cfg.inpaint_pixel * _masked_l1(filled, target, holes)
            if loss_cfg.inpaint_perceptual:
                terms["inpaint_perceptual"] = loss_cfg.inpaint_perceptual * self._perceptual(filled, target, holes)
        total = torch.stack(list(terms.values())).sum()
        total.backward()
        g_ok, g_norm = apply_gradients(self.optimizers["generator"], total.detach(), clip, world, True)
        values = {"loss": float(total.detach()), "d_loss": float(d_loss.detach()), "grad_norm": g_norm}
        values.update({f"loss/{k}": float(v.detach()) for k, v in terms.items()})
        values["d_grad_norm"] = d_norm
        return StepResult(d_ok and g_ok, values)

    # ------------------------------------------------------------ records

    @torch.no_grad()
    def render_eval(self) -> dict[str, Tensor]:
        batch, device = self.eval_batch, self.session.device
        model = self.generator
        source, target = batch.source.to(device), batch.target.to(device)
        with self.session.autocast():
            reenacted, mask = model.reenact(
                source, batch.source_landmarks.to(device), batch.target_landmarks.to(device)
            )
            holes = self.eval_holes.to(device)
            filled = model.inpainter(target, holes)
        return {
            "source": source,
            "target": target,
            "reenacted": reenacted.float(),
            "mask": mask.float(),
            "holes": target * (1 - holes),
            "inpainted": filled.float(),
        }

    def validate(self, step: int) -> dict[str, float]:
        images = self.render_eval()
        target, holes = images["target"], self.eval_holes.to(images["target"].device)
        blur = blur_fill(target, holes, sigma=self.cfg.model.resolution / 16)
        return {
            "val/reenact_l1": float((images["reenacted"] - target).abs().mean()),
            "val/source_l1": float((images["source"] - target).abs().mean()),
            "val/inpaint_l1": float(_masked_l1(images["inpainted"], target, holes)),
            "val/blur_l1": float(_masked_l1(blur, target, holes)),
        }

    def preview(self, step: int) -> Path | None:
        images = self.render_eval()
        names = ("source", "target", "reenacted", "mask", "holes", "inpainted")
        grid = compose_grid([to_hwc(images[n]) for n in names], names=names, title=f"step {step}")
        return save_preview(grid, self.session.previews, step, model_id="swaplab-fsgan-training")

    def data_hashes(self) -> dict[str, Any]:
        return {
            "train": self.data.content_hashes(),
            "eval": self.eval_data.content_hashes() if self.cfg.data.eval else [],
        }

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {"kind": "fsgan", "pairs_seen": step * self.samples_per_step}

    @classmethod
    def export(
        cls, cfg: FSGANTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        generator = GanPair.generator_weights(tensors)
        super().export(cfg, generator, out_dir, state)
        return {
            "swapper": "fsgan",
            "identity": {"conditions_on": None, "loss_network": None},
            "source": "face",
            "alignment": alignment_of(cfg.data.train[0]) if cfg.data.train else {"template": "whole_face"},
            "loss_config": to_dict(cfg.loss),
            "conventions": (
                "reenactor(source (N, 3, R, R) float32 RGB in [0, 1], target landmark heatmaps (N, 68, R, R)) -> "
                "(face, mask); inpainter(face, hole (N, 1, R, R)) -> completed face; landmarks in crop pixels"
            ),
        }
