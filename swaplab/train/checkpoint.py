"""Training checkpoints: safetensors + JSON folders, written atomically, verified on load, rotated.

A checkpoint is a folder ``checkpoints/step-0000123/`` holding ``model.safetensors``,
``optimizer.safetensors`` (optimiser state tensors under ``state/<parameter name>/<field>``),
``rng.safetensors`` (torch RNG states as uint8 tensors) and ``state.json`` (step, scheduler and
trainer state, Python/NumPy RNG states, the optimiser's non-tensor settings, and the sha256 of
every other file). It is written into a hidden temporary folder, fsynced and renamed into place,
then ``latest.json`` is replaced atomically, so a kill at any moment leaves the previous
checkpoint intact. Nothing is ever pickled. This module knows nothing about models or training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from swaplab.io.atomic import atomic_write_json, ensure_free_space, sha256_file

log = logging.getLogger(__name__)

FORMAT_NAME = "swaplab-checkpoint"
FORMAT_VERSION = 1
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")
STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the path and what is wrong."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint (tensors on the CPU)."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # a torch optimiser state_dict (or {name: state_dict} for several)
    rng: dict[str, torch.Tensor]
    state: dict[str, Any] = field(default_factory=dict)  # the whole state.json


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


# ---------------------------------------------------------------- optimiser state <-> tensors


def optimizer_to_tensors(
    optimizer: torch.optim.Optimizer, param_names: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimiser's state into named tensors plus a JSON-ready description.

    ``param_names`` lists the parameters in the order the optimiser holds them (all groups,
    in order), so keys read ``state/encoder.body.0.conv.weight/exp_avg`` instead of integers.
    """
    state_dict = optimizer.state_dict()
    n_params = sum(len(g["params"]) for g in state_dict["param_groups"])
    if n_params != len(param_names):
        raise ValueError(f"optimizer holds {n_params} parameters but {len(param_names)} names were given")
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        name = param_names[index]
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{name}/{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "param_names": param_names, "scalars": scalars}


def optimizers_to_tensors(
    optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
    param_names: list[str] | Mapping[str, list[str]],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer_to_tensors`` for one optimiser, or for several by name (a GAN's G and D).

    Several optimisers share one file: their tensor keys are prefixed ``<name>:`` and the
    description lists each under ``optimizers``.
    """
    if not isinstance(optimizer, Mapping):
        return optimizer_to_tensors(optimizer, param_names)  # type: ignore[arg-type]
    if not isinstance(param_names, Mapping) or set(param_names) != set(optimizer):
        raise ValueError("several optimisers need a mapping of parameter names with the same keys")
    tensors: dict[str, torch.Tensor] = {}
    metas: dict[str, Any] = {}
    for name, opt in optimizer.items():
        if ":" in name or "/" in name:
            raise ValueError(f"optimiser name {name!r} may not contain ':' or '/'")
        part, metas[name] = optimizer_to_tensors(opt, list(param_names[name]))
        tensors.update({f"{name}:{key}": value for key, value in part.items()})
    return tensors, {"optimizers": metas}


def optimizers_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Undo ``optimizers_to_tensors``: one state_dict, or ``{name: state_dict}`` for several."""
    if "optimizers" not in meta:
        return optimizer_from_tensors(tensors, meta)
    out = {}
    for name, part_meta in meta["optimizers"].items():
        prefix = f"{name}:"
        part = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
        out[name] = optimizer_from_tensors(part, part_meta)
    return out


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the optimiser state_dict that ``optimizer_to_tensors`` flattened."""
    index_of = {name: i for i, name in enumerate(meta["param_names"])}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, name, field_name = key.split("/", 2)
        state.setdefault(index_of[name], {})[field_name] = value
    for name, values in meta.get("scalars", {}).items():
        state.setdefault(index_of[name], {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- RNG states


def capture_rng() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Python, NumPy (JSON) and torch (tensors) RNG states of this process."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    numpy_json = {
        "bit_generator": numpy_state["bit_generator"],
        "key": np.asarray(numpy_state["state"]["key"]).tolist(),
        "pos": int(numpy_state["state"]["pos"]),
        "has_gauss": int(numpy_state["has_gauss"]),
        "gauss": float(numpy_state["gauss"]),
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    return {"python": [version, list(internal), gauss], "numpy": numpy_json}, tensors


def restore_rng(json_state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = json_state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_json = json_state["numpy"]
    np.random.set_state(
        (
            numpy_json["bit_generator"],
            np.asarray(numpy_json["key"], dtype=np.uint32),
            numpy_json["pos"],
            numpy_json["has_gauss"],
            numpy_json["gauss"],
        )
    )
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])


# ---------------------------------------------------------------- writing


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as contiguous CPU tensors (channels_last weights become plain NCHW)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in _unwrap(model).state_dict().items()}


def write_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (contiguous CPU copies of ``tensors``)."""
    from swaplab.io.atomic import atomic_path

    path = Path(path)
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=metadata)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
    param_names: list[str] | Mapping[str, list[str]],
    state: dict[str, Any] | None = None,
    keep_last: int = 3,
    keep_every: int = 0,
) -> Path:
    """Write ``root/step-NNNNNNN`` atomically, point ``latest.json`` at it, rotate old ones.

    Refuses (``ValueError``) to write a model with a NaN or infinite parameter: a checkpoint is
    where a diverged run goes back to, so it must never hold one. ``optimizer`` may be a mapping
    of named optimisers (with ``param_names`` a mapping of the same names); the checkpoint's
    ``optimizer`` is then a mapping of state_dicts too.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    weights = model_tensors(model)
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"refusing to checkpoint step {step}: non-finite values in {', '.join(bad[:5])}")
    opt_tensors, opt_meta = optimizers_to_tensors(optimizer, param_names)
    rng_json, rng_tensors = capture_rng()

    need = sum(t.numel() * t.element_size() for part in (weights, opt_tensors, rng_tensors) for t in part.values())
    # The new checkpoint is whole on disk before the oldest is rotated away, so the space for one
    # more (plus a little for state.json and the file system) must be free now.
    ensure_free_space(root, need + need // 50 + (1 << 20), f"checkpoint step {step}")

    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        payloads = {
            "model.safetensors": weights,
            "optimizer.safetensors": opt_tensors,
            "rng.safetensors": rng_tensors,
        }
        hashes = {}
        for name, tensors in payloads.items():
            save_file(tensors, str(tmp / name), metadata={"format": FORMAT_NAME, "step": str(step)})
            hashes[name] = sha256_file(tmp / name)
            _fsync(tmp / name)
        document = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "step": step,
            "files": hashes,
            "optimizer": opt_meta,
            "rng": rng_json,
            **(state or {}),
        }
        (tmp / "state.json").write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        _fsync(tmp / "state.json")
        _fsync(tmp)
        if final.exists():  # re-saving a step (after a rollback): move the old one aside first
            trash = root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
        _fsync(root)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(err):
            from swaplab.io.atomic import DiskFullError

            raise DiskFullError(
                28,
                f"the disk is full: checkpoint step {step} (about {need / 2**20:.0f} MiB) could not be written to "
                f"{root}; the previous checkpoint is intact. Free space (or raise the file-size limit) and run "
                "again to resume",
            ) from None
        raise
    atomic_write_json(root / "latest.json", {"step": step, "path": final.name})
    rotate_checkpoints(root, keep_last=keep_last, keep_every=keep_every)
    return final


def _disk_full(err: BaseException) -> bool:
    """An out-of-space error (ENOSPC, or EFBIG from a file-size limit), from the OS or from safetensors (as text)."""
    if isinstance(err, OSError) and err.errno in (27, 28):
        return True
    text = str(err)
    return isinstance(err, SafetensorError) and any(
        mark in text for mark in ("No space left", "os error 28", "File too large", "os error 27")
    )


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders under ``root`` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = STEP_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def rotate_checkpoints(root: str | Path, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete checkpoints except the last ``keep_last`` (0 = all), every ``keep_every``-th step and latest."""
    if keep_last <= 0:
        return []
    found = list_checkpoints(root)
    latest = _read_latest(Path(root))
    keep = {path for _, path in found[-keep_last:]}
    keep |= {path for step, path in found if keep_every > 0 and step % keep_every == 0}
    removed = []
    for _, path in found:
        if path not in keep and path.name != latest:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_partial(root: str | Path) -> list[Path]:
    """Remove temporary folders left by a process killed while writing a checkpoint."""
    root = Path(root)
    leftovers = [p for p in root.glob(".tmp-step-*") if p.is_dir()] + [
        p for p in root.glob(".old-step-*") if p.is_dir()
    ]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


# ---------------------------------------------------------------- reading


def read_state(path: str | Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint folder, checked for format; ``CheckpointError`` otherwise."""
    path = Path(path)
    state_path = path / "state.json"
    if not path.is_dir():
        raise CheckpointError(path, "checkpoint folder does not exist")
    if not state_path.is_file():
        raise CheckpointError(state_path, "missing file (the checkpoint was not completely written)")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(state_path, f"unreadable JSON ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(state_path, f"not a swaplab checkpoint (a {type(state).__name__}, not an object)")
    if state.get("format") != FORMAT_NAME:
        raise CheckpointError(state_path, f"not a swaplab checkpoint (format={state.get('format')!r})")
    if not isinstance(state.get("version"), int) or state["version"] > FORMAT_VERSION:
        raise CheckpointError(
            state_path, f"checkpoint format version {state.get('version')} is newer than this swaplab reads"
        )
    step, files = state.get("step"), state.get("files")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(state_path, f"its step {step!r} is not a whole number")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise CheckpointError(state_path, "its file hashes ('files') are missing or malformed")
    for key in ("optimizer", "rng", "scheduler", "trainer", "metrics"):
        if key in state and not isinstance(state[key], dict):
            raise CheckpointError(state_path, f"its field {key!r} is not an object")
    return state


def _load_tensors(path: Path, expected_sha: str | None) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(path, "missing file")
    if expected_sha is None:
        raise CheckpointError(path, "state.json records no hash for this file")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise CheckpointError(
            path,
            f"hash mismatch (sha256 {actual[:12]}..., state.json says {expected_sha[:12]}...): corrupt file",
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(path, f"unreadable safetensors ({err})") from None


def load_checkpoint(path: str | Path, *, with_optimizer: bool = True) -> Checkpoint:
    """Load and verify one checkpoint folder; ``CheckpointError`` names the bad file and why."""
    path = Path(path)
    state = read_state(path)
    files = state.get("files", {})
    model = _load_tensors(path / "model.safetensors", files.get("model.safetensors"))
    optimizer: dict[str, Any] = {}
    rng: dict[str, torch.Tensor] = {}
    if with_optimizer:
        opt_tensors = _load_tensors(path / "optimizer.safetensors", files.get("optimizer.safetensors"))
        try:
            optimizer = optimizers_from_tensors(opt_tensors, state["optimizer"])
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise CheckpointError(path / "optimizer.safetensors", f"does not match state.json ({err!r})") from None
        rng = _load_tensors(path / "rng.safetensors", files.get("rng.safetensors"))
        _check_rng(path / "state.json", state.get("rng"), rng)
    return Checkpoint(path=path, step=int(state["step"]), model=model, optimizer=optimizer, rng=rng, state=state)


def _check_rng(state_path: Path, rng_json: Any, tensors: dict[str, torch.Tensor]) -> None:
    """The RNG states must restore: a resumed run would otherwise fail (or drift) at its first step."""
    try:
        version, internal, gauss = rng_json["python"]
        random.Random().setstate((version, tuple(internal), gauss))
        numpy_json = rng_json["numpy"]
        np.random.RandomState().set_state(
            (
                numpy_json["bit_generator"],
                np.asarray(numpy_json["key"], dtype=np.uint32),
                numpy_json["pos"],
                numpy_json["has_gauss"],
                numpy_json["gauss"],
            )
        )
        torch.Generator().set_state(tensors["torch_cpu"])
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError, OverflowError) as err:
        raise CheckpointError(state_path, f"its random-number states are malformed ({err!r})") from None


def _read_latest(root: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, AttributeError, RecursionError):
        name = json.loads((root / "latest.json").read_text(encoding="utf-8")).get("path")
        return name if isinstance(name, str) and STEP_DIR.match(name) else None
    return None


def load_latest_good(root: str | Path, *, with_optimizer: bool = True) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that verifies, and a warning for each newer one that did not.

    Tries the one ``latest.json`` names first, then every complete folder from the newest down,
    so a torn ``latest.json`` or a corrupt newest checkpoint falls back to the previous one.
    """
    root = Path(root)
    candidates = [path for _, path in reversed(list_checkpoints(root))]
    latest = _read_latest(root)
    if latest and (root / latest) in candidates:
        candidates.remove(root / latest)
        candidates.insert(0, root / latest)
    warnings: list[str] = []
    for path in candidates:
        try:
            return load_checkpoint(path, with_optimizer=with_optimizer), warnings
        except CheckpointError as err:
            warnings.append(f"skipping unusable checkpoint: {err}")
            log.warning("skipping unusable checkpoint: %s", err)
    return None, warnings
