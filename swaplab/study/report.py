"""The study report: the original SimSwap ablation report's figures for any sweep, plus the metrics.

``write_study_report(sweep_dir)`` reads what the runs and the evaluator wrote (sweep.json,
study.yaml, each run's metrics.jsonl, manifest.json, previews/eval-*.png and eval/metrics.json)
and writes ``SWEEP_DIR/report/index.html`` with PNG figures beside it: generator and
discriminator losses per ablation against iterations, a swap grid per ablation on the fixed
evaluation pairs, the evaluator's metrics for every run, and a summary generated from the numbers
(which ablation moved each metric most, and the original study's findings, held or not). It
trains, swaps and scores nothing; the sweep is read by ``swaplab.study.sweep_data``, and tables,
charts and marked grids are the evaluator report's pieces.
A study scored by its runs' own validation numbers (``eval.source: validation``: the generative-model
zoo) gets the page of ``swaplab.study.zoo_report`` instead.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from swaplab.evaluate.report import (
    ARROWS,
    CAVEAT,
    FAMILIES,
    _best,
    _format,
    _labelled_row,
    _page,
    _tile,
    _warnings,
    _write_grid,
    bar_charts,
    family_of,
)
from swaplab.io.atomic import atomic_write_text
from swaplab.io.images import MediaError, read_image
from swaplab.metrics import direction as metric_direction
from swaplab.study.sweep_data import (
    FINAL_SHARE,
    RunView,
    StudyData,
    _read_json,
    _span,
    curve_keys,
    final_value,
    load_study_data,
    plot_curves,
    smooth,
)

__all__ = [
    "ROLE_PATTERNS",
    "Check",
    "MetricMove",
    "RunView",
    "StudyData",
    "ablation_role",
    "biggest_moves",
    "final_value",
    "half_drop_step",
    "load_study_data",
    "loss_moves",
    "qualitative_checks",
    "write_study_report",
]

TITLES = {
    "loss": "total loss",
    "loss/identity": "identity loss",
    "loss/reconstruction": "reconstruction loss",
    "loss/feature_matching": "feature-matching loss",
    "loss/adversarial": "adversarial loss (generator)",
    "d_loss": "discriminator loss",
    "d_loss/real": "discriminator loss on real faces",
    "d_loss/fake": "discriminator loss on swaps",
    "d_loss/gradient_penalty": "gradient penalty",
}
#: Identity transfer (cosine similarity units) below which a baseline has not learnt to swap yet: about
#: the spread of the mean similarity over a few dozen pairs.
MIN_TRANSFER = 0.02
#: Smallest side of a face in the swap grid (px).
MIN_TILE = 96

#: How a run's own overrides say which of the original study's ablations it is.
ROLE_PATTERNS: dict[str, re.Pattern[str]] = {
    "no-encoder": re.compile(r"^(model\.parts|ablation)\.encoder=none$"),
    "no-bottleneck": re.compile(r"^(model\.parts|ablation)\.bottleneck=none$"),
    "no-decoder": re.compile(r"^(model\.parts|ablation)\.decoder=(none|pca)$"),
    "l2": re.compile(r"^(loss=\S*l2|loss\.(reconstruction|recon|feature_matching|fm)\.norm=l2)$"),
}


# ---------------------------------------------------------------- which ablation a run is


def ablation_role(name: str, own_overrides: Sequence[str]) -> str | None:
    """Which original-study ablation a run is (``no-bottleneck``, ``l2`` ...) by its own overrides,
    else by its name; None for anything else (the extensions, the baseline)."""
    for role, pattern in ROLE_PATTERNS.items():
        if any(pattern.match(item.strip()) for item in own_overrides):
            return role
    return name if name in ROLE_PATTERNS else None


# ---------------------------------------------------------------- numbers


def half_drop_step(steps: np.ndarray, values: np.ndarray, until: float | None = None) -> float | None:
    """The first step at which the smoothed curve has made half of its total drop (start to minimum)
    within steps <= ``until``; None when it does not fall. A scale-free speed of convergence, so L1
    and L2 losses compare."""
    if until is not None:
        keep = steps <= until
        steps, values = steps[keep], values[keep]
    if len(values) < 4:
        return None
    curve = smooth(values, _span(len(values)))
    head = max(1, len(curve) // 20)
    start, low = float(curve[:head].mean()), float(curve.min())
    if not start > low:
        return None
    below = np.nonzero(curve <= start - 0.5 * (start - low))[0]
    return float(steps[below[0]]) if len(below) else None


@dataclass
class MetricMove:
    """The run that moved one metric most away from the baseline."""

    metric: str
    run: str
    baseline: float
    value: float
    direction: str  # higher / lower / one; "reference" for training losses (no better or worse)

    @property
    def delta(self) -> float:
        return self.value - self.baseline

    @property
    def improved(self) -> bool:
        if self.direction == "higher":
            return self.delta > 0
        if self.direction == "lower":
            return self.delta < 0
        return abs(self.value - 1.0) < abs(self.baseline - 1.0)

    def text(self) -> str:
        relative = f", {self.delta / abs(self.baseline):+.0%}" if self.baseline else ""
        verdict = "" if self.direction == "reference" else (", better" if self.improved else ", worse")
        return (
            f"{self.metric}: {self.run} moved it most, {_num(self.baseline)} -> {_num(self.value)} "
            f"({self.delta:+.3g}{relative}{verdict})"
        )


def _num(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _moves(values: dict[str, dict[str, float]], baseline: str, direction_of: Any) -> list[MetricMove]:
    """``values``: run -> {quantity: value}. Per quantity of the baseline, the run farthest from it."""
    base = values.get(baseline) or {}
    moves = []
    for metric, base_value in base.items():
        direction = direction_of(metric)
        if direction is None or not math.isfinite(base_value):
            continue
        candidates = [
            (abs(row[metric] - base_value), name, row[metric])
            for name, row in values.items()
            if name != baseline and math.isfinite(row.get(metric, float("nan")))
        ]
        if candidates and max(candidates)[0] > 0:
            _, name, value = max(candidates)
            moves.append(MetricMove(metric, name, base_value, value, direction))
    return moves


def biggest_moves(runs: Sequence[RunView], baseline: str) -> list[MetricMove]:
    """Per scored metric (not the reference values), the run farthest from the baseline's value."""
    return _moves(
        {r.name: r.summary for r in runs},
        baseline,
        lambda metric: None if metric_direction(metric) == "reference" else metric_direction(metric),
    )


def best_runs(runs: Sequence[RunView]) -> list[str]:
    """Per scored metric with a direction, which run is best and by how much over the runner-up; then
    how many metrics each run wins (the comparison of families, where there is no one baseline)."""
    scored = [r for r in runs if r.summary]
    if len(scored) < 2:
        return []
    lines, wins = [], {r.name: 0 for r in scored}
    for metric in dict.fromkeys(k for r in scored for k in r.summary):
        direction = metric_direction(metric)
        values = [(r.summary.get(metric, float("nan")), r.name) for r in scored]
        values = [(v, name) for v, name in values if math.isfinite(v)]
        best = _best([v for v, _ in values], direction)
        if best is None or len(values) < 2:
            continue
        winners = [name for v, name in values if v == best]
        others = [(v, name) for v, name in values if v != best]
        if not others:
            continue  # every run ties (retrieval at 0 early on): nobody wins
        wins.update({name: wins[name] + 1 for name in winners})
        runner = _best([v for v, _ in others], direction)
        name = next(n for v, n in others if v == runner)
        lines.append(f"best {metric} ({direction}): {', '.join(winners)} {_num(best)}, next {name} {_num(runner)}")
    if lines:
        ranking = sorted(wins.items(), key=lambda kv: -kv[1])
        lines.append(f"metrics won of {len(lines)}: " + ", ".join(f"{name} {count}" for name, count in ranking))
    return lines


def loss_moves(runs: Sequence[RunView], baseline: str) -> list[MetricMove]:
    """Per logged loss, the run whose final value (``final_value``) is farthest from the baseline's.

    Losses have no better or worse here: a term with weight 0 lowers the total without helping.
    """
    generator, discriminator = curve_keys(runs)
    values = {r.name: {f"final {k}": final_value(r, k) for k in [*generator, *discriminator]} for r in runs}
    return _moves(values, baseline, lambda metric: "reference")


# ---------------------------------------------------------------- the original study's findings


@dataclass
class Check:
    """One of the original report's findings, tested on this sweep's numbers."""

    run: str
    claim: str
    verdict: str  # "held", "not held", "not measured"
    evidence: list[str] = field(default_factory=list)
    rule: str = ""


def _identity_transfer(run: RunView) -> dict[str, float]:
    """Per identity network: similarity of the swaps to the source minus that of the unswapped targets."""
    out = {}
    for key, value in run.summary.items():
        if key.startswith("identity_similarity/"):
            net = key.split("/", 1)[1]
            reference = run.summary.get(f"target_identity_similarity/{net}", float("nan"))
            if math.isfinite(value) and math.isfinite(reference):
                out[net] = value - reference
    return out


def _check_no_bottleneck(run: RunView, base: RunView) -> Check:
    claim = "without the bottleneck the output is the target unchanged (no identity transfer)"
    rule = (
        "held when its identity transfer (similarity of the swap to the source minus that of the unswapped "
        f"target) is at most half the baseline's for every identity network; not measured while the baseline "
        f"transfers less than {MIN_TRANSFER}; without an evaluation, held when its final identity loss stays at "
        "least 20 % above the baseline's"
    )
    evidence = []
    transfer, base_transfer = _identity_transfer(run), _identity_transfer(base)
    nets = [n for n in transfer if n in base_transfer]
    verdicts = []
    for net in nets:
        if base_transfer[net] >= MIN_TRANSFER:
            verdicts.append(transfer[net] <= 0.5 * base_transfer[net])
        evidence.append(
            f"identity transfer by {net}: {_num(transfer[net])} ({run.name}) vs {_num(base_transfer[net])} (baseline)"
        )
        for key in (f"identity_retrieval/{net} top1", f"identity_similarity/{net}"):
            if key in run.summary and key in base.summary:
                evidence.append(f"{key}: {_num(run.summary[key])} vs {_num(base.summary[key])}")
    loss, base_loss = final_value(run, "loss/identity"), final_value(base, "loss/identity")
    if math.isfinite(loss) and math.isfinite(base_loss):
        evidence.append(f"final identity loss: {_num(loss)} vs {_num(base_loss)} (baseline)")
    if verdicts:
        verdict = "held" if all(verdicts) else "not held"
    elif nets:
        verdict = "not measured"
        evidence.append("the baseline itself transfers (almost) no identity yet: train longer")
    elif math.isfinite(loss) and math.isfinite(base_loss) and base_loss > 0:
        verdict = "held" if loss >= 1.2 * base_loss else "not held"
    else:
        verdict = "not measured"
    return Check(run.name, claim, verdict, evidence, rule)


_RECON_PREFIXES = ("masked_ssim", "masked_psnr", "masked_l1")


def _check_no_decoder(run: RunView, base: RunView) -> Check:
    claim = "without the decoder the reconstruction collapses (colour shift, blur)"
    rule = (
        "held when every reconstruction metric the evaluator measured is worse than the baseline's; without "
        "them, when its final reconstruction loss is at least 20 % above the baseline's"
    )
    evidence, verdicts = [], []
    for key, value in run.summary.items():
        if key.split("/")[0] in _RECON_PREFIXES and key in base.summary:
            direction = metric_direction(key)
            worse = value < base.summary[key] if direction == "higher" else value > base.summary[key]
            verdicts.append(worse)
            evidence.append(f"{key}: {_num(value)} vs {_num(base.summary[key])} (baseline)")
    if "sharpness_ratio" in run.summary and "sharpness_ratio" in base.summary:
        evidence.append(
            f"sharpness_ratio: {_num(run.summary['sharpness_ratio'])} vs {_num(base.summary['sharpness_ratio'])}"
        )
    loss, base_loss = final_value(run, "loss/reconstruction"), final_value(base, "loss/reconstruction")
    if math.isfinite(loss) and math.isfinite(base_loss):
        evidence.append(f"final reconstruction loss: {_num(loss)} vs {_num(base_loss)} (baseline)")
    if verdicts:
        verdict = "held" if all(verdicts) else "not held"
    elif math.isfinite(loss) and math.isfinite(base_loss) and base_loss > 0:
        verdict = "held" if loss >= 1.2 * base_loss else "not held"
    else:
        verdict = "not measured"
    return Check(run.name, claim, verdict, evidence, rule)


def _check_l2(run: RunView, base: RunView) -> Check:
    claim = "with L2 norms the losses converge more slowly"
    rule = (
        "held when, over the steps both runs reached, the L2 run's reconstruction and feature-matching "
        "losses each take more steps than the baseline's to make half of their drop (smoothed curves)"
    )
    evidence, verdicts = [], []
    keys = [
        k for k in ("loss/reconstruction", "loss/feature_matching") if len(run.series(k)[0]) and len(base.series(k)[0])
    ]
    if not keys:
        keys = ["loss"]
    for key in keys:
        steps, values = run.series(key)
        base_steps, base_values = base.series(key)
        if not len(steps) or not len(base_steps):
            continue
        until = min(steps.max(), base_steps.max())
        mine, theirs = half_drop_step(steps, values, until), half_drop_step(base_steps, base_values, until)
        evidence.append(
            f"{key}: half of its drop by step {_num(mine) if mine is not None else 'never'} ({run.name}) vs "
            f"{_num(theirs) if theirs is not None else 'never'} (baseline), over steps <= {int(until)}"
        )
        if theirs is None:
            continue  # the baseline does not converge here either: no evidence either way
        verdicts.append(mine is None or mine > theirs)
    for key in [k for k in run.summary if k.startswith("identity_similarity/")]:
        if key in base.summary:
            evidence.append(f"{key} (swaps less?): {_num(run.summary[key])} vs {_num(base.summary[key])}")
    verdict = ("held" if all(verdicts) else "not held") if verdicts else "not measured"
    return Check(run.name, claim, verdict, evidence, rule)


_CHECKS = {"no-bottleneck": _check_no_bottleneck, "no-decoder": _check_no_decoder, "l2": _check_l2}


def qualitative_checks(data: StudyData) -> list[Check]:
    """The original study's findings, for each run that is one of its ablations (see ``ablation_role``)."""
    base = data.run(data.baseline)
    if base is None:
        return []
    checks = []
    for run in data.runs:
        role = ablation_role(run.name, run.own_overrides)
        if run.name != data.baseline and role in _CHECKS:
            checks.append(_CHECKS[role](run, base))
    return checks


# ---------------------------------------------------------------- figures


def _eval_pairs(run: RunView) -> dict[str, Any] | None:
    doc = _read_json(run.path / "previews" / "eval-pairs.json")
    return doc if doc and doc.get("pairs") else None


def _row_tiles(path: Path, count: int, resolution: int, tile: int) -> list[np.ndarray]:
    """Split a row image of ``count`` squares of ``resolution`` px into tiles of ``tile`` px."""
    image = read_image(path)[0]
    if image.shape[0] != resolution or image.shape[1] != count * resolution:
        raise MediaError(
            path, f"expected one row of {count} tiles of {resolution} px, got {image.shape[1]}x{image.shape[0]}"
        )
    tiles = [image[:, i * resolution : (i + 1) * resolution] for i in range(count)]
    if tile != resolution:
        interpolation = cv2.INTER_AREA if tile < resolution else cv2.INTER_CUBIC
        tiles = [cv2.resize(t, (tile, tile), interpolation=interpolation) for t in tiles]
    return tiles


def swap_grid(data: StudyData, path: Path) -> tuple[Path | None, list[str], list[str]]:
    """Sources, targets, then each run's swaps of the same fixed pairs, one labelled row each,
    written marked as synthetic. Returns (path or None, runs shown, notes)."""
    with_pairs = [(run, _eval_pairs(run)) for run in data.runs]
    with_pairs = [
        (run, pairs) for run, pairs in with_pairs if pairs and (run.path / "previews" / "eval-swaps.png").is_file()
    ]
    if not with_pairs:
        return None, [], []
    reference_run, reference = next(((r, p) for r, p in with_pairs if r.name == data.baseline), with_pairs[0])
    count = len(reference["pairs"])
    # Tiny-preset faces (64 px) are enlarged so that the labels fit and faces can be compared by eye.
    tile = max(MIN_TILE, *(int(p["resolution"]) for _, p in with_pairs))
    notes, rows, shown = [], [], []
    try:
        for label, stem in (("sources", "eval-sources.png"), ("targets", "eval-targets.png")):
            tiles = _row_tiles(reference_run.path / "previews" / stem, count, int(reference["resolution"]), tile)
            rows.append(_labelled_row(tiles, label))
    except MediaError as err:
        notes.append(f"sources/targets row unreadable: {err}")
        rows = []
    for run, pairs in with_pairs:
        if pairs["pairs"] != reference["pairs"]:
            notes.append(f"{run.name} was previewed on other pairs than {reference_run.name} (another seed): left out")
            continue
        try:
            tiles = _row_tiles(run.path / "previews" / "eval-swaps.png", count, int(pairs["resolution"]), tile)
        except MediaError as err:
            notes.append(f"{run.name}: {err}")
            continue
        step = run.final_step
        rows.append(_labelled_row(tiles, f"{run.name}" + (f" (step {step})" if step is not None else "")))
        shown.append(run.name)
    if not shown:
        return None, [], notes
    return _write_grid(rows, path, f"swaplab-study:{data.name}"), shown, notes


#: Pairs of the evaluation each run's row shows in the scored-swaps grid.
SCORED_GRID_PAIRS = 8


def scored_swap_grid(data: StudyData, path: Path, count: int = SCORED_GRID_PAIRS) -> tuple[Path | None, list[str]]:
    """Sources, targets, then each scored run's evaluation swaps of the same protocol pairs (the
    evaluator's ``per_item.json``), cropped at the target's face; written marked as synthetic. Runs of
    different families (or previewed on no fixed pairs) meet here on equal terms. Returns (path or
    None, runs shown)."""
    scored = []
    for run in data.runs:
        doc = _read_json(run.path / "eval" / "per_item.json")
        if doc and doc.get("items"):
            scored.append((run, {item["id"]: item for item in doc["items"]}))
    if not scored:
        return None, []
    _, reference = next(((r, items) for r, items in scored if r.name == data.baseline), scored[0])
    ids = [i for i in reference if all(i in items for _, items in scored)][:count]
    if not ids:
        return None, []
    first = [reference[i] for i in ids]
    rows = [
        _labelled_row([_tile(item["source_image"], item.get("source_box")) for item in first], "sources"),
        _labelled_row([_tile(item["target"], item.get("target_box")) for item in first], "targets"),
    ]
    for run, items in scored:
        tiles = [_tile(items[i].get("swap"), items[i].get("target_box")) for i in ids]
        rows.append(_labelled_row(tiles, f"{run.name} (evaluation swaps)"))
    return _write_grid(rows, path, f"swaplab-study:{data.name}"), [run.name for run, _ in scored]


# ---------------------------------------------------------------- the page


def _cell(value: float | None, baseline: float | None, best: bool, is_base: bool) -> str:
    css = "num best" if best else "num"
    text = _format(value)
    if not is_base and value is not None and baseline is not None and math.isfinite(value) and math.isfinite(baseline):
        text += f"<br><span class='small'>{value - baseline:+.3g}</span>"
    return f"<td class='{css}'>{text}</td>"


def _metrics_table(data: StudyData) -> list[str]:
    scored = [r for r in data.runs if r.summary]
    if not scored:
        return []
    columns = list(dict.fromkeys(k for r in scored for k in r.summary))
    order = [title for title, _ in FAMILIES] + ["Other"]
    columns.sort(key=lambda k: order.index(family_of(k)) if family_of(k) in order else len(order))
    base = data.run(data.baseline)
    base_summary = base.summary if base else {}
    header = "".join(f"<th>{html.escape(r.name)}</th>" for r in scored)
    lines = [f"<table><tr><th>metric</th><th>better</th>{header}</tr>"]
    for column in columns:
        direction = metric_direction(column)
        values = [r.summary.get(column, float("nan")) for r in scored]
        best = _best(values, direction)
        cells = "".join(
            _cell(v, base_summary.get(column), best is not None and v == best, r.name == data.baseline)
            for r, v in zip(scored, values)
        )
        lines.append(f"<tr><td>{html.escape(column)}</td><td>{ARROWS[direction]}</td>{cells}</tr>")
    lines.append("</table>")
    return lines


def _runs_table(data: StudyData) -> list[str]:
    lines = [
        "<table><tr><th>run</th><th>status</th><th>steps</th><th>stopped by</th><th>minutes</th>"
        "<th>throughput</th><th>final loss</th><th>evaluation</th><th>own overrides</th><th>config hash</th></tr>"
    ]
    for run in data.runs:
        sessions = run.manifest.get("sessions") or [{}]
        last = run.rows[-1] if run.rows else {}
        rate = last.get("images_per_s", last.get("faces_per_s"))
        unit = "images/s" if "images_per_s" in last else "faces/s"
        eval_link = (
            f"<a href='../{html.escape(run.name)}/eval/report.html'>report</a>"
            if (run.path / "eval" / "report.html").is_file()
            else html.escape(run.eval_status)
        )
        name = html.escape(run.name) + (" (baseline)" if run.name == data.baseline else "")
        log = data.sweep_dir / "logs" / f"{run.name}.log"
        config_hash = run.manifest.get("config_hash") or run.config_hash
        if log.is_file():
            name += f" <a class='small' href='../logs/{html.escape(run.name)}.log'>log</a>"
        lines.append(
            f"<tr><td>{name}</td><td>{html.escape(run.status)}</td><td class='num'>{_format(run.final_step)}</td>"
            f"<td>{html.escape(str(sessions[-1].get('stop_reason') or 'n/a'))}</td>"
            f"<td class='num'>{_format(run.seconds / 60 if run.seconds else None)}</td>"
            f"<td class='num'>{_format(rate)} {unit if rate is not None else ''}</td>"
            f"<td class='num'>{_format(final_value(run, 'loss'))}</td><td>{eval_link}</td>"
            f"<td><code>{html.escape(' '.join(run.own_overrides) or '-')}</code></td>"
            f"<td class='small'>{html.escape(str(config_hash or 'n/a'))}</td></tr>"
        )
    lines.append("</table>")
    return lines


def _final_losses_table(data: StudyData, keys: Sequence[str]) -> list[str]:
    if not keys:
        return []
    base = data.run(data.baseline)
    header = "".join(f"<th>{html.escape(r.name)}</th>" for r in data.runs)
    lines = [f"<table><tr><th>quantity</th>{header}</tr>"]
    for key in keys:
        base_value = final_value(base, key) if base else None
        cells = "".join(_cell(final_value(r, key), base_value, False, r.name == data.baseline) for r in data.runs)
        lines.append(f"<tr><td>{html.escape(key)}</td>{cells}</tr>")
    lines.append("</table>")
    return lines


def summary_lines(data: StudyData, report_dir: Path | None = None) -> list[str]:
    """The generated summary as plain text lines (also printed by ``swaplab report``); a validation-
    scored study's summary reads the numbers its written report keeps in ``report_dir``, if given."""
    if data.by_validation:
        from swaplab.study.zoo_report import summary_lines as validation_summary

        return validation_summary(data, report_dir=report_dir)
    lines = []
    moves = biggest_moves(data.runs, data.baseline)
    if moves:
        lines += [move.text() for move in moves]
        counts: dict[str, int] = {}
        for move in moves:
            counts[move.run] = counts.get(move.run, 0) + 1
        top = max(counts.items(), key=lambda kv: kv[1])
        if len(data.runs) > 2:  # with one ablation the count says nothing
            lines.append(f"overall, {top[0]} moved {top[1]} of {len(moves)} metrics most from the baseline")
        lines += best_runs(data.runs)
    elif any(r.summary for r in data.runs):
        lines.append(f"the baseline ({data.baseline}) has no evaluation: no metric can be compared with it")
    else:
        lines.append(
            f"no run is scored yet (eval off, pending or failed); final training losses instead (mean of the "
            f"last {FINAL_SHARE:.0%} of logged steps):"
        )
        lines += [move.text() for move in loss_moves(data.runs, data.baseline)]
    for check in qualitative_checks(data):
        lines.append(f"{check.run}: '{check.claim}': {check.verdict.upper()}; " + "; ".join(check.evidence))
    return lines


def write_study_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``SWEEP_DIR/report/index.html`` and its PNG figures; returns the page's path."""
    data = load_study_data(sweep_dir)
    out = Path(out_dir) if out_dir is not None else data.sweep_dir / "report"
    if data.by_validation:
        from swaplab.study.zoo_report import write_zoo_report

        return write_zoo_report(data, out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    has_d = any("d_loss" in row for run in data.runs for row in run.rows)
    body = [f"<h1>swaplab study: {html.escape(data.name)}</h1>"]
    if data.description:
        body.append(f"<p>{html.escape(data.description)}</p>")
    body.append(
        f"<p class='small'>Sweep folder <code>{html.escape(str(data.sweep_dir))}</code>; {len(data.runs)} runs; "
        f"baseline <b>{html.escape(data.baseline)}</b>. Machines: <a href='../sweep.json'>sweep.json</a>, "
        "<a href='../study.yaml'>study.yaml</a>.</p>"
    )
    body += _warnings(data.warnings)

    body.append("<h2>Summary</h2><ul>")
    body += [f"<li>{html.escape(line)}</li>" for line in summary_lines(data)]
    body.append("</ul>")
    checks = qualitative_checks(data)
    if checks:
        body.append("<h3>The original study's findings</h3>")
        body.append("<table><tr><th>run</th><th>finding</th><th>verdict</th><th>numbers</th><th>rule</th></tr>")
        for check in checks:
            body.append(
                f"<tr><td>{html.escape(check.run)}</td><td>{html.escape(check.claim)}</td>"
                f"<td><b>{html.escape(check.verdict)}</b></td>"
                f"<td class='small'>{'<br>'.join(html.escape(e) for e in check.evidence) or 'n/a'}</td>"
                f"<td class='small'>{html.escape(check.rule)}</td></tr>"
            )
        body.append("</table>")

    body.append("<h2>Runs</h2>")
    body += _runs_table(data)

    generator, discriminator = curve_keys(data.runs)
    for heading, keys in (
        ("Generator losses" if has_d else "Training losses", generator),
        ("Discriminator", discriminator),
    ):
        if not keys:
            continue
        body.append(f"<h2>{heading} per ablation</h2>")
        for key in keys:
            title = TITLES.get(key, key)
            if key == "loss" and has_d:
                title = "generator total loss"
            path, absent = plot_curves(data.runs, key, figures / f"{key.replace('/', '-')}.png", data.baseline, title)
            body.append(f"<h3>{html.escape(title)} <span class='small'>({html.escape(key)})</span></h3>")
            body.append(f"<img src='figures/{path.name}' alt='{html.escape(title)} per run'>")
            if absent:
                body.append(
                    f"<p class='small'>Not logged by: {html.escape(', '.join(absent))} "
                    "(weight 0, or not this model).</p>"
                )
    if generator or discriminator:
        body.append(
            f"<h3>Final values</h3><p class='small'>Mean over the last {FINAL_SHARE:.0%} of logged steps; "
            "the small number is the difference from the baseline.</p>"
        )
        body += _final_losses_table(data, [*generator, *discriminator])

    grid, shown, notes = swap_grid(data, figures / "swap-grid.png")
    if grid is not None:
        body.append("<h2>Swaps per ablation on the fixed evaluation pairs</h2>")
        body.append(
            "<p class='small'>Row 1 the sources (identity), row 2 the targets (pose, expression, lighting), then "
            "each run's swaps of the same pairs at its latest preview. Marked as synthetic.</p>"
        )
        body.append(f"<img src='figures/{grid.name}' alt='swap grid: {html.escape(', '.join(shown))}'>")
    body += _warnings(notes)
    scored_grid, scored_shown = scored_swap_grid(data, figures / "scored-swaps.png")
    if scored_grid is not None:
        body.append("<h2>Evaluation swaps, every scored run on the same protocol pairs</h2>")
        body.append(
            "<p class='small'>Row 1 the sources, row 2 the targets, then each scored run's swaps of those pairs as "
            "the evaluator made them (through the swap pipeline), cropped at the target's face. Marked as "
            "synthetic.</p>"
        )
        alt = html.escape("scored swaps: " + ", ".join(scored_shown))
        body.append(f"<img src='figures/{scored_grid.name}' alt='{alt}'>")
    previews = [r for r in data.runs if (r.path / "previews" / "latest.png").is_file() and r.name not in shown]
    if previews:
        body.append("<h2>Latest training previews</h2>")
        for run in previews:
            body.append(
                f"<h3>{html.escape(run.name)}</h3><img src='../{html.escape(run.name)}/previews/latest.png' "
                f"alt='latest preview of {html.escape(run.name)}'>"
            )

    body.append("<h2>Metrics (evaluator)</h2>")
    table = _metrics_table(data)
    unscored = [f"{r.name} ({r.eval_status})" for r in data.runs if not r.summary]
    if table:
        protocols = sorted(
            {f"{r.eval_doc['protocol']['name']} v{r.eval_doc['protocol']['version']}" for r in data.runs if r.eval_doc}
        )
        body.append(
            f"<p>Protocol {html.escape(', '.join(protocols))}. Best value of each row in bold green; the small "
            "number is the difference from the baseline.</p>"
        )
        if len(protocols) > 1:
            body += _warnings(["runs were scored on different protocols: their numbers are not comparable"])
        body.append(f"<p class='caveat'>{html.escape(CAVEAT)}</p>")
        body += table
        rows = {r.name: r.summary for r in data.runs if r.summary}
        for title, path in bar_charts(rows, figures, stem="metrics"):
            body.append(f"<h3>{html.escape(title)}</h3><img src='figures/{path.name}' alt='{html.escape(title)}'>")
    if unscored:
        body.append(f"<p class='small'>Not scored: {html.escape(', '.join(unscored))}.</p>")
    page = out / "index.html"
    atomic_write_text(page, _page(f"swaplab study: {data.name}", body))
    return page
