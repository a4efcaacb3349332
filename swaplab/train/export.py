"""Export a run's trained model: ``model.safetensors`` plus a ``model.json`` card (``swaplab.models.card``).

The run's recipe decides which tensors ship and adds its family's card fields (the swapper kind,
the identity networks, the alignment); this module adds what every card holds: the architecture
config, resolution, training step, data hashes, losses at export, the code revision and the
terms of the data. It reads run folders; it never trains. An existing model folder is replaced
only when asked (``overwrite``).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from swaplab.config import config_hash, to_dict
from swaplab.io.atomic import atomic_write_json, remove_stale_temporaries, sha256_file, temporary_prefix
from swaplab.models.card import CARD_FORMAT, CARD_VERSION
from swaplab.train.checkpoint import CheckpointError, load_checkpoint, load_latest_good
from swaplab.train.run import RunFolder, read_run_config

log = logging.getLogger(__name__)

#: Terms of the data and models every swaplab model depends on (stated in each card).
DATA_TERMS = {
    "faces": (
        "Trained on face crops from the facesets listed above. If they come from Labeled Faces in the "
        "Wild (LFW), note that LFW is a public research benchmark without a formal licence: treat the "
        "model as research-only material. Photographs belong to their owners and depict real people."
    ),
    "landmarks": (
        "Face alignment and the training masks use dlib's 68-point shape predictor, trained on the "
        "iBUG 300-W dataset, whose terms exclude commercial use."
    ),
    "use": (
        "A face-swap model: every image or video made with it must be marked as synthetic "
        "(swaplab does this by default); do not use it to deceive or to depict people without consent."
    ),
}


def export_model(
    run_dir: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None, *, overwrite: bool = False
) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model.json`` from a run's latest good checkpoint.

    ``checkpoint`` picks a specific checkpoint folder instead. An existing model folder (one with
    a ``model.json``) is refused unless ``overwrite``; the new files are written beside the old ones
    first and swapped in at the end, so a failed export leaves the old model whole. Returns the
    path of ``model.json``.
    """
    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"{run.root} is not a swaplab run folder (no config.yaml)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a model folder")
    if (out_dir / "model.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a model; pass --overwrite (overwrite=True) to replace it")
    recipe, cfg = read_run_config(run.root)
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, with_optimizer=False)
    else:
        ckpt, _ = load_latest_good(run.checkpoints, with_optimizer=False)
        if ckpt is None:
            raise CheckpointError(run.checkpoints, "no usable checkpoint to export: train the run first")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for path in remove_stale_temporaries(out_dir.parent):
        log.warning("removed a temporary folder left by a killed process: %s", path)
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix(out_dir, "export"), dir=out_dir.parent))
    try:
        fields = recipe.export(cfg, ckpt.model, staging, ckpt.state)
        weights = staging / "model.safetensors"
        manifest = run.read_manifest() or {}
        metrics = ckpt.state.get("metrics", {})
        card: dict[str, Any] = {
            "format": CARD_FORMAT,
            "version": CARD_VERSION,
            "recipe": recipe.name,
            "arch": getattr(cfg.model, "arch", None),
            "model": to_dict(cfg.model),
            "resolution": getattr(cfg.model, "resolution", None),
            "step": ckpt.step,
            "parameters": _parameters(weights),
            "weights": {"file": weights.name, "sha256": sha256_file(weights)},
            "trained_from": {
                "run_dir": str(run.root),
                "checkpoint": ckpt.path.name,
                "config_hash": config_hash(cfg),
                "code": manifest.get("code"),
            },
            "facesets": manifest.get("facesets", {}),
            "training": {
                "sessions": len(manifest.get("sessions", [])),
                "seconds": manifest.get("train_seconds"),
                "cpu_seconds": manifest.get("train_cpu_seconds"),
                "machine": manifest.get("machine"),
            },
            "losses_at_export": {k: v for k, v in metrics.items() if k == "loss" or k.startswith("loss/")},
            "data_terms": DATA_TERMS,
            **fields,
        }
        atomic_write_json(staging / "model.json", card)
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "model.json"


def _parameters(weights: Path) -> int:
    """Parameters in a safetensors file (the shipped tensors, not the whole run's)."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118 - not a dict


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Move the staged files into ``out_dir``, the card last: a reader never sees a card whose weights
    are not in place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # The card is the commit mark: an old card goes first, so a kill mid-way leaves a folder that
    # is plainly no model (re-export it) rather than an old card beside new weights.
    (out_dir / "model.json").unlink(missing_ok=True)
    names = sorted(p.name for p in staging.iterdir())
    for name in [n for n in names if n != "model.json"] + ["model.json"]:
        (staging / name).replace(out_dir / name)


def load_trained(run_dir: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """(run config, its exported network in eval mode) from a run's latest good checkpoint: what
    ``swaplab export`` then ``swaplab.models.card.load_model`` give, without keeping a model folder."""
    from swaplab.models.card import load_model

    _, cfg = read_run_config(run_dir)
    with tempfile.TemporaryDirectory(prefix="swaplab-load-") as scratch:
        export_model(run_dir, Path(scratch) / "model")
        return cfg, load_model(Path(scratch) / "model", device)
