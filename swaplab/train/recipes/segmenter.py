"""The face-segmenter recipe: a U-Net taught background / face / occluder on aligned crops.

Labels come from the landmark face hull (``swaplab.faces.masks``), replaced by the user's polygons
where a face has them (``swaplab.facesets.mask_polygons``); each step warps the crops a little
(rotation, zoom, shift, mirror), pastes synthetic occluders with exactly known masks
(``swaplab.faces.occlusion``, textures from the other faces of the batch) and jitters brightness
and contrast, then takes a class-weighted cross-entropy. Validation scores held-out faces with
seeded occluders against the hull mask. ``swaplab nets build face-segmenter`` trains it into the
user cache, where ``mask=segment`` loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from swaplab.config import ConfigError, config_group, group_field, since_field
from swaplab.faces.masks import landmark_mask
from swaplab.faces.occlusion import FACE_LABEL, OCCLUDER_LABEL, OCCLUDERS, TRAIN_KINDS, occlude
from swaplab.metrics.segmentation import class_iou
from swaplab.models.installed import weights_header
from swaplab.models.segmentation import OCCLUDER, FaceSegmenter, FaceSegmenterConfig
from swaplab.train.checkpoint import write_tensors
from swaplab.train.config import TEST_SETTINGS, TrainerConfig, register_trainer
from swaplab.train.data import scale_points, stream_seed
from swaplab.train.degradation import DegradationConfig, degrade_face
from swaplab.train.recipe import RECIPES, Recipe, StepResult

log = logging.getLogger(__name__)
Tensor = torch.Tensor

config_group("model").register("face-segmenter")(FaceSegmenterConfig)
config_group("model").register("face-segmenter-test")(
    lambda: FaceSegmenterConfig(name="face-segmenter-test", resolution=48, widths=(8, 16, 32))
)


@dataclass
class SegmenterDataConfig:
    """Which aligned faces to learn from, and the occluders pasted over them."""

    name: str = "lfw-faces"
    # Aligned facesets to train on; empty: one photo of each of the first ``lfw_people`` of LFW's
    # peopleDevTrain people, extracted once into the user cache, after the outlined photos below.
    facesets: list[str] = field(default_factory=list)
    lfw_people: int = 600
    # With those LFW faces (no facesets given), the nineteen peopleDevTrain photos whose real
    # occluders are outlined in swaplab/train/outlines, each this many times (0 = none): with them
    # the build finds real occluders at IoU 0.29-0.34 against 0.11-0.14 (docs/masks.md).
    lfw_outlines: int = since_field(4, before=0)
    # Polygons files (swaplab.facesets.mask_polygons); each faceset's own mask_polygons.json is read too.
    polygons: list[str] = field(default_factory=list)
    val_faces: int = 48  # the last faces, held out for validation
    occluders: tuple[str, ...] = TRAIN_KINDS
    occlusion_prob: float = 0.8  # faces that get any occluder
    # When user polygons outline real occluders (hands, microphones, sunglasses), this share of the
    # pasted occluders are those cut-outs, moved, scaled and mirrored onto other faces, instead of a
    # synthetic kind (the default build finds synthetic patches but not real objects). Off by
    # default: with twelve outlines it did not beat training on the outlined faces alone
    # (docs/masks.md, "Real occluders").
    outlined_share: float = 0.0
    # Share of faces whose occluders are pasted less visibly (colours partly matched to the face,
    # edges feathered) and of faces then blurred, noised and JPEG-compressed as a whole, so that a
    # pasted occluder's hard edge and foreign sharpness stop being what marks it: real hands and
    # microphones have neither. The labels stay the occluders' exact masks. At 0.5 the build finds
    # real occluders (IoU 0.11-0.14 on ten outlined photos, 0 with hard pastes; docs/masks.md).
    realistic_paste: float = since_field(0.5, before=0.0)
    max_occluders: int = 2
    rotation_deg: float = 10.0
    scale: float = 0.1
    translation: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2

    def __post_init__(self) -> None:
        unknown = [k for k in self.occluders if k not in OCCLUDERS]
        if unknown or not self.occluders:
            raise ConfigError(f"data.occluders {list(self.occluders)}: choose from {', '.join(OCCLUDERS.names())}")
        if self.lfw_outlines < 0:
            raise ConfigError(f"data.lfw_outlines must be >= 0, got {self.lfw_outlines}")
        if not 0 <= self.occlusion_prob <= 1 or self.max_occluders < 1:
            raise ConfigError("data.occlusion_prob must be in [0, 1] and data.max_occluders >= 1")
        for name in ("outlined_share", "realistic_paste"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")


config_group("data").register("lfw-faces")(SegmenterDataConfig)

#: The CPU build: about 4 minutes at one thread of the project's 2-vCPU machine.
register_trainer(
    "segmenter",
    steps=1200,
    batch_size=12,
    optimizer="adamw",
    lr=3e-3,
    betas=(0.9, 0.99),
    weight_decay=1e-4,
    warmup_steps=50,
    schedule="cosine",
    final_lr_ratio=0.05,
    log_every=25,
    preview_every=0,
    checkpoint_every=500,
    keep_last=1,
)
register_trainer("segmenter-test", like="segmenter", steps=4, batch_size=4, checkpoint_every=2, **TEST_SETTINGS)


@dataclass
class SegmenterTrainConfig:
    model: FaceSegmenterConfig = group_field(FaceSegmenterConfig, "model")
    data: SegmenterDataConfig = group_field(SegmenterDataConfig, "data")
    trainer: TrainerConfig = group_field("segmenter", "trainer")
    # Cross-entropy weight of each class (background, face, occluder): occluders are rarer.
    class_weights: tuple[float, ...] = (1.0, 1.0, 2.0)
    run_dir: str = "runs/face-segmenter"


# ------------------------------------------------------------------------------ data


@dataclass
class LabelledFaces:
    """Aligned crops (N, S, S, 3) uint8 with label maps (N, S, S) uint8 and their ids."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    corrected: int = 0  # faces whose labels came from user polygons

    def take(self, rows: slice) -> LabelledFaces:
        return LabelledFaces(self.images[rows], self.labels[rows], self.ids[rows])

    def outlined_occluders(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(crop, occluder mask) of every face whose labels mark an occluder: only user polygons do
        (hull labels never hold one), so these are real objects a person outlined."""
        return [
            (self.images[i], self.labels[i] == OCCLUDER_LABEL)
            for i in range(len(self.images))
            if (self.labels[i] == OCCLUDER_LABEL).any()
        ]


def hull_labels(landmarks: np.ndarray, size: int, scale: float = 1.0) -> np.ndarray:
    """The hull label map: ``FACE_LABEL`` inside the landmark face hull, background elsewhere."""
    mask = landmark_mask(scale_points(landmarks, scale), size, "face")
    return np.where(mask >= 0.5, FACE_LABEL, 0).astype(np.uint8)


def load_labelled_faces(facesets: list[str | Path], size: int, polygons: list[str | Path] = ()) -> LabelledFaces:
    """Every face of ``facesets`` resized to ``size`` with its labels (user polygons override hulls)."""
    from swaplab.facesets.format import Faceset
    from swaplab.facesets.mask_polygons import POLYGONS_FILE, polygon_labels, read_mask_polygons

    corrected = {}
    for path in polygons:
        corrected.update(read_mask_polygons(path))
    images, labels, ids = [], [], []
    used = 0
    for root in facesets:
        faceset = Faceset(root)
        own = Path(root) / POLYGONS_FILE
        local = {**(read_mask_polygons(own) if own.is_file() else {}), **corrected}
        scale = size / faceset.size
        for index, record in enumerate(faceset.records):
            image = faceset.image(index)
            images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
            if record.id in local:
                labels.append(polygon_labels(local[record.id], size, scale))
                used += 1
            else:
                labels.append(hull_labels(record.landmarks_array, size, scale))
            ids.append(record.id)
    if not images:
        raise ValueError(f"no faces in {', '.join(map(str, facesets))}")
    return LabelledFaces(np.stack(images), np.stack(labels), ids, used)


def lfw_faceset(people: int, split: str = "train", progress: bool = True) -> Path:
    """A faceset (256 px, whole_face) of one photo each of the first ``people`` people of LFW's
    ``split`` ("train": peopleDevTrain, for training; "eval": peopleDevTest, for measuring only),
    extracted once into ``<user cache>/nets/faces/lfw-<split>-<people>`` (resumable)."""
    from swaplab.data.fetch import data_root
    from swaplab.data.lfw import SPLIT_FILES, read_people_list
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.system import user_cache_dir

    root = data_root() / "lfw"
    names = list(read_people_list(root / SPLIT_FILES[split]))[:people]
    photos = [root / "lfw-deepfunneled" / name / f"{name}_0001.jpg" for name in names]
    photos = [p for p in photos if p.is_file()]
    if not photos:
        raise FileNotFoundError(f"no LFW photos under {root}: fetch them with `swaplab data fetch lfw`")
    out = user_cache_dir() / "nets" / "faces" / f"lfw-{split}-{people}"
    cfg = ExtractConfig(size=256)
    cfg.faces.max_faces = 1
    extract(photos, out, cfg, progress=progress)
    return out


def lfw_outlined_faceset(labels: Path, progress: bool = False) -> Path:
    """The LFW photos that ``labels`` outlines (keys: photo stems such as ``Name_0001``; coordinates in
    128 px ``whole_face`` crops), extracted once into the user cache at 128 px, with the outlines
    written as that faceset's ``mask_polygons.json`` under its own face ids."""
    from swaplab.data.fetch import data_root
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.facesets.format import Faceset
    from swaplab.facesets.mask_polygons import POLYGONS_FILE, read_mask_polygons
    from swaplab.io.atomic import atomic_write_json
    from swaplab.system import user_cache_dir

    outlines = read_mask_polygons(labels)
    photos = [data_root() / "lfw" / "lfw-deepfunneled" / stem.rsplit("_", 1)[0] / f"{stem}.jpg" for stem in outlines]
    out = user_cache_dir() / "nets" / "faces" / f"lfw-{labels.stem.replace('_', '-')}"
    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1
    extract(photos, out, cfg, progress=progress)
    faces = {}
    for record in Faceset(out).records:
        stem = record.id.split("-")[0]
        if stem in outlines:
            entry = outlines[stem]
            faces[record.id] = {
                "face": [p.tolist() for p in entry.face],
                "occluder": [p.tolist() for p in entry.occluder],
            }
    document = {"format": "swaplab-mask-polygons", "version": 1, "faces": faces}
    atomic_write_json(out / POLYGONS_FILE, document)
    return out


#: Real occluders outlined by hand on peopleDevTrain photos (the user polygon format keyed by photo stem).
PACKAGED_OUTLINES = tuple(sorted((Path(__file__).resolve().parents[1] / "outlines").glob("*.json")))


def default_facesets(data: SegmenterDataConfig, progress: bool = False) -> list[Path]:
    """The faces of a build that names none: the packaged outlined photos, ``data.lfw_outlines``
    times each, then one photo each of the first ``data.lfw_people`` peopleDevTrain people (last,
    so the validation faces, taken from the end, are plain LFW faces)."""
    outlined = [lfw_outlined_faceset(path, progress) for path in PACKAGED_OUTLINES] if data.lfw_outlines else []
    return [*outlined * data.lfw_outlines, lfw_faceset(data.lfw_people, "train", progress)]


def paste_outlined(
    image: np.ndarray, labels: np.ndarray, cutouts: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One outlined real occluder, moved (up to a fifth of the side), turned (up to 20 degrees), scaled
    (0.8-1.2) and maybe mirrored, pasted over ``image`` (R x R x 3) and marked in ``labels``."""
    size = image.shape[0]
    crop, mask = cutouts[int(rng.integers(len(cutouts)))]
    matrix = cv2.getRotationMatrix2D(
        (crop.shape[1] / 2, crop.shape[0] / 2), rng.uniform(-20, 20), rng.uniform(0.8, 1.2)
    )
    matrix *= size / crop.shape[0]  # to this image's size, then moved
    matrix[:, 2] += rng.uniform(-0.2, 0.2, 2) * size
    layer = cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR)
    pasted = cv2.warpAffine(mask.astype(np.uint8), matrix, (size, size), flags=cv2.INTER_NEAREST).astype(bool)
    if rng.random() < 0.5:
        layer, pasted = layer[:, ::-1], pasted[:, ::-1]
    out, out_labels = image.copy(), labels.copy()
    out[pasted] = layer[pasted]
    out_labels[pasted] = OCCLUDER_LABEL
    return out, out_labels


#: The whole-crop degradation of realistic pasting: milder than the restorer's (no 4x downscale).
PASTE_DEGRADATION = DegradationConfig(downscale=(1.0, 1.6), blur_sigma=(0.0, 1.2), noise_sigma=(0.0, 4.0))


def soften_paste(face: np.ndarray, pasted: np.ndarray, covered: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pasted`` (``face`` with occluders over ``covered``) with the occluders' colours moved part of
    the way to the face's mean and spread, and their edges feathered into the face by 0.5-2 px."""
    if not covered.any() or covered.all():
        return pasted
    out = pasted.astype(np.float32)
    layer, around = out[covered], face[~covered].astype(np.float32)
    matched = (layer - layer.mean(0)) / (layer.std(0) + 1.0) * around.std(0) + around.mean(0)
    out[covered] = layer + rng.uniform(0.0, 0.6) * (matched - layer)
    alpha = cv2.GaussianBlur(covered.astype(np.float32), (0, 0), sigmaX=rng.uniform(0.5, 2.0))[..., None]
    out = face.astype(np.float32) * (1.0 - alpha) + out * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def augment_batch(
    faces: LabelledFaces,
    rows: np.ndarray,
    resolution: int,
    data: SegmenterDataConfig,
    rng: np.random.Generator,
    cutouts: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Warped, mirrored, occluded and jittered crops (B, R, R, 3) uint8 with their labels (B, R, R);
    ``cutouts`` (``LabelledFaces.outlined_occluders``) are real occluders to paste as well."""
    size = faces.images.shape[1]
    images, labels = [], []
    for row in rows:
        angle = rng.uniform(-data.rotation_deg, data.rotation_deg)
        zoom = resolution / size * (1.0 + rng.uniform(-data.scale, data.scale))
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, zoom)
        matrix[:, 2] += resolution / 2 - size / 2 + rng.uniform(-data.translation, data.translation, 2) * resolution
        image = cv2.warpAffine(
            faces.images[row], matrix, (resolution, resolution), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT
        )
        label = cv2.warpAffine(
            faces.labels[row],
            matrix,
            (resolution, resolution),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        images.append(np.ascontiguousarray(image))
        labels.append(np.ascontiguousarray(label))
    out_images, out_labels = [], []
    for index, (face, face_label) in enumerate(zip(images, labels)):
        image, label = face, face_label
        if rng.random() < data.occlusion_prob:
            # Drawn only when the option is on and outlines exist: other builds keep their random stream.
            if cutouts and data.outlined_share and rng.random() < data.outlined_share:
                image, label = paste_outlined(image, label, list(cutouts), rng)
            else:
                donors = [d for j, d in enumerate(images) if j != index] or [image]
                count = int(rng.integers(1, data.max_occluders + 1))
                image, label, _ = occlude(image, label, donors, rng, data.occluders, count)
            # Likewise drawn only when realistic pasting is on.
            if data.realistic_paste and rng.random() < data.realistic_paste:
                covered = (label == OCCLUDER_LABEL) & (face_label != OCCLUDER_LABEL)
                image = soften_paste(face, image, covered, rng)
        if data.realistic_paste and rng.random() < data.realistic_paste:
            image = degrade_face(image, rng, PASTE_DEGRADATION)  # occluded or not, so it tells nothing
        gain = 1.0 + rng.uniform(-data.contrast, data.contrast)
        shift = 255.0 * rng.uniform(-data.brightness, data.brightness)
        mean = image.mean()
        image = np.clip((image.astype(np.float32) - mean) * gain + mean + shift, 0, 255).astype(np.uint8)
        out_images.append(image)
        out_labels.append(label)
    return np.stack(out_images), np.stack(out_labels)


def occluded_set(
    faces: LabelledFaces, resolution: int, kinds: tuple[str, ...], seed: int, count: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Every face resized to ``resolution`` with ``count`` seeded occluders of ``kinds`` (evaluation sets)."""
    rng = np.random.default_rng(seed)
    images = np.stack([cv2.resize(im, (resolution, resolution), interpolation=cv2.INTER_AREA) for im in faces.images])
    labels = np.stack(
        [cv2.resize(lb, (resolution, resolution), interpolation=cv2.INTER_NEAREST) for lb in faces.labels]
    )
    out_images, out_labels = [], []
    for index in range(len(images)):
        donors = [images[(index + k) % len(images)] for k in range(1, 4)]
        image, label, _ = occlude(images[index], labels[index], donors, rng, kinds, count)
        out_images.append(image)
        out_labels.append(label)
    return np.stack(out_images), np.stack(out_labels)


def segment_scores(
    segmenter: FaceSegmenter, images: np.ndarray, labels: np.ndarray, hull: np.ndarray
) -> dict[str, float]:
    """IoU of the face and occluder classes for the network and for the hull mask (which predicts
    face inside the hull, never an occluder), over (N, S, S, 3) images with their (N, S, S) labels."""
    from swaplab.models.installed import as_batch

    device = next(segmenter.parameters()).device
    with torch.inference_mode():
        predicted = torch.cat(
            [segmenter.segment(as_batch(images[i : i + 64], device)).argmax(1).cpu() for i in range(0, len(images), 64)]
        ).numpy()
    scores = {
        "iou_face": class_iou(predicted, labels, FACE_LABEL),
        "iou_occluder": class_iou(predicted, labels, OCCLUDER),
        "hull_iou_face": class_iou(hull, labels, FACE_LABEL),
        "hull_iou_occluder": class_iou(hull, labels, OCCLUDER),
    }
    scores["miou"] = (scores["iou_face"] + scores["iou_occluder"]) / 2
    scores["hull_miou"] = (scores["hull_iou_face"] + scores["hull_iou_occluder"]) / 2
    return scores


# ------------------------------------------------------------------------------ the recipe


@RECIPES.register("face-segmenter")
class SegmenterRecipe(Recipe):
    """Trains ``FaceSegmenter`` on hull (or polygon) labels with synthetic occluders."""

    name = "face-segmenter"
    config_type = SegmenterTrainConfig

    def __init__(self, cfg: SegmenterTrainConfig, session: Any, faces: LabelledFaces | None = None) -> None:
        super().__init__(cfg, session)
        if len(cfg.class_weights) != len(cfg.model.classes):
            raise ConfigError(f"class_weights needs one weight per class ({', '.join(cfg.model.classes)})")
        if faces is None:
            facesets = list(cfg.data.facesets) or default_facesets(cfg.data, session.trainer.progress)
            faces = load_labelled_faces(facesets, 2 * cfg.model.resolution, cfg.data.polygons)
        val = min(cfg.data.val_faces, len(faces.ids) // 4)
        self.train_faces = faces.take(slice(0, len(faces.ids) - val))
        self.val_faces = faces.take(slice(len(faces.ids) - val, None)) if val else None
        self.corrected = faces.corrected
        self.cutouts = self.train_faces.outlined_occluders()
        self.val_set = None
        if self.val_faces is not None:
            self.val_set = occluded_set(self.val_faces, cfg.model.resolution, tuple(cfg.data.occluders), seed=1234)

    def build(self) -> FaceSegmenter:
        return FaceSegmenter(self.cfg.model)

    def data_hashes(self) -> dict[str, Any]:
        return {
            "faces": {
                "train": len(self.train_faces.ids),
                "validation": len(self.val_faces.ids) if self.val_faces else 0,
                "user_polygons": self.corrected,
                "outlined_occluders": len(self.cutouts),
            }
        }

    def train_step(self, step: int) -> StepResult:
        from swaplab.train.session import apply_gradients

        cfg, session = self.cfg, self.session
        tcfg = session.trainer
        rng = np.random.default_rng(stream_seed("segmenter", tcfg.seed, step))
        rows = rng.integers(0, len(self.train_faces.ids), tcfg.batch_size)
        images, labels = augment_batch(self.train_faces, rows, cfg.model.resolution, cfg.data, rng, self.cutouts)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
        x = x.to(session.device).contiguous(memory_format=session.memory_format)
        y = torch.from_numpy(labels).long().to(session.device)
        weights = torch.tensor(cfg.class_weights, dtype=torch.float32, device=session.device)
        with session.autocast():
            logits = self.module(x)
        loss = F.cross_entropy(logits.float(), y, weight=weights)
        loss.backward()
        applied, grad_norm = apply_gradients(self.optimizers["model"], loss.detach(), tcfg.grad_clip)
        return StepResult(applied, {"loss": float(loss.detach()), "grad_norm": grad_norm})

    def validate(self, step: int) -> dict[str, float]:
        if self.val_set is None:
            return {}
        images, labels = self.val_set
        hull = self._hull_prediction()
        self.module.eval()
        try:
            scores = segment_scores(self.module, images, labels, hull)  # type: ignore[arg-type]
        finally:
            self.module.train()
        return {f"val/{k}": v for k, v in scores.items()}

    def _hull_prediction(self) -> np.ndarray:
        """The hull mask's own labels for the validation faces (face inside the hull, no occluders)."""
        size = self.cfg.model.resolution
        return np.stack([cv2.resize(lb, (size, size), interpolation=cv2.INTER_NEAREST) for lb in self.val_faces.labels])

    @classmethod
    def export(
        cls, cfg: SegmenterTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        """The network's weights with its config in the header (``swaplab.models.installed.read_built``)."""
        write_tensors(tensors, out_dir / "model.safetensors", weights_header("face-segmenter", cfg.model))
        return {
            "swapper": None,
            "built_network": "face-segmenter",
            "classes": list(cfg.model.classes),
            "validation": {k: v for k, v in (state.get("metrics") or {}).items() if k.startswith("val/")},
            "conventions": "aligned crops N x 3 x H x W RGB in [0, 1] -> class probabilities N x C x H x W",
        }


def segmenter_config(preset: str = "cpu", overrides: list[str] | None = None) -> SegmenterTrainConfig:
    from swaplab.config import apply_overrides, from_dict

    presets = {
        "cpu": [],
        "test": [
            "model=face-segmenter-test",
            "trainer=segmenter-test",
            "data.lfw_people=16",
            "data.lfw_outlines=0",
            "data.val_faces=4",
        ],
    }
    if preset not in presets:
        raise KeyError(f"no face-segmenter build preset {preset!r}; known: {', '.join(presets)}")
    return apply_overrides(from_dict(SegmenterTrainConfig, {}), [*presets[preset], *(overrides or [])])
