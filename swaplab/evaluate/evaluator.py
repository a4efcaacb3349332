"""The evaluator: score a model, a run, a sweep or another tool's swaps on a pinned protocol.

``evaluate(target, protocol=..., out_dir=...)`` makes the protocol's swaps (or reads them),
finds faces and landmarks on targets and swaps, runs the registered metric functions of
``swaplab.evaluate`` on them, and writes ``metrics.json``, ``per_item.json`` and ``report.html``;
``evaluate_many`` does it for several targets and writes one comparison. This module composes
existing parts (FaceAnalyzer, FaceSwapper, the identity encoders, the metrics); it defines no
metric of its own beyond counting faces not found.

Conventions: images read from disk are RGB uint8 (H, W, 3) and become float32 N x 3 x H x W
tensors in [0, 1] before any metric; landmarks are (K, 2) float32 (x, y) pixels of the image they
were found in. Results are deterministic: the same inputs on the same machine give identical
numbers (HOG detection and dlib landmarks are deterministic, networks run in fp32 without
autograd, KID's subsets are seeded by the protocol's seed).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from swaplab.evaluate.protocol import Protocol, SwapPair, load_protocol
from swaplab.evaluate.registry import METRICS, better, compute, per_item, summarize
from swaplab.io.atomic import atomic_write_json
from swaplab.io.images import IMAGE_SUFFIXES, MediaError, is_image_path, read_image

__all__ = [
    "EVAL_CROP",
    "METRIC_NETWORK",
    "Comparison",
    "EvalOptions",
    "EvalResult",
    "FaceCache",
    "FaceInfo",
    "evaluate",
    "evaluate_many",
    "expand_targets",
    "identity_loss_warnings",
    "metric_direction",
    "prepare_cache",
]

log = logging.getLogger(__name__)

#: Side of the aligned crops (``whole_face`` template) on which sharpness and flicker are measured:
#: one fixed scale for every model, whatever its own resolution.
EVAL_CROP = 128
#: The identity network whose 256-d penultimate features feed the distribution distances.
METRIC_NETWORK = "dlib-resnet"
RESULT_FORMAT = "swaplab-eval"
#: Smallest batch an identity network sees (see ``embed_faces``).
MIN_BATCH = 8
RESULT_VERSION = 1

TargetKind = Literal["model", "run", "swaps"]


@dataclass
class EvalOptions:
    """How much of a protocol to score, and with what (``swaplab eval --limit N`` sets ``limit``)."""

    limit: int = 0  # score only the first N pairs (and N held-out faces per side; N clips for video); 0 = all
    reference_limit: int = 0  # real faces of the source for FD / KID (0 = every pinned one)
    gallery_limit: int = 0  # gallery identities besides the sources being scored (0 = every pinned one)
    gallery_images: int = 0  # photos per gallery identity (0 = every pinned one)
    frames: int = 0  # video protocols: frames per clip (0 = the protocol's count)
    encoders: tuple[str, ...] = ()  # identity networks to measure with (empty = every registered one)
    grid: int = 8  # pairs shown in the report's source | target | swap grid
    worst: int = 6  # worst cases shown per criterion
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    device: str = "cpu"
    swap_config: Any = None  # a SwapConfig for model swaps (default: SwapConfig(precision="fp32"))
    # Detectability: how many of the protocol's detector-training pairs (peopleDevTrain people) to
    # swap and train the real-vs-swapped classifier on (0 = all, or max(limit, 20) when ``limit``
    # is set; -1 = skip it), and the classifier's preset (swaplab.evaluate.detectability).
    detector_pairs: int = 0
    detector: str = "default"
    report: bool = True  # write report.html with figures and grids


@dataclass
class EvalResult:
    """What one evaluation measured; ``metrics`` is metrics.json's content, ``items`` per_item.json's."""

    name: str
    out_dir: Path
    metrics: dict[str, Any]
    items: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    report: Path | None = None

    @property
    def summary(self) -> dict[str, float]:
        """One number per column: ``{"pose_error": 3.1, "identity_retrieval/dlib-resnet top1": 0.8, ...}``."""
        return headline_numbers(self.metrics["metrics"])

    @property
    def protocol(self) -> str:
        return self.metrics["protocol"]["name"]


@dataclass
class Comparison:
    """Several results scored on one protocol, and the comparison report."""

    results: list[EvalResult]
    out_dir: Path
    report: Path | None = None


# ------------------------------------------------------------------ directions and headlines

#: Directions of the evaluator's own quantities that are not registered metrics.
_EXTRA_DIRECTIONS = {"no_face_in_swap": "lower", "target_identity_similarity": "reference"}


def metric_direction(key: str) -> str:
    """Which way a metrics.json key improves: "higher", "lower", "one" or "reference" (not a score)."""
    base = key.split("/")[0].split(" ")[0]
    if base in _EXTRA_DIRECTIONS:
        return _EXTRA_DIRECTIONS[base]
    return better(base) if base in METRICS else "reference"


def headline_numbers(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flatten metrics.json's ``metrics`` to one float per column (std, counts and labels dropped)."""
    out: dict[str, float] = {}
    for key, entry in metrics.items():
        for name, value in entry.items():
            if name in ("mean", "value"):
                out[key] = _float(value)
            elif name.startswith("top"):
                out[f"{key} {name}"] = _float(value)
    return out


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


# ------------------------------------------------------------------ faces


@dataclass(frozen=True)
class FaceInfo:
    """A face found in an image: box (x0, y0, x1, y1), 68- and 5-point landmarks, the alignment
    matrix to the ``EVAL_CROP`` px ``whole_face`` crop, all in that image's pixels."""

    box: tuple[float, float, float, float]
    landmarks68: np.ndarray
    landmarks5: np.ndarray
    matrix: np.ndarray


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def central_face(faces: Sequence[FaceInfo], shape: tuple[int, ...]) -> FaceInfo | None:
    """The face whose box centre is nearest the image centre (LFW's labelled face), else None."""
    if not faces:
        return None
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0

    def distance(face: FaceInfo) -> tuple[float, float]:
        x0, y0, x1, y1 = face.box
        return (math.hypot((x0 + x1) / 2 - cx, (y0 + y1) / 2 - cy), -(x1 - x0) * (y1 - y0))

    return min(faces, key=distance)


def matching_face(faces: Sequence[FaceInfo], box: Sequence[float], min_iou: float = 0.3) -> FaceInfo | None:
    """The face overlapping ``box`` most (IoU >= ``min_iou``): the swap's face at the target's place."""
    best = max(faces, key=lambda f: _box_iou(f.box, box), default=None)
    return best if best is not None and _box_iou(best.box, box) >= min_iou else None


class FaceCache:
    """Faces and identity embeddings of image files, computed once and shared by every model scored.

    Faces come from ``FaceAnalyzer`` (dlib HOG, upsampled on photos up to 1000 px; dlib's 68- and
    5-point landmarks). Embeddings are keyed by (file, encoder, layer) and belong to the file's
    ``central_face``. Files are identified by path, size and modification time.
    """

    def __init__(self) -> None:
        self._faces: dict[tuple, tuple[tuple[int, ...], list[FaceInfo]]] = {}
        self._embeddings: dict[tuple, np.ndarray | None] = {}
        self._analyzer = None

    @property
    def analyzer(self):  # -> FaceAnalyzer
        if self._analyzer is None:
            from swaplab.faces.analyze import FaceAnalyzer, FaceAnalyzerConfig

            self._analyzer = FaceAnalyzer(FaceAnalyzerConfig(embed=False), template="whole_face", size=EVAL_CROP)
        return self._analyzer

    def find_faces(self, image: np.ndarray) -> list[FaceInfo]:
        """Every face of an RGB uint8 image (not cached: swaps change from model to model)."""
        return [
            FaceInfo(
                box=(f.box.x0, f.box.y0, f.box.x1, f.box.y1),
                landmarks68=np.asarray(f.landmarks_source, np.float32),
                landmarks5=np.asarray(f.landmarks5_source, np.float32),
                matrix=f.matrix,
            )
            for f in self.analyzer.analyze(image, embed=False)
        ]

    def faces(self, path: Path) -> tuple[tuple[int, ...], list[FaceInfo]]:
        """(image shape, faces) of an image file, cached."""
        key = _file_key(path)
        if key not in self._faces:
            image = read_image(path)[0]
            self._faces[key] = (image.shape, self.find_faces(image))
        return self._faces[key]

    def face(self, path: Path) -> FaceInfo | None:
        shape, faces = self.faces(path)
        return central_face(faces, shape)

    def embeddings(self, paths: Sequence[Path], encoder_name: str, encoder: nn.Module, layer: str) -> np.ndarray:
        """(N, D) embeddings of the central face of each file; rows of files without a face are NaN."""
        missing = [p for p in dict.fromkeys(paths) if (_file_key(p), encoder_name, layer) not in self._embeddings]
        with_face = [p for p in missing if self.face(p) is not None]
        for p in missing:
            self._embeddings[(_file_key(p), encoder_name, layer)] = None
        for start in range(0, len(with_face), 64):
            chunk = with_face[start : start + 64]
            images = [read_image(p)[0] for p in chunk]
            points = [self.face(p).landmarks5 for p in chunk]  # type: ignore[union-attr]
            for p, row in zip(chunk, embed_faces(images, points, encoder, layer)):
                self._embeddings[(_file_key(p), encoder_name, layer)] = row
        rows = [self._embeddings[(_file_key(p), encoder_name, layer)] for p in paths]
        width = next((r.shape[0] for r in rows if r is not None), 1)
        return (
            np.stack([r if r is not None else np.full(width, np.nan, np.float32) for r in rows])
            if rows
            else (np.zeros((0, width), np.float32))
        )


def _file_key(path: Path) -> tuple:
    stat = Path(path).stat()
    return (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 H x W x 3 -> float32 1 x 3 x H x W in [0, 1], contiguous."""
    writable = np.require(image, np.uint8, requirements=["C", "W"])  # decoded images may be read-only
    return torch.from_numpy(writable).permute(2, 0, 1)[None].float().div(255.0).contiguous()


def embed_faces(
    images: Sequence[np.ndarray], landmarks5: Sequence[np.ndarray], encoder: nn.Module, layer: str = "embedding"
) -> np.ndarray:
    """Identity vectors of one face per image (RGB uint8, any sizes), cut at its 5-point landmarks.

    Each encoder gets dlib's face chip (``chip_from_landmarks``) of its ``chip_size`` (default 150)
    and ``chip_padding`` (default 0.25) attributes; ``layer="features"`` needs an encoder with a
    ``features`` method (dlib's 256-d penultimate layer), ``"embedding"`` calls the encoder.
    """
    from swaplab.evaluate.identity import identity_features
    from swaplab.faces.identity import DLIB_CHIP_PADDING, DLIB_CHIP_SIZE, chip_from_landmarks

    size = int(getattr(encoder, "chip_size", DLIB_CHIP_SIZE))
    padding = float(getattr(encoder, "chip_padding", DLIB_CHIP_PADDING))
    if not images:
        return np.zeros((0, 0), np.float32)
    chips = torch.cat(
        [
            chip_from_landmarks(_to_tensor(image), torch.as_tensor(np.asarray(points, np.float64))[None], size, padding)
            for image, points in zip(images, landmarks5)
        ]
    )
    # oneDNN picks other kernels for batches of 1-3 chips (values then differ by ~1e-6): pad every
    # batch to at least MIN_BATCH chips so that a face's vector never depends on its batch mates.
    count, batch = len(chips), 64
    remainder = count % batch
    if 0 < remainder < MIN_BATCH:
        chips = torch.cat([chips, chips[-1:].expand(MIN_BATCH - remainder, -1, -1, -1)])
    if size == DLIB_CHIP_SIZE:
        return identity_features(chips, encoder=encoder, layer=layer, batch_size=batch)[:count]  # type: ignore[arg-type]
    run = encoder.features if layer == "features" else encoder  # type: ignore[operator]
    with torch.inference_mode():
        return torch.cat([run(chips[i : i + batch]).float() for i in range(0, len(chips), batch)]).numpy()[:count]


# ------------------------------------------------------------------ identity networks


@functools.cache
def _encoder(name: str) -> nn.Module:
    from swaplab.faces.identity import IDENTITY_ENCODERS

    return IDENTITY_ENCODERS.create(name).eval()


def load_encoders(names: Sequence[str] = ()) -> tuple[dict[str, nn.Module], list[str]]:
    """Every identity encoder registered in ``IDENTITY_ENCODERS`` (or ``names``), and warnings.

    An encoder that cannot be built (weights not trained yet, a file missing) is skipped with a
    warning rather than failing the evaluation; ``dlib-resnet`` must load.
    """
    import swaplab.faces.lfw_identity  # noqa: F401 - registers swaplab's own network, "lfw-arcface"
    from swaplab.faces.identity import IDENTITY_ENCODERS

    wanted = list(names) or IDENTITY_ENCODERS.names()
    if METRIC_NETWORK not in wanted:
        wanted.insert(0, METRIC_NETWORK)
    encoders, warnings = {}, []
    for name in wanted:
        try:
            encoders[name] = _encoder(name)
        except Exception as err:  # noqa: BLE001 - any failure of a third-party network is reported, not fatal
            if name == METRIC_NETWORK:
                raise
            warnings.append(f"identity encoder {name!r} skipped: {type(err).__name__}: {err}")
    return encoders, warnings


def identity_loss_warnings(card: dict[str, Any] | None, metric_networks: Sequence[str]) -> list[str]:
    """Warn when a model was trained with an identity loss on a network the metrics also use.

    The card's ``loss_config.identity`` gives the weight and, optionally, the ``network`` (or
    ``encoder``) it used; swaplab's per-pair and one-shot identity losses use ``dlib-resnet``.
    """
    identity = ((card or {}).get("loss_config") or {}).get("identity") or {}
    weight = float(identity.get("weight", 0.0) or 0.0)
    network = identity.get("network") or identity.get("encoder") or METRIC_NETWORK
    if weight > 0 and network in metric_networks:
        others = [n for n in metric_networks if n != network]
        advice = f"read the {', '.join(others)} numbers instead" if others else "no independent network is registered"
        return [
            f"this model was trained with an identity loss (weight {weight:g}) on {network}, the same network "
            f"that measures identity here: its {network} identity numbers are optimised, not measured; {advice}"
        ]
    return []


# ------------------------------------------------------------------ timing


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, family: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[family] += time.perf_counter() - start


# ------------------------------------------------------------------ targets


def _is_model(path: Path) -> bool:
    return (path / "model.json").is_file() if path.is_dir() else path.name == "model.json"


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


def expand_targets(paths: Sequence[str | Path]) -> list[Path]:
    """Model folders and run folders as given; a folder of such folders (a sweep) becomes its members."""
    out: list[Path] = []
    for given in map(Path, paths):
        if _is_model(given) or _is_run(given):
            out.append(given.parent if given.name == "model.json" else given)
            continue
        if not given.is_dir():
            raise FileNotFoundError(f"{given}: not a model folder (model.json), a run folder or a sweep folder")
        members = sorted(p for p in given.iterdir() if _is_model(p) or _is_run(p))
        if not members:
            raise FileNotFoundError(f"{given} holds no model folders (model.json) or run folders (config.yaml)")
        out.extend(members)
    return out


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}-{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


# ------------------------------------------------------------------ jobs


@dataclass
class _Job:
    """One pair to score, with absolute paths."""

    pair: SwapPair
    sources: list[Path]
    target: Path
    swap: Path | None = None


def _jobs_from_protocol(protocol: Protocol, root: Path, limit: int) -> list[_Job]:
    pairs = protocol.pairs[:limit] if limit else protocol.pairs
    return [_Job(p, [root / s for s in p.source_images], root / p.target) for p in pairs]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))


def _custom_jobs(sources: Sequence[Path], targets: Path, limit: int) -> list[_Job]:
    files = _image_files(targets) if targets.is_dir() else [targets]
    if not files:
        raise MediaError(targets, "no target images here")
    files = files[:limit] if limit else files
    base = targets if targets.is_dir() else targets.parent
    jobs = []
    for target in files:
        pair_id = target.relative_to(base).with_suffix("").as_posix()
        pair = SwapPair(pair_id, "source", tuple(map(str, sources)), str(target), "target")
        jobs.append(_Job(pair, list(sources), target))
    return jobs


def _source_files(sources: str | Path | Sequence[str | Path]) -> list[Path]:
    given = [sources] if isinstance(sources, (str, Path)) else list(sources)
    files: list[Path] = []
    for item in map(Path, given):
        files.extend(_image_files(item) if item.is_dir() else [item])
    if not files:
        raise MediaError(Path(str(given[0]) if given else "."), "no source images")
    return files


def find_swap(swaps: Path, pair_id: str) -> Path | None:
    """The swap file of a pair: ``<swaps>/<pair id>.<any image suffix>`` (first by suffix order), or None."""
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (swaps / f"{pair_id}{suffix}", swaps / f"{pair_id}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


# ------------------------------------------------------------------ the public API


def evaluate(
    target: str | Path | None = None,
    *,
    out_dir: str | Path,
    protocol: str | Path = "per_pair_v1",
    data_root: str | Path | None = None,
    swaps: str | Path | None = None,
    sources: str | Path | Sequence[str | Path] | None = None,
    targets: str | Path | None = None,
    options: EvalOptions | None = None,
    cache: FaceCache | None = None,
    name: str | None = None,
    **option_fields: Any,
) -> EvalResult:
    """Score one model, run or set of swaps; write ``metrics.json``, ``per_item.json`` and ``report.html``.

    ``target``: an exported per-pair model folder (its swaps are made here with ``FaceSwapper`` on
    the protocol's target photos and written, marked, to ``out_dir/swaps/``) or a run folder (its
    latest good checkpoint is exported to a temporary folder first). Or, with ``target=None``,
    ``swaps``: a folder of already-swapped images from any tool, named ``<pair id>.<ext>``:
    with ``sources`` (photos of the source person: files or folders) and ``targets`` (a folder of
    target photos) the pair id is the target's path relative to ``targets`` without its suffix;
    without them, the pairs are the protocol's (per-pair ids are the target photo's file stem,
    one-shot ids ``0000``...; video clips ``<clip id>.mp4``).

    ``protocol`` names a pinned protocol (``swaplab/protocol/*.json``) or a protocol file;
    ``data_root`` defaults to ``swaplab.data.fetch.data_root()``. Options are an ``EvalOptions``
    or its fields as keywords (``limit=4``). ``cache`` shares face analyses between calls.
    """
    from swaplab.data.fetch import data_root as default_data_root

    opts = dataclasses.replace(options or EvalOptions(), **option_fields)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root is not None else default_data_root()
    spec = load_protocol(protocol)
    cache = cache or FaceCache()
    if target is None and swaps is None:
        raise ValueError("give a model or run folder, or swaps=FOLDER of already-swapped images")
    if target is not None and swaps is not None:
        raise ValueError("give either a model/run folder or swaps=FOLDER, not both")
    if (sources is None) != (targets is None):
        raise ValueError("sources and targets go together (custom pairs); leave both out to use the protocol's")

    if target is not None:
        path = Path(target)
        if _is_run(path):
            from swaplab.train.export import export_model

            with tempfile.TemporaryDirectory(prefix="swaplab-eval-") as exported:
                export_model(path, exported)
                return _evaluate_model(Path(exported), "run", path, spec, root, out, opts, cache, name)
        if not _is_model(path):
            raise FileNotFoundError(
                f"{path}: not a model folder (model.json) or a run folder (config.yaml); "
                "a folder of several runs (a sweep) is compared with evaluate_many"
            )
        model_dir = path.parent if path.name == "model.json" else path
        return _evaluate_model(model_dir, "model", model_dir, spec, root, out, opts, cache, name)

    swaps_dir = Path(swaps)  # type: ignore[arg-type]
    if not swaps_dir.is_dir():
        raise FileNotFoundError(f"swaps: {swaps_dir} is not a folder")
    if spec.kind == "video":
        return _evaluate_video(spec, root, out, opts, cache, swaps_dir=swaps_dir, name=name or swaps_dir.name)
    if sources is not None:
        source_files = _source_files(sources)
        jobs = _custom_jobs(source_files, Path(targets), opts.limit)  # type: ignore[arg-type]
        gallery, reference = _custom_gallery(source_files, jobs, spec, root, opts)
        label = f"custom pairs ({len(jobs)} targets, {len(source_files)} source photos)"
    else:
        jobs = _jobs_from_protocol(spec, root, opts.limit)
        gallery, reference = (
            _protocol_gallery(spec, root, [j.pair.source_identity for j in jobs], opts),
            _reference(spec, root, opts),
        )
        label = spec.name
    for job in jobs:
        job.swap = find_swap(swaps_dir, job.pair.id)
    detector_jobs = _detector_jobs(spec, root, opts) if sources is None else []
    for job in detector_jobs:
        job.swap = find_swap(swaps_dir, job.pair.id)
    info = {"kind": "swaps", "path": str(swaps_dir), "pairs": label}
    return _score(
        jobs,
        gallery,
        reference,
        spec,
        out,
        opts,
        cache,
        info,
        name or swaps_dir.name,
        card=None,
        detector_jobs=[j for j in detector_jobs if j.swap is not None],
    )


def evaluate_many(
    targets: Sequence[str | Path],
    *,
    out_dir: str | Path,
    protocol: str | Path = "per_pair_v1",
    data_root: str | Path | None = None,
    options: EvalOptions | None = None,
    **option_fields: Any,
) -> Comparison:
    """Evaluate several models or runs (sweep folders expand to their runs) on one protocol and compare.

    Each is scored into ``out_dir/<name>/`` with its own report; ``out_dir/comparison.json`` holds
    one row per model and ``out_dir/report.html`` the table and grouped bar charts. Face analyses of
    the protocol's photos are computed once for all of them.
    """
    from swaplab.evaluate.report import write_comparison

    opts = dataclasses.replace(options or EvalOptions(), **option_fields)
    out = Path(out_dir)
    paths = expand_targets(targets)
    cache = FaceCache()
    results = [
        evaluate(
            path, out_dir=out / label, protocol=protocol, data_root=data_root, options=opts, cache=cache, name=label
        )
        for path, label in zip(paths, _unique_names(paths))
    ]
    comparison = Comparison(results, out)
    rows = [{"name": r.name, "path": str(r.out_dir), **r.summary} for r in results]
    atomic_write_json(
        out / "comparison.json",
        _json_safe({"format": RESULT_FORMAT, "protocol": results[0].metrics["protocol"], "rows": rows}),
    )
    if opts.report:
        comparison.report = write_comparison(results, out)
    return comparison


# ------------------------------------------------------------------ galleries and references


def _protocol_gallery(spec: Protocol, root: Path, sources: Sequence[str], opts: EvalOptions) -> dict[str, list[Path]]:
    """The protocol's gallery: every source identity scored, plus up to ``gallery_limit`` others."""
    needed = set(sources)
    others = [name for name in spec.gallery if name not in needed]
    others = others[: opts.gallery_limit] if opts.gallery_limit else others
    keep = [name for name in spec.gallery if name in needed] + others
    cap = opts.gallery_images or None
    return {name: [root / p for p in spec.gallery[name][:cap]] for name in keep}


def prepare_cache(
    cache: FaceCache,
    protocol: str | Path = "per_pair_v1",
    data_root: str | Path | None = None,
    options: EvalOptions | None = None,
) -> dict[str, int]:
    """Analyse and embed a protocol's gallery and reference photos into ``cache`` ahead of scoring.

    These are the evaluation's fixed costs (they grow with the gallery, not with the pairs);
    ``evaluate`` does the same lazily. Returns how many photos of each kind were prepared.
    """
    from swaplab.data.fetch import data_root as default_data_root

    opts = options or EvalOptions()
    spec = load_protocol(protocol)
    root = Path(data_root) if data_root is not None else default_data_root()
    jobs = _jobs_from_protocol(spec, root, opts.limit)
    gallery = _protocol_gallery(spec, root, [job.pair.source_identity for job in jobs], opts)
    gallery_files = [f for files in gallery.values() for f in files]
    reference = _reference(spec, root, opts)
    encoders, _ = load_encoders(opts.encoders)
    for name, encoder in encoders.items():
        cache.embeddings(gallery_files, name, encoder, "embedding")
    cache.embeddings(reference, METRIC_NETWORK, encoders[METRIC_NETWORK], "features")
    return {"gallery_images": len(gallery_files), "reference_images": len(reference)}


def _custom_gallery(
    sources: Sequence[Path], jobs: Sequence[_Job], spec: Protocol, root: Path, opts: EvalOptions
) -> tuple[dict[str, list[Path]], list[Path]]:
    """Custom pairs: the sources ("source"), the targets ("target") and the protocol's other identities."""
    cap = opts.gallery_images or None
    gallery = {"source": list(sources)[:cap], "target": [job.target for job in jobs][:cap]}
    pinned = [name for name in spec.gallery if name not in spec.identities.values()]
    pinned = pinned[: opts.gallery_limit] if opts.gallery_limit else pinned
    for name in pinned:
        files = [root / p for p in spec.gallery[name][:cap]]
        if all(f.is_file() for f in files):
            gallery[name] = files
    return gallery, list(sources)[: opts.reference_limit or None]


def _reference(spec: Protocol, root: Path, opts: EvalOptions) -> list[Path]:
    return [root / p for p in spec.reference[: opts.reference_limit or None]]


# ------------------------------------------------------------------ model evaluation


def _evaluate_model(
    model_dir: Path,
    kind: TargetKind,
    given: Path,
    spec: Protocol,
    root: Path,
    out: Path,
    opts: EvalOptions,
    cache: FaceCache,
    name: str | None,
) -> EvalResult:
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    if spec.kind == "video":
        return _evaluate_video(spec, root, out, opts, cache, model_dir=model_dir, name=name or given.name)
    timer = _Timer()
    config = opts.swap_config or SwapConfig(precision="fp32")
    swapper = FaceSwapper(model_dir, config, device=opts.device)
    if spec.kind == "oneshot" and not swapper.one_shot:
        raise ValueError(
            f"protocol {spec.name} needs one-shot swaps (a source photo per pair); {given} is a per-pair model "
            "that swaps one fixed identity. Score it on per_pair_v1, or swap the protocol's pairs with a one-shot "
            "tool and score them with --swaps DIR (swaps= in Python)."
        )
    if spec.kind == "per_pair" and swapper.one_shot:
        raise ValueError(f"{given} is a one-shot model: score it on the one-shot protocol (protocol=oneshot_v1)")
    jobs = _jobs_from_protocol(spec, root, opts.limit)
    _swap_jobs(swapper, jobs, out / "swaps", spec, cache, timer)
    detector_jobs = _detector_jobs(spec, root, opts)
    _swap_jobs(swapper, detector_jobs, out / "detector-swaps", spec, cache, timer)
    info = {
        "kind": kind,
        "path": str(given),
        "model_id": swapper.model_id,
        "arch": swapper.card.get("arch"),
        "step": swapper.card.get("step"),
        "resolution": swapper.resolution,
        "template": swapper.template,
        "swap_config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else str(config),
    }
    gallery, reference = (
        _protocol_gallery(spec, root, [j.pair.source_identity for j in jobs], opts),
        _reference(spec, root, opts),
    )
    if swapper.one_shot:
        recon = _self_reconstruction(swapper, jobs, cache, timer)
    else:
        recon = _reconstruction(swapper, spec, root, opts, cache, timer)
    return _score(
        jobs,
        gallery,
        reference,
        spec,
        out,
        opts,
        cache,
        info,
        name or given.name,
        swapper.card,
        timer,
        recon,
        detector_jobs=detector_jobs,
    )


def _swap_jobs(swapper, jobs: Sequence[_Job], folder: Path, spec: Protocol, cache: FaceCache, timer: _Timer) -> None:
    """Swap each job's target (one-shot models: with its source photos' identity); marked PNGs."""
    from swaplab.provenance import write_marked_image

    for job in jobs:
        with timer("faces (detect, landmarks)"):
            face = cache.face(job.target)
        if face is None:
            continue  # counted as a target without a face when scoring
        if swapper.one_shot:
            with timer("source identity"):
                identity = _source_identity(cache, job.sources)
            if identity is None:
                continue  # no face in any source photo: the pair has no swap, reported as missing
            swapper.set_source_identity(identity)
        with timer("swap (model, mask, blend)"):
            image = read_image(job.target)[0]
            aligned = swapper.analyzer.from_landmarks(image, [face.landmarks68], embed=False)
            swapped, _ = swapper.swap_frame(image, aligned)
        with timer("write marked swaps"):
            job.swap = write_marked_image(
                folder / f"{job.pair.id}.png", swapped, swapper.provenance(f"{spec.name}:{job.pair.id}")
            )


#: Fewest detector-training swaps worth training on.
MIN_DETECTOR_PAIRS = 20


def _detector_jobs(spec: Protocol, root: Path, opts: EvalOptions) -> list[_Job]:
    """The detector-training pairs to swap: ``detector_pairs`` of them; by default all, or, when
    ``limit`` shortens a run, as many as it scores (at least ``MIN_DETECTOR_PAIRS``)."""
    if opts.detector_pairs < 0 or not spec.detector_pairs:
        return []
    count = opts.detector_pairs or (max(opts.limit, MIN_DETECTOR_PAIRS) if opts.limit else 0)
    pairs = spec.detector_pairs[: count or None]
    return [_Job(p, [root / s for s in p.source_images], root / p.target) for p in pairs]


def _face_crop(image: np.ndarray, face: FaceInfo) -> np.ndarray:
    """The evaluator's aligned crop (whole-face template, EVAL_CROP px) of ``image`` at ``face``."""
    import cv2

    return cv2.warpAffine(image, face.matrix, (EVAL_CROP, EVAL_CROP), flags=cv2.INTER_AREA)


def _detectability_metrics(
    scored: Sequence[_Scored], detector_jobs: Sequence[_Job], cache: FaceCache, opts: EvalOptions
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """AUC of a real-vs-swapped classifier trained on the detector pairs' (target, swap) crops and
    tested on the scored pairs'; each swap is cut where its target's face is, so the two crops of
    a pair differ only by the swap."""
    from swaplab.config import config_group
    from swaplab.evaluate.detectability import measure_detectability

    if opts.detector_pairs < 0:
        return {}, []
    if not detector_jobs:
        return {}, ["detectability not measured: the protocol has no detector-training pairs"]
    train_real, train_fake, groups = [], [], []
    for job in detector_jobs:
        face = cache.face(job.target)
        if face is None or job.swap is None:
            continue
        train_real.append(_face_crop(read_image(job.target)[0], face))
        train_fake.append(_face_crop(read_image(job.swap)[0], face))
        groups.append(job.pair.id)
    if len(groups) < MIN_DETECTOR_PAIRS:
        return {}, [
            f"detectability not measured: only {len(groups)} detector-training swaps "
            f"(swap the protocol's detector_train pairs too: <id>.png, ids dtrain-NNNN)"
        ]
    test_real = [_face_crop(read_image(s.job.target)[0], s.target_face) for s in scored]
    test_fake = [_face_crop(s.swap_image, s.target_face) for s in scored]
    test_groups = [s.job.pair.id for s in scored]
    result = measure_detectability(
        train_real,
        train_fake,
        test_real,
        test_fake,
        config_group("detector").create(opts.detector),
        train_real_groups=groups,
        train_fake_groups=groups,
        test_real_groups=test_groups,
        test_fake_groups=test_groups,
    )
    entry = {**result.summary(), "better": "lower", "detector": opts.detector, "seconds": round(result.seconds, 1)}
    return {"detectability_auc": entry}, []


def _source_identity(cache: FaceCache, sources: Sequence[Path]) -> np.ndarray | None:
    """The mean dlib descriptor of the central faces of a pair's source photos (None: no face)."""
    rows = cache.embeddings(list(sources), METRIC_NETWORK, _encoder(METRIC_NETWORK), "embedding")
    rows = rows[np.isfinite(rows).all(axis=1)]
    return rows.mean(axis=0) if len(rows) else None


def _masked_scores(rgb: torch.Tensor, real: torch.Tensor, mask: torch.Tensor, suffix: str, n: int):
    metrics, per_face = {}, {}
    for metric in ("masked_ssim", "masked_psnr", "masked_l1"):
        result = compute(metric, pred=rgb, target=real, mask=mask)
        metrics[f"{metric}/{suffix}"] = {**summarize(result), "n": n, "better": better(metric)}
        per_face[metric] = result.values
    return metrics, per_face


def _self_reconstruction(swapper, jobs: Sequence[_Job], cache: FaceCache, timer: _Timer):
    """One-shot models: masked SSIM / PSNR / L1 of each target swapped with its own identity.

    A self-swap should give the target back; an ablation that breaks the decoder or the
    encoder shows here first. Targets are aligned as the swap stage aligns them, rendered in
    fp32 with the target photo's own dlib descriptor, and compared inside the face-hull mask.
    """
    from swaplab.faces.masks import landmark_mask

    size = swapper.resolution
    crops, masks, identities, files = [], [], [], []
    with timer("reconstruction"):
        for job in jobs:
            face = cache.face(job.target)
            identity = _source_identity(cache, [job.target]) if face is not None else None
            if identity is None:
                continue
            aligned = swapper.analyzer.from_landmarks(read_image(job.target)[0], [face.landmarks68], embed=False)[0]
            crops.append(aligned.crop)
            masks.append(landmark_mask(aligned.landmarks, size, region="face"))
            identities.append(identity)
            files.append(job.target)
        if not crops:
            return {}, []
        real = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()
        mask = torch.from_numpy(np.stack(masks))[:, None].contiguous()
        ids = torch.from_numpy(np.stack(identities).astype(np.float32))
        generator = swapper.model.generator
        with torch.inference_mode():
            rgb = torch.cat(
                [generator(real[i : i + 16], ids[i : i + 16]).float() for i in range(0, len(real), 16)]
            ).clamp(0, 1)
        metrics, per_face = _masked_scores(rgb.contiguous(), real, mask, "self", len(crops))
    items = [
        {"side": "self", "image": str(path), **{k: float(v[i]) for k, v in per_face.items()}}
        for i, path in enumerate(files)
    ]
    return metrics, items


def _reconstruction(swapper, spec: Protocol, root: Path, opts: EvalOptions, cache: FaceCache, timer: _Timer):
    """Masked SSIM / PSNR / L1 of the model's reconstructions of each side's held-out faces.

    Each held-out photo is aligned as the swap stage aligns faces (the model's template and
    resolution, from the dlib landmarks found here), reconstructed by ``reconstruct_src`` or
    ``reconstruct_dst`` in fp32, and compared inside the landmark face-hull mask.
    """
    from swaplab.faces.masks import landmark_mask

    metrics: dict[str, dict[str, Any]] = {}
    items: list[dict[str, Any]] = []
    size = swapper.resolution
    for side in ("src", "dst"):
        files = [root / p for p in spec.heldout.get(side, ())]
        files = files[: opts.limit] if opts.limit else files
        with timer("faces (detect, landmarks)"):
            found = [(f, cache.face(f)) for f in files]
        found = [(f, face) for f, face in found if face is not None]
        if not found:
            continue
        with timer("reconstruction"):
            crops, masks = [], []
            for path, face in found:
                aligned = swapper.analyzer.from_landmarks(read_image(path)[0], [face.landmarks68], embed=False)[0]
                crops.append(aligned.crop)
                masks.append(landmark_mask(aligned.landmarks, size, region="face"))
            real = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()
            mask = torch.from_numpy(np.stack(masks))[:, None].contiguous()
            run = swapper.model.reconstruct_src if side == "src" else swapper.model.reconstruct_dst
            with torch.inference_mode():
                rgb = torch.cat(
                    [run(real[i : i + 16].to(swapper.device))[0].float().cpu() for i in range(0, len(real), 16)]
                )
            side_metrics, per_face = _masked_scores(rgb.clamp(0, 1).contiguous(), real, mask, side, len(found))
            metrics.update(side_metrics)
        for i, (path, _) in enumerate(found):
            items.append({"side": side, "image": str(path), **{k: float(v[i]) for k, v in per_face.items()}})
    return metrics, items


# ------------------------------------------------------------------ scoring images


@dataclass
class _Scored:
    """A job whose target has a face and whose swap was read: the inputs of every image metric."""

    job: _Job
    target_face: FaceInfo
    swap_face: FaceInfo | None  # None: no face found in the swap where the target's face is
    swap_image: np.ndarray

    @property
    def swap_landmarks5(self) -> np.ndarray:
        """Where the swap's identity chip is cut: its own face, else the target's face position."""
        return (self.swap_face or self.target_face).landmarks5


def _score(
    jobs: list[_Job],
    gallery: dict[str, list[Path]],
    reference: list[Path],
    spec: Protocol,
    out: Path,
    opts: EvalOptions,
    cache: FaceCache,
    target_info: dict[str, Any],
    name: str,
    card: dict[str, Any] | None,
    timer: _Timer | None = None,
    reconstruction: tuple[dict, list] | None = None,
    detector_jobs: Sequence[_Job] = (),
) -> EvalResult:
    """Every image metric of a list of (source, target, swap) jobs; writes the result files."""
    timer = timer or _Timer()
    warnings: list[str] = []
    with timer("identity networks (load)"):
        encoders, encoder_warnings = load_encoders(opts.encoders)
    warnings += encoder_warnings + identity_loss_warnings(card, list(encoders))
    with timer("faces (detect, landmarks)"):
        scored, no_target_face, missing_swaps = _read_swaps(jobs, cache)
    if no_target_face:
        warnings.append(f"{len(no_target_face)} target(s) without a detectable face were skipped: {no_target_face[:5]}")
    if missing_swaps:
        warnings.append(f"{len(missing_swaps)} pair(s) have no swap file and were skipped: {missing_swaps[:5]}")
    if not scored:
        raise ValueError(f"nothing to score: {len(jobs)} pairs, none with both a target face and a swap")

    n, found = len(scored), sum(s.swap_face is not None for s in scored)
    metrics: dict[str, dict[str, Any]] = {
        "no_face_in_swap": {"value": float(n - found), "share": (n - found) / n, "n": n, "better": "lower"}
    }
    with timer("identity (chips, embeddings, retrieval)"):
        identity, per_item_identity, identity_warnings = _identity_metrics(scored, encoders, gallery, cache)
    with timer("pose and expression"):
        attributes, pose, expression = _attribute_metrics(scored)
    with timer("sharpness"):
        sharpness, sharp = _sharpness_metrics(scored)
    with timer("distribution (FD, KID)"):
        distribution, distribution_warnings = _distribution_metrics(scored, reference, encoders, cache, spec, opts)
    with timer("detectability (train and test the detector)"):
        detectability, detectability_warnings = _detectability_metrics(scored, detector_jobs, cache, opts)
    metrics.update({**identity, **attributes, **sharpness, **distribution, **detectability})
    warnings += identity_warnings + distribution_warnings + detectability_warnings
    recon_metrics, recon_items = reconstruction or ({}, [])
    metrics.update(recon_metrics)

    items = []
    for i, s in enumerate(scored):
        source_face = cache.face(s.job.sources[0]) if s.job.sources else None
        items.append(
            {
                "id": s.job.pair.id,
                "source_identity": s.job.pair.source_identity,
                "source_image": str(s.job.sources[0]) if s.job.sources else None,
                "source_box": list(source_face.box) if source_face else None,
                "target": str(s.job.target),
                "target_box": list(s.target_face.box),
                "swap": str(s.job.swap),
                "swap_face_found": s.swap_face is not None,
                "identity_similarity": {k: float(v["similarity"][i]) for k, v in per_item_identity.items()},
                "target_identity_similarity": {
                    k: float(v["target_similarity"][i]) for k, v in per_item_identity.items()
                },
                "pose_error": _finite_or_none(pose[i]),
                "expression_error": _finite_or_none(expression[i]),
                "sharpness_ratio": _finite_or_none(sharp[i]),
            }
        )
    samples = {
        "pairs": len(jobs),
        "pairs_scored": n,
        "targets_without_face": len(no_target_face),
        "missing_swaps": len(missing_swaps),
        "swaps_without_face": n - found,
        "gallery_identities": len(gallery),
        "gallery_images": sum(len(v) for v in gallery.values()),
        "reference_faces": int(metrics.get("frechet_distance", {}).get("n_reference", 0)),
        # per-pair models reconstruct each side; one-shot models swap each target with itself
        "reconstruction_faces": {
            side: sum(1 for r in recon_items if r["side"] == side)
            for side in (("self",) if any(r["side"] == "self" for r in recon_items) else ("src", "dst"))
        },
        "detector_training_swaps": sum(1 for j in detector_jobs if j.swap is not None),
    }
    return _finish(name, out, spec, target_info, encoders, samples, metrics, items, recon_items, warnings, timer, opts)


def _read_swaps(jobs: Sequence[_Job], cache: FaceCache) -> tuple[list[_Scored], list[str], list[str]]:
    """Targets' faces (cached across models) and swaps' faces (found afresh on every swap)."""
    scored, no_target_face, missing_swaps = [], [], []
    for job in jobs:
        target_face = cache.face(job.target)
        if target_face is None:
            no_target_face.append(job.pair.id)
            continue
        if job.swap is None:
            missing_swaps.append(job.pair.id)
            continue
        swap_image = read_image(job.swap)[0]
        target_shape = cache.faces(job.target)[0]
        if swap_image.shape != target_shape:
            raise MediaError(job.swap, f"is {swap_image.shape[:2]}, its target {target_shape[:2]}: sizes must match")
        swap_face = matching_face(cache.find_faces(swap_image), target_face.box)
        scored.append(_Scored(job, target_face, swap_face, swap_image))
    return scored, no_target_face, missing_swaps


def _identity_metrics(
    scored: Sequence[_Scored], encoders: dict[str, nn.Module], gallery: dict[str, list[Path]], cache: FaceCache
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]], list[str]]:
    """Per encoder: similarity of each swap (and, as a reference, its target) to its source, and retrieval."""
    metrics: dict[str, dict[str, Any]] = {}
    per_item_values: dict[str, dict[str, np.ndarray]] = {}
    warnings: list[str] = []
    n = len(scored)
    for enc_name, encoder in encoders.items():
        swap_emb = embed_faces([s.swap_image for s in scored], [s.swap_landmarks5 for s in scored], encoder)
        source_mean = np.stack([_mean_embedding(cache, s.job.sources, enc_name, encoder) for s in scored])
        target_emb = cache.embeddings([s.job.target for s in scored], enc_name, encoder, "embedding")
        similarity = compute("identity_similarity", swap_emb=swap_emb, source_emb=source_mean)
        baseline = compute("identity_similarity", swap_emb=target_emb, source_emb=source_mean)
        metrics[f"identity_similarity/{enc_name}"] = {**summarize(similarity), "n": n, "better": "higher"}
        metrics[f"target_identity_similarity/{enc_name}"] = {**summarize(baseline), "n": n, "better": "reference"}
        per_item_values[enc_name] = {"similarity": similarity.values, "target_similarity": baseline.values}
        labels = [s.job.pair.source_identity for s in scored]
        retrieval = _retrieval(cache, gallery, enc_name, encoder, swap_emb, labels)
        if retrieval is not None:
            metrics[f"identity_retrieval/{enc_name}"] = retrieval
        else:
            warnings.append(f"identity retrieval by {enc_name} skipped: a source identity has no gallery face")
    return metrics, per_item_values, warnings


def _attribute_metrics(scored: Sequence[_Scored]) -> tuple[dict[str, dict[str, Any]], np.ndarray, np.ndarray]:
    """Pose and expression error of the swap's landmarks against the target's, in the same frame."""
    pose = np.full(len(scored), np.nan)
    expression = np.full(len(scored), np.nan)
    for i, s in enumerate(scored):
        if s.swap_face is None:
            continue
        target68, swap68 = s.target_face.landmarks68, s.swap_face.landmarks68
        size = tuple(s.swap_image.shape[:2])
        pose[i] = compute("pose_error", target_landmarks68=target68, swap_landmarks68=swap68, image_size=size).mean
        expression[i] = compute("expression_error", target_landmarks68=target68, swap_landmarks68=swap68).mean
    metrics = {}
    for key, values in (("pose_error", pose), ("expression_error", expression)):
        kept = values[~np.isnan(values)]
        if len(kept):
            metrics[key] = {**summarize(per_item(kept)), "n": len(kept), "better": better(key)}
    return metrics, pose, expression


def _sharpness_metrics(scored: Sequence[_Scored]) -> tuple[dict[str, dict[str, Any]], np.ndarray]:
    """Laplacian variance ratio, swap over target, in the same aligned crop (the target's) inside its face hull."""
    from swaplab.faces.align import transform_points, warp_face
    from swaplab.faces.masks import landmark_mask

    def batch(crops: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()

    swaps, targets, masks = [], [], []
    for s in scored:
        matrix = s.target_face.matrix
        swaps.append(warp_face(s.swap_image, matrix, EVAL_CROP))
        targets.append(warp_face(read_image(s.job.target)[0], matrix, EVAL_CROP))
        masks.append(landmark_mask(transform_points(s.target_face.landmarks68, matrix), EVAL_CROP, region="face"))
    mask = torch.from_numpy(np.stack(masks))[:, None].contiguous()
    ratio = compute("sharpness_ratio", swap=batch(swaps), target=batch(targets), mask=mask)
    entry = {**summarize(ratio), "median": float(np.median(ratio.values)), "n": len(scored), "better": "one"}
    return {"sharpness_ratio": entry}, ratio.values


def _distribution_metrics(
    scored: Sequence[_Scored],
    reference: Sequence[Path],
    encoders: dict[str, nn.Module],
    cache: FaceCache,
    spec: Protocol,
    opts: EvalOptions,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """FD and KID between the swaps' and real source faces' 256-d dlib features (sample sizes stated)."""
    encoder = encoders[METRIC_NETWORK]
    swap_feats = embed_faces([s.swap_image for s in scored], [s.swap_landmarks5 for s in scored], encoder, "features")
    real_feats = cache.embeddings(list(reference), METRIC_NETWORK, encoder, "features")
    real_feats = real_feats[~np.isnan(real_feats).any(1)] if len(real_feats) else real_feats
    sizes = {"n_swaps": len(swap_feats), "n_reference": len(real_feats)}
    if min(sizes.values()) < 2:
        return {}, [f"FD/KID skipped: need >= 2 swaps and >= 2 real faces, have {sizes}"]
    fd = compute("frechet_distance", feats_a=swap_feats, feats_b=real_feats)
    kid = compute(
        "kernel_distance",
        feats_a=swap_feats,
        feats_b=real_feats,
        subsets=opts.kid_subsets,
        subset_size=opts.kid_subset_size,
        seed=spec.seed,
    )
    return {
        "frechet_distance": {**summarize(fd), **sizes, "better": "lower"},
        "kernel_distance": {**summarize(kid), **sizes, "better": "lower"},
    }, []


def _mean_embedding(cache: FaceCache, sources: Sequence[Path], enc_name: str, encoder: nn.Module) -> np.ndarray:
    """The unit-length mean of the unit embeddings of a source's photos (photos without a face are left out)."""
    rows = cache.embeddings(list(sources), enc_name, encoder, "embedding")
    rows = rows[~np.isnan(rows).any(1)]
    if not len(rows):
        raise ValueError(f"no face found in any source photo: {[str(s) for s in sources][:3]}")
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    mean = unit.mean(0)
    return mean / np.linalg.norm(mean)


def _retrieval(cache, gallery, enc_name, encoder, swap_emb, labels) -> dict[str, Any] | None:
    files = [f for name in gallery for f in gallery[name]]
    names = [name for name in gallery for _ in gallery[name]]
    emb = cache.embeddings(files, enc_name, encoder, "embedding")
    keep = ~np.isnan(emb).any(1)
    emb, names = emb[keep], [nm for nm, k in zip(names, keep) if k]
    identities = len(set(names))
    if not set(labels) <= set(names):
        return None
    k = tuple(kk for kk in (1, 5) if kk <= identities)
    result = compute(
        "identity_retrieval", swap_emb=swap_emb, gallery_emb=emb, gallery_labels=names, true_labels=labels, k=k
    )
    return {
        **summarize(result),
        "n": len(labels),
        "gallery_identities": identities,
        "gallery_images": len(names),
        "better": "higher",
    }


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------ video


def _evaluate_video(
    spec: Protocol,
    root: Path,
    out: Path,
    opts: EvalOptions,
    cache: FaceCache,
    *,
    model_dir: Path | None = None,
    swaps_dir: Path | None = None,
    name: str,
) -> EvalResult:
    """Temporal stability of swapped clips: landmark jitter and flicker against the original, identity drift.

    With a model, each clip's first frames are swapped by ``swaplab.swap`` (the whole pipeline:
    tracking, smoothing, encoding, marking) into ``out/videos/<clip id>.mp4``; with ``swaps_dir``
    that file comes from another tool. Faces are tracked on both videos (largest face per frame);
    frames where either has no face are dropped and counted.
    """
    from swaplab.swap.pipeline import SwapConfig, swap

    timer = _Timer()
    warnings: list[str] = []
    with timer("identity networks (load)"):
        encoders, encoder_warnings = load_encoders(opts.encoders)
    warnings += encoder_warnings
    clips = spec.clips[: opts.limit] if opts.limit else spec.clips
    target_info: dict[str, Any] = {"kind": "model" if model_dir else "swaps", "path": str(model_dir or swaps_dir)}
    card = None
    per_clip: list[dict[str, Any]] = []
    for clip in clips:
        frames = opts.frames or clip.frames
        original = root / clip.path
        if model_dir is not None:
            with timer("swap (video pipeline)"):
                base = opts.swap_config or SwapConfig(precision="fp32")
                config = dataclasses.replace(base, max_frames=frames, overwrite=True, which="largest")
                swapped = out / "videos" / f"{clip.id}.mp4"
                swapped.parent.mkdir(parents=True, exist_ok=True)
                swap(model_dir, original, swapped, config, progress=False, device=opts.device)
        else:
            swapped = swaps_dir / f"{clip.id}.mp4"  # type: ignore[operator]
            if not swapped.is_file():
                warnings.append(f"clip {clip.id}: no swap file {swapped.name}; skipped")
                continue
        with timer("faces (track, landmarks)"):
            tracks = _track_pair(cache, original, swapped, frames)
        per_clip.append(_clip_metrics(clip.id, tracks, encoders, timer))
    if model_dir is not None:
        from swaplab.train.export import read_card

        card = read_card(model_dir)[0]
        target_info.update(arch=card.get("arch"), step=card.get("step"), resolution=card.get("resolution"))
        warnings += identity_loss_warnings(card, list(encoders))
    metrics: dict[str, dict[str, Any]] = {}
    usable = [c for c in per_clip if c.get("frames_scored", 0) >= 3]
    if not usable:
        raise ValueError("no clip had 3 or more frames with a face in both the original and the swap")
    for key in [k for k in usable[0] if k not in ("id", "frames", "frames_scored")]:
        values = np.array([c[key] for c in usable], dtype=np.float64)
        metrics[key] = {**summarize(per_item(values)), "n": len(usable), "better": metric_direction(key)}
    samples = {
        "clips": len(clips),
        "clips_scored": len(usable),
        "frames": sum(c["frames"] for c in per_clip),
        "frames_scored": sum(c["frames_scored"] for c in per_clip),
    }
    return _finish(name, out, spec, target_info, encoders, samples, metrics, per_clip, [], warnings, timer, opts)


def _track_pair(cache: FaceCache, original: Path, swapped: Path, frames: int) -> dict[str, list]:
    """Per frame with a face in both videos: target landmarks, swap landmarks, crops and masks."""
    from swaplab.faces.align import transform_points, warp_face
    from swaplab.faces.masks import landmark_mask
    from swaplab.io.video import VideoReader

    analyzer = cache.analyzer
    sessions = (analyzer.tracker(), analyzer.tracker())
    out: dict[str, list] = defaultdict(list)
    out["frames"] = [0]
    for a, b in zip(VideoReader(original, stop=frames), VideoReader(swapped, stop=frames)):
        out["frames"][0] += 1
        found = []
        for session, frame in zip(sessions, (a.image, b.image)):
            faces = session.update(frame, embed=False)
            found.append(max(faces, key=lambda f: f.box.area) if faces else None)
        target, swap_face = found
        if target is None or swap_face is None:
            continue
        out["target68"].append(target.landmarks_source)
        out["swap68"].append(swap_face.landmarks_source)
        out["swap_image"].append(b.image)
        out["swap5"].append(swap_face.landmarks5_source)
        out["target_image"].append(a.image)
        out["target5"].append(target.landmarks5_source)
        out["swap_crop"].append(warp_face(b.image, target.matrix, EVAL_CROP))
        out["target_crop"].append(warp_face(a.image, target.matrix, EVAL_CROP))
        out["mask"].append(landmark_mask(transform_points(target.landmarks_source, target.matrix), EVAL_CROP))
    return out


def _clip_metrics(clip_id: str, tracks: dict[str, list], encoders: dict[str, nn.Module], timer: _Timer) -> dict:
    scored = len(tracks["target68"])
    row: dict[str, Any] = {"id": clip_id, "frames": tracks["frames"][0], "frames_scored": scored}
    if scored < 3:
        return row
    with timer("video metrics"):
        row["landmark_jitter"] = compute(
            "landmark_jitter", landmarks_over_time=np.stack(tracks["swap68"]), reference=np.stack(tracks["target68"])
        )
        batch = lambda crops: torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()  # noqa: E731
        row["flicker"] = compute(
            "flicker",
            frames=batch(tracks["swap_crop"]),
            masks=torch.from_numpy(np.stack(tracks["mask"]))[:, None].contiguous(),
            reference_frames=batch(tracks["target_crop"]),
        )
    with timer("identity (chips, embeddings, retrieval)"):
        for enc_name, encoder in encoders.items():
            swap_drift = compute(
                "identity_drift", embeddings=embed_faces(tracks["swap_image"], tracks["swap5"], encoder)
            )
            target_drift = compute(
                "identity_drift", embeddings=embed_faces(tracks["target_image"], tracks["target5"], encoder)
            )
            row[f"identity_drift/{enc_name}"] = swap_drift.mean_distance
            row[f"identity_drift_target/{enc_name}"] = target_drift.mean_distance
    return row


# ------------------------------------------------------------------ writing


def _finish(
    name: str,
    out: Path,
    spec: Protocol,
    target_info: dict[str, Any],
    encoders: dict[str, nn.Module],
    samples: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    items: list[dict[str, Any]],
    recon_items: list[dict[str, Any]],
    warnings: list[str],
    timer: _Timer,
    opts: EvalOptions,
) -> EvalResult:
    from swaplab import __version__

    document = {
        "format": RESULT_FORMAT,
        "version": RESULT_VERSION,
        "name": name,
        "protocol": {"name": spec.name, "version": spec.version, "seed": spec.seed, "sha256": spec.sha256},
        "target": target_info,
        "networks": {
            "identity": list(encoders),
            "distribution_features": f"{METRIC_NETWORK} 256-d penultimate features",
            "faces": "dlib HOG detector, dlib 68- and 5-point landmarks",
            "pose": "PnP of the 68 landmarks against a generic 3D face (swaplab.faces.pose)",
        },
        "samples": samples,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "swap_config"},
        "metrics": metrics,
        "warnings": warnings,
        "swaplab_version": __version__,
    }
    document = _json_safe(document)
    atomic_write_json(out / "metrics.json", document)
    atomic_write_json(out / "per_item.json", _json_safe({"items": items, "reconstruction": recon_items}))
    result = EvalResult(name, out, document, items, warnings, dict(timer.seconds))
    if opts.report:
        from swaplab.evaluate.report import write_report

        with timer("report"):
            result.report = write_report(result)
        result.timing = dict(timer.seconds)
    atomic_write_json(out / "timing.json", {k: round(v, 4) for k, v in result.timing.items()})
    return result


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None (JSON has neither); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value
