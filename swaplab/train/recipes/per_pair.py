"""The per-pair recipe: DeepFakes and DeepFaceLab's LIAE autoencoders trained on two facesets.

``TrainConfig`` = ``model`` (a per-pair preset: ``model=liae-cpu``), ``data`` (the two facesets
and the held-out split), ``loss`` (``loss=dfl``), ``augment``, ``trainer`` (``trainer=cpu-quick``)
and ``run_dir``. Each step draws both sides' batches (a pure function of seed, step, micro-step
and rank), warps and jitters them, reconstructs both through the shared parts in one forward
(what DistributedDataParallel wraps), and sums both sides' losses; gradient accumulation and DDP
are exact. Previews show src, dst, their reconstructions, the swap and the masks on held-out faces.

Options that sharpen: ``gan.power`` > 0 adds DeepFaceLab's "GAN power", an adversarial term from
a patch discriminator on the face region (off by default, and then nothing of it is built: the
run is the plain one, bit for bit); ``trainer.final_stretch`` stops random warp (and lowers the
LR) for the last part of the run; ``init=RUN_OR_MODEL`` starts from pretrained weights (for
instance a run trained on many faces, docs/per-pair.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, group_field, since_field, to_dict
from swaplab.losses import LOSSES, LossConfig, LossTerms, ReconstructionObjective
from swaplab.losses.functional import soften_mask
from swaplab.models import ModelConfig, create_model
from swaplab.train.augment import AugmentConfig, Augmenter
from swaplab.train.config import TrainerConfig
from swaplab.train.data import TRAINING_MASKS, PairData, stream_seed, to_float
from swaplab.train.preview import preview_grid, save_preview
from swaplab.train.recipe import RECIPES, GanPair, GanTermConfig, Recipe, StepResult

Tensor = torch.Tensor


@dataclass
class DataConfig:
    """The two facesets of a pair and how they are split and held."""

    src: str = ""  # faceset folder of the source identity (the face that will appear)
    dst: str = ""  # faceset folder of the destination (the face that gets replaced)
    holdout: float = 4  # faces per side kept out for previews/evaluation: >= 1 a count, < 1 a fraction
    seed: int = 0  # seeds the held-out split and the sample order
    cache: bool = True  # decode every crop once into memory (uint8); False decodes per batch
    allow_damaged: bool = False  # train on a faceset's intact faces when some of its shards are damaged
    # The masked losses' face mask: hull (landmarks), segment or segment+hull (the built face
    # segmenter: occluders and hair are not learned as face; user polygons win; see train/data.py).
    mask: str = "hull"
    # Share of training faces with a synthetic occluder pasted over them (swaplab.faces.occlusion's
    # training kinds: objects, hands, bars, microphones, hair strands; textures from the batch's
    # other faces). The face mask loses what the occluder covers, so the model's own mask learns to
    # leave occluders out and the swap keeps them (DeepFaceLab trains on occluded, XSeg-masked faces).
    occlude: float = 0.0
    # Share of dst faces mirrored (DeepFaceLab's random_dst_flip, on by default there too). The dst
    # side is only ever the pose, expression and light a swap follows, never the face it draws, so
    # mirroring it doubles those without teaching the source a mirrored face; src faces follow
    # ``augment.flip_prob``. 0.4 lifted held-out dst SSIM by 0.02 with either seed at 30 CPU-minutes
    # (docs/per-pair.md); runs saved before it existed trained without it.
    dst_flip: float = since_field(0.4, before=0.0)
    # Other people's faces mixed into the dst side's batches (a faceset folder, e.g. the pretraining
    # faces), ``dst_prior_share`` of each. The dst side stops generalising to unseen frames of its
    # person long before a budget ends: other faces keep the shared encoder and decoder as general
    # as pretraining left them, while the source's face is learned from src alone. Measured from a
    # pretraining (docs/per-pair.md): held-out dst SSIM +0.003 to +0.010, but 2-3 of 24 swaps fewer
    # retrieved as the source, so it is off by default. Empty: the pair's own faces only.
    dst_prior: str = ""
    dst_prior_share: float = 0.25

    def __post_init__(self) -> None:
        if self.mask not in TRAINING_MASKS:
            raise ConfigError(f"data.mask={self.mask!r}: choose from {', '.join(TRAINING_MASKS)}")
        for name in ("occlude", "dst_flip", "dst_prior_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name}={getattr(self, name)} must be a share of faces in [0, 1]")


@dataclass
class TrainConfig:
    """Everything a per-pair training run depends on; saved as the run's ``config.yaml``."""

    model: ModelConfig = group_field("liae-cpu", "model")
    data: DataConfig = field(default_factory=DataConfig)
    # SAEHD's losses with eyes-and-mouth priority and an edge term: at equal time it beats plain
    # ``dfl`` on identity and pose (docs/per-pair.md, the per-pair study).
    loss: LossConfig = group_field("dfl-sharp", "loss")
    augment: AugmentConfig = group_field(AugmentConfig, "augment")
    trainer: TrainerConfig = group_field(TrainerConfig, "trainer")
    gan: GanTermConfig = field(default_factory=GanTermConfig)
    # Pretrained weights to start from: a run folder (its latest good checkpoint) or an exported
    # model folder of the same preset. A run that resumes ignores it (its checkpoint wins).
    init: str = ""
    run_dir: str = "runs/default"

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)


@RECIPES.register("per-pair")
class PerPairRecipe(Recipe):
    """Trains one per-pair model on ``data.src`` and ``data.dst``."""

    name = "per-pair"
    config_type = TrainConfig
    rate_key = "faces_per_s"

    def __init__(self, cfg: TrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        if not cfg.data.src or not cfg.data.dst:
            raise ConfigError("data.src and data.dst must name the two faceset folders (data.src=... data.dst=...)")
        self.data = PairData(
            cfg.data.src,
            cfg.data.dst,
            cfg.model.resolution,
            holdout=cfg.data.holdout,
            seed=cfg.data.seed,
            cache=cfg.data.cache,
            allow_damaged=cfg.data.allow_damaged,
            mask=cfg.data.mask,
            dst_prior=cfg.data.dst_prior,
            dst_prior_share=cfg.data.dst_prior_share,
        )
        self.objective = ReconstructionObjective(cfg.loss).to(session.device)
        # One augmenter per side and phase; the final stretch trains on unwarped faces with the
        # same draws, so only the warp changes.
        dst_augment = dataclasses.replace(cfg.augment, flip_prob=max(cfg.augment.flip_prob, cfg.data.dst_flip))
        self.augmenters = {
            (side, polish): Augmenter(dataclasses.replace(augment, warp=augment.warp and not polish))
            for side, augment in (("src", cfg.augment), ("dst", dst_augment))
            for polish in (False, True)
        }
        self.adversarial = LOSSES.create(cfg.gan.criterion) if cfg.gan.power else None
        if cfg.init and not session.resuming:
            pretrained_weights(cfg.init)  # refuse a missing or unreadable source before any file is written
        self.ddp: nn.Module | None = None
        self.forward: nn.Module | None = None

    def build(self) -> nn.Module:
        model = create_model(self.cfg.model)
        if self.cfg.init and not self.session.resuming:
            load_pretrained(model, self.cfg.init)
        if not self.cfg.gan.power:
            return model
        return GanPair(model, self.cfg.gan.build_discriminator(self.cfg.model.resolution))

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        if not isinstance(module, GanPair):
            return super().param_groups(module)
        return {
            "model": [{"params": [p for p in module.generator.parameters() if p.requires_grad]}],
            "discriminator": [{"params": list(module.discriminator.parameters()), "lr_scale": self.cfg.gan.lr_scale}],
        }

    @property
    def model(self) -> nn.Module:
        """The per-pair network (the generator when a GAN term trains a discriminator beside it)."""
        return self.module.generator if isinstance(self.module, GanPair) else self.module

    def start(self) -> None:
        # DDP wraps the model's forward(src, dst), which runs both reconstructions; compile wraps DDP.
        session, forward = self.session, self.model
        if session.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [session.device.index] if session.device.type == "cuda" else None
            self.ddp = forward = DistributedDataParallel(self.model, device_ids=device_ids)
        self.forward = torch.compile(forward) if session.trainer.compile else forward
        self.preview_faces = {
            side: to_float({side: faces}, session.device, session.trainer.channels_last)[side]
            for side, faces in self.data.preview_faces(session.trainer.preview_faces).items()
        }

    @property
    def samples_per_step(self) -> int:
        return 2 * super().samples_per_step  # both sides

    # ------------------------------------------------------------ one step

    def _augment(self, floats: dict[str, Tensor], step: int, micro: int) -> dict[str, dict[str, Tensor]]:
        """Both sides' augmented batches; random draws are seeded by (seed, step, micro, rank, side)."""
        session, out = self.session, {}
        polish = session.trainer.in_final_stretch(step)
        for side, other in (("src", "dst"), ("dst", "src")):
            generator = torch.Generator(device=session.device)
            generator.manual_seed(stream_seed("augment", session.trainer.seed, step, micro, session.dist.rank, side))
            out[side] = self.augmenters[side, polish](
                {"image": floats[side], "mask": floats[f"{side}_mask"], "eyes_mouth": floats[f"{side}_features"]},
                generator,
                reference=floats[other],
                reference_mask=floats[f"{other}_mask"],
            )
        return out

    def _loss(self, step: int, micro: int) -> tuple[LossTerms, Any, dict[str, dict[str, Tensor]]]:
        """Both sides' reconstruction terms, the model's outputs and the augmented batches."""
        session, tcfg = self.session, self.session.trainer
        raw = self.data.batch(
            step,
            batch_size=tcfg.batch_size,
            micro=micro,
            accumulate=tcfg.accumulate,
            rank=session.dist.rank,
            world_size=session.dist.world_size,
        )
        if self.cfg.data.occlude:
            rng = np.random.default_rng(stream_seed("occlude", tcfg.seed, step, micro, session.dist.rank))
            raw = occluded_batch(raw, self.cfg.data.occlude, rng)
        sides = self._augment(to_float(raw, session.device, tcfg.channels_last), step, micro)
        src_in = sides["src"]["warped"].contiguous(memory_format=session.memory_format)
        dst_in = sides["dst"]["warped"].contiguous(memory_format=session.memory_format)
        with session.autocast():
            out = self.forward(src_in, dst_in)
        # Losses in fp32: SSIM's variances are differences of nearly equal numbers.
        terms = self.objective.pair(
            (out.src_rgb.float(), out.src_mask.float()),
            (out.dst_rgb.float(), out.dst_mask.float()),
            sides["src"],
            sides["dst"],
        )
        return terms, out, sides

    def _face_regions(self, out: Any, sides: dict[str, dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """(real, fake) batches the discriminator judges: targets and reconstructions of both sides
        inside the softened target face mask (the background is not the model's job)."""
        weights = [soften_mask(sides[side]["mask"]) for side in ("src", "dst")]
        real = torch.cat([sides[side]["target"] * w for side, w in zip(("src", "dst"), weights, strict=True)])
        fake = torch.cat([out.src_rgb.float() * weights[0], out.dst_rgb.float() * weights[1]])
        return real, fake

    def train_step(self, step: int) -> StepResult:
        """One optimiser step (with accumulation): loss, loss/<term>, grad_norm."""
        from swaplab.train.session import apply_gradients

        session = self.session
        accumulate = session.trainer.accumulate
        total = torch.zeros((), device=session.device)
        components: dict[str, Tensor] = {}
        judged: list[tuple[Tensor, Tensor]] = []  # (real, detached fake) per micro-step, for the discriminator
        discriminator = self.module.discriminator if self.adversarial is not None else None
        for micro in range(accumulate):
            last = micro == accumulate - 1
            sync = self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext()
            with sync:
                terms, out, sides = self._loss(step, micro)
                loss = terms.total
                if discriminator is not None:
                    real, fake = self._face_regions(out, sides)
                    discriminator.requires_grad_(False)  # the generator's step leaves D's gradients empty
                    with session.autocast():
                        fake_logits = discriminator(fake)
                    adversarial = self.cfg.gan.power * self.adversarial.generator_loss(fake_logits)
                    discriminator.requires_grad_(True)
                    loss = loss + adversarial
                    components["gan/generator"] = (
                        components.get("gan/generator", 0.0) + adversarial.detach() / accumulate
                    )
                    judged.append((real, fake.detach()))
                (loss / accumulate).backward()
            total += loss.detach() / accumulate
            for key, value in terms.components.items():
                components[key] = components.get(key, 0.0) + value / accumulate
        applied, grad_norm = apply_gradients(self.optimizers["model"], total, session.trainer.grad_clip)
        values = {f"loss/{key}": float(value) for key, value in components.items()}
        values.update(loss=float(total), grad_norm=grad_norm)
        if discriminator is not None:
            d_total = torch.zeros((), device=session.device)
            for real, fake in judged:
                with session.autocast():
                    real_logits, fake_logits = discriminator(real), discriminator(fake)
                d_loss = self.adversarial.discriminator_loss(real_logits, fake_logits) / accumulate
                d_loss.backward()
                d_total += d_loss.detach()
            d_applied, _ = apply_gradients(
                self.optimizers["discriminator"],
                d_total,
                session.trainer.grad_clip,
                session.dist.world_size,
                average=session.dist.active,
            )
            applied = applied and d_applied
            values["d_loss"] = float(d_total)
        return StepResult(applied, values)

    # ------------------------------------------------------------ records

    def samples_seen(self, step: int) -> int:
        """Global samples per side drawn by ``step`` (all ranks, all micro-steps)."""
        tcfg = self.session.trainer
        return step * tcfg.accumulate * self.session.dist.world_size * tcfg.batch_size

    def preview(self, step: int) -> Path | None:
        if not len(self.preview_faces["src"]):
            return None
        with self.session.autocast():
            grid = preview_grid(self.model, self.preview_faces["src"], self.preview_faces["dst"], step)
        return save_preview(grid, self.session.previews, step)

    def data_hashes(self) -> dict[str, Any]:
        return self.data.content_hashes()

    def log_extra(self, step: int) -> dict[str, Any]:
        return {"epoch": {k: round(v, 4) for k, v in self.data.epochs(self.samples_seen(step)).items()}}

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {"samples_per_side": self.samples_seen(step), "epochs": self.data.epochs(self.samples_seen(step))}

    # ------------------------------------------------------------ export

    @classmethod
    def export(
        cls, cfg: TrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        # A GAN term's discriminator stays in the run: the exported model is the per-pair network.
        tensors = GanPair.generator_weights(tensors)
        super().export(cfg, tensors, out_dir, state)
        return {
            "swapper": "per-pair",
            "identity": {"conditions_on": None, "loss_network": "dlib-resnet" if cfg.loss.identity.weight else None},
            "alignment": alignment_of(cfg.data.dst),
            "loss_config": to_dict(cfg.loss),
            "conventions": "input/output: float32 RGB (N, 3, R, R) in [0, 1]; swap(dst) -> (rgb, mask)",
        }


def occluded_batch(batch: dict[str, Tensor], share: float, rng: np.random.Generator) -> dict[str, Tensor]:
    """A per-pair batch (``PairData.batch``'s uint8 tensors) with one occluder pasted on about
    ``share`` of each side's faces, its texture from another face of the batch; the face and
    eyes-and-mouth masks are zero wherever it lies. Other faces and pixels are unchanged."""
    from swaplab.faces.occlusion import occlude

    out = dict(batch)
    for side in ("src", "dst"):
        chosen = np.flatnonzero(rng.random(len(batch[side])) < share)
        if not len(chosen):
            continue
        faces = np.ascontiguousarray(batch[side].permute(0, 2, 3, 1).numpy())
        occluded = faces.copy()
        masks, features = batch[f"{side}_mask"].clone(), batch[f"{side}_features"].clone()
        for index in chosen.tolist():
            donors = [faces[other] for other in range(len(faces)) if other != index]
            labels = np.zeros(faces.shape[1:3], np.int64)
            occluded[index], _, covered = occlude(faces[index], labels, donors, rng)
            uncovered = torch.from_numpy(~covered).to(masks.dtype)
            masks[index, 0] *= uncovered
            features[index, 0] *= uncovered
        out[side] = torch.from_numpy(occluded).permute(0, 3, 1, 2).contiguous()
        out[f"{side}_mask"], out[f"{side}_features"] = masks, features
    return out


def alignment_of(faceset: str) -> dict[str, Any]:
    """The template and crop size a training faceset was aligned with: the swap stage must align alike."""
    from swaplab.facesets.format import FacesetError, read_header

    try:
        header = read_header(faceset)
    except FacesetError:
        return {"template": "whole_face"}
    return {"template": header.template, "faceset_crop_size": header.size}


def pretrained_weights(source: str | Path) -> dict[str, Tensor]:
    """The per-pair network's weights in a run folder (its latest good checkpoint) or an exported
    model folder (``model.safetensors``), without a GAN term's discriminator."""
    from swaplab.models.card import CardError, load_weights, read_card
    from swaplab.train.checkpoint import load_latest_good

    path = Path(source)
    if (path / "checkpoints").is_dir():
        checkpoint, _ = load_latest_good(path / "checkpoints", with_optimizer=False)
        if checkpoint is None:
            raise ConfigError(f"init={source}: the run folder has no usable checkpoint")
        tensors = checkpoint.model
    else:
        try:
            card, weights = read_card(path)
        except CardError as err:
            raise ConfigError(f"init={source}: not a run folder nor an exported model ({err})") from None
        tensors = load_weights(card, weights)
    return GanPair.generator_weights(tensors)


def load_pretrained(model: nn.Module, source: str | Path) -> None:
    """Copy pretrained weights into ``model``; every tensor must be there with its shape."""
    try:
        model.load_state_dict(pretrained_weights(source))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ConfigError(
            f"init={source}: the weights do not fit model={getattr(model.config, 'name', '?')} ({first})"
        ) from None
