"""Writing an evaluation's files: ``metrics.json``, ``per_item.json``, ``timing.json`` and the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from swaplab.config import to_dict
from swaplab.evaluate.protocol import Protocol
from swaplab.evaluate.report import write_report
from swaplab.evaluate.results import (
    METRIC_NETWORK,
    RESULT_FORMAT,
    RESULT_VERSION,
    EvalOptions,
    EvalResult,
    Measured,
    Timer,
    json_safe,
)
from swaplab.io.atomic import atomic_write_json

__all__ = ["write_result"]


def write_result(
    name: str, out: Path, spec: Protocol, measured: Measured, timer: Timer, opts: EvalOptions
) -> EvalResult:
    """Write ``metrics.json``, ``per_item.json``, ``timing.json`` and (with ``opts.report``) ``report.html``."""
    from swaplab._version import __version__

    target_info, samples, metrics = measured.target_info, measured.samples, measured.metrics
    items, recon_items, warnings = measured.items, measured.recon_items, measured.warnings

    document = {
        "format": RESULT_FORMAT,
        "version": RESULT_VERSION,
        "name": name,
        "protocol": {"name": spec.name, "version": spec.version, "seed": spec.seed, "sha256": spec.sha256},
        "target": target_info,
        "networks": {
            "identity": list(measured.networks),
            "distribution_features": f"{METRIC_NETWORK} 256-d penultimate features",
            "faces": "dlib HOG detector, dlib 68- and 5-point landmarks",
            "pose": "PnP of the 68 landmarks against a generic 3D face (swaplab.faces.pose)",
        },
        "samples": samples,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "swap_config"},
        # The swap stage's options when they are not the defaults (e.g. an evaluation of restore=on).
        **({"swap_options": to_dict(opts.swap_config)} if opts.swap_config is not None else {}),
        "metrics": metrics,
        "warnings": warnings,
        "swaplab_version": __version__,
    }
    document = json_safe(document)
    atomic_write_json(out / "metrics.json", document)
    atomic_write_json(out / "per_item.json", json_safe({"items": items, "reconstruction": recon_items}))
    result = EvalResult(name, out, document, items, warnings, dict(timer.seconds))
    if opts.report:
        with timer("report"):
            result.report = write_report(result)
        result.timing = dict(timer.seconds)
    atomic_write_json(out / "timing.json", {k: round(v, 4) for k, v in result.timing.items()})
    return result
