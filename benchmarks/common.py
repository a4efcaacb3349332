"""Shared helpers for the benchmarks: the machine they ran on, and the data they read."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


def machine() -> str:
    from swaplab.system import cpu_model, cpu_supports_bf16

    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs, bf16 {'yes' if cpu_supports_bf16() else 'no'}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {sys.version.split()[0]}"
    )


def data_root() -> Path:
    from swaplab.data.fetch import data_root as locate

    root = locate()
    if not (root / "lfw").is_dir():
        sys.exit(f"no sample data under {root}: set SWAPLAB_DATA or run `swaplab data fetch lfw`")
    return root
