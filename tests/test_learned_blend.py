"""The learned blender: the frame's own pixels wherever the mask is 0, and closer to Poisson than alpha
blending after a short training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from swaplab.config import ConfigError, apply_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


def test_learned_blend_is_the_identity_where_the_mask_is_zero(tmp_path: Path, monkeypatch) -> None:
    from swaplab.models.installed import NetworkMissing, save_built
    from swaplab.models.learned_blend import LearnedBlender, LearnedBlenderConfig
    from swaplab.swap.blend import blend, feather

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    mask = np.zeros((90, 120), np.float32)
    mask[20:70, 30:90] = 1.0
    with pytest.raises(NetworkMissing, match="swaplab nets build learned-blender"):
        blend(frame, face, mask, "learned")
    config = LearnedBlenderConfig(resolution=32, widths=(8, 16, 16))
    net = LearnedBlender(config)
    torch.manual_seed(0)
    torch.nn.init.normal_(net.unet.head.weight, std=0.5)  # a blender that does correct something
    torch.nn.init.constant_(net.unet.head.bias, 0.1)
    weights = save_built("learned-blender", net, config, tmp_path / "blender.safetensors")
    monkeypatch.setenv("SWAPLAB_LEARNED_BLENDER", str(weights))
    for feather_px in (0, 4):
        out = blend(frame, face, mask, "learned", feather_px=feather_px)
        outside = feather(mask, feather_px) == 0
        np.testing.assert_array_equal(out[outside], frame[outside])
        inside = mask > 0.99
        alpha = blend(frame, face, mask, "alpha", feather_px=feather_px)
        assert np.abs(out[inside].astype(int) - alpha[inside].astype(int)).mean() > 1.0  # it corrected the face


@pytest.mark.slow
def test_learned_blender_moves_towards_poisson(tmp_path: Path, pair_facesets: tuple[Path, Path]) -> None:
    from swaplab.train.loop import train
    from swaplab.train.recipes.blender import BlenderTrainConfig

    cfg = apply_overrides(
        BlenderTrainConfig(),
        [
            "model=learned-blender-test",
            "trainer=blender-test",
            "trainer.steps=100",
            "trainer.checkpoint_every=0",
            f"data.facesets=[{pair_facesets[0]},{pair_facesets[1]}]",
            "data.val_pairs=12",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    metrics = train(cfg).metrics
    assert metrics["val/l1_to_poisson"] < 0.9 * metrics["val/alpha_l1_to_poisson"], metrics


def test_bad_blend_names_list_the_valid_ones() -> None:
    from swaplab.swap.pipeline import SwapConfig

    with pytest.raises(ConfigError, match="learned"):
        apply_overrides(SwapConfig(), ["blend=learnt"])
