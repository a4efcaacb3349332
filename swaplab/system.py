"""What machine this is: CPU model, bf16 support, the autocast choice that follows, the user cache.

One place for hardware facts, so that training, swapping, manifests and benchmarks agree. It
never changes global settings (threads, default dtype); callers decide.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path
from typing import Any

import torch


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (or what the platform module knows)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512_BF16 or AMX), where autocast pays off."""
    if torch.backends.cpu.get_cpu_capability().upper().startswith("AMX"):
        return True
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (auto, bf16, fp32) on ``device``; None is plain fp32.

    Never fp16 on CPU: it runs about 1000x slower than bf16 there (docs/benchmarks.md).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op context for ``None`` (fp32)."""
    device_type = torch.device(device).type
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def full_precision(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``tensor``'s device: for maths that needs fp32 inside a bf16 region
    (variances, colour statistics, fixed filters)."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def machine_description() -> dict[str, Any]:
    """The facts a run manifest or a benchmark records about where it ran."""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16": cpu_supports_bf16(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def user_cache_dir() -> Path:
    """swaplab's user cache: ``$SWAPLAB_CACHE``, else ``$XDG_CACHE_HOME/swaplab``, else ``~/.cache/swaplab``."""
    env = os.environ.get("SWAPLAB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "swaplab"
