"""The ``swaplab`` command: parses arguments, calls the library, prints. It holds no logic.

Options that belong to a typed config are given as ``key=value`` overrides after the positional
arguments (``swaplab extract clip.mp4 -o faces size=128 faces.detect_every=3``); ``swaplab config
extract`` prints every key with its default.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from swaplab import __version__


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
    if summary.faces and not args.no_sheet:
        sheet = contact_sheet(args.output, Path(args.output) / "contact_sheet.jpg")
        print(f"contact sheet: {sheet}")
    return 0 if (summary.faces or not summary.problems) else 1


def cmd_faceset_info(args: argparse.Namespace) -> int:
    from swaplab.facesets.format import Faceset

    faceset = Faceset(args.faceset)
    sources = {r.source for r in faceset}
    print(f"{args.faceset}: {len(faceset)} faces from {len(sources)} sources")
    print(f"template {faceset.header.template}, {faceset.size} px, {faceset.header.image_format}")
    print(f"format version {faceset.header.version}, content hash {faceset.content_hash()}")
    if faceset.skipped_shards:
        print(f"warning: {len(faceset.skipped_shards)} damaged shard(s) skipped: {faceset.skipped_shards[:5]}")
    return 0


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
    )
    print(f"{report['kept']} of {report['total']} faces written to {args.output}, sorted by {args.by}")
    return 0


def cmd_faceset_sheet(args: argparse.Namespace) -> int:
    from swaplab.facesets.sheet import contact_sheet

    path = contact_sheet(args.faceset, args.output, max_faces=args.max_faces, thumb=args.thumb)
    print(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from swaplab.train.entry import build_any_config, train_any

    result = train_any(build_any_config(args.overrides))
    print(f"run: {result.run_dir}")
    print(f"stopped at step {result.step} ({result.stop_reason}), {result.faces_per_s:.2f} images/s")
    for key, value in sorted(result.metrics.items()):
        if isinstance(value, float):
            print(f"  {key} {value:.4f}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from swaplab.train.export import export_model

    card = export_model(args.run, args.output)
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


def cmd_verify(args: argparse.Namespace) -> int:
    from swaplab.provenance import verify

    exit_code = 0
    for path in args.files:
        report = verify(path)
        if args.json:
            print(json.dumps({"path": str(path), **report.to_dict()}))
        else:
            print(f"{path}: " + report.summary())
        exit_code = exit_code or (0 if report.synthetic else 3)
    return exit_code


def cmd_demo(args: argparse.Namespace) -> int:
    from swaplab.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        data=Path(args.data) if args.data else None,
        output=Path(args.output),
        train_minutes=args.minutes,
        swap_frames=args.frames,
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
    if args.section not in factories:
        print(f"error: unknown config {args.section!r}; choose from {', '.join(factories)}", file=sys.stderr)
        return 2
    if args.section == "train":  # the model named decides the config (per-pair or one-shot)
        from swaplab.train.entry import build_any_config

        cfg = build_any_config(args.overrides)
    else:
        cfg = apply_overrides(factories[args.section](), args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def _config_factories() -> dict[str, Callable[[], object]]:
    def extract_config() -> object:
        from swaplab.facesets.extract import ExtractConfig

        return ExtractConfig()

    def swap_config() -> object:
        from swaplab.swap.pipeline import SwapConfig

        return SwapConfig()

    factories: dict[str, Callable[[], object]] = {"extract": extract_config, "swap": swap_config}
    try:
        from swaplab.train.config import TrainConfig
        from swaplab.train.oneshot_config import OneShotTrainConfig

        factories["train"] = TrainConfig
        factories["train-oneshot"] = OneShotTrainConfig
    except ImportError:
        pass
    return factories


def cmd_eval(args: argparse.Namespace) -> int:
    from swaplab.evaluate.evaluator import EvalOptions, evaluate, evaluate_many, expand_targets
    from swaplab.evaluate.report import summary_lines

    if bool(args.models) == bool(args.swaps):
        print("error: give MODEL_OR_RUN folders, or --swaps DIR (with --sources and --targets)", file=sys.stderr)
        return 2
    options = EvalOptions(
        limit=args.limit,
        device=args.device,
        encoders=tuple(args.encoders or ()),
        detector_pairs=args.detector_pairs,
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
        "train",
        help="train a per-pair model on two facesets, or a one-shot model (model=simswap-*) on LFW facesets",
        description="Train (or resume) a run. All options are key=value overrides, e.g. "
        "model=liae-cpu data.src=faces/a data.dst=faces/b run_dir=runs/ab trainer.time_budget_s=1800, or "
        "model=simswap-tiny data.train=[faces/lfw-devtrain] data.eval=faces/lfw-devtest run_dir=runs/simswap "
        "(see `swaplab config train` and `swaplab config train-oneshot`). Launch with torchrun for several "
        "processes.",
    )
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_train, overrides_field="overrides")

    p = sub.add_parser("export", help="export a run's latest good checkpoint as a model for swapping")
    p.add_argument("run", help="run folder")
    p.add_argument("-o", "--output", required=True, help="model folder (model.safetensors + model.json)")
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

    p = sub.add_parser("verify", help="check files for swaplab's synthetic-content mark")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("demo", help="extract, train, swap and verify on the sample data, end to end")
    p.add_argument("--data", default=None, help="sample data folder (default: $SWAPLAB_DATA or ../shared/data)")
    p.add_argument("-o", "--output", default="demo-output")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget in minutes")
    p.add_argument("--frames", type=int, default=0, help="frames of the clip to swap (0 = all)")
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
    q.set_defaults(func=cmd_faceset_sort)
    q = fs.add_parser("sheet", help="write a contact sheet image of a faceset")
    q.add_argument("faceset")
    q.add_argument("-o", "--output", required=True)
    q.add_argument("--max-faces", type=int, default=64)
    q.add_argument("--thumb", type=int, default=96)
    q.set_defaults(func=cmd_faceset_sheet)

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
    p.add_argument("models", nargs="*", metavar="MODEL_OR_RUN", help="model, run or sweep folders")
    p.add_argument("-o", "--out", required=True, help="output folder for metrics and the report")
    p.add_argument("--protocol", default="per_pair_v1", help="per_pair_v1, oneshot_v1, video_v1 or a .json file")
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
    p.set_defaults(func=cmd_eval)
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
    from swaplab.config import ConfigError
    from swaplab.facesets.format import FacesetError
    from swaplab.io.images import MediaError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, FacesetError, MediaError, KeyError, FileExistsError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a re-run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
