"""``swaplab sweep STUDY.yaml`` and ``swaplab report SWEEP_DIR``: argument parsing and printing only.

``add_sweep_parser(subparsers)`` / ``add_report_parser(subparsers)`` add the two commands to the
``swaplab`` parser; their handlers call ``swaplab.study.run_sweep`` and ``write_study_report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

__all__ = ["add_report_parser", "add_sweep_parser", "cmd_report", "cmd_sweep"]


def cmd_sweep(args: argparse.Namespace) -> int:
    from swaplab.study.launch import LauncherUnavailable
    from swaplab.study.study import load_study
    from swaplab.study.sweep import run_sweep

    # `--only a b data.train=X`: argparse gives the override to --only; it belongs to the overrides.
    only = [name for name in args.only or [] if "=" not in name]
    overrides = [*args.overrides, *[word for word in args.only or [] if "=" in word]]
    study = load_study(args.study)
    if args.after:
        # Folded into the study like a file's `after:`, so the resolved study.yaml re-runs the same.
        study = dataclasses.replace(study, after=[*study.after, *args.after])
    launcher = study.launcher
    if args.launcher:
        launcher = dataclasses.replace(launcher, name=args.launcher)
    if args.max_parallel:
        launcher = dataclasses.replace(launcher, max_parallel=args.max_parallel)
    study.launcher = launcher
    if args.eval_limit is not None:
        if study.eval is None or study.eval.by_validation:
            print(f"error: --eval-limit: study {study.name} scores no protocol", file=sys.stderr)
            return 2
        # Folded into the study like a file's own, so the resolved study.yaml re-runs the same.
        study.eval = dataclasses.replace(study.eval, limit=args.eval_limit)
    try:
        result = run_sweep(
            study,
            args.output,
            overrides,
            only=only,
            dry_run=args.dry_run,
            validate=not args.no_validate,
            report=not args.no_report,
            status_every=args.status_every,
        )
    except LauncherUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.dry_run and not result.interrupted:
        for record in result.runs:
            scored = record.eval.get("status", "off")
            print(f"  {record.name:<28} {record.status:<12} step {record.final_step}  eval {scored}")
        print(f"sweep: {result.sweep_dir / 'sweep.json'}")
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from swaplab.study.report import load_study_data, summary_lines, write_study_report

    try:
        page = write_study_report(args.sweep_dir, args.output)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in summary_lines(load_study_data(args.sweep_dir), page.parent):
        print(line)
    print(f"report: {page}")
    return 0


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``swaplab sweep`` to a ``parser.add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "sweep",
        help="run an ablation study: train, evaluate and report every run of a study file",
        description="Run every run of STUDY.yaml (docs/studies.md) in SWEEP_DIR/<run>/, in parallel local "
        "processes or on SLURM, evaluate each finished run and write SWEEP_DIR/report/index.html. key=value "
        "words apply to every run after the study's base (e.g. data.train=FACESET trainer.time_budget_s=300). "
        "Re-running the same command resumes: finished runs are skipped, interrupted ones continue.",
    )
    p.add_argument("study", help="study file (YAML), e.g. studies/simswap-original.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    p.add_argument("-o", "--output", default=None, help="sweep folder (default: sweeps/<study name>)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these runs (shell patterns)")
    p.add_argument(
        "--after",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="overrides applied after each run's own (e.g. model.channels=3 model.resolution=32 on runs that "
        "each pick a model preset); the study file's `after` list, extended",
    )
    p.add_argument("--dry-run", action="store_true", help="print each run's command and check its config")
    p.add_argument("--launcher", default=None, help="override the study's launcher: local, serial or submitit")
    p.add_argument("--max-parallel", type=int, default=None, help="override the study's launcher.max_parallel")
    p.add_argument(
        "--eval-limit", type=int, default=None, help="score each run on the first N pairs (the study's eval.limit)"
    )
    p.add_argument("--no-validate", action="store_true", help="do not build each run's config before launching")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--status-every", type=float, default=30.0, help="seconds between progress lines (0 = only events)")
    p.set_defaults(func=cmd_sweep, overrides_field="overrides")
    return p


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``swaplab report`` to a ``parser.add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "report",
        help="write the study report of a sweep folder (loss curves, swap grids, metrics, summary)",
        description="Write SWEEP_DIR/report/index.html with PNG figures: generator and discriminator losses per "
        "run, the swap grid on the fixed evaluation pairs, the evaluator's metrics and a generated summary; for a "
        "study scored by its runs' own validation numbers (eval.source: validation, e.g. studies/zoo.yaml), the "
        "zoo page: reconstruction error against code size with PCA, FD/KID of the generators, pictures, losses.",
    )
    p.add_argument("sweep_dir", type=Path, help="a sweep folder (swaplab sweep -o)")
    p.add_argument("-o", "--output", default=None, help="report folder (default: SWEEP_DIR/report)")
    p.set_defaults(func=cmd_report)
    return p
