"""The evaluator's HTML reports: a metric table with directions, bar charts and image grids.

``write_report(result)`` writes ``report.html`` beside ``metrics.json`` with its figures under
``figures/`` (matplotlib, Agg backend, PNG files next to the page: no scripts, no remote assets);
``write_comparison(results, out_dir)`` writes one table with a row per model and grouped bar
charts. Grids showing swapped faces are written with ``write_marked_image``. This module reads
results and image files; it computes no metric and runs no network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from swaplab.io.atomic import atomic_write_text
from swaplab.io.images import read_image

if TYPE_CHECKING:
    from swaplab.evaluate.results import EvalResult

__all__ = ["ARROWS", "FAMILIES", "face_tile", "family_of", "summary_lines", "write_comparison", "write_report"]

ARROWS = {"higher": "&uarr; higher", "lower": "&darr; lower", "one": "&rarr; 1", "reference": "reference"}
TILE = 128

#: Chart families, in report order: (title, metric-name prefixes).
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Identity towards the source", ("identity_similarity", "target_identity_similarity", "identity_retrieval")),
    ("Attributes kept from the target", ("pose_error", "expression_error")),
    ("Sharpness and realism", ("sharpness_ratio", "frechet_distance", "kernel_distance", "no_face_in_swap")),
    ("Reconstruction of held-out faces", ("masked_ssim", "masked_psnr", "masked_l1")),
    ("Temporal stability", ("landmark_jitter", "flicker", "warped_flicker", "identity_drift", "identity_drift_target")),
)

CAVEAT = (
    "Identity metrics alone flatter blur: a blurry face that no person would recognise can still be "
    "retrieved as the source by a face-recognition network. Read the sharpness ratio (1 = as much fine "
    "detail as the target, below 1 blurrier) and the distribution distances beside identity, and look at "
    "the grids below."
)

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 14px; }
th { background: #f0f0f0; }
td.num { text-align: right; font-family: monospace; }
td.best { font-weight: bold; background: #e8f5e9; }
.warning { background: #fff3e0; border-left: 4px solid #e65100; padding: 0.5em 1em; margin: 0.5em 0; }
.caveat { background: #e3f2fd; border-left: 4px solid #1565c0; padding: 0.5em 1em; }
img { max-width: 100%; border: 1px solid #ddd; }
.small { color: #666; font-size: 12px; }
"""


def family_of(key: str) -> str:
    """The chart family of a metrics.json key (``pose_error`` -> ``Attributes kept from the target``)."""
    base = key.split("/")[0].split(" ")[0]
    for title, prefixes in FAMILIES:
        if base in prefixes:
            return title
    return "Other"


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        magnitude = abs(value)
        return f"{value:.4g}" if magnitude and (magnitude < 0.01 or magnitude >= 1000) else f"{value:.3f}"
    return html.escape(str(value))


def _plain(value: float) -> str:
    """A number for a chart label (no HTML)."""
    return "n/a" if not math.isfinite(value) else (f"{value:.3g}" if abs(value) < 0.01 else f"{value:.3f}")


def _entry_text(entry: dict[str, Any]) -> str:
    """The summary numbers of one metric as text: "0.912", "top1 0.80, top5 0.95", "0.013 ± 0.002"."""
    if "mean" in entry and "std" in entry:
        return f"{_format(entry['mean'])} &plusmn; {_format(entry['std'])}"
    if "mean" in entry:
        return _format(entry["mean"])
    if "value" in entry:
        return _format(entry["value"])
    return ", ".join(f"{k} {_format(v)}" for k, v in entry.items() if k.startswith("top"))


def _notes(entry: dict[str, Any]) -> str:
    skip = {"mean", "value", "std", "better"}
    return ", ".join(f"{k} {_format(v)}" for k, v in entry.items() if k not in skip and not k.startswith("top"))


# ------------------------------------------------------------------ figures


def bar_charts(rows: dict[str, dict[str, float]], out_dir: Path, stem: str = "metrics") -> list[tuple[str, Path]]:
    """One PNG per metric family: a panel per metric, one bar per model (grouped when several).

    ``rows``: model name -> {column: value} (``EvalResult.summary``). Returns (family, path) pairs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from swaplab.metrics import direction as metric_direction

    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for values in rows.values() for k in values))
    models = list(rows)
    colours = plt.get_cmap("tab10").colors
    written = []
    for index, (title, _) in enumerate([*FAMILIES, ("Other", ())]):
        keys = [k for k in columns if family_of(k) == title]
        if not keys:
            continue
        width = min(4, len(keys))
        height = math.ceil(len(keys) / width)
        fig, axes = plt.subplots(height, width, figsize=(3.2 * width, 2.8 * height), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            values = [rows[m].get(key, float("nan")) for m in models]
            bars = ax.bar(
                range(len(models)),
                [0.0 if not math.isfinite(v) else v for v in values],
                color=[colours[i % len(colours)] for i in range(len(models))],
            )
            ax.bar_label(bars, labels=[_plain(v) for v in values], fontsize=7)
            ax.margins(y=0.15)
            direction = metric_direction(key)
            arrow = {"higher": " (higher better)", "lower": " (lower better)", "one": " (1 best)"}.get(direction, "")
            ax.set_title(key.replace("/", "\n", 1) + arrow, fontsize=8)
            ax.set_xticks(range(len(models)))
            ax.set_xticklabels(models if len(models) > 1 else [""], rotation=30, ha="right", fontsize=7)
            if direction == "one":
                ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
            ax.tick_params(axis="y", labelsize=7)
        for ax in list(axes.flat)[len(keys) :]:
            ax.axis("off")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{stem}-{index}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append((title, path))
    return written


def face_tile(image: np.ndarray, box: Sequence[float] | None, size: int = TILE, scale: float = 1.8) -> np.ndarray:
    """A ``size`` px square around a face box (``scale`` times its larger side), or the whole image."""
    if box is None:
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = box
    side = scale * max(x1 - x0, y1 - y0)
    s = size / side
    matrix = np.array([[s, 0.0, size / 2 - s * (x0 + x1) / 2], [0.0, s, size / 2 - s * (y0 + y1) / 2]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _labelled_row(tiles: Sequence[np.ndarray], label: str) -> np.ndarray:
    row = np.concatenate(list(tiles), axis=1)
    strip = np.full((18, row.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, label[:80], (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, row], axis=0)


def _tile(path: str | None, box: Sequence[float] | None) -> np.ndarray:
    if not path or not Path(path).is_file():
        return np.full((TILE, TILE, 3), 200, np.uint8)
    return face_tile(read_image(path)[0], box)


def _write_grid(rows: list[np.ndarray], path: Path, model_id: str) -> Path | None:
    """Stack labelled rows and write them marked as synthetic (they show swapped faces)."""
    from swaplab.provenance import Provenance, write_marked_image

    if not rows:
        return None
    grid = np.concatenate(rows, axis=0)
    return write_marked_image(path, grid, Provenance.create(model_id, content=f"evaluation grid {path.name}"))


def _item_row(item: dict[str, Any], label: str) -> np.ndarray:
    box = item["target_box"]
    return _labelled_row(
        [_tile(item["source_image"], item["source_box"]), _tile(item["target"], box), _tile(item["swap"], box)], label
    )


def _model_id(result: EvalResult) -> str:
    return str(result.metrics.get("target", {}).get("model_id") or f"external:{result.name}")


# ------------------------------------------------------------------ pages


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _metric_table(metrics: dict[str, dict[str, Any]]) -> str:
    from swaplab.metrics import direction as metric_direction

    lines = ["<table><tr><th>metric</th><th>value</th><th>better</th><th>samples and notes</th></tr>"]
    for key, entry in metrics.items():
        lines.append(
            f"<tr><td>{html.escape(key)}</td><td class='num'>{_entry_text(entry)}</td>"
            f"<td>{ARROWS[metric_direction(key)]}</td><td class='small'>{html.escape(_notes(entry))}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _warnings(warnings: Sequence[str]) -> list[str]:
    return [f"<div class='warning'><b>Warning:</b> {html.escape(w)}</div>" for w in warnings]


def write_report(result: EvalResult) -> Path:
    """``report.html`` for one evaluation, with ``figures/`` beside it; returns the page's path."""
    out = result.out_dir
    figures = out / "figures"
    doc = result.metrics
    target = doc.get("target", {})
    protocol = doc["protocol"]
    body = [
        f"<h1>swaplab evaluation: {html.escape(result.name)}</h1>",
        f"<p>Protocol <b>{html.escape(protocol['name'])}</b> v{protocol['version']} (seed {protocol['seed']}, "
        f"sha256 {protocol['sha256'][:12]}); target: {html.escape(str(target.get('kind')))} "
        f"<code>{html.escape(str(target.get('path')))}</code>"
        + (f", {html.escape(str(target['arch']))} at step {target.get('step')}" if target.get("arch") else "")
        + "</p>",
        *_warnings(result.warnings),
        f"<p class='caveat'>{html.escape(CAVEAT)}</p>",
        "<h2>Metrics</h2>",
        _metric_table(doc["metrics"]),
        "<p class='small'>Identity networks: "
        + html.escape(", ".join(doc["networks"]["identity"]))
        + f"; distribution features: {html.escape(doc['networks']['distribution_features'])}. "
        "Samples: " + html.escape(", ".join(f"{k} {v}" for k, v in doc["samples"].items())) + ". "
        "Numbers for machines: <a href='metrics.json'>metrics.json</a>, <a href='per_item.json'>per_item.json</a>.</p>",
    ]
    body.append("<h2>Charts</h2>")
    for title, path in bar_charts({result.name: result.summary}, figures):
        body.append(
            f"<h3>{html.escape(title)}</h3><img src='{path.relative_to(out).as_posix()}' alt='{html.escape(title)}'>"
        )

    items = [it for it in result.items if "target_box" in it]  # image protocols only
    if items:
        model_id = _model_id(result)
        shown = items[: doc["options"].get("grid", 8)]
        rows = [
            _item_row(
                it, f"{it['id']}  id {_format(_first(it['identity_similarity']))}  pose {_format(it['pose_error'])}"
            )
            for it in shown
        ]
        grid = _write_grid(rows, figures / "grid.png", model_id)
        body.append("<h2>Source | target | swap</h2>")
        body.append(f"<p class='small'>The first {len(shown)} pairs of the protocol (always the same ones).</p>")
        if grid:
            body.append("<img src='figures/grid.png' alt='source, target and swap of the first pairs'>")
        worst = doc["options"].get("worst", 6)
        for criterion, key, reverse in (
            ("lowest identity similarity", "identity_similarity", False),
            ("highest pose error", "pose_error", True),
        ):
            ranked = _worst(items, key, reverse)[:worst]
            if not ranked:
                continue
            stem = "worst_" + key.split("_")[0]
            rows = [_item_row(it, f"{it['id']}  {key} {_format(_value(it, key))}") for it in ranked]
            _write_grid(rows, figures / f"{stem}.png", model_id)
            body.append(f"<h2>Worst cases: {criterion}</h2>")
            body.append(
                "<table><tr><th>pair</th><th>value</th></tr>"
                + "".join(
                    f"<tr><td>{html.escape(it['id'])}</td><td class='num'>{_format(_value(it, key))}</td></tr>"
                    for it in ranked
                )
                + "</table>"
            )
            body.append(f"<img src='figures/{stem}.png' alt='worst cases by {criterion}'>")
    page = out / "report.html"
    atomic_write_text(page, _page(f"swaplab evaluation: {result.name}", body))
    return page


def _first(values: dict[str, float]) -> float | None:
    from swaplab.evaluate.results import METRIC_NETWORK

    return values.get(METRIC_NETWORK, next(iter(values.values()), None))


def _value(item: dict[str, Any], key: str) -> float | None:
    value = item.get(key)
    return _first(value) if isinstance(value, dict) else value


def _worst(items: list[dict[str, Any]], key: str, highest_first: bool) -> list[dict[str, Any]]:
    valued = [it for it in items if _value(it, key) is not None]
    # Ties (and the order of equal values) are broken by pair id so the choice is stable.
    return sorted(valued, key=lambda it: ((-1 if highest_first else 1) * _value(it, key), it["id"]))


def _best(values: list[float], direction: str) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite or direction == "reference":
        return None
    if direction == "higher":
        return max(finite)
    if direction == "lower":
        return min(finite)
    return min(finite, key=lambda v: abs(v - 1.0))


def write_comparison(results: Sequence[EvalResult], out_dir: str | Path) -> Path:
    """``out_dir/report.html``: one row per model, grouped bar charts, swaps side by side; returns the path."""
    from swaplab.metrics import direction as metric_direction

    out = Path(out_dir)
    rows = {r.name: r.summary for r in results}
    columns = list(dict.fromkeys(k for values in rows.values() for k in values))
    protocols = sorted({f"{r.metrics['protocol']['name']} v{r.metrics['protocol']['version']}" for r in results})
    body = [
        f"<h1>swaplab comparison of {len(results)} models</h1>",
        f"<p>Protocol {html.escape(', '.join(protocols))}. One row per model; the best value of each column "
        "is highlighted (closest to 1 for ratios). Each name links to that model's own report.</p>",
    ]
    if len(protocols) > 1:
        body += _warnings(["these results come from different protocols: their numbers are not comparable"])
    for r in results:
        body += _warnings([f"{r.name}: {w}" for w in r.warnings])
    body.append(f"<p class='caveat'>{html.escape(CAVEAT)}</p>")
    header = "".join(f"<th>{html.escape(c)}<br>{ARROWS[metric_direction(c)]}</th>" for c in columns)
    table = [f"<table><tr><th>model</th>{header}</tr>"]
    best = {c: _best([rows[r.name].get(c, float("nan")) for r in results], metric_direction(c)) for c in columns}
    for r in results:
        link = (r.out_dir / "report.html").relative_to(out).as_posix() if r.out_dir.is_relative_to(out) else None
        name = f"<a href='{link}'>{html.escape(r.name)}</a>" if link else html.escape(r.name)
        cells = []
        for c in columns:
            value = rows[r.name].get(c, float("nan"))
            css = "num best" if best[c] is not None and value == best[c] else "num"
            cells.append(f"<td class='{css}'>{_format(value)}</td>")
        table.append(f"<tr><td>{name}</td>{''.join(cells)}</tr>")
    table.append("</table>")
    body += ["<h2>Metrics</h2>", *table, "<h2>Charts</h2>"]
    for title, path in bar_charts(rows, out / "figures", stem="compare"):
        body.append(
            f"<h3>{html.escape(title)}</h3><img src='{path.relative_to(out).as_posix()}' alt='{html.escape(title)}'>"
        )

    # The same pairs swapped by every model, side by side.
    by_id = [{it["id"]: it for it in r.items if "target_box" in it} for r in results]
    common = [i for i in by_id[0] if all(i in other for other in by_id[1:])] if by_id else []
    shown = common[: results[0].metrics["options"].get("grid", 8)]
    if shown:
        rows_img = []
        for pair_id in shown:
            first = by_id[0][pair_id]
            tiles = [_tile(first["source_image"], first["source_box"]), _tile(first["target"], first["target_box"])]
            tiles += [_tile(items[pair_id]["swap"], first["target_box"]) for items in by_id]
            rows_img.append(_labelled_row(tiles, pair_id))
        _write_grid(rows_img, out / "figures" / "compare_grid.png", "swaplab-eval-comparison")
        names = " | ".join(r.name for r in results)
        body.append(f"<h2>Source | target | {html.escape(names)}</h2>")
        body.append("<img src='figures/compare_grid.png' alt='the same pairs swapped by every model'>")
    page = out / "report.html"
    atomic_write_text(page, _page("swaplab comparison", body))
    return page


def summary_lines(results: Sequence[EvalResult]) -> list[str]:
    """A plain-text table for the terminal: one row per metric, one column per model."""
    from swaplab.metrics import direction as metric_direction

    marks = {"higher": "(+)", "lower": "(-)", "one": "(=1)", "reference": "(ref)"}
    columns = list(dict.fromkeys(k for r in results for k in r.summary))
    width = max([len(c) for c in columns] + [6]) + 6
    names = [r.name[:14] for r in results]
    lines = [f"{'metric':<{width}}" + "".join(f"{n:>16}" for n in names)]
    for column in columns:
        label = f"{column} {marks[metric_direction(column)]}"
        values = [_plain(r.summary.get(column, float("nan"))) for r in results]
        lines.append(f"{label:<{width}}" + "".join(f"{v:>16}" for v in values))
    lines.append("(+) higher is better, (-) lower is better, (=1) closest to 1 is best, (ref) a reference, not a score")
    return lines
