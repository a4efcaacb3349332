"""The ``swaplab`` command: parses arguments, calls the library, prints. It holds no logic.

Options that belong to a typed config are given as ``key=value`` overrides after the positional
arguments (``swaplab extract clip.mp4 -o faces size=128 faces.detect_every=3``); ``swaplab config
extract`` prints every key with its default.

Exit codes, for every command: 0 done; 1 failed (bad input, damaged files, a full disk: one line
says what, which file, and what to do; ``-v`` adds the traceback); 2 a usage error (an unknown
option or name, an output that exists without ``--overwrite``); 3 ``verify`` found no mark;
130 interrupted (finished work is kept and a re-run resumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from swaplab._version import __version__


def _split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional words that look like ``key=value`` (and are not existing paths) are overrides."""
    paths, overrides = [], []
    for item in items:
        if "=" in item and not Path(item).exists() and not item.startswith(("/", ".")):
            overrides.append(item)
        else:
            paths.append(item)
    return paths, overrides


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


# ---------------------------------------------------------------- commands


def cmd_pretrain_faces(args: argparse.Namespace) -> int:
    from swaplab.data.fetch import data_root
    from swaplab.train.pretrain import build_pretraining_faceset

    lfw = Path(args.lfw) if args.lfw else data_root() / "lfw" / "lfw-deepfunneled"
    summary = build_pretraining_faceset(
        args.output,
        lfw,
        per_person=args.per_person,
        max_people=args.people,
        exclude=args.exclude,
        videos=args.videos,
        size=args.size,
        progress=not args.quiet,
    )
    _print_lines(summary.lines())
    print(f"pretrain with: swaplab train model=PRESET data.src={args.output} data.dst={args.output} run_dir=RUN")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from swaplab.config import apply_overrides
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.facesets.sheet import contact_sheet

    inputs, overrides = _split_overrides(args.inputs)
    if not inputs:
        print("error: give at least one photo, folder or video", file=sys.stderr)
        return 2
    cfg = apply_overrides(ExtractConfig(), overrides)
    summary = extract(inputs, args.output, cfg, progress=not args.quiet)
    _print_lines(summary.lines())
    for problem in summary.problems[:20]:
        print(f"  skipped {problem['path']}: {problem['reason']}")
    if len(summary.problems) > 20:
        print(f"  ... and {len(summary.problems) - 20} more (see {args.output}/extract_report.json)")
    if not summary.faces and not _faceset_size(args.output):
        # Nothing to train on is a failure, whatever the reason; say which one.
        if not summary.images and not summary.videos:
            why = "no photo or video found in the inputs"
        else:
            why = f"no usable face in {summary.images} photo(s) and {summary.videos} video(s) ({summary.frames} frames)"
        print(
            f"error: {why}: the faceset {args.output} is empty; give photos or videos with visible faces",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if summary.faces and not args.no_sheet:
        sheet = contact_sheet(args.output, Path(args.output) / "contact_sheet.jpg")
        print(f"contact sheet: {sheet}")
    return 0 if (summary.faces or not summary.problems) else 1


def _faceset_size(path: str) -> int:
    """Faces in a faceset (0 when there is none yet), counting what earlier runs extracted."""
    from swaplab.facesets.format import Faceset, FacesetError

    try:
        return len(Faceset(path, allow_damaged=True))
    except (FacesetError, OSError):
        return 0


def cmd_faceset_info(args: argparse.Namespace) -> int:
    from swaplab.facesets.format import Faceset

    faceset = Faceset(args.faceset, allow_damaged=True)
    sources = {r.source for r in faceset}
    print(f"{args.faceset}: {len(faceset)} faces from {len(sources)} sources")
    print(f"template {faceset.header.template}, {faceset.size} px, {faceset.header.image_format}")
    print(f"format version {faceset.header.version}, content hash {faceset.content_hash()}")
    if not faceset.damaged:
        return 0
    print(f"error: {len(faceset.damaged)} damaged shard(s); the faces above are the intact ones", file=sys.stderr)
    for name, reason in faceset.damaged:
        print(f"  shards/{name}: {reason}", file=sys.stderr)
    print("re-run `swaplab extract` with the same inputs and output to rebuild them", file=sys.stderr)
    return EXIT_FAILED


def cmd_faceset_sort(args: argparse.Namespace) -> int:
    from swaplab.facesets.sort import sort_faceset

    report = sort_faceset(
        args.faceset,
        args.output,
        by=args.by,
        reference=args.reference,
        keep=args.keep,
        max_distance=args.max_distance,
        min_blur=args.min_blur,
        max_yaw=args.max_yaw,
        overwrite=args.overwrite,
    )
    print(f"{report['kept']} of {report['total']} faces written to {args.output}, sorted by {args.by}")
    return 0


def cmd_faceset_sheet(args: argparse.Namespace) -> int:
    from swaplab.facesets.sheet import contact_sheet

    path = contact_sheet(args.faceset, args.output, max_faces=args.max_faces, thumb=args.thumb)
    print(path)
    return 0


def cmd_faceset_polygons(args: argparse.Namespace) -> int:
    from swaplab.facesets.mask_polygons import write_polygon_template

    print(write_polygon_template(args.faceset, args.face_ids, args.output))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from swaplab.train.entry import build_config
    from swaplab.train.loop import train

    result = train(build_config(args.overrides))
    print(f"run: {result.run_dir} ({result.recipe})")
    if result.resumed_from is not None:
        print(f"resumed from step {result.start_step} ({result.resumed_from.name})")
    print(f"stopped at step {result.step} ({result.stop_reason}), {result.samples_per_s:.2f} samples/s")
    for key, value in sorted(result.metrics.items()):
        if isinstance(value, float):
            print(f"  {key} {value:.5g}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    if result.stop_reason == "signal":  # stopped by Ctrl-C (or SIGTERM) with a checkpoint: not "done"
        print("interrupted; the checkpoint above is kept and the same command resumes", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from swaplab.train.export import export_model

    card = export_model(args.run, args.output, overwrite=args.overwrite)
    print(f"model card: {card}")
    return 0


def cmd_swap(args: argparse.Namespace) -> int:
    from swaplab.config import apply_overrides
    from swaplab.swap.pipeline import SwapConfig, swap

    cfg = apply_overrides(SwapConfig(), args.overrides)
    if args.overwrite:
        cfg.overwrite = True
    report = swap(args.model, args.input, args.output, cfg, progress=not args.quiet, device=args.device)
    _print_lines(report.lines())
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from swaplab.sampling import sample

    options = dict(item.split("=", 1) for item in args.overrides)
    path = sample(
        args.model,
        args.output,
        kind=args.kind,
        n=args.n,
        seed=args.seed,
        images=args.images,
        options=options,
        overwrite=args.overwrite,
    )
    print(f"wrote {path} ({args.kind}, marked as synthetic)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from swaplab.provenance import verify

    # Each file is reported and the next one checked: 0 if every file is marked, 3 if one is not,
    # 1 if one could not be read at all.
    codes = []
    for path in args.files:
        try:
            report = verify(path)
        except Exception as err:  # noqa: BLE001 - an unreadable file is reported, and the others still checked
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(json.dumps({"path": str(path), "error": reason}) if args.json else f"{path}: unreadable: {reason}")
            codes.append(EXIT_FAILED)
            continue
        if args.json:
            print(json.dumps({"path": str(path), **report.to_dict()}))
        else:
            print(f"{path}: " + report.summary())
        codes.append(0 if report.synthetic else EXIT_NO_MARK)
    return EXIT_FAILED if EXIT_FAILED in codes else max(codes, default=0)


def cmd_demo(args: argparse.Namespace) -> int:
    from swaplab.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        data=Path(args.data) if args.data else None,
        output=Path(args.output),
        train_minutes=args.minutes,
        swap_frames=args.frames,
        restore=args.restore,
    )
    run_demo(cfg, progress=not args.quiet)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from swaplab.data.fetch import DataFetchError, data_root, describe_datasets, fetch, locate_data_root

    if args.data_command == "list":
        print(describe_datasets(data_root()))
    elif args.data_command == "path":
        path, why = locate_data_root()
        print(path)
        print(f"({why})", file=sys.stderr)
    else:
        try:
            where = fetch(
                args.name,
                args.dest,
                base_url=args.base_url,
                force=args.force,
                progress=not args.quiet,
                trust_unverified=args.trust_unverified,
            )
        except DataFetchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{args.name} is in {where}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from swaplab.config import apply_overrides, to_dict

    factories = _config_factories()
    if args.section == "train":  # the model named decides the recipe, and so the config
        from swaplab.train.entry import build_config

        cfg = build_config(args.overrides)
    elif args.section in factories:
        cfg = apply_overrides(factories[args.section](), args.overrides)
    else:
        print(f"error: unknown config {args.section!r}; choose from train, {', '.join(factories)}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def _config_factories() -> dict[str, Callable[[], object]]:
    def extract_config() -> object:
        from swaplab.facesets.extract import ExtractConfig

        return ExtractConfig()

    def swap_config() -> object:
        from swaplab.swap.pipeline import SwapConfig

        return SwapConfig()

    def eval_config() -> object:
        from swaplab.evaluate.results import EvalOptions

        return EvalOptions()

    return {"extract": extract_config, "swap": swap_config, "eval": eval_config}


def cmd_identity(args: argparse.Namespace) -> int:
    from swaplab.identity.registry import IDENTITY_ENCODERS

    if args.identity_command == "list":
        from swaplab.identity.lfw_arcface import IdentityNetworkMissing

        for name in IDENTITY_ENCODERS.names():
            try:
                IDENTITY_ENCODERS.create(name)
                state = "ready"
            except IdentityNetworkMissing as err:
                state = f"not built: {err}"
            print(f"{name}: {state}")
        return 0
    if args.identity_command == "build":
        from swaplab.train.recipes.identity_net import build_identity_network

        faceset = [f"data.facesets=[{','.join(json.dumps(f) for f in args.faceset)}]"] if args.faceset else []
        path = build_identity_network(args.name, args.preset, [*faceset, *args.overrides], progress=not args.quiet)
        print(f"{args.name} installed: {path}")
        if not args.verify:
            return 0
        args.encoders, args.weights = [args.name, "dlib-resnet"], str(path)
        args.record, args.out, args.lfw = True, None, None
    return _identity_verify(args)


def cmd_nets(args: argparse.Namespace) -> int:
    """The swap stage's built networks (face segmenter ...): list them, or build one."""
    from swaplab.models.installed import BUILT_NETWORKS, NetworkMissing, load_built

    if args.nets_command == "list":
        for name in BUILT_NETWORKS.names():
            try:
                load_built(name)
                state = "ready"
            except NetworkMissing as err:
                state = f"not built: {err}"
            print(f"{name}: {state}")
        return 0
    from swaplab.train.built_networks import build_network

    BUILT_NETWORKS.get(args.name)  # an unknown name fails here, listing the known ones
    path = build_network(
        args.name, args.preset, args.overrides, progress=not args.quiet, fresh=args.fresh, out=args.out
    )
    print(f"{args.name} installed: {path}")
    return 0


def _identity_verify(args: argparse.Namespace) -> int:
    import os

    from swaplab.evaluate.lfw_verification import lfw_view1, record_verification
    from swaplab.identity.lfw_arcface import WEIGHTS_ENV, find_weights, load_lfw_arcface, metadata_path
    from swaplab.identity.registry import IDENTITY_ENCODERS

    modules, weights = {}, None
    for name in args.encoders:
        if name == "lfw-arcface":
            weights = Path(args.weights or os.environ.get(WEIGHTS_ENV) or find_weights() or "")
            modules[name] = load_lfw_arcface(weights if str(weights) else None)
        else:
            modules[name] = IDENTITY_ENCODERS.create(name).eval()
    results = lfw_view1(modules, lfw=args.lfw, facesets=args.faceset, progress=not args.quiet)
    for result in results:
        print(result.line())
    if args.record and weights is not None and metadata_path(weights).is_file():
        record_verification(metadata_path(weights), results)
    if args.out:
        import dataclasses

        from swaplab.io.atomic import atomic_write_json

        atomic_write_json(Path(args.out), [dataclasses.asdict(r) for r in results])
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from swaplab.ui.app import UiSettings, serve

    serve(UiSettings(allow=args.allow, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                     output=args.output))  # fmt: skip
    return 0


def _catalog() -> dict[str, Callable[[], object]]:
    """What ``swaplab list`` can list: each a registry, imported only when asked for."""

    def lazy(module: str, name: str) -> Callable[[], object]:
        def load() -> object:
            import importlib

            return getattr(importlib.import_module(module), name)

        return load

    def group(name: str) -> Callable[[], object]:
        def load() -> object:
            import swaplab.train.recipe  # noqa: F401 - names the modules that register presets
            from swaplab.config import config_group

            return config_group(name)

        return load

    return {
        "recipes": lazy("swaplab.train.recipe", "RECIPES"),
        "models": group("model"),
        "trainers": group("trainer"),
        "losses": group("loss"),
        "identity": lazy("swaplab.identity.registry", "IDENTITY_ENCODERS"),
        "swappers": lazy("swaplab.models.swapper", "SWAPPERS"),
        "masks": lazy("swaplab.swap.masking", "MASK_MODES"),
        "colour": lazy("swaplab.swap.colour", "COLOUR_TRANSFERS"),
        "blend": lazy("swaplab.swap.blend", "BLENDERS"),
        "smoothing": lazy("swaplab.swap.smoothing", "SMOOTHERS"),
        "detectors": lazy("swaplab.faces.detect", "DETECTORS"),
        "metrics": lazy("swaplab.metrics.registry", "METRICS"),
        "datasets": lazy("swaplab.data.catalog", "DATASETS"),
    }


def _one_line(entry: object) -> str:
    """The first line of what a registered entry says of itself."""
    doc = getattr(getattr(entry, "func", entry), "__doc__", None)  # a functools.partial: its function
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def _preset_summary(factory: Callable[[], object]) -> str:
    """A preset in one line: the settings where it differs from its config type's defaults."""
    import dataclasses

    cfg = factory()
    try:
        default = type(cfg)()
    except TypeError:
        default = None
    changed = [
        f"{f.name}={getattr(cfg, f.name)}"
        for f in dataclasses.fields(cfg)  # type: ignore[arg-type]
        if f.name != "name"
        and isinstance(getattr(cfg, f.name), (int, float, str, tuple))
        and (default is None or getattr(cfg, f.name) != getattr(default, f.name))
    ]
    return " ".join(changed[:7]) + (" ..." if len(changed) > 7 else "")


def cmd_list(args: argparse.Namespace) -> int:
    catalog = _catalog()
    wanted = [args.what] if args.what else list(catalog)
    for kind in wanted:
        if kind not in catalog:
            print(f"error: nothing called {kind!r} to list; choose from {', '.join(catalog)}", file=sys.stderr)
            return EXIT_USAGE
        registry = catalog[kind]()
        print(f"{kind}:")
        presets = kind in ("models", "trainers", "losses")
        for name, entry in registry.items():  # type: ignore[attr-defined]
            description = _preset_summary(entry) if presets else _one_line(entry)
            print(f"  {name:22s} {description}".rstrip())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from swaplab.config import apply_overrides
    from swaplab.evaluate.evaluator import EvalOptions, evaluate, evaluate_many, expand_targets
    from swaplab.evaluate.report import summary_lines
    from swaplab.swap.pipeline import SwapConfig

    args.models, swap_words = _split_overrides(args.models)
    if bool(args.models) == bool(args.swaps):
        print("error: give MODEL_OR_RUN folders, or --swaps DIR (with --sources and --targets)", file=sys.stderr)
        return 2
    options = EvalOptions(
        limit=args.limit,
        device=args.device,
        encoders=tuple(args.encoders or ()),
        detector_pairs=args.detector_pairs,
        # key=value words set the swap stage for the model's swaps, as on `swaplab swap`.
        swap_config=apply_overrides(SwapConfig(precision="fp32"), swap_words) if swap_words else None,
    )
    common = {"out_dir": args.out, "protocol": args.protocol, "data_root": args.data, "options": options}
    try:
        if args.swaps:
            results = [evaluate(swaps=args.swaps, sources=args.sources, targets=args.target_dir, **common)]
            report = results[0].report
        elif len(expand_targets(args.models)) == 1:
            results = [evaluate(expand_targets(args.models)[0], **common)]
            report = results[0].report
        else:
            comparison = evaluate_many(args.models, **common)
            results, report = comparison.results, comparison.report
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_lines(summary_lines(results))
    for result in results:
        for warning in result.warnings:
            print(f"warning: {result.name}: {warning}")
    print(f"report: {report}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swaplab",
        description="A face-swapping laboratory: extract, train, swap, evaluate, and mark outputs.",
    )
    parser.add_argument("--version", action="version", version=f"swaplab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped file and conversion")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "extract",
        help="detect, align and describe faces from photos, folders and videos into a faceset",
        description="Extract aligned faces into a faceset. Options are key=value overrides "
        "(see `swaplab config extract`), e.g. size=128 faces.upsample=0 every=2.",
    )
    p.add_argument("inputs", nargs="+", help="photos, folders or videos, then key=value overrides")
    p.add_argument("-o", "--output", required=True, help="faceset folder (created or resumed)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-sheet", action="store_true", help="do not write contact_sheet.jpg")
    p.set_defaults(func=cmd_extract, overrides_field="inputs")

    p = sub.add_parser(
        "pretrain-faces",
        help="a many-identity faceset (LFW training people, sample videos) for pretraining per-pair models",
    )
    p.add_argument("-o", "--output", required=True, help="faceset folder (created or resumed)")
    p.add_argument("--people", type=int, default=0, help="peopleDevTrain people to take (0 = all)")
    p.add_argument("--per-person", type=int, default=2, help="photos per person")
    p.add_argument("--exclude", nargs="*", default=[], help="people left out (e.g. the pair to be scored)")
    p.add_argument("--videos", nargs="*", default=[], help="videos whose faces join (every 10th frame)")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels")
    p.add_argument("--lfw", default="", help="LFW image folder (default: the data folder's lfw-deepfunneled)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_pretrain_faces)

    p = sub.add_parser(
        "train",
        help="train any model family (the model named picks its training recipe)",
        description="Train (or resume) a run. All options are key=value overrides, e.g. "
        "model=liae-cpu data.src=faces/a data.dst=faces/b run_dir=runs/ab trainer.time_budget_s=1800, or "
        "model=simswap-tiny data.train=[faces/lfw-devtrain] data.eval=faces/lfw-devtest run_dir=runs/simswap "
        "(see `swaplab config train model=NAME`). Launch with torchrun for several processes.",
    )
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_train, overrides_field="overrides")

    p = sub.add_parser("export", help="export a run's latest good checkpoint as a model for swapping")
    p.add_argument("run", help="run folder")
    p.add_argument("-o", "--output", required=True, help="model folder (model.safetensors + model.json)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in that folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "swap",
        help="swap faces in a photo, a folder of photos or a video",
        description="Swap with an exported model. Options are key=value overrides (see `swaplab config "
        "swap`), e.g. colour=rct blend=poisson mask=intersection smoothing=kalman which=largest preview=8.",
    )
    p.add_argument("model", help="exported model folder (swaplab export)")
    p.add_argument("input", help="photo, folder of photos, or video")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--device", default="cpu")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_swap, overrides_field="overrides")

    p = sub.add_parser(
        "sample",
        help="pictures from a generative model: samples, per-class samples, reconstructions, interpolations",
        description="Draw a grid from an exported generative model or a run folder; key=value words are the "
        "model's own options (an iterative model's sampler and steps).",
    )
    p.add_argument("model", help="model folder (swaplab export) or run folder")
    p.add_argument("-o", "--output", required=True, help="a .png file")
    p.add_argument("--kind", default="samples", choices=["samples", "classes", "reconstructions", "interpolations"])
    p.add_argument("-n", type=int, default=64, help="how many pictures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", default=None, help="a folder of images to reconstruct or interpolate")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_sample, overrides_field="overrides")

    p = sub.add_parser(
        "verify",
        help="check files for swaplab's synthetic-content mark",
        description="Check images and videos for swaplab's watermark and synthetic-media metadata. Exit code: "
        "0 every file is marked, 3 a file carries no mark, 1 a file could not be read (each file is reported).",
    )
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("demo", help="extract, train, swap and verify on the sample data, end to end")
    p.add_argument("--data", default=None, help="sample data folder (default: $SWAPLAB_DATA or ../shared/data)")
    p.add_argument("-o", "--output", default="demo-output")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget in minutes")
    p.add_argument("--frames", type=int, default=0, help="frames of the clip to swap (0 = all)")
    p.add_argument(
        "--restore", action="store_true", help="restore the pasted face (builds the face restorer on first use)"
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("faceset", help="inspect, sort, filter and preview facesets")
    fs = p.add_subparsers(dest="faceset_command", required=True)
    q = fs.add_parser("info", help="count faces and show the header")
    q.add_argument("faceset")
    q.set_defaults(func=cmd_faceset_info)
    q = fs.add_parser("sort", help="write a sorted / filtered copy of a faceset")
    q.add_argument("faceset")
    q.add_argument("-o", "--output", required=True)
    q.add_argument("--by", choices=["identity", "blur", "yaw", "pitch", "source"], default="identity")
    q.add_argument("--reference", nargs="*", default=None, help="photos of the wanted person (for identity)")
    q.add_argument("--keep", type=int, default=None, help="keep the first N after sorting")
    q.add_argument("--max-distance", type=float, default=None, help="drop faces farther than this identity distance")
    q.add_argument("--min-blur", type=float, default=None, help="drop faces with sharpness below this")
    q.add_argument("--max-yaw", type=float, default=None, help="drop faces turned more than this (degrees)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output faceset")
    q.set_defaults(func=cmd_faceset_sort)
    q = fs.add_parser("sheet", help="write a contact sheet image of a faceset")
    q.add_argument("faceset")
    q.add_argument("-o", "--output", required=True)
    q.add_argument("--max-faces", type=int, default=64)
    q.add_argument("--thumb", type=int, default=96)
    q.set_defaults(func=cmd_faceset_sheet)
    q = fs.add_parser(
        "polygons",
        help="start a mask polygons file (the faces' hulls) for correcting their masks (docs/masks.md)",
    )
    q.add_argument("faceset")
    q.add_argument("face_ids", nargs="+", help="ids of the faces to correct (file stems under faces/)")
    q.add_argument("-o", "--output", default=None, help="default: FACESET/mask_polygons.json")
    q.set_defaults(func=cmd_faceset_polygons)

    p = sub.add_parser("data", help="list, locate and fetch the public sample data sets")
    ds = p.add_subparsers(dest="data_command", required=True)
    ds.add_parser("list", help="the data sets swaplab knows, with their terms").set_defaults(func=cmd_data)
    ds.add_parser("path", help="the data folder swaplab uses, and why").set_defaults(func=cmd_data)
    q = ds.add_parser("fetch", help="download, verify and unpack a data set")
    q.add_argument("name", help="a name from `swaplab data list`, e.g. lfw")
    q.add_argument("--dest", required=True, help='data folder, e.g. "$(swaplab data path)"')
    q.add_argument("--base-url", default=None, help="a mirror or a local folder / file:// URL holding the files")
    q.add_argument("--force", action="store_true", help="download again even if verified files are present")
    q.add_argument("--trust-unverified", action="store_true", help="keep files that have no published checksum")
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_data)

    p = sub.add_parser("list", help="every registered name: recipes, model presets, masks, colour modes ...")
    p.add_argument("what", nargs="?", help="recipes, models, trainers, losses, identity, swappers, masks, colour, "
                   "blend, smoothing, detectors, metrics or datasets (default: all)")  # fmt: skip
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("identity", help="list, build and verify the identity networks")
    ids = p.add_subparsers(dest="identity_command", required=True)
    ids.add_parser("list", help="the identity networks and whether each is built here").set_defaults(func=cmd_identity)
    q = ids.add_parser(
        "build",
        help="train an identity network on LFW's peopleDevTrain people and install it (resumable)",
        description="Train swaplab's own identity network (lfw-arcface: about 20 CPU-minutes) into the user "
        "cache, where evaluations find it. Re-running resumes a stopped build.",
    )
    q.add_argument("name", nargs="?", default="lfw-arcface")
    q.add_argument("overrides", nargs="*", help="key=value overrides of the training run")
    q.add_argument("--preset", default="default", help="default, or test (seconds, for tests)")
    q.add_argument("--faceset", action="append", default=[], help="faceset of LFW photos (landmarks); repeatable")
    q.add_argument("--verify", action="store_true", help="then measure it on LFW View 1 and record the result")
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_identity, overrides_field="overrides")
    q = ids.add_parser("verify", help="LFW View-1 verification accuracy of identity networks")
    q.add_argument("--encoders", nargs="+", default=["lfw-arcface", "dlib-resnet"])
    q.add_argument("--weights", help="an lfw-arcface weights file (default: the installed one)")
    q.add_argument("--faceset", action="append", default=[], help="faceset of LFW photos (landmarks); repeatable")
    q.add_argument("--lfw", help="LFW folder (default: <data root>/lfw)")
    q.add_argument("--out", help="write the results as JSON here")
    q.add_argument("--record", action="store_true", help="add the results to the installed network's model.json")
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_identity)

    p = sub.add_parser("nets", help="list and build the swap stage's own networks (face segmenter ...)")
    nets = p.add_subparsers(dest="nets_command", required=True)
    nets.add_parser("list", help="the built networks and whether each is built here").set_defaults(func=cmd_nets)
    q = nets.add_parser(
        "build",
        help="train a built network (face-segmenter, face-restorer, learned-blender) into the user cache (resumable)",
        description="Train one of the swap stage's networks into the user cache, where mask=segment and the "
        "other options find it. Re-running resumes a stopped build; --fresh starts it again. See docs/masks.md.",
    )
    q.add_argument("name", help="face-segmenter, face-restorer or learned-blender")
    q.add_argument("overrides", nargs="*", help="key=value overrides of the training run")
    q.add_argument(
        "--preset",
        default=None,
        help="cpu (minutes; the default, but for face-restorer its plain L1 build), cpu-gan (face-restorer's "
        "default: adversarial, edge and perceptual terms), personal (face-restorer: the installed one fine-tuned "
        "on one person's faces, data.facesets=[FACESET] --out FOLDER), or test (seconds, for tests)",
    )
    q.add_argument(
        "--fresh",
        action="store_true",
        help="discard this preset's earlier run and train from scratch (the installed network stays until then)",
    )
    q.add_argument(
        "-o",
        "--out",
        default=None,
        help="install into this folder instead of the user cache (a personal face-restorer: swap ... restorer=FOLDER)",
    )
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_nets, overrides_field="overrides")

    from swaplab.study.cli import add_report_parser, add_sweep_parser

    add_sweep_parser(sub)
    add_report_parser(sub)

    p = sub.add_parser("config", help="print a config with its defaults (and overrides applied)")
    p.add_argument("section", help="extract, train, ...")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_config, overrides_field="overrides")

    p = sub.add_parser(
        "eval",
        help="score models, runs, sweeps or another tool's swaps on a pinned protocol",
        description="Evaluate exported models, run folders or sweep folders (several are compared in one "
        "report), or already-swapped images: --swaps DIR [--sources FILES_OR_DIR --targets DIR]. Writes "
        "metrics.json, per_item.json and report.html under --out (docs/evaluation.md).",
    )
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL_OR_RUN",
        help="model, run or sweep folders, then key=value swap options (mask=segment restore=on ...)",
    )
    p.add_argument("-o", "--out", required=True, help="output folder for metrics and the report")
    pinned = sorted(path.stem for path in (Path(__file__).parent / "protocol").glob("*.json"))
    p.add_argument("--protocol", default="per_pair_v1", help=f"{', '.join(pinned)} or a .json file")
    p.add_argument("--data", default=None, help="data root (default: $SWAPLAB_DATA or ../shared/data)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N pairs (0 = all)")
    p.add_argument(
        "--detector-pairs",
        type=int,
        default=0,
        help="detectability: swap and train the detector on N of the protocol's peopleDevTrain pairs "
        "(0 = all 200, or max(limit, 20) with --limit; -1 = skip)",
    )
    p.add_argument("--swaps", default=None, help="folder of swapped images from any tool, named <pair id>.<ext>")
    p.add_argument("--sources", nargs="+", default=None, help="with --swaps: photos (or a folder) of the source")
    p.add_argument("--targets", dest="target_dir", default=None, help="with --swaps: the folder of target photos")
    p.add_argument("--encoders", nargs="+", default=None, help="identity networks (default: every registered one)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_eval, overrides_field="models")

    p = sub.add_parser(
        "ui",
        help="a local web app for the whole workflow (extract, train, swap, verify, reports)",
        description="Serve the web app on 127.0.0.1 (docs/ui.md). The page reads and writes only inside the "
        "--allow folders (default: the current folder).",
    )
    p.add_argument("--allow", nargs="+", default=[], metavar="DIR", help="folders the page may use")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (other than 127.0.0.1 exposes the app)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload accepted")
    p.add_argument("--output", default="", help="where swaps and exports go (default: the first --allow/swaplab-ui)")
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`extract a.jpg -o out size=128`), which argparse's positional
    # matching cannot express: leftover key=value words are handed to the command's overrides.
    args, extra = parser.parse_known_args(argv)
    stray = [w for w in extra if "=" not in w or w.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides_field")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        getattr(args, args.overrides_field).extend(extra)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return run_command(args)


#: Exit codes (the module docstring says what each means).
EXIT_FAILED, EXIT_USAGE, EXIT_NO_MARK, EXIT_INTERRUPTED = 1, 2, 3, 130


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; every error becomes one line on stderr and an exit code."""
    from swaplab.config import ConfigError
    from swaplab.facesets.format import FacesetError
    from swaplab.io.images import MediaError
    from swaplab.train.checkpoint import CheckpointError

    failures = (OSError, ValueError, RuntimeError, LookupError, MediaError, FacesetError, CheckpointError)

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a re-run resumes", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, KeyError, FileExistsError) as err:
        _report(err, args)
        return EXIT_USAGE
    except failures as err:
        _report(err, args)
        return EXIT_FAILED


def _report(err: BaseException, args: argparse.Namespace) -> None:
    from swaplab.io.atomic import DiskFullError

    if getattr(args, "verbose", False):
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, DiskFullError):
        message = err.strerror or message
    elif isinstance(err, OSError) and err.errno == 28:
        message = f"the disk is full ({getattr(err, 'filename', None) or message}); free space and run again"
    elif isinstance(err, OSError) and err.errno == 13:
        message = f"permission denied: {err.filename or message}"
    first = message.strip().splitlines()[0] if message.strip() else type(err).__name__
    rest = len(message.strip().splitlines()) - 1
    print(f"error: {first}" + (f" (and {rest} more lines; -v shows them)" if rest > 0 else ""), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
