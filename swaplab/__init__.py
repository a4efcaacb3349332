"""swaplab: a face-swapping laboratory.

Extract faces into facesets, train swap models, run ablation studies, swap photos and videos,
evaluate with one pinned set of metrics, and mark every output as synthetic. The command-line
tool is a thin wrapper over the functions exported here.

Conventions, stated once: images at the I/O boundary are RGB uint8 arrays (H, W, 3); inside the
library they are float32 tensors (N, 3, H, W), RGB, in [0, 1]. Landmarks are (K, 2) arrays of
(x, y) pixel coordinates; affine matrices are 2x3, source frame -> crop, as cv2.warpAffine takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swaplab._version import __version__

# The public API is imported lazily: `import swaplab` stays fast and pulls in torch, dlib and
# OpenCV only for the parts a program actually uses.
_API = {
    "extract": "swaplab.facesets.extract",
    "ExtractConfig": "swaplab.facesets.extract",
    "Faceset": "swaplab.facesets.format",
    "contact_sheet": "swaplab.facesets.sheet",
    "sort_faceset": "swaplab.facesets.sort",
    "train": "swaplab.train.loop",
    "build_config": "swaplab.train.entry",
    "TrainConfig": "swaplab.train.recipes.per_pair",
    "OneShotTrainConfig": "swaplab.train.recipes.oneshot_config",
    "RECIPES": "swaplab.train.recipe",
    "load_study": "swaplab.study.study",
    "run_sweep": "swaplab.study.sweep",
    "write_study_report": "swaplab.study.report",
    "export_model": "swaplab.train.export",
    "load_swapper": "swaplab.models.swapper",
    "load_model": "swaplab.models.card",
    "swap": "swaplab.swap.pipeline",
    "SwapConfig": "swaplab.swap.pipeline",
    "verify": "swaplab.provenance",
    "sample": "swaplab.sampling",
    "evaluate": "swaplab.evaluate.evaluator",
    "evaluate_many": "swaplab.evaluate.evaluator",
    "apply_overrides": "swaplab.config",
}

if TYPE_CHECKING:
    from swaplab.config import apply_overrides
    from swaplab.evaluate.evaluator import evaluate, evaluate_many
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.facesets.format import Faceset
    from swaplab.facesets.sheet import contact_sheet
    from swaplab.facesets.sort import sort_faceset
    from swaplab.models.card import load_model
    from swaplab.models.swapper import load_swapper
    from swaplab.provenance import verify
    from swaplab.sampling import sample
    from swaplab.study.report import write_study_report
    from swaplab.study.study import load_study
    from swaplab.study.sweep import run_sweep
    from swaplab.swap.pipeline import SwapConfig, swap
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipe import RECIPES
    from swaplab.train.recipes.oneshot_config import OneShotTrainConfig
    from swaplab.train.recipes.per_pair import TrainConfig


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'swaplab' has no attribute {name!r}")


__all__ = [
    "ExtractConfig",
    "Faceset",
    "OneShotTrainConfig",
    "RECIPES",
    "SwapConfig",
    "TrainConfig",
    "__version__",
    "apply_overrides",
    "build_config",
    "evaluate",
    "evaluate_many",
    "contact_sheet",
    "export_model",
    "extract",
    "load_model",
    "load_swapper",
    "load_study",
    "run_sweep",
    "sample",
    "sort_faceset",
    "swap",
    "train",
    "verify",
    "write_study_report",
]
