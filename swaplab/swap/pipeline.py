"""The swap (convert) stage: photos, folders and videos in, marked swapped media out.

Per frame: find faces (detect, or track between detections), smooth their landmarks over time,
align each chosen face to the model's template, run the model, build the mask, match colour,
warp back with the inverse transform, blend, mark the frame as synthetic, and write. Frames
without a face pass through unchanged. The colour, blend, smoothing and marking maths live in
their own modules; this one composes them and times each stage.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from tqdm import tqdm

from swaplab.config import choice_field, to_dict
from swaplab.faces.align import alignment_matrix, invert_affine, transform_points, warp_face
from swaplab.faces.analyze import AlignedFace, FaceAnalyzer, FaceAnalyzerConfig
from swaplab.io.atomic import (
    DiskFullError,
    atomic_write_json,
    ensure_free_space,
    remove_stale_temporaries,
    sha256_file,
)
from swaplab.io.images import MediaError, is_image_path, is_video_path, read_image
from swaplab.io.locks import exclusive
from swaplab.io.video import VideoReader, VideoWriter
from swaplab.provenance import Provenance, mark_image, video_metadata_tags, write_marked_image
from swaplab.provenance.content_credentials import sign_in_place
from swaplab.swap.blend import BLENDERS, sharpen
from swaplab.swap.colour import COLOUR_TRANSFERS
from swaplab.swap.masking import MASK_MODES, finish_mask, mouth_interior, without_mouth_interior
from swaplab.swap.overlap import Drain, Prefetch
from swaplab.swap.smoothing import SMOOTHERS
from swaplab.system import autocast, autocast_dtype

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "align", "model", "mask", "colour", "restore", "blend", "mark", "encode")


@dataclass
class SwapConfig:
    """Options of ``swaplab swap`` (each a ``key=value`` override on the CLI)."""

    faces: FaceAnalyzerConfig = field(default_factory=FaceAnalyzerConfig)
    which: Literal["all", "largest", "reference"] = "all"  # which faces of a frame to swap
    # A faceset extracted from this same input: its stored landmarks are used instead of detecting
    # and tracking again (frames it has no face for pass through unchanged).
    faceset: str = ""
    reference: list[Path] = field(default_factory=list)  # with which=reference: photos of the target person
    # One-shot models: photos of the source person (whose face goes in); their dlib descriptors
    # are averaged. Per-pair models learned their source and ignore it.
    source: list[Path] = field(default_factory=list)
    max_identity_distance: float = 0.6
    mask: str = choice_field("intersection", MASK_MODES)  # learned, hull, intersection, union, segment, segment+hull
    mask_erode: int = 0  # pixels at model resolution; negative dilates
    mask_blur: int = -1  # feather in pixels at model resolution; -1: resolution / 16
    # Video: the mask smoothed over time per face track by a landmark smoother (learned masks flicker).
    mask_smoothing: str = choice_field("none", SMOOTHERS)  # none, one_euro, kalman
    mask_smoothing_strength: float = 0.5
    keep_mouth: bool = False  # cut the inner-lips region out of the mask: the target's own teeth and tongue show
    colour: str = choice_field("rct", COLOUR_TRANSFERS)  # none, rct, lct, mkl, idt, sot, hist
    blend: str = choice_field("alpha", BLENDERS)  # alpha, poisson, laplacian
    sharpen: float = 0.0  # unsharp-mask amount on the swapped face (0 = off)
    # The face restorer (swaplab nets build face-restorer) on the swapped face, upscaled to the
    # frame's footprint first, so the paste reaches the frame's resolution; strength 0..1.
    restore: Literal["off", "on"] = "off"
    restore_strength: float = 1.0
    # Which restorer: empty for the installed one, or a folder or weights file of another build, such
    # as one personal to the source (swaplab nets build face-restorer --preset personal --out FOLDER).
    restorer: str = ""
    # The largest upscale one restoration pass makes: a face upscaled more (a 64 px face onto a
    # 450 px footprint) is upscaled and restored in equal steps below it (170, then 450 px), so each
    # pass sees blur within the 2-6x the restorer learned, not a 7x blur it never saw. 0 = one pass.
    # Measured (docs/masks.md): on the demo's 512 px frames two passes lift sharpness 0.26 -> 0.34
    # and bring the face closer to the source (smaller steps score higher still, 1.5: 0.39, but draw
    # a caricature); on LFW frames (2.6x) one pass keeps more identity than passes of 1.5x, so the
    # default restores those in one.
    restore_pass_scale: float = 3.0
    # Video: the detail the restorer adds (restored minus its input) smoothed over time per face
    # track, in the face's own crop, so restoration does not add flicker; fast changes pass.
    restore_smoothing: str = choice_field("none", SMOOTHERS)  # none, one_euro, kalman
    restore_smoothing_strength: float = 0.5
    # Video: GL-GAN's smoother (swaplab nets build glgan-smoother) makes each frame's swapped face
    # agree with the track's previous one inside the face, against the model's frame-to-frame flicker.
    face_smoothing: Literal["none", "glgan"] = "none"
    smoothing: str = choice_field("one_euro", SMOOTHERS)  # one_euro, kalman, none
    smoothing_strength: float = 0.5
    # Settings of iterative models (a sampler and its steps: options={sampler: ddim, steps: 25});
    # a model without any refuses them.
    options: dict[str, str] = field(default_factory=dict)
    preview: int = 0  # > 0: process only this many frames and write a target | swap strip
    preview_every: int = 1  # with preview: take every Kth frame
    max_frames: int = 0  # stop a video after this many frames (0 = all)
    overwrite: bool = False
    batch_frames: int = 8  # video frames whose faces go through the model together (2.4x at 8 vs 1 here)
    # Video: decode/detect ahead and mark/encode behind the model on two worker threads (the
    # frames are the same either way; false runs every stage in turn on one thread).
    overlap: bool = True
    crf: int = 18
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # Marking is on by default and cannot be silenced from the command line alone: turning it off
    # needs this key, is recorded in the sidecar report and printed as a warning.
    mark: bool = True

    def __post_init__(self) -> None:
        from swaplab.config import ConfigError

        if self.preview < 0 or self.preview_every < 1 or self.max_frames < 0:
            raise ConfigError("preview and max_frames must be >= 0, preview_every >= 1")
        if not 0.0 <= self.restore_strength <= 1.0:
            raise ConfigError(f"restore_strength must be in [0, 1], got {self.restore_strength}")
        if self.restorer and self.restore != "on":
            raise ConfigError(f"restorer={self.restorer} is used only with restore=on")
        if self.restorer and not Path(self.restorer).expanduser().exists():
            raise ConfigError(f"restorer={self.restorer}: no such weights file or folder")
        if self.restore_pass_scale != 0 and not 1.1 <= self.restore_pass_scale <= 8:
            raise ConfigError(f"restore_pass_scale must be 0 (one pass) or in [1.1, 8], got {self.restore_pass_scale}")


@dataclass
class SwapReport:
    """What a swap did: counts, problems, and time per stage (seconds)."""

    output: str
    frames: int = 0
    frames_swapped: int = 0
    frames_without_face: int = 0
    faces_swapped: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    problems: list[str] = field(default_factory=list)
    marked: bool = True
    outputs: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # photos written as they were (no face: not marked)
    faces_without_landmarks: int = 0  # faces a landmark-driven model (FSGAN) passed through unchanged

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        out = [
            f"wrote {self.output}",
            f"{self.frames} frames ({self.fps:.1f} frames/s), {self.faces_swapped} faces swapped, "
            f"{self.frames_without_face} frames without a face passed through unchanged",
        ]
        busy = {k: v for k, v in self.stage_seconds.items() if v > 0}
        if busy and self.frames:
            out.append("ms per frame: " + ", ".join(f"{k} {1000 * v / self.frames:.1f}" for k, v in busy.items()))
        if self.faces_without_landmarks:
            out.append(f"{self.faces_without_landmarks} faces without usable landmarks passed through unchanged")
        out.extend(f"no face: unchanged and not marked: {p}" for p in self.unchanged[:10])
        if len(self.unchanged) > 10:
            out.append(f"... and {len(self.unchanged) - 10} more photos without a face")
        out.extend(f"problem: {p}" for p in self.problems)
        if not self.marked:
            out.append("WARNING: provenance marking was turned off (mark=false); outputs are not marked")
        return out


class FaceSwapper:
    """A loaded model plus everything needed to swap faces in frames; reusable across files.

    The model is driven through the swapper contract (``swaplab.models.swapper``) alone: its card
    says the resolution and alignment template, and which identity network, if any, embeds the
    source person's photos.
    """

    def __init__(self, model_path: str | Path, config: SwapConfig | None = None, device: str = "cpu") -> None:
        from swaplab.models.swapper import load_swapper

        self.config = cfg = config or SwapConfig()
        # Channels-last weights as well as inputs: 1.3x on this CPU's convolutions (bf16 or fp32).
        self.model = load_swapper(model_path, device=device).to(memory_format=torch.channels_last)
        self.model.configure(**cfg.options)
        self.card = self.model.card
        self.model_path = Path(model_path)
        self.resolution = self.model.resolution
        self.template = self.model.template
        self.device = torch.device(device)
        self.autocast = autocast_dtype(cfg.precision, self.device)
        # Identity descriptors cost ~10 ms a face and matter only when choosing faces by identity.
        face_cfg = dataclasses.replace(cfg.faces, embed=cfg.which == "reference")
        self.analyzer = FaceAnalyzer(face_cfg, template=self.template, size=self.resolution)
        self.references = self._reference_identities()
        # The model is its weights: the same weights exported from another folder (the evaluator
        # exports a run into a new temporary one each time) mark, and so evaluate, identically. The
        # card's text, with its paths and times, is hashed only for a card that names no weights.
        card_text = json.dumps(self.card, sort_keys=True).encode()
        self._weights_hash = self.card.get("weights", {}).get("sha256") or hashlib.sha256(card_text).hexdigest()
        self.model_id = f"{self.card.get('arch', 'model')}-{self._weights_hash[:12]}"
        self.timer = StageTimer()
        self._mask_tracks: dict[int, tuple[Any, int]] = {}  # track id -> (mask smoother, frames seen)
        self._mouth_tracks: dict[int, tuple[Any, int]] = {}  # the same for keep_mouth's cut
        # track id -> (restoration side, detail smoother, frames seen)
        self._restore_tracks: dict[int, tuple[int, Any, int]] = {}
        self._face_tracks: dict[int, np.ndarray] = {}  # track id -> the previous frame's smoothed face
        self.source: torch.Tensor | None = None
        if self.needs_source and cfg.source:
            self.set_source_photos(cfg.source)
        elif self.needs_source:
            log.info("this model swaps in any person: give the source person's photo (source=PHOTO)")

    # ------------------------------------------------------------------ public

    @property
    def needs_source(self) -> bool:
        """Whether the model takes a source person (an embedding by ``model.conditions_on``, or, for
        models that reenact a face (``takes_source_face``), the aligned face itself)."""
        return self.model.conditions_on is not None or getattr(self.model, "takes_source_face", False)

    def provenance(self, content: bytes | str) -> Provenance:
        return Provenance.create(self.model_id, model_card=self._weights_hash, content=content)

    def set_source_identity(self, identity: np.ndarray | torch.Tensor) -> None:
        """Swap in the person of this embedding (by ``model.conditions_on``, shape (D,)) from now on."""
        if not self.needs_source:
            raise ValueError(f"{self.model_path} is a per-pair model: its source identity is fixed by training")
        vector = torch.as_tensor(np.asarray(identity, dtype=np.float32)).reshape(1, -1)
        if not torch.isfinite(vector).all():
            raise ValueError("the source identity holds non-finite numbers")
        self.source = vector.to(self.device)

    def set_source_photos(self, photos: list[Path] | list[str]) -> np.ndarray:
        """Swap in the person of these photos: the mean embedding of each photo's largest face, by
        the identity network the model conditions on. Returns that embedding."""
        from swaplab.identity.embed import embed_faces
        from swaplab.identity.registry import IDENTITY_ENCODERS

        if getattr(self.model, "takes_source_face", False):
            return self._set_source_face(photos)
        network = IDENTITY_ENCODERS.create(self.model.conditions_on)
        # Frames need no descriptors, so the frame analyser computes none; source photos find faces only.
        analyzer = FaceAnalyzer(dataclasses.replace(self.config.faces, embed=False), self.template, self.resolution)
        images, points = [], []
        for path in photos:
            image = read_image(path)[0]
            faces = analyzer.analyze(image, embed=False)
            if not faces:
                raise MediaError(path, "no face found in the source photo")
            images.append(image)
            points.append(max(faces, key=lambda f: f.box.area).landmarks5_source)
        identity = embed_faces(images, points, network).mean(axis=0)
        self.set_source_identity(identity)
        return identity

    def _set_source_face(self, photos: list[Path] | list[str]) -> np.ndarray:
        """Models that reenact the source face (FSGAN): the first photo's largest face, aligned like
        the targets, with its landmarks, packed by the model (``source_code``)."""
        analyzer = FaceAnalyzer(dataclasses.replace(self.config.faces, embed=False), self.template, self.resolution)
        path = photos[0]
        faces = analyzer.analyze(read_image(path)[0], embed=False)
        if not faces:
            raise MediaError(path, "no face found in the source photo")
        face = max(faces, key=lambda f: f.box.area)
        code = self.model.source_code(face.crop, face.landmarks)
        self.source = code.to(self.device)
        return code[0].numpy()

    def swap_frame(self, frame: np.ndarray, faces: list[AlignedFace]) -> tuple[np.ndarray, int]:
        """Swap the chosen ``faces`` of ``frame``; returns the new frame and how many were swapped."""
        chosen = self._choose(faces)
        if not chosen:
            return frame, 0
        rgb, learned = self.render(chosen)
        return self.composite(frame, chosen, rgb, learned), len(chosen)

    def render(self, faces: list[AlignedFace], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on the faces' crops, in batches: swapped RGB (N, R, R, 3) uint8, masks (N, R, R)."""
        with self.timer("model"):
            outputs = [
                self._run_model(
                    np.stack([f.crop for f in faces[i : i + batch_size]]),
                    np.stack([f.landmarks for f in faces[i : i + batch_size]]),
                )
                for i in range(0, len(faces), batch_size)
            ]
        return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])

    def composite(
        self, frame: np.ndarray, faces: list[AlignedFace], rgb: np.ndarray, learned: np.ndarray
    ) -> np.ndarray:
        """Mask, recolour and blend each rendered face back into ``frame``."""
        out = frame
        for face, face_rgb, face_mask in zip(faces, rgb, learned):
            with self.timer("mask"):
                mask = self._mask(face, face_mask)
            with self.timer("colour"):
                face_rgb = self._match_colour(face_rgb, face.crop, mask)
                if self.config.face_smoothing == "glgan":
                    face_rgb = self._smooth_face(face_rgb, face.track_id)
                if self.config.sharpen > 0:
                    face_rgb = sharpen(face_rgb, self.config.sharpen)
            matrix = face.matrix
            if self.config.restore == "on":
                with self.timer("restore"):
                    face_rgb, mask, matrix = self._restore(face_rgb, mask, matrix, face.track_id)
            with self.timer("blend"):
                out = self._paste(out, face_rgb, mask, matrix)
        return out

    # ------------------------------------------------------------------ steps

    def _choose(self, faces: list[AlignedFace]) -> list[AlignedFace]:
        if not faces:
            return []
        if self.config.which == "largest":
            return [max(faces, key=lambda f: f.box.area)]
        if self.config.which == "reference":
            assert self.references is not None
            keep = []
            for face in faces:
                distance = float(np.min(np.linalg.norm(self.references - face.identity[None], axis=1)))
                if distance <= self.config.max_identity_distance:
                    keep.append(face)
            return keep
        return faces

    def _run_model(self, crops: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, R, R, 3) uint8 crops -> swapped (N, R, R, 3) uint8 and learned masks (N, R, R) float.
        Models that reenact (``uses_landmarks``) also get the crops' landmarks (N, 68, 2)."""
        batch = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        batch = batch.contiguous(memory_format=torch.channels_last)
        if self.needs_source and self.source is None:
            raise ValueError("this model swaps in any person: name the source person's photo(s) with source=PHOTO")
        with torch.inference_mode():
            with autocast(self.device, self.autocast):
                if getattr(self.model, "uses_landmarks", False) and landmarks is not None:
                    points = torch.from_numpy(np.asarray(landmarks, np.float32)).to(self.device)
                    rgb, mask = self.model.swap(batch, self.source, landmarks=points)
                else:
                    rgb, mask = self.model.swap(batch, self.source)
            rgb = rgb.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            mask = mask.float()[:, 0].clamp(0, 1)
            return rgb.cpu().numpy(), mask.cpu().numpy()

    def reset_tracks(self) -> None:
        """Forget the per-track state (mask and restoration smoothers): call at the start of each video or photo."""
        self._mask_tracks.clear()
        self._mouth_tracks.clear()
        self._restore_tracks.clear()
        self._face_tracks.clear()

    def _mask(self, face: AlignedFace, learned: np.ndarray) -> np.ndarray:
        """The blend mask in crop space (R x R float in [0, 1])."""
        cfg, size = self.config, self.resolution
        mask = MASK_MODES.get(cfg.mask)(learned, face.landmarks, size, crop=face.crop)
        if cfg.mask_smoothing != "none":
            # The crop follows the face, so the mask is filtered in crop space, one frame per step.
            mask = self._smoothed_over_track(self._mask_tracks, face.track_id, mask.astype(np.float32))
        mask = finish_mask(mask, cfg.mask_erode, cfg.mask_blur if cfg.mask_blur >= 0 else max(1, size // 16))
        if not cfg.keep_mouth:
            return mask
        interior = mouth_interior(face.landmarks, size, max(1, size // 64))
        if cfg.mask_smoothing != "none":
            # The cut is smoothed too (after the mask's blur, so it stays a sharp cut): per-frame
            # landmarks would make the edge between swapped lips and the target's teeth flicker.
            interior = self._smoothed_over_track(self._mouth_tracks, face.track_id, interior)
        return without_mouth_interior(mask, face.landmarks, interior=interior)

    def _smoothed_over_track(self, tracks: dict[int, tuple[Any, int]], track_id: int, value: np.ndarray) -> np.ndarray:
        """``value`` (in [0, 1]) through the ``mask_smoothing`` filter of its face track, at 25 steps a second."""
        cfg = self.config
        smoother, seen = tracks.get(track_id) or (
            SMOOTHERS.create(cfg.mask_smoothing, strength=cfg.mask_smoothing_strength),
            0,
        )
        tracks[track_id] = (smoother, seen + 1)
        return np.clip(smoother.update(value, seen / 25.0), 0.0, 1.0)

    def _match_colour(self, face_rgb: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.config.colour == "none":
            return face_rgb

        def to_tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).permute(2, 0, 1)[None].float().div_(255.0).contiguous()

        mask_t = torch.from_numpy((mask > 0.5).astype(np.float32))[None, None]
        recoloured = COLOUR_TRANSFERS.get(self.config.colour)(to_tensor(face_rgb), to_tensor(target), mask_t)
        out = recoloured[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
        return np.ascontiguousarray(out.numpy())

    def _smooth_face(self, face_rgb: np.ndarray, track: int) -> np.ndarray:
        """GL-GAN's smoother on one track's face: at the smoother's resolution it makes this frame's
        face agree with the track's previous output; its change is resized and added at the model's
        resolution. A track's first frame passes unchanged."""
        from swaplab.models.glgan_smooth import load_glgan_smoother

        net = load_glgan_smoother()
        previous = self._face_tracks.get(track)
        self._face_tracks[track] = face_rgb
        if previous is None or previous.shape != face_rgb.shape:
            return face_rgb
        side = net.resolution

        def tensor(image: np.ndarray) -> torch.Tensor:
            if image.shape[0] != side:
                image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
            return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div(255.0)

        current = tensor(face_rgb)
        with torch.inference_mode():
            change = (net(current, tensor(previous)) - current)[0].permute(1, 2, 0).numpy() * 255.0
        if side != face_rgb.shape[0]:
            size = face_rgb.shape[0]
            change = cv2.resize(change, (size, size), interpolation=cv2.INTER_LINEAR)
        smoothed = np.clip(face_rgb.astype(np.float32) + change + 0.5, 0, 255).astype(np.uint8)
        self._face_tracks[track] = smoothed
        return smoothed

    def _restore(
        self, face_rgb: np.ndarray, mask: np.ndarray, matrix: np.ndarray, track: int = -1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The swapped face upscaled (bicubic) to its footprint in the frame when that is larger than
        the model's resolution, then restored (in passes: ``_restore_passes``); with its mask and its
        frame -> crop matrix rescaled.

        With ``restore_smoothing``, a track keeps one restoration size while its footprint stays
        within 10 % of it (so its detail can be filtered over time at a fixed shape), and the
        detail the restorer adds is smoothed per track.
        """
        cfg, size = self.config, self.resolution
        scale = 1.0 / np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2])))  # frame px per crop px
        side = max(size, int(round(size * scale)))
        state = self._restore_tracks.get(track) if cfg.restore_smoothing != "none" else None
        if state is not None and abs(side / state[0] - 1.0) <= 0.1:
            side = state[0]
        elif cfg.restore_smoothing != "none":
            state = (side, SMOOTHERS.create(cfg.restore_smoothing, strength=cfg.restore_smoothing_strength), 0)
        small = face_rgb
        if side != size:
            factor = side / size
            face_rgb = cv2.resize(face_rgb, (side, side), interpolation=cv2.INTER_CUBIC)
            mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)
            # Pixel centres sit at integers: x_big = (x + 0.5) * factor - 0.5.
            upscale = np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1]])
            matrix = (upscale @ np.vstack([matrix, [0, 0, 1]]))[:2]
        restored = self._restore_passes(small, face_rgb)
        # The detail the restorer added over the plain upscale, weighed by the strength and, on a
        # track, smoothed over time.
        if cfg.restore_strength < 1 or state is not None:
            base = face_rgb.astype(np.float32)
            detail = cfg.restore_strength * (restored.astype(np.float32) - base)
            if state is not None:
                _, smoother, seen = state
                detail = smoother.update(detail, seen / 25.0)
                self._restore_tracks[track] = (side, smoother, seen + 1)
            restored = np.clip(base + detail + 0.5, 0, 255).astype(np.uint8)
        return restored, mask, matrix

    def _restorer(self) -> Any:
        """The face restorer ``restorer`` names (loaded once per file), or the installed one."""
        from swaplab.models.restoration import load_face_restorer

        return load_face_restorer(self._restorer_weights())

    def _restorer_weights(self) -> Path | None:
        """The weights file ``restorer`` names (a folder holds ``model.safetensors``); None: installed."""
        if not self.config.restorer:
            return None
        path = Path(self.config.restorer).expanduser()
        return path / "model.safetensors" if path.is_dir() else path

    def networks(self) -> dict[str, dict[str, str]]:
        """The built networks these options swap with, each ``{"path", "sha256"}`` of its weights
        file, for the sidecar: a swap made with one person's restorer names that file, not just an
        option. A network not built (yet) is left out; the stage that needs it says so when it runs.
        Networks a model loads itself (FSGAN's, the diffusion swapper's segmenter) are the model's."""
        from swaplab.models.glgan_blend import GLGAN_BLENDER_NAME
        from swaplab.models.glgan_smooth import GLGAN_SMOOTHER_NAME
        from swaplab.models.installed import find_weights
        from swaplab.models.learned_blend import BLENDER_NAME
        from swaplab.models.restoration import RESTORER_NAME
        from swaplab.models.segmentation import SEGMENTER_NAME

        cfg = self.config
        in_use = {
            SEGMENTER_NAME: cfg.mask.startswith("segment"),
            BLENDER_NAME: cfg.blend == "learned",
            GLGAN_BLENDER_NAME: cfg.blend == "glgan",
            GLGAN_SMOOTHER_NAME: cfg.face_smoothing == "glgan",
            RESTORER_NAME: cfg.restore == "on",
        }
        found = {}
        for name in (name for name, used in in_use.items() if used):
            weights = self._restorer_weights() if name == RESTORER_NAME else None
            weights = weights or find_weights(name)
            if weights is not None and weights.is_file():
                resolved = weights.resolve()
                found[name] = {"path": str(resolved), "sha256": _file_hash(str(resolved), resolved.stat().st_mtime_ns)}
        return found

    def _restore_passes(self, face_rgb: np.ndarray, upscaled: np.ndarray) -> np.ndarray:
        """``face_rgb`` restored at the size of ``upscaled`` (its plain upscale): in one pass, or,
        when that is more than ``restore_pass_scale`` times its size, upscaled and restored in
        equal steps below it."""
        from swaplab.models.restoration import restore_faces

        size, side, limit = face_rgb.shape[0], upscaled.shape[0], self.config.restore_pass_scale
        passes = 1 if not limit or side <= size * limit else math.ceil(math.log(side / size) / math.log(limit))
        restorer = self._restorer()
        if passes == 1:
            return restore_faces(upscaled, 1.0, restorer, dtype=self.autocast)
        current = face_rgb
        for k in range(1, passes + 1):
            step = side if k == passes else round(size * (side / size) ** (k / passes))
            current = restore_faces(
                cv2.resize(current, (step, step), interpolation=cv2.INTER_CUBIC), 1.0, restorer, dtype=self.autocast
            )
        return current

    def _paste(self, frame: np.ndarray, face_rgb: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Warp the face and its mask into the frame's footprint of the crop, then blend."""
        height, width = frame.shape[:2]
        size = face_rgb.shape[0]
        corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
        footprint = transform_points(corners, invert_affine(matrix))
        x0, y0 = np.clip(np.floor(footprint.min(axis=0)).astype(int) - 2, 0, [width, height])
        x1, y1 = np.clip(np.ceil(footprint.max(axis=0)).astype(int) + 2, 0, [width, height])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return frame
        to_roi = invert_affine(matrix)
        to_roi[:, 2] -= (x0, y0)
        roi_size = (int(x1 - x0), int(y1 - y0))
        # Bicubic for the face: the paste usually upscales the model's R px, and bilinear resampling
        # acts as a low-pass filter (a face cropped and pasted back at about 1:1 kept 0.42 of its
        # Laplacian variance bilinearly, 0.58 bicubically). uint8 warps saturate, so cubic's overshoot
        # cannot wrap. The mask stays bilinear: an alpha must not ring outside [0, 1].
        face = cv2.warpAffine(face_rgb, to_roi, roi_size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, to_roi, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        roi = np.ascontiguousarray(frame[y0:y1, x0:x1])
        blended = BLENDERS.get(self.config.blend)(roi, face, np.clip(alpha, 0, 1))
        out = frame.copy()
        out[y0:y1, x0:x1] = blended
        return out

    def _reference_identities(self) -> np.ndarray | None:
        if self.config.which != "reference":
            return None
        if not self.config.reference:
            raise ValueError("which=reference needs reference=PHOTO (one or more photos of the person to swap)")
        found = []
        for path in self.config.reference:
            faces = self.analyzer.analyze(read_image(path)[0])
            if not faces:
                raise MediaError(path, "no face found in the reference photo")
            found.append(max(faces, key=lambda f: f.box.area).identity)
        return np.stack(found)


# ---------------------------------------------------------------------- files


def swap(
    model: str | Path,
    inputs: str | Path,
    output: str | Path,
    config: SwapConfig | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> SwapReport:
    """Swap faces in a photo, a folder of photos, or a video with ``model`` (an exported model folder).

    Photos write marked images; a folder writes a folder; a video writes a video with the source's
    frame timing and audio. Existing outputs are refused unless ``config.overwrite``.
    """
    cfg = config or SwapConfig()
    source, output = Path(inputs), Path(output)
    if not source.exists():
        raise MediaError(source, "no such file or folder")
    if output.exists() and not cfg.overwrite and not cfg.preview:
        raise FileExistsError(f"{output} exists; pass overwrite=true to replace it")
    _check_output(source, output, cfg)  # before the model loads: a wrong name costs nothing
    # One swap writes an output at a time: a second would interleave its frames and delete the
    # first one's temporaries as a killed run's.
    lock = output.parent / f".{output.name}.lock"
    with exclusive(lock, f"output {output}", remove=True):
        return _swap_locked(model, source, output, cfg, progress, device)


def _swap_locked(
    model: str | Path, source: Path, output: Path, cfg: SwapConfig, progress: bool, device: str
) -> SwapReport:
    for leftover in remove_stale_temporaries(output if source.is_dir() else output.parent):
        log.warning("removed a temporary file left by a killed swap: %s", leftover)
    swapper = FaceSwapper(model, cfg, device=device)
    if swapper.needs_source and not cfg.source:
        raise ValueError(f"{model} swaps in any person: name the source person's photo(s) with source=PHOTO")
    report = SwapReport(output=str(output), marked=cfg.mark)
    started = time.perf_counter()
    if source.is_dir():
        _swap_folder(swapper, source, output, report, progress)
    elif is_video_path(source):
        _swap_video(swapper, source, output, report, progress)
    elif is_image_path(source):
        _swap_photo(swapper, source, output, report)
    else:
        raise MediaError(source, "not an image, video or folder swaplab can read")
    report.seconds = time.perf_counter() - started
    report.stage_seconds = swapper.timer.seconds()
    report.faces_without_landmarks = int(getattr(swapper.model, "faces_without_landmarks", 0))
    _write_sidecar(swapper, source, output, report)
    return report


PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".m4v")


def _check_output(source: Path, output: Path, cfg: SwapConfig) -> None:
    """The output's kind must fit the input's: a photo for a photo, a video (or a preview image) for a video."""
    suffix = output.suffix.lower()
    if source.is_dir():
        if output.exists() and not output.is_dir():
            raise ValueError(f"{output} is a file: a folder of photos is written to a folder")
    elif is_video_path(source) and not cfg.preview and suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"write videos as {', '.join(VIDEO_SUFFIXES)}, not {output.name}")
    elif is_image_path(source) and suffix not in PHOTO_SUFFIXES:
        raise ValueError(f"write photos as .png or .jpg, not {output.name}")
    if output.exists() and output.is_dir() and not source.is_dir() and not cfg.preview:
        raise ValueError(f"{output} is a folder: name the output file")


def _swap_photo(swapper: FaceSwapper, source: Path, output: Path, report: SwapReport) -> None:
    if output.suffix.lower() not in PHOTO_SUFFIXES:
        raise ValueError(f"write photos as .png or .jpg, not {output.name}")
    timer = swapper.timer
    with timer("decode"):
        frame, _ = read_image(source)
    swapper.reset_tracks()
    embed = swapper.config.which == "reference"
    known = _known_landmarks(swapper, source, (frame.shape[1], frame.shape[0]))
    with timer("detect"):
        if known is not None:
            points, ids = known.get(0, ([], []))
            faces = swapper.analyzer.from_landmarks(frame, points, ids, embed=embed)
        else:
            faces = swapper.analyzer.analyze(frame, embed=embed)
    swapped, count = swapper.swap_frame(frame, faces)
    _count(report, count)
    with timer("encode"):
        # A photo without a swapped face is the real photo: marking it would be false provenance.
        _write_photo(swapper, output, swapped, source, mark=swapper.config.mark and count > 0)
    if not count:
        report.unchanged.append(str(output))
    report.outputs.append(str(output))


def _swap_folder(swapper: FaceSwapper, source: Path, output: Path, report: SwapReport, progress: bool) -> None:
    photos = sorted(p for p in source.rglob("*") if p.is_file() and is_image_path(p))
    if not photos:
        raise MediaError(source, "no photos in this folder")
    for path in tqdm(photos, desc="swap", unit="photo", disable=not progress):
        target = output / path.relative_to(source).with_suffix(".png")
        if target.exists() and not swapper.config.overwrite:
            report.problems.append(f"{target} exists (kept; overwrite=true replaces it)")
            continue
        try:
            _swap_photo(swapper, path, target, report)
        except MediaError as err:
            report.problems.append(f"{err.path}: {err.reason}")
        except DiskFullError as err:
            report.problems.append(f"disk full at {target}: stopped; {len(report.outputs)} photos written")
            log.error("%s", err)
            break


def _swap_video(swapper: FaceSwapper, source: Path, output: Path, report: SwapReport, progress: bool) -> None:
    cfg = swapper.config
    reader = VideoReader(source, stop=cfg.max_frames or None)
    if cfg.preview:
        _preview_video(swapper, reader, output, report, progress)
        return
    info = reader.info
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"write videos as {', '.join(VIDEO_SUFFIXES)}, not {output.name}")
    provenance = swapper.provenance(sha256_file(source))
    width, height = info.width - info.width % 2, info.height - info.height % 2
    metadata = video_metadata_tags(provenance) if cfg.mark else {}
    ensure_free_space(
        output.parent, _video_bytes_needed(source, info, cfg.max_frames), f"the swapped video {output.name}"
    )
    writer = VideoWriter(output, info.fps, (width, height), crf=cfg.crf, audio_from=source, metadata=metadata)
    session = _Session(swapper, info.fps or 25.0, _known_landmarks(swapper, source, (info.width, info.height)))
    total = min(info.frame_count or 0, cfg.max_frames or 1 << 30) or None
    bar = tqdm(total=total, desc="swap", unit="frame", disable=not progress, dynamic_ncols=True)
    batch = max(1, cfg.batch_frames)

    def encode(item: tuple[np.ndarray, float | None]) -> None:
        image, at = item
        if cfg.mark:
            with swapper.timer("mark"):
                image = mark_image(image, provenance)
        with swapper.timer("encode"):
            writer.write(np.ascontiguousarray(image[:height, :width]), at)
        bar.update(1)

    batches = _batches_with_faces(reader, session, batch)
    # Reading and finding faces run ahead on one thread, marking and encoding behind on another,
    # while this one runs the model: frames and their order are the same as without (tested).
    producer = Prefetch(batches, depth=2, name="faces") if cfg.overlap else None
    consumer = Drain(encode, depth=2 * batch, name="encode") if cfg.overlap else None
    put = consumer.put if consumer is not None else encode
    try:
        for pending in producer if producer is not None else batches:
            for image, at in _render_batch(swapper, pending, report):
                put((image, at))
        if consumer is not None:
            consumer.finish()
        with swapper.timer("encode"):
            writer.close()
        if cfg.mark:
            sign_in_place(output, provenance)  # C2PA content credentials beside the watermark and the tags
    except BaseException as err:
        if producer is not None:
            producer.close()
        if consumer is not None:
            consumer.abort()  # before the writer goes: the encode thread may be inside write()
        writer.abort()
        if isinstance(err, OSError) and err.errno == 28:
            raise DiskFullError(28, f"disk full while writing {output}; nothing was written there") from err
        raise
    finally:
        if producer is not None:
            producer.close()
        bar.close()
    report.problems.extend(f"{source}: {p}" for p in reader.problems)
    if reader.variable_frame_rate:
        report.problems.append(f"{source}: variable frame rate (frame times kept as in the source)")
    report.outputs.append(str(output))


def _batches_with_faces(reader: VideoReader, session: _Session, batch: int) -> Iterator[list[tuple[Any, list]]]:
    """The video's frames with the faces to swap in each, ``batch`` frames at a time."""
    pending: list[tuple[Any, list[AlignedFace]]] = []
    for frame in _timed_frames(reader, session.swapper.timer):
        pending.append((frame, session.faces(frame.image, frame.time, frame.index)))
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending


def _render_batch(
    swapper: FaceSwapper, pending: list[tuple[Any, list[AlignedFace]]], report: SwapReport
) -> Iterator[tuple[np.ndarray, float | None]]:
    """The frames of one batch swapped, their faces rendered in one model call: (image, time) each."""
    faces = [face for _, frame_faces in pending for face in frame_faces]
    rendered = swapper.render(faces) if faces else (np.empty(0), np.empty(0))
    start = 0
    for frame, frame_faces in pending:
        count = len(frame_faces)
        image = frame.image
        if count:
            image = swapper.composite(
                image, frame_faces, rendered[0][start : start + count], rendered[1][start : start + count]
            )
        start += count
        _count(report, count)
        yield image, frame.time


#: Output bytes per source byte: the swap re-encodes at CRF 18, which is rarely smaller than the
#: source, so room for 1.5x the source's size is asked for (the check refuses only at the start).
VIDEO_SIZE_FACTOR = 1.5


def _video_bytes_needed(source: Path, info: Any, max_frames: int) -> int:
    """Free space a video swap needs: its encoded stream and the final file exist together at the end."""
    share = 1.0
    if max_frames and info.frame_count:
        share = min(1.0, max_frames / info.frame_count)
    return int(2 * VIDEO_SIZE_FACTOR * source.stat().st_size * share) + (1 << 20)


def _preview_video(swapper: FaceSwapper, reader: VideoReader, output: Path, report: SwapReport, progress: bool) -> None:
    """A strip of target | swap pairs for tuning options before a long run."""
    cfg = swapper.config
    info = reader.info
    known = _known_landmarks(swapper, Path(reader.path), (info.width, info.height))
    session = _Session(swapper, info.fps or 25.0, known)
    tiles = []
    for frame in _timed_frames(reader, swapper.timer):
        swapped = session.swap(frame.image, frame.time, report, frame.index)
        if frame.index % cfg.preview_every == 0:
            tiles.append(np.concatenate([frame.image, swapped], axis=1))
        if len(tiles) >= cfg.preview:
            break
    if not tiles:
        raise MediaError(reader.path, "no frame could be decoded")
    height = 256
    rows = [
        cv2.resize(t, (round(t.shape[1] * height / t.shape[0]), height), interpolation=cv2.INTER_AREA) for t in tiles
    ]
    strip = np.concatenate(rows, axis=0)
    target = output if output.suffix.lower() in (".png", ".jpg") else output.with_suffix(".preview.png")
    _write_photo(swapper, target, strip, Path(reader.path))
    report.outputs.append(str(target))
    report.output = str(target)


class _Session:
    """Per-video state: the face tracker and one landmark smoother per track."""

    def __init__(self, swapper: FaceSwapper, fps: float = 25.0, known_landmarks: dict | None = None) -> None:
        self.swapper = swapper
        cfg = swapper.config
        self.smoothers: dict[int, Any] = defaultdict(
            lambda: SMOOTHERS.create(cfg.smoothing, strength=cfg.smoothing_strength, fps=fps)
        )
        self.tracker = swapper.analyzer.tracker()
        swapper.reset_tracks()
        self.known = known_landmarks

    def swap(self, image: np.ndarray, t: float, report: SwapReport, index: int = 0) -> np.ndarray:
        faces = self.faces(image, t, index)
        swapped, count = self.swapper.swap_frame(image, faces)
        _count(report, count)
        return swapped

    def faces(self, image: np.ndarray, t: float, index: int = 0) -> list[AlignedFace]:
        """The frame's faces to swap: found (or looked up), smoothed over time, aligned, chosen."""
        swapper = self.swapper
        embed = swapper.config.which == "reference"
        with swapper.timer("detect"):
            if self.known is not None:
                points, ids = self.known.get(index, ([], []))
                faces = swapper.analyzer.from_landmarks(image, points, ids, embed=embed)
            else:
                faces = self.tracker.update(image)
        with swapper.timer("align"):
            faces = [self._smoothed(image, face, t) for face in faces]
        return swapper._choose(faces)

    def _smoothed(self, image: np.ndarray, face: AlignedFace, t: float) -> AlignedFace:
        points = self.smoothers[face.track_id].update(face.landmarks_source, t)
        swapper = self.swapper
        matrix = alignment_matrix(points, swapper.analyzer.template, swapper.resolution)
        face.landmarks_source = points.astype(np.float32)
        face.matrix = matrix
        face.crop = warp_face(image, matrix, swapper.resolution)
        face.landmarks = transform_points(points, matrix).astype(np.float32)
        return face


def _known_landmarks(
    swapper: FaceSwapper, source: Path, size: tuple[int, int]
) -> dict[int, tuple[list[np.ndarray], list[int]]] | None:
    """Frame index -> (68-point landmarks, track ids) from ``config.faceset`` for this source.

    Records are matched by the resolved source path; coordinates are rescaled when the faceset
    saw the frame at another size (a photo read downscaled).
    """
    if not swapper.config.faceset:
        return None
    from swaplab.facesets.format import Faceset

    faceset = Faceset(swapper.config.faceset)
    wanted = source.resolve()
    known: dict[int, tuple[list[np.ndarray], list[int]]] = {}
    for record in faceset:
        if Path(record.source).resolve() != wanted:
            continue
        scale = size[0] / record.source_size[0] if record.source_size else 1.0
        points, ids = known.setdefault(record.frame, ([], []))
        points.append(np.asarray(record.landmarks_source, np.float32) * scale)
        ids.append(record.track_id)
    if not known:
        raise ValueError(f"faceset {swapper.config.faceset} has no faces extracted from {source}")
    return known


def _count(report: SwapReport, swapped: int) -> None:
    report.frames += 1
    if swapped:
        report.frames_swapped += 1
        report.faces_swapped += swapped
    else:
        report.frames_without_face += 1


def _timed_frames(reader: VideoReader, timer: StageTimer) -> Iterator[Any]:
    frames = iter(reader)
    while True:
        with timer("decode"):
            frame = next(frames, None)
        if frame is None:
            return
        yield frame


def _write_photo(swapper: FaceSwapper, path: Path, image: np.ndarray, source: Path, mark: bool = True) -> None:
    if swapper.config.mark and mark:
        write_marked_image(path, image, swapper.provenance(sha256_file(source)))
    else:
        from swaplab.io.images import write_image

        write_image(path, image)


@functools.lru_cache(maxsize=32)
def _file_hash(path: str, mtime_ns: int) -> str:
    """A weights file's SHA-256, once per file version (a folder of photos asks per output)."""
    return sha256_file(path)


def _write_sidecar(swapper: FaceSwapper, source: Path, output: Path, report: SwapReport) -> None:
    """``OUTPUT.swaplab.json``: what made this output, with which options, and whether it is marked."""
    target = Path(report.output)
    sidecar = target.with_name(target.name + ".swaplab.json")
    atomic_write_json(
        sidecar,
        {
            "source": str(source),
            "model": str(swapper.model_path),
            "model_id": swapper.model_id,
            "config": to_dict(swapper.config),
            "networks": swapper.networks(),
            "marked": report.marked,
            "report": {k: v for k, v in report.__dict__.items()},
        },
    )


class StageTimer:
    """Accumulates wall time per pipeline stage: ``with timer("model"): ...``.

    Stages on the overlap's worker threads add to it too (under a lock), so with ``overlap`` the
    stages' sum exceeds the wall time: each is the time that stage's thread spent on it.
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._seconds[stage] = self._seconds.get(stage, 0.0) + elapsed

    def seconds(self) -> dict[str, float]:
        return dict(self._seconds)
