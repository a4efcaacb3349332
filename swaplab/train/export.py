"""Export a trained model (per-pair, or a one-shot generator): ``model.safetensors`` plus a ``model.json`` card.

The card records what the swap stage and a reader need: the architecture config, resolution,
training step, faceset hashes, the losses at export, and the terms of the data the model was
trained on. ``load_exported_model`` rebuilds the model from the card alone (no run folder, no
pickle). This module reads run folders; it never trains.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from swaplab.config import config_hash, from_dict, load_config, to_dict
from swaplab.io.atomic import atomic_path, atomic_write_json
from swaplab.models import ModelConfig, create_model
from swaplab.train.checkpoint import CheckpointError, load_checkpoint, load_latest_good, sha256_file
from swaplab.train.run import RunFolder

CARD_FORMAT = "swaplab-model"
CARD_VERSION = 1
PER_PAIR_KIND = "per-pair face swap"
ONESHOT_KIND = "one-shot face swap"

#: Terms of the data and models every swaplab per-pair model depends on (stated in each card).
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


def export_model(run_dir: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model.json`` from a run's latest good checkpoint.

    ``checkpoint`` picks a specific checkpoint folder instead. Returns the path of ``model.json``.
    """
    from swaplab.train.config import TrainConfig
    from swaplab.train.entry import is_oneshot_arch, saved_arch
    from swaplab.train.oneshot_config import OneShotTrainConfig

    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"{run.root} is not a swaplab run folder (no config.yaml)")
    oneshot = is_oneshot_arch(saved_arch(run.config_path))
    cfg = load_config(OneShotTrainConfig if oneshot else TrainConfig, run.config_path)
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, with_optimizer=False)
    else:
        ckpt, warnings = load_latest_good(run.checkpoints, with_optimizer=False)
        if ckpt is None:
            raise CheckpointError(run.checkpoints, "no usable checkpoint to export")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "model.safetensors"
    if oneshot:  # the generator alone swaps; the discriminator stays in the run
        tensors = {k.removeprefix("generator."): v for k, v in ckpt.model.items() if k.startswith("generator.")}
        with atomic_path(weights) as tmp:
            save_file(tensors, str(tmp), metadata={"format": CARD_FORMAT})
        ckpt.model = tensors
    else:
        with atomic_path(weights) as tmp:
            shutil.copyfile(ckpt.path / "model.safetensors", tmp)
    manifest = run.read_manifest() or {}
    metrics = ckpt.state.get("metrics", {})
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "kind": ONESHOT_KIND if oneshot else PER_PAIR_KIND,
        "arch": cfg.model.arch,
        "model": to_dict(cfg.model),
        "resolution": cfg.model.resolution,
        "step": ckpt.step,
        "parameters": sum(t.numel() for t in ckpt.model.values()),
        "weights": {"file": weights.name, "sha256": sha256_file(weights)},
        "trained_from": {
            "run_dir": str(run.root),
            "checkpoint": ckpt.path.name,
            "config_hash": config_hash(cfg),
            "code": manifest.get("code"),
        },
        "facesets": manifest.get("facesets", {}),
        # The swap stage must align faces exactly as the training facesets were aligned.
        "alignment": _alignment(cfg),
        "losses_at_export": {k: v for k, v in metrics.items() if k == "loss" or k.startswith("loss/")},
        "loss_config": to_dict(cfg.loss),
        "conventions": "input/output: float32 RGB (N, 3, R, R) in [0, 1]; swap(dst) -> (rgb, mask)",
        "data_terms": DATA_TERMS,
    }
    if oneshot:
        card["conventions"] = (
            "generator(target (N, 3, R, R) float32 RGB in [0, 1], source identity (N, 128)) -> swap (N, 3, R, R); "
            "the source identity is dlib's face descriptor of a photo of the source person"
        )
        card["identity"] = {"network": cfg.gan.identity_network, "input": "dlib face descriptor of the source"}
        card["loss_config"]["identity"]["network"] = cfg.gan.identity_network
        card["split"] = {"trained_on": "peopleDevTrain.txt", "evaluate_on": "peopleDevTest.txt"}
    card_path = out_dir / "model.json"
    atomic_write_json(card_path, card)
    return card_path


def _alignment(cfg: Any) -> dict[str, Any]:
    from swaplab.facesets.format import FacesetError, read_header

    faceset = cfg.data.train[0] if hasattr(cfg.data, "train") else cfg.data.dst
    try:
        header = read_header(faceset)
    except FacesetError:
        return {"template": "whole_face"}
    return {"template": header.template, "faceset_crop_size": header.size}


def read_card(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The model card and the weights' path, from a folder, ``model.json`` or ``model.safetensors``."""
    path = Path(path)
    card_path = path / "model.json" if path.is_dir() else path.with_name("model.json")
    if not card_path.is_file():
        raise FileNotFoundError(f"no model.json next to {path}: export a model with swaplab.train.export")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if card.get("format") != CARD_FORMAT:
        raise ValueError(f"{card_path} is not a swaplab model card (format={card.get('format')!r})")
    return card, card_path.parent / card["weights"]["file"]


def load_exported_model(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> nn.Module:
    """The exported model in eval mode, rebuilt from its card; ``verify`` checks the weights' hash."""
    from safetensors.torch import load_file

    card, weights = read_card(path)
    if verify and sha256_file(weights) != card["weights"]["sha256"]:
        raise CheckpointError(weights, "hash mismatch with model.json: the weights file is corrupt or replaced")
    if card.get("kind") == ONESHOT_KIND:
        from swaplab.models.simswap import OneShotSwapModel, SimSwapConfig, SimSwapGenerator

        generator = SimSwapGenerator(from_dict(SimSwapConfig, card["model"]))
        generator.load_state_dict(load_file(str(weights)))
        return OneShotSwapModel(generator).to(device).eval()
    model = create_model(from_dict(ModelConfig, card["model"]))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval()
