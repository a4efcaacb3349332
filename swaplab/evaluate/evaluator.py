"""The evaluator: score a model, a run, a sweep or another tool's swaps on a pinned protocol.

``evaluate(target, protocol=..., out_dir=...)`` makes the protocol's swaps with a model
(``swaplab.evaluate.model_swaps``) or reads another tool's, scores them
(``swaplab.evaluate.scoring``, or ``video_eval`` for clips) and writes ``metrics.json``,
``per_item.json`` and ``report.html``; ``evaluate_many`` does it for several targets and writes one
comparison. Results are deterministic: the same inputs on the same machine give identical numbers
(HOG detection and dlib landmarks are deterministic, networks run in fp32 without autograd, KID's
subsets are seeded by the protocol's seed).

Conventions: images read from disk are RGB uint8 (H, W, 3) and become float32 N x 3 x H x W
tensors in [0, 1] before any metric; landmarks are (K, 2) float32 (x, y) pixels of the image they
were found in.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swaplab.evaluate.encoders import load_encoders
from swaplab.evaluate.faces import FaceCache
from swaplab.evaluate.model_swaps import evaluate_model
from swaplab.evaluate.occluded import occlude_targets
from swaplab.evaluate.protocol import load_protocol
from swaplab.evaluate.results import (
    METRIC_NETWORK,
    RESULT_FORMAT,
    Comparison,
    EvalOptions,
    EvalResult,
    headline_numbers,
    json_safe,
)
from swaplab.evaluate.scoring import ScoringContext, score
from swaplab.evaluate.targets import (
    custom_gallery,
    custom_jobs,
    detector_jobs,
    expand_targets,
    find_swap,
    is_model,
    is_run,
    jobs_from_protocol,
    protocol_gallery,
    reference_photos,
    source_files,
    unique_names,
)
from swaplab.evaluate.video_eval import evaluate_video
from swaplab.io.atomic import atomic_write_json

__all__ = [
    "Comparison",
    "EvalOptions",
    "EvalResult",
    "evaluate",
    "evaluate_many",
    "expand_targets",
    "headline_numbers",
    "prepare_cache",
]


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
        if is_run(path):
            from swaplab.train.export import export_model

            with tempfile.TemporaryDirectory(prefix="swaplab-eval-") as exported:
                export_model(path, exported)
                return _score_model(Path(exported), "run", path, spec, root, out, opts, cache, name)
        if not is_model(path):
            raise FileNotFoundError(
                f"{path}: not a model folder (model.json) or a run folder (config.yaml); "
                "a folder of several runs (a sweep) is compared with evaluate_many"
            )
        model_dir = path.parent if path.name == "model.json" else path
        return _score_model(model_dir, "model", model_dir, spec, root, out, opts, cache, name)

    swaps_dir = Path(swaps)  # type: ignore[arg-type]
    if not swaps_dir.is_dir():
        raise FileNotFoundError(f"swaps: {swaps_dir} is not a folder")
    if spec.kind == "video":
        return evaluate_video(spec, root, out, opts, cache, swaps_dir=swaps_dir, name=name or swaps_dir.name)
    if sources is not None:
        photos = source_files(sources)
        jobs = custom_jobs(photos, Path(targets), opts.limit)  # type: ignore[arg-type]
        gallery, reference = custom_gallery(photos, jobs, spec, root, opts)
        label = f"custom pairs ({len(jobs)} targets, {len(photos)} source photos)"
    else:
        jobs = jobs_from_protocol(spec, root, opts.limit)
        # Occluded-target protocols: the other tool swapped these occluded copies (written here too).
        occlude_targets(spec, jobs, out / "occluded-targets")
        gallery, reference = (
            protocol_gallery(spec, root, [j.pair.source_identity for j in jobs], opts),
            reference_photos(spec, root, opts),
        )
        label = spec.name
    for job in jobs:
        job.swap = find_swap(swaps_dir, job.pair.id)
    detector = detector_jobs(spec, root, opts) if sources is None else []
    for job in detector:
        job.swap = find_swap(swaps_dir, job.pair.id)
    context = ScoringContext(
        name=name or swaps_dir.name,
        out=out,
        spec=spec,
        opts=opts,
        cache=cache,
        jobs=jobs,
        gallery=gallery,
        reference=reference,
        target_info={"kind": "swaps", "path": str(swaps_dir), "pairs": label},
        detector_jobs=[j for j in detector if j.swap is not None],
    )
    return score(context)


def _score_model(model_dir: Path, kind: Any, given: Path, spec, root: Path, out: Path, opts, cache, name) -> EvalResult:
    if spec.kind == "video":
        return evaluate_video(spec, root, out, opts, cache, model_dir=model_dir, name=name or given.name)
    return evaluate_model(model_dir, kind, given, spec, root, out, opts, cache, name)


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
        for path, label in zip(paths, unique_names(paths))
    ]
    comparison = Comparison(results, out)
    rows = [{"name": r.name, "path": str(r.out_dir), **r.summary} for r in results]
    atomic_write_json(
        out / "comparison.json",
        json_safe({"format": RESULT_FORMAT, "protocol": results[0].metrics["protocol"], "rows": rows}),
    )
    if opts.report:
        comparison.report = write_comparison(results, out)
    return comparison


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
    jobs = jobs_from_protocol(spec, root, opts.limit)
    gallery = protocol_gallery(spec, root, [job.pair.source_identity for job in jobs], opts)
    gallery_files = [f for files in gallery.values() for f in files]
    reference = reference_photos(spec, root, opts)
    encoders, _ = load_encoders(opts.encoders)
    for name, encoder in encoders.items():
        cache.embeddings(gallery_files, name, encoder, "embedding")
    cache.embeddings(reference, METRIC_NETWORK, encoders[METRIC_NETWORK], "features")
    return {"gallery_images": len(gallery_files), "reference_images": len(reference)}
