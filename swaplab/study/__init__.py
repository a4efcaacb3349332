"""swaplab.study: declarative ablation studies: a study file, a sweep that runs it, a report.

``load_study("studies/simswap-original.yaml")`` parses and checks a study; ``run_sweep(study,
"sweeps/x", ["data.train=faces"])`` trains, evaluates and reports every run (``swaplab sweep``);
``write_study_report("sweeps/x")`` rewrites the report (``swaplab report``): the ablation report, or
for a study scored by its runs' own validation numbers (``eval: validation``, studies/zoo.yaml) the
zoo page. Launchers (local processes, SLURM through submitit) are in ``LAUNCHERS``. See docs/studies.md.
"""

from __future__ import annotations

from pathlib import Path

from swaplab.study.launch import LAUNCHERS, Job, LauncherUnavailable
from swaplab.study.study import (
    EvalSpec,
    LauncherSpec,
    PlannedRun,
    Study,
    StudyError,
    SubmititOptions,
    load_study,
    parse_study,
)
from swaplab.study.sweep import RunRecord, SweepResult, read_sweep, run_sweep


def write_study_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """``swaplab.study.report.write_study_report``, imported on first use (it pulls in matplotlib and torch)."""
    from swaplab.study.report import write_study_report as write

    return write(sweep_dir, out_dir)


__all__ = [
    "LAUNCHERS",
    "EvalSpec",
    "Job",
    "LauncherSpec",
    "LauncherUnavailable",
    "PlannedRun",
    "RunRecord",
    "Study",
    "StudyError",
    "SubmititOptions",
    "SweepResult",
    "load_study",
    "parse_study",
    "read_sweep",
    "run_sweep",
    "write_study_report",
]
