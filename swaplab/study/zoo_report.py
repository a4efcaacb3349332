"""The page of a study scored by its runs' own validation numbers: the generative-model zoo's comparison.

``write_zoo_report(data, out_dir)`` (called by ``write_study_report`` for ``eval.source: validation``)
reads each run's metrics.jsonl and config and exports its latest checkpoint to a scratch folder, so
that the model card says what the model can do. It writes ``index.html`` with PNG figures: the runs
and their final held-out numbers; reconstruction error against code size for the models with a code,
with closed-form PCA (``swaplab.models.zoo.pca``) fitted on the same training images and measured on
the same held-out images as the reference line; the Frechet distance each sampler logged and the
kernel distance (KID) of the same samples in the same pixel-PCA space; one labelled row of pictures
per run, marked as synthetic; loss and validation curves. ``zoo.json`` beside it holds every number
plotted. It trains nothing: the reconstruction errors and Frechet distances are the runs' own, and
the page computes only PCA's errors, KID, and the Frechet distance again as a check of its features.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swaplab.evaluate.report import _format, _labelled_row, _page, _warnings, _write_grid, bar_charts
from swaplab.io.atomic import atomic_path, atomic_write_json, atomic_write_text
from swaplab.study.sweep_data import (
    RunView,
    StudyData,
    _span,
    curve_keys,
    final_validation,
    final_value,
    plot_curves,
    smooth,
)
from swaplab.train.recipes.generative import (
    PIXEL_PCA_DIMS,
    PREVIEW_ROWS,
    PREVIEW_SEED,
    VALIDATION_SEED,
    pixel_feature_space,
)

__all__ = [
    "FD_KEY",
    "PCA_FIT_IMAGES",
    "RECONSTRUCTION_KEY",
    "PcaReference",
    "ZooNumbers",
    "ZooRun",
    "pca_reference",
    "summary_lines",
    "write_zoo_report",
    "zoo_numbers",
]

#: What every zoo run logs (``GenerativeRecipe.validate``): the held-out reconstruction error of
#: models that reconstruct, and the Frechet distance of samples to held-out images in a pixel-PCA space.
RECONSTRUCTION_KEY = "val/reconstruction_mse"
FD_KEY = "val/fd_pixels"
#: PCA's reference line is fitted on the first this-many training images of the runs' data.
PCA_FIT_IMAGES = 4096
#: Pictures per run (as many as a preview shows), and the smallest side of a tile (the watermark
#: and the labels need room).
PICTURES = PREVIEW_ROWS
MIN_TILE = 64
TILE_GAP = 3
#: Relative difference above which the recomputed Frechet distance is reported as not matching.
FD_TOLERANCE = 1e-3

Tensor = torch.Tensor


# ---------------------------------------------------------------- numbers


@dataclass
class ZooRun:
    """One run as the zoo page sees it."""

    name: str
    model: str = ""  # the model preset's name (cfg.model.name): the autoencoder chart's series
    recipe: str = ""
    capabilities: list[str] = field(default_factory=list)
    step: int | None = None  # of the last validation
    scores: dict[str, float] = field(default_factory=dict)  # the run's final val/* numbers
    code_size: int | None = None  # values per image of ``encode`` (models with a code)
    data: str = ""  # the resolved data config (JSON): runs compare only on the same images
    fd_recomputed: float | None = None  # the Frechet distance again, from the exported weights
    kid: float | None = None  # kernel distance of the same samples in the same features
    notes: list[str] = field(default_factory=list)

    @property
    def reconstruction(self) -> float | None:
        return self.scores.get(RECONSTRUCTION_KEY)

    @property
    def fd(self) -> float | None:
        return self.scores.get(FD_KEY)

    @property
    def is_autoencoder(self) -> bool:
        """Reconstructs through a code: a point of the reconstruction-against-code-size chart."""
        return self.code_size is not None and self.reconstruction is not None

    @property
    def is_generator(self) -> bool:
        """Logged a Frechet distance of its samples (KID needs its model too)."""
        return self.fd is not None


@dataclass
class PcaReference:
    """Closed-form PCA on one data set: held-out MSE for every code size 1..``max_code``."""

    data: str
    fit_images: int
    heldout_images: int
    dims: int  # values per image: PCA with this many components reconstructs exactly
    codes: list[int]
    mse: list[float]

    def at(self, code: int) -> float:
        """PCA's error at ``code`` components (past the fitted ones, the last: the data has no more)."""
        return self.mse[min(code, len(self.mse)) - 1]

    def exact(self, code: int) -> bool:
        """PCA with ``code`` components spans every image: its error is rounding alone."""
        return code >= self.dims


@dataclass
class ZooNumbers:
    runs: list[ZooRun]
    pca: list[PcaReference]
    notes: list[str] = field(default_factory=list)

    def reference(self, run: ZooRun) -> PcaReference | None:
        return next((p for p in self.pca if p.data == run.data), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [asdict(r) for r in self.runs],
            "autoencoders": [
                {
                    "run": r.name,
                    "model": r.model,
                    "code_size": r.code_size,
                    "mse": r.reconstruction,
                    "step": r.step,
                    "pca_mse": ref.at(r.code_size) if (ref := self.reference(r)) and r.code_size else None,
                }
                for r in self.runs
                if r.is_autoencoder
            ],
            "generators": [
                {"run": r.name, "model": r.model, "fd": r.fd, "fd_recomputed": r.fd_recomputed, "kid": r.kid}
                for r in self.runs
                if r.is_generator
            ],
            "pca": [asdict(p) for p in self.pca],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ZooNumbers:
        return cls([ZooRun(**r) for r in doc["runs"]], [PcaReference(**p) for p in doc["pca"]], doc.get("notes", []))


def pca_reference(train: Tensor, heldout: Tensor, max_code: int, data: str = "") -> PcaReference:
    """PCA fitted on ``train`` (its first ``PCA_FIT_IMAGES``), measured on ``heldout``, for codes 1..max_code.

    Each error is the mean squared error of ``pca_reconstruct`` clamped to [0, 1], as the runs measure
    their own (``GenerativeRecipe.validate``), so a model and PCA compare like for like. Codes past
    the data's rank (the pixels, or the fitted images) stop at the rank: PCA has no more directions.
    """
    from swaplab.models.zoo.pca import fit_pca, pca_reconstruct

    fit = train[:PCA_FIT_IMAGES]
    dims = int(np.prod(fit.shape[1:]))
    top = max(1, min(max_code, len(fit), dims))
    mean, components = fit_pca(fit, top)
    errors = [
        float(((pca_reconstruct(heldout, mean, components[:k]).clamp(0, 1) - heldout) ** 2).mean())
        for k in range(1, top + 1)
    ]
    return PcaReference(data, len(fit), len(heldout), dims, list(range(1, top + 1)), errors)


class _Images:
    """Each data set the runs use, loaded once (digits in a blink; a faceset takes a while)."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    @staticmethod
    def key(cfg: Any) -> str:
        from swaplab.config import to_dict

        return json.dumps(to_dict(cfg.data.resolved(cfg.model)), sort_keys=True)

    def get(self, cfg: Any) -> Any:
        from swaplab.train.image_data import ImageData

        key = self.key(cfg)
        if key not in self.loaded:
            self.loaded[key] = ImageData.for_run(cfg)
        return self.loaded[key]


@dataclass
class _Loaded:
    model: Any
    cfg: Any
    card: dict[str, Any]


def _load(run: RunView, scratch: Path) -> _Loaded:
    """The run's latest good checkpoint as an exported model (its card says what it can do)."""
    from swaplab.models.card import load_model, read_card
    from swaplab.train.export import export_model
    from swaplab.train.run import read_run_config

    _, cfg = read_run_config(run.path)
    folder = export_model(run.path, scratch / run.name).parent
    card, _ = read_card(folder)
    return _Loaded(load_model(folder), cfg, card)


@dataclass
class _Pictures:
    """One run's picture rows (float images in [0, 1]) and the data set they come from."""

    data: str
    held: Tensor | None = None
    reconstructions: Tensor | None = None
    samples: Tensor | None = None


@torch.no_grad()
def _measure(
    run: RunView, loaded: _Loaded, images: _Images, features: dict[str, Any], pictures: dict[str, _Pictures] | None
) -> ZooRun:
    """The numbers the page adds for one loaded run (its code size, FD again and KID), and with
    ``pictures`` its picture rows: the previews' held-out images and seed."""
    from swaplab.metrics import frechet_distance, kernel_distance

    model, cfg = loaded.model, loaded.cfg
    generative = loaded.card.get("generative") or {}
    out = ZooRun(
        run.name,
        model=str(getattr(cfg.model, "name", "")),
        recipe=str(loaded.card.get("recipe", "")),
        capabilities=list(generative.get("capabilities") or []),
    )
    if not {"sample", "reconstruct"} & set(out.capabilities):
        return out  # e.g. 2-D points: nothing to compare with images
    data = images.get(cfg)
    out.data = images.key(cfg)
    held, labels = data.heldout()
    if "interpolate" in out.capabilities:  # the contract: models that interpolate encode to a code
        out.code_size = int(model.encode(held[:2]).reshape(2, -1).shape[1])
    if "sample" in out.capabilities and len(held) >= 2:
        # The validation's draw: as many samples as held-out images, from its seed (and labels).
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        given = labels if "conditional" in out.capabilities else None
        samples = model.sample(len(held), generator, given).float().clamp(0, 1)
        if out.data not in features:
            features[out.data] = pixel_feature_space(data)
        fake, real = features[out.data](samples), features[out.data](held)
        out.fd_recomputed = float(frechet_distance(fake, real))
        out.kid = float(kernel_distance(fake, real).mean)
    if pictures is not None:
        drawn = pictures[run.name] = _Pictures(out.data)
        if "reconstruct" in out.capabilities:
            drawn.held = held[:PICTURES]
            drawn.reconstructions = model.reconstruct(drawn.held).float().clamp(0, 1)
        if "sample" in out.capabilities:
            generator = torch.Generator().manual_seed(PREVIEW_SEED)
            given = torch.arange(PICTURES) % max(1, model.num_classes) if "conditional" in out.capabilities else None
            drawn.samples = model.sample(PICTURES, generator, given).float().clamp(0, 1)
    return out


def zoo_numbers(data: StudyData, pictures: dict[str, _Pictures] | None = None) -> ZooNumbers:
    """Every number of the page: each run's own final validation numbers, what its exported model
    adds (capabilities, code size, KID), and PCA on each data set the autoencoders use. ``pictures``
    (a dict) receives each run's picture rows, drawn while its model is loaded."""
    runs, notes = [], []
    images, features = _Images(), {}
    with tempfile.TemporaryDirectory(prefix="swaplab-zoo-report-") as scratch:
        for run in data.runs:
            try:
                zoo_run = _measure(run, _load(run, Path(scratch)), images, features, pictures)
            except Exception as err:  # a run still training, failed, or not a generative model: keep its numbers
                zoo_run = ZooRun(run.name, notes=[f"no model to load ({type(err).__name__}: {err})"])
            zoo_run.step, zoo_run.scores = final_validation(run.rows)
            fd, again = zoo_run.fd, zoo_run.fd_recomputed
            if fd is not None and again is not None and abs(again - fd) > FD_TOLERANCE * max(abs(fd), 1e-12):
                zoo_run.notes.append(
                    f"the Frechet distance from the exported weights, {again:.4g}, differs from the logged "
                    f"{fd:.4g}: KID is of other samples than the logged FD"
                )
            runs.append(zoo_run)
        by_data: dict[str, list[ZooRun]] = {}
        for run in runs:
            if run.is_autoencoder:
                by_data.setdefault(run.data, []).append(run)
        references = []
        for key, members in by_data.items():
            data_set = images.loaded[key]
            held, _ = data_set.heldout()
            train = data_set.images.float().div(255.0)
            max_code = max(r.code_size for r in members if r.code_size)
            references.append(pca_reference(train, held, max_code, key))
        if len(by_data) > 1:
            notes.append(f"the autoencoders use {len(by_data)} different data sets: one PCA line each")
    return ZooNumbers(runs, references, notes)


# ---------------------------------------------------------------- figures


def _data_label(key: str) -> str:
    try:
        cfg = json.loads(key)
    except json.JSONDecodeError:
        return key
    source = cfg.get("source", "?")
    what = ", ".join(cfg.get("train") or []) if source == "faceset" else source
    return f"{what} ({cfg.get('channels')}x{cfg.get('resolution')}x{cfg.get('resolution')})"


def reconstruction_chart(numbers: ZooNumbers, path: Path) -> Path | None:
    """Held-out MSE against code size: one line per model preset, PCA dashed (one per data set)."""
    autoencoders = [r for r in numbers.runs if r.is_autoencoder]
    if not autoencoders:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    largest = max(r.code_size for r in autoencoders if r.code_size)
    for index, ref in enumerate(numbers.pca):
        codes = list(ref.codes) + ([largest] if largest > ref.codes[-1] else [])
        errors = [ref.at(c) for c in codes]
        label = "PCA (closed form)" + (f", {_data_label(ref.data)}" if len(numbers.pca) > 1 else "")
        ax.plot(codes, errors, linestyle="--", color="black" if index == 0 else "grey", linewidth=1.6, label=label)
    models = list(dict.fromkeys(r.model for r in autoencoders))
    palette = matplotlib.colormaps["tab10" if len(models) <= 10 else "tab20"].colors
    markers = "osD^vP*Xh<>"
    for index, model in enumerate(models):
        points = sorted((r.code_size, r.reconstruction) for r in autoencoders if r.model == model)
        xs, ys = zip(*points)
        style = dict(color=palette[index % len(palette)], marker=markers[index % len(markers)], markersize=7)
        ax.plot(xs, ys, linewidth=1.3, label=model, **style)
    ax.set_xscale("log", base=2)
    ticks = [2**i for i in range(int(math.log2(largest)) + 1)]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("code size (values per image)")
    ax.set_ylabel("held-out reconstruction MSE (pixels in [0, 1])")
    held = numbers.pca[0].heldout_images if numbers.pca else 0
    ax.set_title(f"Reconstruction error against code size ({held} held-out images)", fontsize=11)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def run_losses(runs: Sequence[RunView], path: Path) -> Path | None:
    """Small multiples: every logged loss of each run in its own panel (their scales differ by family)."""
    shown = [(run, [*sum(curve_keys([run]), [])]) for run in runs]
    shown = [(run, keys) for run, keys in shown if keys]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    columns = min(4, len(shown))
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.7 * rows), squeeze=False)
    for ax, (run, keys) in zip(axes.flat, shown):
        palette = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20"].colors
        lows, highs = [], []
        for index, key in enumerate(keys):
            steps, values = run.series(key)
            span = _span(len(values))
            ax.plot(steps, smooth(values, span), color=palette[index % len(palette)], linewidth=1.1, label=key)
            lows.append(values.min())
            highs.append(values.max())
        if min(lows) > 0 and max(highs) / min(lows) > 30:
            ax.set_yscale("log")
        ax.set_title(run.name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5 if len(keys) > 5 else 6, loc="best", ncol=2 if len(keys) > 5 else 1)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.supxlabel("iteration (optimiser step)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def _tiles(images: Tensor) -> list[np.ndarray]:
    import cv2

    from swaplab.train.preview import to_hwc

    out = []
    for image in to_hwc(images):
        size = max(MIN_TILE, image.shape[0])
        tile = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
        out.append(np.pad(tile, ((0, 0), (0, TILE_GAP), (0, 0)), constant_values=255))  # tiles apart
    return out


def _row(tiles: list[np.ndarray], label: str, width: int) -> np.ndarray:
    """A labelled row, padded with white to ``width`` tiles (rows of one grid stack)."""
    tiles = tiles + [np.full_like(tiles[0], 255)] * (width - len(tiles))
    return _labelled_row(tiles, label)


def picture_grids(
    data: StudyData, numbers: ZooNumbers, pictures: dict[str, _Pictures], figures: Path
) -> list[tuple[str, Path]]:
    """Two grids, written marked as synthetic: held-out images then each reconstructing run's
    reconstructions of them; each sampling run's samples from the previews' fixed noise (one row per
    run, labelled with its name and step). Returns (title, path) pairs."""
    recon_rows: dict[str, list[np.ndarray]] = {}
    sample_rows: list[np.ndarray] = []
    steps = {r.name: r.step for r in numbers.runs}
    for run in data.runs:
        drawn = pictures.get(run.name)
        if drawn is None:
            continue
        step = steps.get(run.name)
        label = f"{run.name} (step {step})" if step is not None else run.name
        if drawn.reconstructions is not None and drawn.held is not None:
            if drawn.data not in recon_rows:
                recon_rows[drawn.data] = [_row(_tiles(drawn.held), f"held out: {_data_label(drawn.data)}", PICTURES)]
            recon_rows[drawn.data].append(_row(_tiles(drawn.reconstructions), label, PICTURES))
        if drawn.samples is not None:
            sample_rows.append(_row(_tiles(drawn.samples), label, PICTURES))
    grids = []
    model_id = f"swaplab-study:{data.name}"
    for index, rows in enumerate(recon_rows.values()):
        name = "reconstructions.png" if len(recon_rows) == 1 else f"reconstructions-{index}.png"
        grids.append(
            ("Held-out images and their reconstructions", _write_grid(_same_width(rows), figures / name, model_id))
        )
    if sample_rows:
        path = _write_grid(_same_width(sample_rows), figures / "samples.png", model_id)
        grids.append(("Samples from the previews' fixed noise (conditional models: labels 0, 1, 2 ...)", path))
    return [(title, path) for title, path in grids if path is not None]


def _same_width(rows: list[np.ndarray]) -> list[np.ndarray]:
    """Rows of tiles of different sides (8 px digits next to 32 px faces) padded to the widest."""
    width = max(r.shape[1] for r in rows)
    return [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]


# ---------------------------------------------------------------- the page


def _num(value: float | None) -> str:
    return _format(value)


def _runs_table(data: StudyData, numbers: ZooNumbers) -> list[str]:
    by_name = {r.name: r for r in numbers.runs}
    lines = [
        "<table><tr><th>run</th><th>model</th><th>can</th><th>status</th><th>steps</th><th>minutes</th>"
        "<th>final loss</th><th>code size</th><th>final validation (step)</th><th>own overrides</th></tr>"
    ]
    for run in data.runs:
        zoo_run = by_name.get(run.name, ZooRun(run.name))
        scores = ", ".join(f"{k.removeprefix('val/')} {_num(v)}" for k, v in zoo_run.scores.items()) or "none"
        name = html.escape(run.name)
        links = []
        if (run.path / "previews" / "latest.png").is_file():
            links.append(f"<a class='small' href='../{name}/previews/latest.png'>preview</a>")
        if (data.sweep_dir / "logs" / f"{run.name}.log").is_file():
            links.append(f"<a class='small' href='../logs/{name}.log'>log</a>")
        lines.append(
            f"<tr><td>{name} {' '.join(links)}</td><td>{html.escape(zoo_run.model or '?')}</td>"
            f"<td class='small'>{html.escape(', '.join(zoo_run.capabilities) or '-')}</td>"
            f"<td>{html.escape(run.status)}</td><td class='num'>{_num(run.final_step)}</td>"
            f"<td class='num'>{_num(run.seconds / 60 if run.seconds else None)}</td>"
            f"<td class='num'>{_num(final_value(run, 'loss'))}</td><td class='num'>{_num(zoo_run.code_size)}</td>"
            f"<td class='small'>{html.escape(scores)} ({_num(zoo_run.step)})</td>"
            f"<td><code>{html.escape(' '.join(run.own_overrides) or '-')}</code></td></tr>"
        )
    lines.append("</table>")
    return lines


def _autoencoder_table(numbers: ZooNumbers) -> list[str]:
    rows = sorted((r for r in numbers.runs if r.is_autoencoder), key=lambda r: (r.code_size or 0, r.reconstruction))
    lines = [
        "<table><tr><th>run</th><th>model</th><th>code size</th><th>held-out MSE</th><th>PCA at that size</th>"
        "<th>MSE / PCA's</th></tr>"
    ]
    for run in rows:
        ref = numbers.reference(run)
        pca = ref.at(run.code_size) if ref and run.code_size else None
        exact = ref is not None and run.code_size is not None and ref.exact(run.code_size)
        ratio = run.reconstruction / pca if pca and not exact else None
        best = " best" if ratio is not None and ratio < 1 else ""
        lines.append(
            f"<tr><td>{html.escape(run.name)}</td><td>{html.escape(run.model)}</td>"
            f"<td class='num'>{run.code_size}</td><td class='num'>{_num(run.reconstruction)}</td>"
            f"<td class='num'>{'0 (exact)' if exact else _num(pca)}</td>"
            f"<td class='num{best}'>{_num(ratio) if ratio is not None else 'n/a'}</td></tr>"
        )
    lines.append("</table>")
    return lines


def _generator_table(numbers: ZooNumbers) -> list[str]:
    rows = sorted((r for r in numbers.runs if r.is_generator), key=lambda r: r.fd)
    lines = [
        "<table><tr><th>run</th><th>model</th><th>FD (logged)</th><th>FD (recomputed)</th><th>KID</th>"
        "<th>step</th></tr>"
    ]
    for index, run in enumerate(rows):
        best = " best" if index == 0 else ""
        lines.append(
            f"<tr><td>{html.escape(run.name)}</td><td>{html.escape(run.model)}</td>"
            f"<td class='num{best}'>{_num(run.fd)}</td><td class='num'>{_num(run.fd_recomputed)}</td>"
            f"<td class='num'>{_num(run.kid)}</td><td class='num'>{_num(run.step)}</td></tr>"
        )
    lines.append("</table>")
    return lines


def summary_lines(data: StudyData, numbers: ZooNumbers | None = None, report_dir: Path | None = None) -> list[str]:
    """The page's summary as plain text (``swaplab report`` prints it): the autoencoders against PCA,
    the generators by FD. Reads ``report_dir/zoo.json`` when given and present, else computes."""
    if numbers is None and report_dir is not None and (report_dir / "zoo.json").is_file():
        numbers = ZooNumbers.from_json(json.loads((report_dir / "zoo.json").read_text(encoding="utf-8")))
    if numbers is None:
        numbers = zoo_numbers(data)
    lines = []
    autoencoders = [r for r in numbers.runs if r.is_autoencoder]
    if autoencoders:
        best = min(autoencoders, key=lambda r: r.reconstruction)
        lines.append(
            f"autoencoders ({len(autoencoders)} runs): lowest held-out MSE {best.reconstruction:.4g} "
            f"({best.name}, code {best.code_size})"
        )
        below, above = [], []
        for run in sorted(autoencoders, key=lambda r: (r.code_size, r.name)):
            ref = numbers.reference(run)
            if ref is None or not run.code_size:
                continue
            pca = 0.0 if ref.exact(run.code_size) else ref.at(run.code_size)
            text = f"{run.name} {run.reconstruction:.3g} vs {pca:.3g}"
            (below if run.reconstruction < pca else above).append(text)
        if below:
            lines.append("below PCA at the same code size: " + "; ".join(below))
        if above:
            lines.append("above PCA at the same code size: " + "; ".join(above))
    generators = sorted((r for r in numbers.runs if r.is_generator), key=lambda r: r.fd)
    if generators:
        lines.append(
            "generators by Frechet distance to held-out images (pixel PCA; KID): "
            + "; ".join(f"{r.name} {r.fd:.3g} ({_plain(r.kid)})" for r in generators)
        )
    for run in numbers.runs:
        if not run.scores:
            lines.append(f"{run.name}: no validation numbers yet")
    return lines or ["no run has validation numbers yet"]


def _plain(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def write_zoo_report(data: StudyData, out: Path) -> Path:
    """Write ``out/index.html``, its figures and ``out/zoo.json``; returns the page's path."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    pictures: dict[str, _Pictures] = {}
    numbers = zoo_numbers(data, pictures)
    atomic_write_json(out / "zoo.json", numbers.to_json())
    body = [f"<h1>swaplab study: {html.escape(data.name)}</h1>"]
    if data.description:
        body.append(f"<p>{html.escape(data.description)}</p>")
    body.append(
        f"<p class='small'>Sweep folder <code>{html.escape(str(data.sweep_dir))}</code>; {len(data.runs)} runs, "
        "scored by their own held-out numbers (the last <code>val/*</code> values of each metrics.jsonl). "
        "Machines: <a href='../sweep.json'>sweep.json</a>, <a href='../study.yaml'>study.yaml</a>, "
        "<a href='zoo.json'>zoo.json</a> (every number below).</p>"
    )
    body += _warnings(data.warnings + numbers.notes)
    body.append("<h2>Summary</h2><ul>")
    body += [f"<li>{html.escape(line)}</li>" for line in summary_lines(data, numbers)]
    body.append("</ul>")
    body.append("<h2>Runs</h2>")
    body += _runs_table(data, numbers)
    body += _warnings([f"{r.name}: {note}" for r in numbers.runs for note in r.notes])

    chart = reconstruction_chart(numbers, figures / "reconstruction-vs-code.png")
    if chart is not None:
        ref = numbers.pca[0]
        body.append("<h2>Autoencoders: reconstruction error against code size</h2>")
        body.append(
            f"<p class='small'>Each point is a run's own final <code>{RECONSTRUCTION_KEY}</code> on its "
            f"{ref.heldout_images} held-out images; its code size is the length of its <code>encode</code> output "
            "(overcomplete and sparse codes count every value). The dashed line is closed-form PCA "
            f"(<code>fit_pca</code> on the first {ref.fit_images} training images, <code>pca_reconstruct</code> of the "
            "same held-out images, clamped to [0, 1] as the runs' numbers are): the best any linear code of that "
            f"size does; at {ref.dims} components and beyond it is exact.</p>"
        )
        body.append(f"<img src='figures/{chart.name}' alt='reconstruction error against code size'>")
        body += _autoencoder_table(numbers)

    generators = {r.name: r for r in numbers.runs if r.is_generator}
    if generators:
        body.append("<h2>Generators: distance of samples to held-out images</h2>")
        body.append(
            f"<p class='small'>FD: each run's own final <code>{FD_KEY}</code>, the Frechet distance between as many "
            "samples as held-out images and the held-out images, in the top "
            f"{PIXEL_PCA_DIMS} principal directions of the training pixels. KID (kernel distance, unbiased: about 0 "
            "for samples of the held-out distribution, so small negative values occur) is computed here on the same "
            "samples (same seed, from the exported weights) in the same space; the recomputed FD checks that "
            "space. Few held-out images make both noisy: compare runs of one study, not with other numbers.</p>"
        )
        body += _generator_table(numbers)
        rows = {
            name: {
                "frechet_distance/pixel-pca": run.fd,
                **({"kernel_distance/pixel-pca": run.kid} if run.kid is not None else {}),
            }
            for name, run in generators.items()
        }
        for title, path in bar_charts(rows, figures, stem="generators"):
            body.append(f"<img src='figures/{path.name}' alt='{html.escape(title)} of the generators'>")

    grids = picture_grids(data, numbers, pictures, figures)
    if grids:
        body.append("<h2>Pictures at the last step</h2>")
        body.append(
            "<p class='small'>Drawn from each run's exported weights with the previews' fixed seed and held-out "
            "images (so they match its latest preview). Marked as synthetic.</p>"
        )
        for title, path in grids:
            body.append(f"<h3>{html.escape(title)}</h3><img src='figures/{path.name}' alt='{html.escape(title)}'>")

    losses = run_losses(data.runs, figures / "losses.png")
    if losses is not None:
        body.append("<h2>Loss curves</h2>")
        body.append(
            "<p class='small'>Every logged loss of each run (smoothed), one panel per run: the families' losses "
            "have different units and scales.</p>"
        )
        body.append(f"<img src='figures/{losses.name}' alt='loss curves of every run'>")
    for key, title in ((RECONSTRUCTION_KEY, "held-out reconstruction MSE"), (FD_KEY, "Frechet distance (pixels)")):
        if any(len(run.series(key)[0]) for run in data.runs):
            stem = key.replace("/", "-")
            path, _ = plot_curves(
                [r for r in data.runs if len(r.series(key)[0])], key, figures / f"{stem}.png", "", title
            )
            body.append(f"<h3>Validation: {html.escape(title)} against steps</h3>")
            body.append(f"<img src='figures/{path.name}' alt='{html.escape(title)} per run'>")
    page = out / "index.html"
    atomic_write_text(page, _page(f"swaplab study: {data.name}", body))
    return page
