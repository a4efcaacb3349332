"""Progress bars for long work: one tqdm factory with the project's settings.

A bar drawn to a terminal refreshes twice a second; one written to a log file (not a terminal)
refreshes every 30 seconds rather than ten times a second, so logs stay readable.
"""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(iterable: Any = None, enabled: bool = True, **options: Any) -> Any:
    """A tqdm bar over ``iterable`` (or ``total=``), silent when not ``enabled``."""
    from tqdm import tqdm

    interval = 0.5 if sys.stderr.isatty() else 30.0
    options.setdefault("mininterval", interval)
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **options)
