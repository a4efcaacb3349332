"""Shared helpers for the benchmarks: the machine they ran on, and the data they read."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {sys.version.split()[0]}"
    )


def data_root() -> Path:
    from swaplab.data.fetch import data_root as locate

    root = locate()
    if not (root / "lfw").is_dir():
        sys.exit(f"no sample data under {root}: set SWAPLAB_DATA or run `swaplab data fetch lfw`")
    return root
