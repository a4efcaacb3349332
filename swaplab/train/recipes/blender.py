"""The learned-blender recipe: reproduce ``cv2.seamlessClone`` on swap-like pastes, self-supervised.

Each example pastes one aligned LFW training-split face (colour-shifted, so the seam shows) over
another under the latter's landmark hull (randomly eroded or grown), with Poisson blending
(``cv2.seamlessClone``, as the swap stage's ``blend=poisson`` does) making the target; the network
sees frame, face and alpha at its resolution and predicts the correction to the face, which is
upsampled, added, and composited under the alpha exactly as ``blend=learned`` does. Loss: L1 to the Poisson result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from swaplab.config import config_group, group_field
from swaplab.faces.masks import landmark_mask
from swaplab.models.installed import weights_header
from swaplab.models.learned_blend import LearnedBlender, LearnedBlenderConfig
from swaplab.train.checkpoint import write_tensors
from swaplab.train.config import TEST_SETTINGS, TrainerConfig, register_trainer
from swaplab.train.data import scale_points, stream_seed
from swaplab.train.recipe import RECIPES, Recipe, StepResult

Tensor = torch.Tensor

config_group("model").register("learned-blender")(LearnedBlenderConfig)
config_group("model").register("learned-blender-test")(
    lambda: LearnedBlenderConfig(name="learned-blender-test", resolution=32, widths=(8, 16, 16))
)


@dataclass
class BlenderDataConfig:
    name: str = "lfw-pastes"
    facesets: list[str] = field(default_factory=list)  # empty: LFW peopleDevTrain photos
    lfw_people: int = 600
    size: int = 128
    colour_shift: float = 0.25  # per-channel gain range of the pasted face: the mismatch Poisson fixes
    val_pairs: int = 32


config_group("data").register("lfw-pastes")(BlenderDataConfig)
register_trainer(
    "blender",
    steps=500,
    batch_size=8,
    optimizer="adamw",
    lr=2e-3,
    betas=(0.9, 0.99),
    warmup_steps=30,
    schedule="cosine",
    final_lr_ratio=0.05,
    log_every=25,
    preview_every=0,
    checkpoint_every=300,
    keep_last=1,
)
register_trainer("blender-test", like="blender", steps=4, batch_size=4, checkpoint_every=2, **TEST_SETTINGS)


@dataclass
class BlenderTrainConfig:
    model: LearnedBlenderConfig = group_field(LearnedBlenderConfig, "model")
    data: BlenderDataConfig = group_field(BlenderDataConfig, "data")
    trainer: TrainerConfig = group_field("blender", "trainer")
    run_dir: str = "runs/learned-blender"


def load_faces_with_hulls(facesets: list[str | Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, S, S, 3) uint8 and their landmark face hulls (N, S, S) float32 at side ``size``."""
    import cv2

    from swaplab.facesets.format import Faceset

    faces, hulls = [], []
    for root in facesets:
        faceset = Faceset(root)
        for index, record in enumerate(faceset.records):
            faces.append(cv2.resize(faceset.image(index), (size, size), interpolation=cv2.INTER_AREA))
            hulls.append(landmark_mask(scale_points(record.landmarks_array, size / faceset.size), size))
    return np.stack(faces), np.stack(hulls).astype(np.float32)


def paste_example(
    faces: np.ndarray, hulls: np.ndarray, rng: np.random.Generator, colour_shift: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(frame, face, mask, Poisson result) of one swap-like paste: uint8, uint8, float32, uint8."""
    import cv2

    i, j = rng.choice(len(faces), 2, replace=False)
    frame = faces[i]
    gain = 1.0 + rng.uniform(-colour_shift, colour_shift, 3)
    face = np.clip(faces[j].astype(np.float32) * gain, 0, 255).astype(np.uint8)
    grow = int(rng.integers(-4, 5))
    mask = hulls[i]
    if grow:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1, 2 * abs(grow) + 1))
        mask = cv2.erode(mask, kernel) if grow > 0 else cv2.dilate(mask, kernel)
    return frame, face, mask, poisson_target(frame, face, mask)


def poisson_target(frame: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``cv2.seamlessClone`` of ``face`` into ``frame`` inside ``mask >= 0.5``, composited under ``mask``:
    what ``blend=poisson`` makes with ``feather_px=0`` for a mask clear of the crop's border (the swap
    stage's version, in a higher layer, also handles masks that touch the border)."""
    import cv2

    region = (mask >= 0.5).astype(np.uint8) * 255
    x, y, w, h = cv2.boundingRect(region)
    if w == 0 or h == 0:
        return frame.copy()
    # seamlessClone centres the mask's bounding box on this point: it keeps the face in place.
    cloned = cv2.seamlessClone(face, frame, region, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    mixed = frame.astype(np.float32) + mask[..., None] * (cloned.astype(np.float32) - frame)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def blend_batch(net: LearnedBlender, frame: Tensor, face: Tensor, alpha: Tensor) -> Tensor:
    """The training-time ``blend=learned``: N x 3 x S x S in [0, 1] frames and faces, N x 1 x S x S alpha."""
    side = net.resolution
    small = [F.interpolate(t, size=(side, side), mode="area") for t in (frame, face, alpha)]
    delta = F.interpolate(net(*small), size=frame.shape[-2:], mode="bilinear", align_corners=False)
    return frame + alpha * (face + delta - frame)


def _nchw(images: np.ndarray, device: torch.device) -> Tensor:
    array = np.ascontiguousarray(images, dtype=np.float32)
    tensor = torch.from_numpy(array if array.ndim == 4 else array[..., None]).permute(0, 3, 1, 2)
    return (tensor / (255.0 if images.dtype == np.uint8 else 1.0)).contiguous().to(device)


@RECIPES.register("learned-blender")
class BlenderRecipe(Recipe):
    name = "learned-blender"
    config_type = BlenderTrainConfig

    def __init__(self, cfg: BlenderTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        from swaplab.train.recipes.segmenter import lfw_faceset

        facesets = list(cfg.data.facesets) or [lfw_faceset(cfg.data.lfw_people, "train", session.trainer.progress)]
        faces, hulls = load_faces_with_hulls(facesets, cfg.data.size)
        val = max(2, min(len(faces) // 4, 48))
        self.faces, self.hulls = faces[:-val], hulls[:-val]
        rng = np.random.default_rng(99)
        examples = [
            paste_example(faces[-val:], hulls[-val:], rng, cfg.data.colour_shift) for _ in range(cfg.data.val_pairs)
        ]
        self.val = [np.stack(parts) for parts in zip(*examples)]

    def build(self) -> LearnedBlender:
        return LearnedBlender(self.cfg.model)

    def _batch(self, examples: list) -> list[Tensor]:
        device = self.session.device
        return [_nchw(np.stack(parts), device) for parts in zip(*examples)]

    def train_step(self, step: int) -> StepResult:
        from swaplab.train.session import apply_gradients

        cfg, tcfg = self.cfg, self.session.trainer
        rng = np.random.default_rng(stream_seed("blender", tcfg.seed, step))
        frame, face, alpha, target = self._batch(
            [paste_example(self.faces, self.hulls, rng, cfg.data.colour_shift) for _ in range(tcfg.batch_size)]
        )
        with self.session.autocast():
            out = blend_batch(self.module, frame, face, alpha)
        loss = (out.float() - target).abs().mean()
        loss.backward()
        applied, grad_norm = apply_gradients(self.optimizers["model"], loss.detach(), tcfg.grad_clip)
        return StepResult(applied, {"loss": float(loss.detach()), "grad_norm": grad_norm})

    def validate(self, step: int) -> dict[str, float]:
        frame, face, alpha, target = (_nchw(part, self.session.device) for part in self.val)
        self.module.eval()
        try:
            with torch.inference_mode():
                out = blend_batch(self.module, frame, face, alpha)
        finally:
            self.module.train()
        plain = frame + alpha * (face - frame)
        return {
            "val/l1_to_poisson": float((out - target).abs().mean() * 255),
            "val/alpha_l1_to_poisson": float((plain - target).abs().mean() * 255),
        }

    @classmethod
    def export(
        cls, cfg: BlenderTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        write_tensors(tensors, out_dir / "model.safetensors", weights_header("learned-blender", cfg.model))
        return {
            "swapper": None,
            "built_network": "learned-blender",
            "validation": {k: v for k, v in (state.get("metrics") or {}).items() if k.startswith("val/")},
            "conventions": "frame, face N x 3 x R x R and alpha N x 1 x R x R in [0, 1] -> correction of the face",
        }


def blender_config(preset: str = "cpu", overrides: list[str] | None = None) -> BlenderTrainConfig:
    from swaplab.config import apply_overrides, from_dict

    presets = {
        "cpu": [],
        "test": ["model=learned-blender-test", "trainer=blender-test", "data.lfw_people=16", "data.val_pairs=4"],
    }
    if preset not in presets:
        raise KeyError(f"no learned-blender build preset {preset!r}; known: {', '.join(presets)}")
    return apply_overrides(from_dict(BlenderTrainConfig, {}), [*presets[preset], *(overrides or [])])
