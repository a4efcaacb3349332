"""swaplab.evaluate: score every model, run, sweep or other tool's swaps with one pinned protocol.

``evaluate`` / ``evaluate_many`` (``swaplab.evaluate.evaluator``) make or read swaps, find faces,
run the metric functions of ``swaplab.metrics`` and write ``metrics.json``, ``per_item.json`` and
``report.html``. The protocols are pinned in ``swaplab/protocol/*.json`` (``swaplab.evaluate.protocol``).
"""

from swaplab.evaluate.evaluator import (
    Comparison,
    EvalOptions,
    EvalResult,
    evaluate,
    evaluate_many,
    expand_targets,
    prepare_cache,
)
from swaplab.evaluate.protocol import Protocol, build_protocol, load_protocol

__all__ = [
    "Comparison",
    "EvalOptions",
    "EvalResult",
    "Protocol",
    "build_protocol",
    "evaluate",
    "evaluate_many",
    "expand_targets",
    "load_protocol",
    "prepare_cache",
]
