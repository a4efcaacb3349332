"""``swaplab nets build NAME``: train one of the swap stage's built networks and install it.

Each built network (``swaplab.models.installed.BUILT_NETWORKS``) has a recipe and named build
presets here, the first its default (``cpu``: the bounded CPU build; ``cpu-gan``: the face
restorer's sharper adversarial build, its default; ``test``: seconds, for tests). A preset's run
lives in ``<user cache>/nets/NAME/run`` (``cpu``) or ``run-PRESET`` and resumes when stopped; a
finished run is only exported again; ``--fresh`` discards it and trains anew (a run saved under other
settings, such as the defaults of an earlier swaplab, is refused without it). The last build is the
installed one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BUILD_PRESETS", "build_config", "build_network", "build_run_dir", "default_preset", "discard_run"]


def _segmenter(preset: str, overrides: list[str]) -> Any:
    from swaplab.train.recipes.segmenter import segmenter_config

    return segmenter_config(preset, overrides)


def _restorer(preset: str, overrides: list[str]) -> Any:
    from swaplab.train.recipes.restorer import restorer_config

    return restorer_config(preset, overrides)


def _blender(preset: str, overrides: list[str]) -> Any:
    from swaplab.train.recipes.blender import blender_config

    return blender_config(preset, overrides)


def _glgan(config_type: str, model: str, *settings: str) -> Callable[[str, list[str]], Any]:
    """The build presets of a GL-GAN built network trained by the recipe of ``config_type``
    (``settings``: trainer keys of both presets, after the preset's own)."""

    def build(preset: str, overrides: list[str]) -> Any:
        from swaplab.config import apply_overrides, from_dict
        from swaplab.train.recipes import glgan

        presets = {
            "cpu": [f"model={model}", "trainer=oneshot-tiny", "trainer.steps=300", *settings],
            "test": [f"model={model}", "trainer=oneshot-test", "trainer.steps=3", *settings],
        }
        return apply_overrides(from_dict(getattr(glgan, config_type), {}), [*presets[preset], *overrides])

    return build


def _install_glgan(name: str) -> Callable[[Any, Path], None]:
    """The GL-GAN recipes export a model folder; the swap stage loads built networks by their header:
    rewrite the exported weights with it (the same tensors, loaded strictly)."""

    def install(cfg: Any, weights: Path) -> None:
        from safetensors.torch import load_file

        from swaplab.models.installed import BUILT_NETWORKS, save_built

        net = BUILT_NETWORKS.get(name).module(cfg.model)
        net.load_state_dict(load_file(str(weights)), strict=True)
        save_built(name, net, cfg.model, weights)

    return install


#: network name -> (its presets, the default first; ``fn(preset, overrides) -> run config``).
BUILD_PRESETS: dict[str, tuple[tuple[str, ...], Callable[[str, list[str]], Any]]] = {
    "face-segmenter": (("cpu", "test"), _segmenter),
    # The adversarial build by default: sharpness 0.41 -> 0.72 on 30-minute swaps, L1's 0.45 (docs/masks.md).
    "face-restorer": (("cpu-gan", "cpu", "personal", "test"), _restorer),
    "learned-blender": (("cpu", "test"), _blender),
    "glgan-blender": (("cpu", "test"), _glgan("GLGANBlendTrainConfig", "glgan-blend-tiny")),
    # The smoother learns a small correction from scratch: a larger batch and step size than the GAN's.
    "glgan-smoother": (
        ("cpu", "test"),
        _glgan("GLGANSmoothTrainConfig", "glgan-smooth-tiny", "trainer.batch_size=8", "trainer.lr=2e-3"),
    ),
}
#: network name -> ``fn(run config, installed weights)``, run after the export for networks whose
#: recipe exports a model folder rather than a built network's weights.
INSTALLERS: dict[str, Callable[[Any, Path], None]] = {
    name: _install_glgan(name) for name in ("glgan-blender", "glgan-smoother")
}


def default_preset(name: str) -> str:
    return BUILD_PRESETS[name][0][0] if name in BUILD_PRESETS else "cpu"


def build_config(name: str, preset: str | None = None, overrides: list[str] | None = None) -> Any:
    """The run config of ``swaplab nets build NAME --preset PRESET OVERRIDES...``."""
    preset = preset or default_preset(name)
    if name not in BUILD_PRESETS or preset not in BUILD_PRESETS[name][0]:
        known = "; ".join(f"{n} ({', '.join(p)})" for n, (p, _) in BUILD_PRESETS.items())
        raise KeyError(f"no built network {name!r} with preset {preset!r}; known: {known}")
    return BUILD_PRESETS[name][1](preset, list(overrides or []))


def build_run_dir(name: str, preset: str, out: str | Path | None = None) -> Path:
    """Where preset ``preset`` of ``name`` trains: one folder per preset, so they never collide,
    in the network's folder of the user cache or in ``out``."""
    from swaplab.models.installed import installed_weights

    folder = Path(out) if out is not None else installed_weights(name).parent
    return folder / ("run" if preset == "cpu" else f"run-{preset}")


def discard_run(run_dir: Path) -> None:
    """Remove a build's run folder: renamed aside first (one atomic step), so a build killed while
    the files go leaves either the whole old run or none of it (and what a killed removal left aside
    goes with the next one)."""
    if run_dir.exists():
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.discarded-{os.getpid()}"))
    for doomed in run_dir.parent.glob(f"{run_dir.name}.discarded-*"):
        shutil.rmtree(doomed, ignore_errors=True)


def build_network(
    name: str,
    preset: str | None = None,
    overrides: list[str] | None = None,
    *,
    progress: bool = True,
    fresh: bool = False,
    out: str | Path | None = None,
) -> Path:
    """Train the built network ``name`` (resuming a stopped run, or from scratch when ``fresh``) and
    install it where the swap stage loads it (``swaplab.models.installed.installed_weights``), or in
    the folder ``out`` (``model.safetensors`` there, its run beside it), which swap options name.
    Returns the installed weights file; the one installed before stays until the new one replaces it."""
    from swaplab.models.installed import installed_weights
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.run import RunConfigMismatch

    preset = preset or default_preset(name)
    cfg = build_config(name, preset, overrides)
    target = Path(out) / "model.safetensors" if out is not None else installed_weights(name)
    run_dir = build_run_dir(name, preset, out)
    trainer = dataclasses.replace(cfg.trainer, progress=progress and cfg.trainer.progress)
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir), trainer=trainer)
    if fresh:
        discard_run(run_dir)
    try:
        result = train(cfg)
    except RunConfigMismatch as err:
        raise RunConfigMismatch(
            f"{err}\nTo build {name} again from scratch under these settings: swaplab nets build {name} --fresh"
            f"{'' if preset == default_preset(name) else f' --preset {preset}'}{'' if out is None else f' --out {out}'}"
            " (the installed one stays until then)."
        ) from None
    if result.stop_reason == "signal":
        raise KeyboardInterrupt(f"{name} training stopped at step {result.step}; run the command again to resume")
    export_model(run_dir, target.parent, overwrite=True)
    if name in INSTALLERS:
        INSTALLERS[name](cfg, target)
    return target
